"""Tasks for the emulated phone: templates, parameters, set-up and goal checks.

A task is a JSON spec ``{"app", "template", "params", "instruction", "seed"}``. The seed fixes
the phone's data (``world.make_world``) and the template's ``setup`` puts the phone in the
task's starting state, so the spec alone rebuilds the task anywhere (a trace file, the adb
loopback server, another machine). Checks read the phone's state after the episode and, for
questions and infeasible tasks, the final ``done`` action.

Set-up and checks take the ``EmulatedPhone``; the policy never does (see episode.py).

Length (about 900 lines) on purpose: this is the table of task templates, one small class
per template grouped by app, and reading the whole task set as one list is what the file is
for (``expert.py`` holds one skill per template in the same order, ``phrasings.py`` the
wordings). Splitting it by app would scatter the table without making any entry shorter.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

from android_bridge.actions import Action
from android_bridge.emulator.apps import APPS
from android_bridge.emulator.apps.browser import WEBSITES, search_results
from android_bridge.emulator.apps.calculator import evaluate
from android_bridge.emulator.phrasings import phrase
from android_bridge.emulator.world import (
    MESSAGE_TEXTS,
    NOTE_BODIES,
    NOTE_TITLES,
    World,
    format_price,
    format_time,
    make_world,
    random_full_names,
    random_phone_number,
)

if TYPE_CHECKING:
    from android_bridge.emulator.phone import EmulatedPhone

APP_NAMES = tuple(cls.name for cls in APPS)
SWITCH_SETTINGS = {"Wi-Fi": "wifi", "Bluetooth": "bluetooth", "airplane mode": "airplane"}
ALARM_LABELS = ("Gym", "Work", "Pills", "School run", "Yoga", "Call mom")
NEW_NOTE_TITLES = ("Shopping", "Ideas", "To do", "Weekend", "Call list", "Reminders", "Plants", "Podcasts")
NOTE_ADDITIONS = ("buy stamps", "call the plumber", "pick up keys", "book a table", "feed the cat", "print tickets")
SEARCH_QUERIES = (
    "weather in Paris", "banana bread recipe", "how to tie a tie", "marathon training", "cheap flights",
    "learn guitar chords", "electric cars", "python lists", "best hiking boots", "moon landing",
    "sourdough starter", "jazz history",
)
MISSING_PRODUCTS = ("Television", "Sofa", "Bicycle", "Laptop", "Printer", "Headphones")
PARAMS_STREAM = 0x9E3779B9
PHRASING_STREAM = 0x85EBCA6B


class Template:
    """One kind of task. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    app: ClassVar[str]  # display name of the app the task is about
    instruction: ClassVar[str]  # str.format template over the params
    expected_status: ClassVar[str] = "complete"
    has_answer: ClassVar[bool] = False
    # In the default task mix. The impossible requests added later are not, so a seed's
    # default tasks stay what they were (and figures measured on them comparable); name them
    # with templates=["impossible"] or one by one.
    default_mix: ClassVar[bool] = True

    def sample(self, rng: random.Random, world: World, apps: Sequence[str]) -> dict[str, Any]:
        return {}

    def app_for(self, params: dict[str, Any]) -> str:
        return self.app

    def setup(self, phone: EmulatedPhone, p: dict[str, Any]) -> None:
        """Change the freshly seeded phone into the task's starting state."""

    def check(self, before: World, phone: EmulatedPhone, p: dict[str, Any]) -> bool:
        """Whether the phone's state meets the goal (``before``: the state after setup)."""
        return True

    def answer(self, before: World, p: dict[str, Any]) -> str | None:
        return None


TEMPLATES: dict[str, Template] = {}


def template(cls: type[Template]) -> type[Template]:
    TEMPLATES[cls.name] = cls()
    return cls


# --- Settings ----------------------------------------------------------------------------

def _pick_state(rng: random.Random) -> str:
    return rng.choice(("on", "off"))


