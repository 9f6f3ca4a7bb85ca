"""The emulated phone's data: settings, contacts, messages, alarms, notes, shop, browser.

Apps are views over this one ``World`` (as Android apps share the contacts provider), and task
checkers read it directly. ``make_world(seed)`` is the only source of randomness, so a seed
fixes every name, number, price and setting the agent will see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FIRST_NAMES = (
    "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Isla", "Jack", "Kara",
    "Liam", "Maya", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera",
    "Will", "Yusuf", "Zoe", "Ben", "Chloe", "Diego", "Elena", "Felix", "Hana", "Ivan", "Jade",
    "Kenji", "Lena", "Marco", "Nina", "Omar", "Priya", "Ravi", "Sofia", "Theo", "Uma", "Victor",
)
LAST_NAMES = (
    "Smith", "Jones", "Brown", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Taylor", "Clark",
    "Lewis", "Walker", "Young", "King", "Wright", "Hill", "Scott", "Green", "Adams", "Baker",
    "Nelson", "Carter", "Perez", "Turner", "Parker", "Evans", "Collins", "Morris", "Nguyen",
    "Murphy", "Rivera", "Cook", "Reed", "Kim", "Patel", "Chen", "Singh", "Sato", "Novak", "Costa",
)
N_CONTACTS = 25

MESSAGE_TEXTS = (
    "see you soon", "running 10 minutes late", "happy birthday!", "can you call me back?",
    "lunch at noon?", "thanks for the help", "on my way", "did you get my email?",
    "meeting moved to 3pm", "good luck today", "I'll be there at 6", "Tom & Jerry tonight?",
    "where are the keys?", "call you after work", "the train is delayed", "dinner is ready",
    "don't forget the tickets", "just landed", "can we talk later?", "great news!",
)

NOTE_TITLES = (
    "Groceries", "Packing list", "Book ideas", "Gift ideas", "Meeting notes", "Recipes",
    "Workout plan", "Travel plans", "Movies to watch", "Garden", "Budget", "Birthday party",
)
NOTE_BODIES = (
    "eggs, milk, bread", "passport, charger, socks", "read Dune again", "scarf for mom",
    "ship the beta on Friday", "try the lentil soup", "run 5k on Monday", "book the hotel",
    "watch Alien tonight", "water the tomatoes", "rent due on the 1st", "order the cake",
)

# name -> base price in cents; the seed shifts each price a little so prices must be read.
CATALOG = {
    "Apples": 349, "Bananas": 129, "Bread": 279, "Butter": 429, "Cheese": 599, "Chocolate": 249,
    "Coffee": 899, "Eggs": 389, "Honey": 749, "Milk": 249, "Olive oil": 1099, "Oranges": 459,
    "Pasta": 199, "Rice": 329, "Salt": 99, "Sugar": 229, "Tea": 479, "Tomatoes": 299,
    "Yogurt": 159, "Orange juice": 399,
}

PHONE_MODELS = ("Orbit S2", "Nova 5", "Pebble X", "Lumen 8", "Aster Pro", "Vela Mini")


@dataclass
class Settings:
    wifi: bool = True
    bluetooth: bool = False
    airplane: bool = False
    dark_mode: bool = False
    brightness: int = 60  # percent, multiples of 10
    model_name: str = "Orbit S2"
    android_version: str = "14"


@dataclass
class Contact:
    name: str
    phone: str


@dataclass
class Message:
    contact: str
    text: str
    incoming: bool


@dataclass
class Alarm:
    hour: int
    minute: int
    enabled: bool = True
    label: str = ""

    @property
    def time(self) -> str:
        return format_time(self.hour, self.minute)


@dataclass
class Note:
    title: str
    body: str


@dataclass
class Product:
    name: str
    price_cents: int


@dataclass
class Order:
    number: int
    items: dict[str, int]
    total_cents: int


@dataclass
class Calculator:
    expression: str = ""  # what the display shows while typing, or the last result
    just_evaluated: bool = False


@dataclass
class BrowserHistory:
    searches: list[str] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)  # addresses of pages opened


@dataclass
class World:
    seed: int
    clock_minutes: int  # time of day shown in the status bar
    settings: Settings
    contacts: list[Contact]
    messages: list[Message]
    call_log: list[str]
    alarms: list[Alarm]
    notes: list[Note]
    catalog: list[Product]
    cart: dict[str, int]
    orders: list[Order]
    calculator: Calculator
    browser: BrowserHistory

    def contact(self, name: str) -> Contact | None:
        return next((c for c in self.contacts if c.name == name), None)

    def product(self, name: str) -> Product | None:
        return next((p for p in self.catalog if p.name == name), None)

    def note(self, title: str) -> Note | None:
        return next((n for n in self.notes if n.title == title), None)

    def alarm(self, hour: int, minute: int) -> Alarm | None:
        return next((a for a in self.alarms if (a.hour, a.minute) == (hour, minute)), None)

    def threads(self) -> list[str]:
        """Contacts with a conversation, most recent first."""
        order: list[str] = []
        for m in reversed(self.messages):
            if m.contact not in order:
                order.append(m.contact)
        return order

    def conversation(self, name: str) -> list[Message]:
        return [m for m in self.messages if m.contact == name]

    def cart_total_cents(self) -> int:
        return sum(self.product(n).price_cents * q for n, q in self.cart.items() if self.product(n))


def format_time(hour: int, minute: int) -> str:
    """24-hour clock without a leading zero on the hour: "7:30", "19:05"."""
    return f"{hour}:{minute:02d}"


def format_price(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def random_full_names(rng: random.Random, n: int, exclude: set[str] = frozenset()) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        if name not in names and name not in exclude:
            names.append(name)
    return names


def random_phone_number(rng: random.Random) -> str:
    return f"+1 {rng.choice((206, 312, 415, 512, 617, 718))} 555 {rng.randrange(10000):04d}"


def make_world(seed: int) -> World:
    rng = random.Random(seed)
    settings = Settings(
        wifi=rng.random() < 0.5,
        bluetooth=rng.random() < 0.5,
        airplane=False,
        dark_mode=rng.random() < 0.3,
        brightness=rng.randrange(2, 10) * 10,
        model_name=rng.choice(PHONE_MODELS),
        android_version=str(rng.choice((13, 14, 15))),
    )
    names = sorted(random_full_names(rng, N_CONTACTS))
    numbers: set[str] = set()
    contacts = []
    for name in names:
        number = random_phone_number(rng)
        while number in numbers:
            number = random_phone_number(rng)
        numbers.add(number)
        contacts.append(Contact(name, number))

    messages = []
    for name in rng.sample(names, 4):
        for k in range(rng.randint(1, 3)):
            messages.append(Message(name, rng.choice(MESSAGE_TEXTS), incoming=(k % 2 == 0)))

    alarms: list[Alarm] = []
    while len(alarms) < rng.randint(2, 4):
        hour, minute = rng.randrange(5, 23), rng.choice((0, 15, 30, 45))
        if all((a.hour, a.minute) != (hour, minute) for a in alarms):
            alarms.append(Alarm(hour, minute, enabled=rng.random() < 0.7))
    alarms.sort(key=lambda a: (a.hour, a.minute))

    note_count = rng.randint(3, 5)
    notes = [Note(t, b) for t, b in zip(rng.sample(NOTE_TITLES, note_count), rng.sample(NOTE_BODIES, note_count))]

    catalog = [Product(name, base + 10 * rng.randint(-5, 5)) for name, base in sorted(CATALOG.items())]
    return World(
        seed=seed,
        clock_minutes=rng.randrange(7 * 60, 21 * 60),
        settings=settings,
        contacts=contacts,
        messages=messages,
        call_log=[],
        alarms=alarms,
        notes=notes,
        catalog=catalog,
        cart={},
        orders=[],
        calculator=Calculator(),
        browser=BrowserHistory(),
    )