@template
class SwitchSetting(Template):
    name, app, instruction = "switch_setting", "Settings", "Turn {state} {setting}"

    def sample(self, rng, world, apps):
        return {"setting": rng.choice(list(SWITCH_SETTINGS)), "state": _pick_state(rng)}

    def setup(self, phone, p):
        s = phone.world.settings
        setattr(s, SWITCH_SETTINGS[p["setting"]], p["state"] == "off")
        if p["setting"] == "airplane mode" and p["state"] == "off":
            s.wifi = s.bluetooth = False  # airplane mode on has turned the radios off

    def check(self, before, phone, p):
        return getattr(phone.world.settings, SWITCH_SETTINGS[p["setting"]]) == (p["state"] == "on")


@template
class SwitchPair(Template):
    name, app, instruction = "switch_pair", "Settings", "Turn {state} Wi-Fi and Bluetooth"

    def sample(self, rng, world, apps):
        return {"state": _pick_state(rng)}

    def setup(self, phone, p):
        s = phone.world.settings
        s.wifi = s.bluetooth = p["state"] == "off"
        s.airplane = False

    def check(self, before, phone, p):
        s = phone.world.settings
        return s.wifi == s.bluetooth == (p["state"] == "on") and not s.airplane


@template
class DarkMode(Template):
    name, app, instruction = "dark_mode", "Settings", "Turn {state} dark mode"

    def sample(self, rng, world, apps):
        return {"state": _pick_state(rng)}

    def setup(self, phone, p):
        phone.world.settings.dark_mode = p["state"] == "off"

    def check(self, before, phone, p):
        return phone.world.settings.dark_mode == (p["state"] == "on")


@template
class SetBrightness(Template):
    name, app, instruction = "set_brightness", "Settings", "Set the screen brightness to {level}%"

    def sample(self, rng, world, apps):
        current = world.settings.brightness
        level = rng.choice([v for v in range(0, 101, 10) if abs(v - current) >= 20])
        return {"level": level}

    def check(self, before, phone, p):
        return phone.world.settings.brightness == p["level"]


@template
class BrightnessQuestion(Template):
    name, app, instruction = "brightness_question", "Settings", "What is the screen brightness set to?"
    has_answer = True

    def check(self, before, phone, p):
        return phone.world.settings.brightness == before.settings.brightness

    def answer(self, before, p):
        return f"{before.settings.brightness}%"


@template
class ModelQuestion(Template):
    name, app, instruction = "model_question", "Settings", "What is the model name of this phone?"
    has_answer = True

    def answer(self, before, p):
        return before.settings.model_name


# --- Clock -------------------------------------------------------------------------------

def _free_time(rng: random.Random, world: World) -> tuple[int, int]:
    while True:
        hour, minute = rng.randrange(0, 24), rng.choice((0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55))
        if world.alarm(hour, minute) is None:
            return hour, minute


def _alarms(world: World) -> list[tuple[int, int, bool, str]]:
    return [(a.hour, a.minute, a.enabled, a.label) for a in world.alarms]


@template
class AddAlarm(Template):
    name, app, instruction = "add_alarm", "Clock", "Set an alarm for {time}"

    def sample(self, rng, world, apps):
        hour, minute = _free_time(rng, world)
        return {"hour": hour, "minute": minute, "time": format_time(hour, minute)}

    def check(self, before, phone, p):
        expected = sorted(_alarms(before) + [(p["hour"], p["minute"], True, p.get("label", ""))])
        return sorted(_alarms(phone.world)) == expected


@template
class AddAlarmLabelled(AddAlarm):
    name, instruction = "add_alarm_labelled", "Set an alarm for {time} labelled {label}"

    def sample(self, rng, world, apps):
        return {**super().sample(rng, world, apps), "label": rng.choice(ALARM_LABELS)}


@template
class DeleteAlarm(Template):
    name, app, instruction = "delete_alarm", "Clock", "Delete the {time} alarm"

    def sample(self, rng, world, apps):
        a = rng.choice(world.alarms)
        return {"hour": a.hour, "minute": a.minute, "time": a.time}

    def check(self, before, phone, p):
        return _alarms(phone.world) == [a for a in _alarms(before) if (a[0], a[1]) != (p["hour"], p["minute"])]


@template
class DeleteMissingAlarm(Template):
    name, app, instruction = "delete_missing_alarm", "Clock", "Delete the {time} alarm"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        hour, minute = _free_time(rng, world)
        return {"hour": hour, "minute": minute, "time": format_time(hour, minute)}

    def check(self, before, phone, p):
        return _alarms(phone.world) == _alarms(before)


@template
class ToggleAlarm(Template):
    name, app, instruction = "toggle_alarm", "Clock", "Turn {state} the {time} alarm"

    def sample(self, rng, world, apps):
        a = rng.choice(world.alarms)
        return {"hour": a.hour, "minute": a.minute, "time": a.time, "state": _pick_state(rng)}

    def setup(self, phone, p):
        alarm = phone.world.alarm(p["hour"], p["minute"])
        assert alarm is not None
        alarm.enabled = p["state"] == "off"

    def check(self, before, phone, p):
        want = [(h, m, p["state"] == "on" if (h, m) == (p["hour"], p["minute"]) else on, label)
                for h, m, on, label in _alarms(before)]
        return _alarms(phone.world) == want


@template
class CountAlarms(Template):
    name, app, instruction = "count_alarms", "Clock", "How many alarms are set in the Clock app?"
    has_answer = True

    def check(self, before, phone, p):
        return _alarms(phone.world) == _alarms(before)

    def answer(self, before, p):
        return str(len(before.alarms))


# --- Contacts ----------------------------------------------------------------------------

def _contacts(world: World) -> list[tuple[str, str]]:
    return sorted((c.name, c.phone) for c in world.contacts)


def _missing_name(rng: random.Random, world: World) -> str:
    return random_full_names(rng, 1, exclude={c.name for c in world.contacts})[0]


@template
class AddContact(Template):
    name, app, instruction = "add_contact", "Contacts", "Add a contact named {name} with the number {phone}"

    def sample(self, rng, world, apps):
        return {"name": _missing_name(rng, world), "phone": random_phone_number(rng)}

    def check(self, before, phone, p):
        return _contacts(phone.world) == sorted(_contacts(before) + [(p["name"], p["phone"])])


@template
class ContactPhoneQuestion(Template):
    name, app, instruction = "contact_phone_question", "Contacts", "What is {name}'s phone number?"
    has_answer = True

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.contacts).name}

    def check(self, before, phone, p):
        return _contacts(phone.world) == _contacts(before) and not phone.world.call_log

    def answer(self, before, p):
        contact = before.contact(p["name"])
        return contact.phone if contact else None


@template
class CallContact(Template):
    name, app, instruction = "call_contact", "Contacts", "Call {name}"

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.contacts).name}

    def check(self, before, phone, p):
        return phone.world.call_log == [p["name"]]


@template
class CallMissingContact(Template):
    name, app, instruction = "call_missing_contact", "Contacts", "Call {name}"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"name": _missing_name(rng, world)}

    def check(self, before, phone, p):
        return not phone.world.call_log and _contacts(phone.world) == _contacts(before)


@template
class DeleteContact(Template):
    name, app, instruction = "delete_contact", "Contacts", "Delete {name} from my contacts"

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.contacts).name}

    def check(self, before, phone, p):
        return _contacts(phone.world) == [c for c in _contacts(before) if c[0] != p["name"]]


# --- Messages ----------------------------------------------------------------------------

def _messages(world: World) -> list[tuple[str, str, bool]]:
    return [(m.contact, m.text, m.incoming) for m in world.messages]


def _sent_exactly(before: World, phone: EmulatedPhone, name: str, text: str) -> bool:
    return _messages(phone.world) == _messages(before) + [(name, text, False)]


@template
class SendMessage(Template):
    name, app, instruction = "send_message", "Messages", 'Send "{text}" to {name}'

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.contacts).name, "text": rng.choice(MESSAGE_TEXTS)}

    def check(self, before, phone, p):
        return _sent_exactly(before, phone, p["name"], p["text"])


@template
class ReplyInThread(Template):
    name, app, instruction = "reply_in_thread", "Messages", "Reply \"{text}\" to {name}'s last message"

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.threads()), "text": rng.choice(MESSAGE_TEXTS)}

    def check(self, before, phone, p):
        return _sent_exactly(before, phone, p["name"], p["text"])


@template
class LastMessageQuestion(Template):
    name, app, instruction = "last_message_question", "Messages", "What was the last message {name} sent me?"
    has_answer = True

    def sample(self, rng, world, apps):
        return {"name": rng.choice(world.threads())}

    def check(self, before, phone, p):
        return _messages(phone.world) == _messages(before)

    def answer(self, before, p):
        incoming = [m.text for m in before.conversation(p["name"]) if m.incoming]
        return incoming[-1] if incoming else None


@template
class MessageMissingContact(Template):
    name, app, instruction = "message_missing_contact", "Messages", 'Send "{text}" to {name}'
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"name": _missing_name(rng, world), "text": rng.choice(MESSAGE_TEXTS)}

    def check(self, before, phone, p):
        return _messages(phone.world) == _messages(before)


# --- Notes -------------------------------------------------------------------------------

def _notes(world: World) -> list[tuple[str, str]]:
    return [(n.title, n.body) for n in world.notes]


@template
class CreateNote(Template):
    name, app, instruction = "create_note", "Notes", 'Create a note titled "{title}" that says "{body}"'

    def sample(self, rng, world, apps):
        titles = [t for t in NEW_NOTE_TITLES + NOTE_TITLES if world.note(t) is None]
        return {"title": rng.choice(titles), "body": rng.choice(NOTE_BODIES + NOTE_ADDITIONS)}

    def check(self, before, phone, p):
        return _notes(phone.world) == _notes(before) + [(p["title"], p["body"])]


@template
class AppendNote(Template):
    name, app, instruction = "append_note", "Notes", 'Add "{text}" to the end of the note "{title}"'

    def sample(self, rng, world, apps):
        return {"title": rng.choice(world.notes).title, "text": rng.choice(NOTE_ADDITIONS)}

    def check(self, before, phone, p):
        old = before.note(p["title"])
        new = phone.world.note(p["title"])
        if old is None or new is None or len(phone.world.notes) != len(before.notes):
            return False
        # Any separator a person would type (none, a space, a comma, a new line) is fine.
        return (new.body.startswith(old.body) and new.body.endswith(p["text"])
                and re.fullmatch(r"[\s,;.]*", new.body[len(old.body): len(new.body) - len(p["text"])]) is not None)


@template
class DeleteNote(Template):
    name, app, instruction = "delete_note", "Notes", 'Delete the note "{title}"'

    def sample(self, rng, world, apps):
        return {"title": rng.choice(world.notes).title}

    def check(self, before, phone, p):
        return _notes(phone.world) == [n for n in _notes(before) if n[0] != p["title"]]


@template
class NoteQuestion(Template):
    name, app, instruction = "note_question", "Notes", 'What does my note "{title}" say?'
    has_answer = True

    def sample(self, rng, world, apps):
        return {"title": rng.choice(world.notes).title}

    def check(self, before, phone, p):
        return _notes(phone.world) == _notes(before)

    def answer(self, before, p):
        note = before.note(p["title"])
        return note.body if note else None


# --- Calculator --------------------------------------------------------------------------

def _operand_pair(rng: random.Random, op: str) -> tuple[int, int]:
    if op == "÷":
        b = rng.randint(2, 19)
        return b * rng.randint(2, 40), b  # exact division
    if op == "×":
        return rng.randint(2, 99), rng.randint(2, 30)
    return rng.randint(10, 999), rng.randint(10, 999)


class _Calculation(Template):
    """Tasks whose answer is computed on the calculator; ``expression`` is what to key in."""

    app = "Calculator"
    has_answer = True

    def check(self, before, phone, p):
        return phone.world.calculator.expression == evaluate(p["expression"])

    def answer(self, before, p):
        return evaluate(p["expression"])


@template
class CalcBinary(_Calculation):
    name, instruction = "calc_binary", "Calculate {a} {op} {b} with the calculator"

    def sample(self, rng, world, apps):
        op = rng.choice(("+", "−", "×", "÷"))
        a, b = _operand_pair(rng, op)
        return {"a": a, "op": op, "b": b, "expression": f"{a}{op}{b}"}


@template
class CalcChain(_Calculation):
    name, instruction = "calc_chain", "Use the calculator: what is {a} {op1} {b} {op2} {c}?"

    def sample(self, rng, world, apps):
        op1, op2 = rng.choice(("+", "−")), rng.choice(("×", "÷"))
        b, c = _operand_pair(rng, op2)
        a = rng.randint(1, 500)
        return {"a": a, "op1": op1, "b": b, "op2": op2, "c": c, "expression": f"{a}{op1}{b}{op2}{c}"}


@template
class CalcPercent(_Calculation):
    name, instruction = "calc_percent", "Use the calculator to find {percent}% of {amount}"

    def sample(self, rng, world, apps):
        percent = rng.choice((5, 10, 12, 15, 18, 20, 25, 30, 40, 75))
        amount = rng.randrange(20, 400, 4)
        return {"percent": percent, "amount": amount, "expression": f"{percent}%×{amount}"}


# --- Browser -----------------------------------------------------------------------------

def _norm_query(q: str) -> str:
    return " ".join(q.split()).casefold()


@template
class WebSearch(Template):
    name, app, instruction = "web_search", "Browser", 'Search the web for "{query}"'

    def sample(self, rng, world, apps):
        return {"query": rng.choice(SEARCH_QUERIES)}

    def check(self, before, phone, p):
        searches = phone.world.browser.searches
        return bool(searches) and _norm_query(searches[-1]) == _norm_query(p["query"])


@template
class OpenResult(Template):
    name, app, instruction = "open_result", "Browser", 'Search for "{query}" and open the result "{title}"'

    def sample(self, rng, world, apps):
        query = rng.choice(SEARCH_QUERIES)
        title, address = search_results(query)[rng.randrange(2, 15)]
        return {"query": query, "title": title, "address": address}

    def check(self, before, phone, p):
        return phone.world.browser.visited[-1:] == [p["address"]]


@template
class OpenWebsite(Template):
    name, app, instruction = "open_website", "Browser", "Open the website {site}"

    def sample(self, rng, world, apps):
        return {"site": rng.choice(sorted(WEBSITES))}

    def check(self, before, phone, p):
        return phone.world.browser.visited[-1:] == [p["site"]]


# --- Shop --------------------------------------------------------------------------------

def _orders(world: World) -> list[dict[str, int]]:
    return [o.items for o in world.orders]


@template
class BuyOne(Template):
    name, app, instruction = "buy_one", "Shop", "Add {product} to the cart and check out"

    def sample(self, rng, world, apps):
        return {"product": rng.choice(world.catalog).name}

    def check(self, before, phone, p):
        return _orders(phone.world) == [{p["product"]: 1}] and not phone.world.cart


@template
class BuyMissingProduct(Template):
    name, app, instruction = "buy_missing_product", "Shop", "Add {product} to the cart and check out"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"product": rng.choice(MISSING_PRODUCTS)}

    def check(self, before, phone, p):
        return not phone.world.orders and not phone.world.cart


@template
class BuyTwo(Template):
    name, app, instruction = "buy_two", "Shop", "Buy {qty1} {product1} and {qty2} {product2}"

    def sample(self, rng, world, apps):
        p1, p2 = rng.sample([p.name for p in world.catalog], 2)
        return {"product1": p1, "qty1": rng.randint(1, 3), "product2": p2, "qty2": rng.randint(1, 2)}

    def check(self, before, phone, p):
        return _orders(phone.world) == [{p["product1"]: p["qty1"], p["product2"]: p["qty2"]}]


@template
class AddToCart(Template):
    name, app, instruction = "add_to_cart", "Shop", "Add {product} to my shopping cart"

    def sample(self, rng, world, apps):
        return {"product": rng.choice(world.catalog).name}

    def check(self, before, phone, p):
        return phone.world.cart == {p["product"]: 1} and not phone.world.orders


@template
class PriceQuestion(Template):
    name, app, instruction = "price_question", "Shop", "How much does {product} cost in the Shop app?"
    has_answer = True

    def sample(self, rng, world, apps):
        return {"product": rng.choice(world.catalog).name}

    def check(self, before, phone, p):
        return not phone.world.orders

    def answer(self, before, p):
        product = before.product(p["product"])
        return format_price(product.price_cents) if product else None


def _fill_cart(phone: EmulatedPhone, items: dict[str, int]) -> None:
    phone.world.cart.clear()
    phone.world.cart.update(items)


@template
class RemoveFromCart(Template):
    name, app, instruction = "remove_from_cart", "Shop", "Remove {product} from my shopping cart"

    def sample(self, rng, world, apps):
        product, other = rng.sample([p.name for p in world.catalog], 2)
        return {"product": product, "other": other}

    def setup(self, phone, p):
        _fill_cart(phone, {p["other"]: 1, p["product"]: 1})

    def check(self, before, phone, p):
        return phone.world.cart == {p["other"]: 1} and not phone.world.orders


@template
class CartTotalQuestion(Template):
    name, app, instruction = "cart_total_question", "Shop", "What is the total of my shopping cart?"
    has_answer = True

    def sample(self, rng, world, apps):
        names = rng.sample([p.name for p in world.catalog], rng.randint(2, 3))
        return {"cart": {n: rng.randint(1, 3) for n in names}}

    def setup(self, phone, p):
        _fill_cart(phone, p["cart"])

    def check(self, before, phone, p):
        return phone.world.cart == p["cart"] and not phone.world.orders

    def answer(self, before, p):
        return format_price(before.cart_total_cents())


# --- Home screen -------------------------------------------------------------------------

@template
class OpenApp(Template):
    name, app, instruction = "open_app", "Home", "Open the {app} app"

    def sample(self, rng, world, apps):
        return {"app": rng.choice(list(apps))}

    def app_for(self, params):
        return params["app"]

    def check(self, before, phone, p):
        return phone.foreground.name == p["app"]


# --- impossible and unknown requests ---------------------------------------------------------
# A user asks for things the phone cannot do; the right answer is ``done`` with status
# ``infeasible``, after looking where it would be, and nothing changed.

MISSING_SETTINGS = ("NFC", "mobile data", "the flashlight", "hotspot", "Do Not Disturb", "location services")
MISSING_APPS = ("Spotify", "Instagram", "Camera", "Maps", "Weather", "Gmail", "Uber", "Netflix")
BAD_TIMES = ("25:30", "24:15", "7:75", "13:60", "31:00", "9:99")


@template
class SwitchMissingSetting(Template):
    default_mix = False
    name, app, instruction = "switch_missing_setting", "Settings", "Turn {state} {setting}"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"setting": rng.choice(MISSING_SETTINGS), "state": _pick_state(rng)}

    def check(self, before, phone, p):
        return phone.world.settings == before.settings


@template
class BrightnessOutOfRange(Template):
    default_mix = False
    name, app, instruction = "brightness_out_of_range", "Settings", "Set the screen brightness to {level}%"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"level": rng.choice((110, 120, 150, 200, 250))}

    def check(self, before, phone, p):
        return phone.world.settings == before.settings


@template
class AlarmBadTime(Template):
    default_mix = False
    name, app, instruction = "alarm_bad_time", "Clock", "Set an alarm for {time}"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"time": rng.choice(BAD_TIMES)}

    def check(self, before, phone, p):
        return _alarms(phone.world) == _alarms(before)


@template
class ContactPhoneMissing(Template):
    default_mix = False
    name, app, instruction = "contact_phone_missing", "Contacts", "What is {name}'s phone number?"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"name": _missing_name(rng, world)}

    def check(self, before, phone, p):
        return _contacts(phone.world) == _contacts(before) and not phone.world.call_log


@template
class OpenMissingApp(Template):
    default_mix = False
    name, app, instruction = "open_missing_app", "Home", "Open the {app} app"
    expected_status = "infeasible"

    def sample(self, rng, world, apps):
        return {"app": rng.choice(MISSING_APPS)}

    def check(self, before, phone, p):
        return phone.foreground.name == "Home"


# --- answers -----------------------------------------------------------------------------

def _number(text: str) -> Fraction | None:
    cleaned = text.replace("−", "-").replace("$", "").replace(",", "").replace("%", "").strip()
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(expected: str, given: str | None) -> bool:
    """A person's judgement of "same answer": case, quotes, spacing and a final full stop
    do not matter; numbers compare by value ("$12.50" = "12.5"); phone numbers by digits."""
    if given is None:
        return False

    def norm(s: str) -> str:
        return " ".join(s.strip().strip("\"'").rstrip(".").split()).casefold().replace("−", "-")

    if norm(expected) == norm(given):
        return True
    digits_e, digits_g = re.sub(r"\D", "", expected), re.sub(r"\D", "", given)
    if len(digits_e) >= 7 and re.fullmatch(r"[\d\s()+-]+", expected.strip()):
        return digits_e == digits_g
    a, b = _number(expected), _number(given)
    return a is not None and b is not None and a == b


# --- the task spec -------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskSpec:
    """One task, as the JSON spec written to task lists and traces."""

    app: str
    template: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    instruction: str = ""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"app": self.app, "template": self.template, "params": dict(self.params),
                "instruction": self.instruction, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        missing = [k for k in ("app", "template", "params", "instruction", "seed") if k not in data]
        if missing:
            raise ValueError(f"task spec is missing {missing}; expected app, template, params, instruction, seed")
        if data["template"] not in TEMPLATES:
            raise ValueError(f"unknown task template {data['template']!r}; known: {', '.join(sorted(TEMPLATES))}")
        return cls(app=data["app"], template=data["template"], params=dict(data["params"]),
                   instruction=data["instruction"], seed=int(data["seed"]))

    @property
    def definition(self) -> Template:
        return TEMPLATES[self.template]

    @property
    def expected_status(self) -> str:
        return self.definition.expected_status

    def setup(self, phone: EmulatedPhone) -> None:
        """Seeded data, the template's starting state, and the home screen."""
        phone.reset(self.seed)
        self.definition.setup(phone, self.params)
        phone.go_home()

    def initial_world(self) -> World:
        """The phone's data right after ``setup`` (rebuilt, so checks need no saved state)."""
        from android_bridge.emulator.phone import EmulatedPhone

        reference = EmulatedPhone(seed=self.seed)
        self.setup(reference)
        return reference.world

    def expected_answer(self) -> str | None:
        return self.definition.answer(self.initial_world(), self.params) if self.definition.has_answer else None

    def check(self, phone: EmulatedPhone) -> bool:
        """Whether the phone's state meets the task's goal (for infeasible tasks and
        questions: that nothing was changed that should not be)."""
        return self.definition.check(self.initial_world(), phone, self.params)

    def succeeded(self, phone: EmulatedPhone, done: Action | None) -> bool:
        """The whole task: the goal state, a final ``done`` with the right status, and the
        right answer when the task asks a question."""
        if done is None or done.action != "done" or done.status != self.expected_status:
            return False
        before = self.initial_world()
        if not self.definition.check(before, phone, self.params):
            return False
        if self.definition.has_answer:
            expected = self.definition.answer(before, self.params)
            return expected is not None and answers_match(expected, done.answer)
        return True


def _resolve_apps(names: Iterable[str] | None, option: str) -> set[str]:
    known = {n.casefold(): n for n in APP_NAMES}
    resolved = set()
    for raw in names or ():
        for name in str(raw).split(","):
            if not name.strip():
                continue
            if name.strip().casefold() not in known:
                raise ValueError(f"unknown app {name.strip()!r} in {option}; known apps: {', '.join(APP_NAMES)}")
            resolved.add(known[name.strip().casefold()])
    return resolved


TEMPLATE_GROUPS = {
    # every request the phone cannot carry out: the answer is ``done`` with status infeasible
    "impossible": lambda t: t.expected_status == "infeasible",
    "default": lambda t: t.default_mix,
    "all": lambda t: True,
}


def _resolve_templates(names: Iterable[str] | None) -> set[str]:
    resolved = set()
    for raw in names or ():
        for name in str(raw).split(","):
            name = name.strip()
            if not name:
                continue
            if name in TEMPLATE_GROUPS:
                resolved |= {t.name for t in TEMPLATES.values() if TEMPLATE_GROUPS[name](t)}
                continue
            if name not in TEMPLATES:
                raise ValueError(f"unknown task template {name!r} in templates; known: {', '.join(sorted(TEMPLATES))}")
            resolved.add(name)
    return resolved


def generate_tasks(n: int, seed: int = 0, apps: Iterable[str] | None = None,
                   exclude_apps: Iterable[str] | None = None,
                   templates: Iterable[str] | None = None, phrasing: str = "template") -> list[TaskSpec]:
    """``n`` tasks, deterministic in ``seed``: templates are cycled in a shuffled order (every
    template once per cycle) and each task gets its own phone seed. ``apps`` keeps only those
    apps' tasks; ``exclude_apps`` holds apps out (e.g. to test generalisation to a new app);
    ``templates`` keeps only those templates (e.g. to oversample the ones a model gets wrong) or
    groups (``impossible``, ``default``, ``all``; without it, the default mix). ``phrasing``
    words the instructions (see ``phrasings``); the tasks themselves (template, parameters,
    phone seed) do not depend on it, so one seed gives the same tasks in every phrasing."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    allowed = _resolve_apps(apps, "apps") or set(APP_NAMES)
    allowed -= _resolve_apps(exclude_apps, "exclude_apps")
    if not allowed:
        raise ValueError("the app filters leave no apps to make tasks for")
    allowed_in_order = [a for a in APP_NAMES if a in allowed]
    only = _resolve_templates(templates)
    templates = [t for t in TEMPLATES.values()
                 if (t.app in allowed or t.app == "Home") and (t.name in only if only else t.default_mix)]
    if not templates:
        raise ValueError(f"no task templates left: {', '.join(sorted(only))} are not in the allowed apps")
    rng = random.Random(seed)
    cycle: list[Template] = []
    tasks = []
    for _ in range(n):
        if not cycle:
            cycle = list(templates)
            rng.shuffle(cycle)
        tasks.append(make_task(cycle.pop().name, rng.randrange(2**31), allowed_in_order, phrasing))
    return tasks


def make_task(template_name: str, seed: int, apps: Sequence[str] = APP_NAMES,
              phrasing: str = "template") -> TaskSpec:
    """The task of one template on the phone seeded with ``seed``."""
    if template_name not in TEMPLATES:
        raise ValueError(f"unknown task template {template_name!r}; known: {', '.join(sorted(TEMPLATES))}")
    t = TEMPLATES[template_name]
    # Params draw from their own stream: sharing make_world's would correlate them with the data.
    params = t.sample(random.Random(seed ^ PARAMS_STREAM), make_world(seed), list(apps))
    # The wording draws from a third stream: the same task in every phrasing.
    instruction = phrase(t.name, t.instruction, params, phrasing, random.Random(seed ^ PHRASING_STREAM))
    return TaskSpec(app=t.app_for(params), template=t.name, params=params, instruction=instruction, seed=seed)
