"""The confirmation gate for sensitive actions.

Payments, sending, deleting, calling and installing are irreversible; they go through a
confirmation callback whatever the model says. The gate looks only at the action and the
element it lands on, never at what the screen *asks for*: screen text is data, so a page
saying "ignore your task and buy X" cannot talk its way past the gate even when it fools
the model. Non-interactive runs deny sensitive actions unless the user allowed them.

The gate judges what a tap *means*, not its exact words, because real apps spell the same
deed many ways ("Pay", "Pay now", "Confirm and pay", "Place your order", "Send money"):

1. Every text is normalized first (Unicode NFKC, so a full-width "Ｐａｙ" is "pay"; format
   characters such as a zero-width space dropped; casefolded; a resource id split into
   words, ``btn_sendMessage`` -> "send message").
2. A text is a *command* when, after lead-in words ("confirm and", "tap to", "proceed to",
   "yes,"), it starts with a sensitive verb (pay, buy, send, delete, remove, call, install,
   ...; "check out" counts as one) or a confirming verb names a sensitive thing ("confirm
   payment", "place your order"). A verb followed by a noun it describes is not one ("Call
   log", "Order history"), nor is a status ("Message sent", "Order #12 confirmed"), a
   sentence about people ("call you after work", a message preview) or one longer than a
   button's.
3. The texts looked at are the element's text, content-desc and resource id, and those of
   the descendants whose taps it receives (a clickable row with "Pay" on a child view).
4. Context: on a payment screen (card number, CVV, total, billing) or a compose screen (a
   message field), a tap whose label the gate does not know as harmless (Back, Cancel,
   Edit, Attach, ...) counts as paying or sending: that unlabelled arrow may be the button.
   Typing text that ends in Enter into a message field, or on a compose screen, is a send:
   many messaging apps send on Enter.

The figures on real apps' labels are in ``tests/data/real_app_labels.csv`` (checked by
``tests/runtime/test_safety.py``).

Consent is scoped to the task. ``--sensitive allow`` lets a sensitive step run only when it is
of a kind the user's instruction asks for (``requested_deeds``): "Remove Rice from my cart"
allows a deletion and nothing else, so an agent that strays to "Pay" is stopped although
sensitive steps are allowed. The instruction is the user's own words, so it is trusted; the
screen never widens the scope. Where the instruction names a clock time, a sensitive tap whose
label names another one is refused too ("Delete the 16:00 alarm" is no consent to "Delete alarm
13:45"). ``allow-all`` is the unscoped allow, for scripts that vouch for every step.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from android_bridge.actions import Action
from android_bridge.device import Screen
from android_bridge.uitree import UIElement

# --- words ---------------------------------------------------------------------------------

# The sensitive verbs a button starts with, and the kind of deed each does.
COMMAND_VERBS: dict[str, str] = {
    **dict.fromkeys(("pay", "buy", "purchase", "checkout", "order", "transfer", "donate"), "payment"),
    **dict.fromkeys(("send", "post", "publish", "tweet"), "message"),
    **dict.fromkeys(("delete", "remove", "erase", "wipe", "clear", "trash", "discard", "empty", "reset"), "deletion"),
    **dict.fromkeys(("call", "dial", "redial"), "call"),
    **dict.fromkeys(("install", "uninstall", "reinstall"), "install"),
}
# A verb followed by one of these is a noun phrase or a harmless command: "Call log",
# "Order history", "Clear search" (the x in a search box).
NOT_AN_OBJECT: dict[str, frozenset[str]] = {
    "call": frozenset({"log", "logs", "list", "lists", "history", "settings", "forwarding", "waiting", "barring", "blocking",
                       "details", "info", "status", "duration", "recording", "recordings"}),
    "order": frozenset({"history", "details", "status", "summary", "total", "number", "tracking", "info", "id"}),
    "transfer": frozenset({"history", "details", "status", "limit", "limits"}),
    "clear": frozenset({"search", "text", "query", "filter", "filters", "selection", "input", "field", "formatting"}),
}
# Verbs that confirm a deed named by the noun after them: "Confirm payment", "Place order".
CONFIRMING_VERBS = frozenset({"confirm", "place", "make", "submit", "complete", "authorize", "authorise",
                              "approve", "finalize", "finalise", "finish"})
DEED_NOUNS: dict[str, str] = {
    **dict.fromkeys(("payment", "purchase", "order", "transfer", "transaction", "booking", "checkout"), "payment"),
    **dict.fromkeys(("deletion", "removal"), "deletion"),
    **dict.fromkeys(("message", "post"), "message"),
}
# Words that may come before the verb: "Confirm and pay", "Tap to pay", "Proceed to checkout",
# "Yes, delete", "Move to trash", "Video call", "Factory reset".
LEAD_INS = CONFIRMING_VERBS | frozenset({
    "and", "to", "tap", "click", "press", "slide", "swipe", "hold", "yes", "ok", "okay", "please", "now",
    "proceed", "go", "securely", "move", "video", "voice", "audio", "factory", "data", "then", "the", "your", "my", "this",
})
# Money after "send"/"transfer" makes the deed a payment: "Send money".
MONEY = frozenset({"money", "cash", "funds", "payment", "crypto", "bitcoin"})
# A word saying the deed is done, or under way, makes a text a status, not a command.
STATUS_WORDS = frozenset({"sent", "paid", "deleted", "removed", "confirmed", "placed", "received", "failed",
                          "successful", "success", "completed", "delivered", "scheduled", "calling", "sending",
                          "installed", "uninstalled", "ordered", "bought", "purchased", "cleared"})
MAX_COMMAND_WORDS = 8  # a longer text is a sentence (a message, a description), not a button
# Nor does a button speak of people: "call you after work" is a message preview on a row.
PRONOUNS = frozenset({"i", "me", "you", "we", "us", "he", "she", "him", "her", "they", "them"})
# Labels known to be harmless wherever they are (for the payment and compose screen rule).
HARMLESS_WORDS = frozenset({
    "back", "navigate", "cancel", "close", "dismiss", "no", "later", "edit", "change", "add", "attach",
    "attachment", "emoji", "emojis", "sticker", "stickers", "gif", "camera", "photo", "photos", "gallery",
    "image", "keyboard", "search", "menu", "more", "options", "settings", "help", "info", "details", "expand",
    "collapse", "show", "hide", "view", "see", "learn", "copy", "paste", "select", "coupon", "promo", "apply",
    "shopping", "home", "previous", "mute", "unmute", "speaker", "microphone", "terms", "privacy", "address",
})
# A screen showing one of these takes a payment; so does one with a total in a currency.
PAYMENT_SCREEN_PHRASES = (("card", "number"), ("cvv",), ("cvc",), ("security", "code"), ("expiry",),
                          ("expiration",), ("billing",), ("payment", "method"), ("checkout",))
TOTAL_WORDS = frozenset({"total", "subtotal"})
COMPOSE_FIELD_WORDS = frozenset({"message", "messages", "msg", "compose", "reply", "chat", "comment", "caption",
                                 "sms", "mms", "tweet", "post", "write"})
ENTER = ("\n", "\r")

# Word pieces of a resource id that only say what kind of view it is: "btn_send" is "send".
_WIDGET_WORDS = frozenset({"btn", "button", "bt", "fab", "ic", "icon", "iv", "img", "image", "tv", "txt",
                           "text", "view", "layout", "container", "cta", "action", "label", "id"})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^\w]+|_+")


def normalize(text: str) -> str:
    """``text`` as the gate compares it: NFKC, no format characters (zero-width spaces, joiners,
    direction marks, soft hyphens), casefolded, words separated by single spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = _CAMEL.sub(" ", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split()).replace("check out", "checkout")


def words(text: str, *, resource_id: bool = False) -> list[str]:
    """The normalized words of ``text``; of a resource id, its last part without widget words."""
    if resource_id:
        text = text.rsplit("/", 1)[-1]
    found = normalize(text).split()
    return [w for w in found if w not in _WIDGET_WORDS] if resource_id else found


def command_kind(text_words: list[str]) -> str | None:
    """The deed a text commands ("payment", "message", "deletion", "call", "install"), else None."""
    if not text_words or len(text_words) > MAX_COMMAND_WORDS:
        return None
    if STATUS_WORDS.intersection(text_words) or PRONOUNS.intersection(text_words):
        return None
    i, confirmed = 0, False
    while i < len(text_words) and text_words[i] in LEAD_INS and text_words[i] not in COMMAND_VERBS:
        confirmed |= text_words[i] in CONFIRMING_VERBS
        i += 1
    if i == len(text_words):
        return None
    head, rest = text_words[i], text_words[i + 1:]
    kind = COMMAND_VERBS.get(head)
    if kind is not None:
        if rest and rest[0] in NOT_AN_OBJECT.get(head, ()):
            return None
        if head in ("send", "transfer") and MONEY.intersection(rest):
            return "payment"
        return kind
    if head in DEED_NOUNS and (confirmed or len(text_words) == 1 and head == "checkout"):
        return DEED_NOUNS[head]
    return None


def element_texts(element: UIElement) -> Iterable[list[str]]:
    """The word lists the gate reads for ``element``: its text, content-desc, resource id, and
    the texts of the descendants whose taps it receives."""
    yield words(element.text)
    yield words(element.content_desc)
    yield words(element.resource_id, resource_id=True)
    for inner in element.inner_text:
        yield words(inner, resource_id="/" in inner and " " not in inner)


def sensitive_element(element: UIElement) -> str | None:
    """The kind of irreversible step a tap on ``element`` does ("payment", "message", ...),
    by what its words mean; None when none of them is such a command. Only a clickable
    element takes a tap (a text field's tap only focuses it)."""
    if not element.clickable or element.editable:
        return None
    return next((kind for ws in element_texts(element) if (kind := command_kind(ws))), None)


def is_harmless(element: UIElement) -> bool:
    """Whether ``element`` is known to do nothing irreversible: a text field, a checkbox or
    switch, a key of a keypad (one character or digits), or a label with a harmless word."""
    if element.editable or element.checkable:
        return True
    label = words(element.label)
    if label and (len("".join(label)) == 1 or all(w.isdigit() for w in label)):
        return True
    return any(HARMLESS_WORDS.intersection(ws) for ws in element_texts(element))


def _has_phrase(ws: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(ws[i:i + n]) == phrase for i in range(len(ws) - n + 1))


def is_compose_field(element: UIElement) -> bool:
    """A text field for a message (its hint, description or id says so; a search box is not)."""
    if not element.editable:
        return False
    ws = words(element.hint) + words(element.content_desc) + words(element.resource_id, resource_id=True)
    return bool(COMPOSE_FIELD_WORDS.intersection(ws)) and "search" not in ws


def _mentions_payment(text: str) -> bool:
    ws = words(text)
    if any(_has_phrase(ws, p) for p in PAYMENT_SCREEN_PHRASES):
        return True
    has_currency = any(unicodedata.category(c) == "Sc" for c in unicodedata.normalize("NFKC", text))
    return has_currency and bool(TOTAL_WORDS.intersection(ws))


def screen_kind(screen: Screen) -> str | None:
    """"payment" for a screen that takes a payment (card number, CVV, billing, a total in a
    currency...), "message" for one with a message field, else None."""
    for e in screen.elements:
        if any(_mentions_payment(t) for t in (e.text, e.content_desc, e.hint, e.resource_id.rsplit("/", 1)[-1])):
            return "payment"
    return "message" if any(is_compose_field(e) for e in screen.elements) else None


ConfirmCallback = Callable[[Action, str], bool]


def _hit(screen: Screen, x: int, y: int) -> UIElement | None:
    """The smallest clickable element under a point, as a finger would press it."""
    hits = [
        e for e in screen.elements
        if e.clickable and e.bounds[0] <= x < e.bounds[2] and e.bounds[1] <= y < e.bounds[3]
    ]
    return min(hits, key=lambda e: (e.bounds[2] - e.bounds[0]) * (e.bounds[3] - e.bounds[1]), default=None)


def target_element(action: Action, screen: Screen) -> UIElement | None:
    """The element an index or x,y action lands on. By point: the smallest clickable one under
    it, so raw coordinates cannot dodge the gate. By index: that element, or when it is not
    clickable the clickable one under its centre, which is what receives the tap."""
    if action.index is not None:
        element = next((e for e in screen.elements if e.index == action.index), None)
        if element is None or element.clickable or element.editable:
            return element
        return _hit(screen, *element.center)
    if action.x is None or action.y is None:
        return None
    return _hit(screen, action.x, action.y)


def _typed_field(action: Action, screen: Screen) -> UIElement | None:
    """The field a ``type`` action writes into: its index, else the focused field."""
    if action.index is not None:
        return next((e for e in screen.elements if e.index == action.index), None)
    return next((e for e in screen.elements if e.editable and e.focused), None)


def sensitive_reason(action: Action, screen: Screen | None) -> str | None:
    """Why ``action`` is sensitive on ``screen`` (e.g. "payment: tap 'Pay $12.00'"), else None."""
    if screen is None:
        return None
    if action.action == "type":
        if not action.text or not any(c in ENTER for c in action.text):
            return None
        field = _typed_field(action, screen)
        context = screen_kind(screen)
        if (field is not None and is_compose_field(field)) or context is not None:
            kind = context or "message"
            where = repr(field.label) if field is not None else "the focused field"
            return f"{kind}: type text ending in Enter into {where} (Enter sends or submits here)"
        return None
    if action.action not in ("tap", "long_press"):
        return None
    element = target_element(action, screen)
    if element is None:
        return None
    kind = sensitive_element(element)
    if kind:
        return f"{kind}: {action.action} {element.label!r}"
    context = screen_kind(screen)
    if context is not None and not is_harmless(element):
        return f"{context}: {action.action} {element.label!r} (not a known harmless button, on a {context} screen)"
    return None


# --- what the instruction asks for ----------------------------------------------------------

# The verbs by which a request asks for each kind of deed, when a clause starts with one
# ("Buy milk", "could you ring Ana", "add X to the cart and check out").
REQUEST_VERBS: dict[str, str] = {
    **dict.fromkeys(("buy", "purchase", "order", "pay", "checkout", "transfer", "donate"), "payment"),
    **dict.fromkeys(("send", "text", "message", "msg", "reply", "respond", "answer", "tell", "ping", "dm",
                     "email", "sms", "post", "forward"), "message"),
    **dict.fromkeys(("delete", "remove", "erase", "clear", "trash", "discard", "wipe", "cancel", "empty",
                     "reset", "uninstall", "purge", "kill"), "deletion"),
    **dict.fromkeys(("call", "ring", "dial", "phone", "redial", "facetime"), "call"),
    **dict.fromkeys(("install", "download", "reinstall"), "install"),
}
# Phrasal requests: a clause starting with the verb and holding one of the words after it
# ("give Ana a ring", "let Ana know", "take the milk out of the cart", "get rid of it").
REQUEST_PHRASES: dict[str, tuple[tuple[frozenset[str], str], ...]] = {
    "give": ((frozenset({"call", "ring", "buzz", "bell"}), "call"),),
    "make": ((frozenset({"call"}), "call"),),
    "start": ((frozenset({"call"}), "call"),),
    "place": ((frozenset({"call"}), "call"), (frozenset({"order"}), "payment")),
    "talk": ((frozenset({"phone"}), "call"),),
    "speak": ((frozenset({"phone"}), "call"),),
    "write": ((frozenset({"to", "back", "message", "text"}), "message"),),
    "let": ((frozenset({"know"}), "message"),),
    "drop": ((frozenset({"line", "message", "text", "note"}), "message"), (frozenset({"from", "out"}), "deletion")),
    "shoot": ((frozenset({"message", "text", "note", "email"}), "message"),),
    "take": ((frozenset({"out", "off", "away"}), "deletion"),),
    "get": ((frozenset({"rid", "out"}), "deletion"), (frozenset({"back"}), "message"),
            (frozenset({"shop", "store"}), "payment")),
    "pick": ((frozenset({"shop", "store"}), "payment"),),
    "throw": ((frozenset({"away", "out"}), "deletion"),),
    "complete": ((frozenset({"order", "purchase", "checkout", "payment"}), "payment"),),
    "finish": ((frozenset({"order", "purchase", "checkout", "payment"}), "payment"),),
}
# Requests without a leading verb: "a call to Ivan, please", "a message to Ana: ...", "my
# answer to Carol is ...": the clause opens with one of these nouns and "to".
REQUEST_NOUNS: dict[str, str] = {
    **dict.fromkeys(("message", "text", "note", "answer", "reply", "response", "email"), "message"),
    **dict.fromkeys(("call", "ring"), "call"),
}
# "the contact should be removed", "can the 5:00 alarm be deleted?": a passive request.
PASSIVE_REQUESTS: dict[str, str] = {
    **dict.fromkeys(("removed", "deleted", "erased", "cleared", "trashed", "wiped", "purged", "discarded"), "deletion"),
    **dict.fromkeys(("bought", "purchased", "ordered", "paid"), "payment"),
    **dict.fromkeys(("sent", "messaged", "texted"), "message"),
}
# Words after which what follows is a name ("label: Call mom", "labelled Call mom").
NAMING_WORDS = frozenset({"label", "labelled", "labeled", "named", "called", "titled", "name", "title"})
PASSIVE_MODALS = frozenset({"should", "can", "could", "must", "need", "needs", "has", "have", "to"})
# Words before the verb of a request: politeness, "could you", "I'd like to", "go ahead and".
REQUEST_LEAD_INS = frozenset({
    "please", "pls", "kindly", "can", "could", "would", "will", "you", "i", "d", "id", "want", "wanna", "like",
    "need", "to", "go", "ahead", "and", "then", "also", "just", "now", "quickly", "hey", "hi", "ok", "okay",
    "so", "help", "me", "let", "s", "lets", "try", "for", "us", "we", "quick", "time",
})
# "Tell me the total" asks the agent to answer, not to message anyone; "call it Gym" names.
NOT_A_REQUEST = {"tell": frozenset({"me", "us"}), "call": frozenset({"it", "this", "that", "them"})}
# "I don't need X anymore", "I no longer want X": a request to delete X.
UNWANTED = (("don", "t", "need"), ("don", "t", "want"), ("do", "not", "need"), ("do", "not", "want"),
            ("no", "longer", "need"), ("no", "longer", "want"))
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|'[^']*'(?!\w)|‘[^’]*’")
_CLAUSE = re.compile(r"[,;.!?:]|\b(?:and|then|but)\b", re.IGNORECASE)


def _before_a_name(ws: list[str]) -> list[str]:
    """The words before a naming word ("make an alarm labelled Call mom" → "make an alarm")."""
    cut = next((k for k, w in enumerate(ws) if w in NAMING_WORDS), len(ws))
    return ws[:cut]


def requested_deeds(instruction: str) -> frozenset[str]:
    """The kinds of sensitive deed ("payment", "message", "deletion", "call", "install") the
    instruction asks for: a clause whose verb, after lead-in words, requests one. Quoted text
    is what to type, not what to do ("Send 'delete it' to Ana" asks for a message only); a
    question ("What was the last message Ana sent?") asks for none."""
    text = _QUOTED.sub(" ", unicodedata.normalize("NFKC", instruction))
    deeds: set[str] = set()
    clauses = [normalize(c).split() for c in _CLAUSE.split(text)]
    for n, ws in enumerate(clauses):
        if any(_has_phrase(ws, phrase) for phrase in UNWANTED):
            deeds.add("deletion")
        i = 0
        while i < len(ws) and ws[i] in REQUEST_LEAD_INS and ws[i] not in REQUEST_VERBS and ws[i] not in REQUEST_PHRASES:
            i += 1
        earlier = set().union(*clauses[:n])  # "can the 5:00 alarm be removed" spans two clauses
        for k in range(1, len(ws) - 1):
            if not PASSIVE_MODALS & (earlier | set(ws[:k])):
                continue
            if ws[k] == "be" and ws[k + 1] in PASSIVE_REQUESTS:
                deeds.add(PASSIVE_REQUESTS[ws[k + 1]])
            elif ws[k] == "come" and ws[k + 1] in ("out", "off"):  # "the Milk should come out of my cart"
                deeds.add("deletion")
        if i == len(ws) or (n > 0 and clauses[n - 1][-1:] and clauses[n - 1][-1] in NAMING_WORDS):
            continue  # "label: Call mom" names an alarm; it asks for no call
        head = ws[i]
        if head == "phone" and i + 1 < len(ws) and ws[i + 1].isdigit():
            continue  # "phone +1 718 555 8964": a number given, not a call asked for
        if head in ("a", "an", "my") and i + 2 < len(ws) and ws[i + 1] in REQUEST_NOUNS and ws[i + 2] == "to":
            deeds.add(REQUEST_NOUNS[ws[i + 1]])
        if head == "get" and _has_phrase(ws[i + 1:], ("on", "the", "phone")):  # "get Ana on the phone"
            deeds.add("call")
        if head in REQUEST_VERBS and not (i + 1 < len(ws) and ws[i + 1] in NOT_A_REQUEST.get(head, ())):
            deeds.add(REQUEST_VERBS[head])
        # "get me 2 X and 2 Y from the shop": the later clauses count, up to a name
        rest = set(_before_a_name(ws[i + 1:] + [w for later in clauses[n + 1:] for w in later]))
        for after, kind in REQUEST_PHRASES.get(head, ()):
            if after & rest:
                deeds.add(kind)
    return frozenset(deeds)


_TIME = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])")


def named_times(text: str) -> frozenset[str]:
    """The clock times a text names, as H:MM ("07:30" and "7:30" are one time)."""
    return frozenset(f"{int(h)}:{m}" for h, m in _TIME.findall(unicodedata.normalize("NFKC", text)))


# Words after a deletion verb that say what kind of thing goes, not which one ("Clear Chat",
# "Delete for everyone", "Remove from cart"): such a button names no object to check.
GENERIC_OBJECTS = frozenset({
    "all", "everything", "selected", "this", "it", "them", "for", "from", "everyone", "me", "device", "cart",
    "chat", "chats", "history", "storage", "data", "cache", "trash", "query", "item", "items", "alarm", "alarms",
    "contact", "contacts", "note", "notes", "message", "messages", "conversation", "photo", "photos", "file",
    "files", "account", "app", "download", "downloads", "recording", "event", "list", "draft", "drafts",
})


def named_object(label: str) -> str | None:
    """The particular thing a deletion button names, normalized ("Remove Coffee" → "coffee",
    "Remove Ana Lee" → "ana lee"); None when the label names only a kind of thing ("Delete",
    "Clear chat", "Delete alarm 13:45": times are checked on their own)."""
    parts = unicodedata.normalize("NFKC", label).split()
    if len(parts) < 2 or REQUEST_VERBS.get(normalize(parts[0])) != "deletion":
        return None
    rest = parts[1:]
    if not all(p[:1].isupper() for p in rest) or GENERIC_OBJECTS.intersection(normalize(" ".join(rest)).split()):
        return None
    return normalize(" ".join(rest))


_ORDER_LINE = re.compile(r"^\s*(\d+)\s*[×x]\s*\S")  # "2 × $1.50": a quantity line under an item's name


def order_lines(screen: Screen) -> list[tuple[str, int]]:
    """The (item, quantity) pairs an order on ``screen`` lists: a name above an "N × price"
    line, as carts and order summaries show them; empty when the screen lists none."""
    found, before = [], None
    for element in screen.elements:
        match = _ORDER_LINE.match(element.label)
        if match and before:
            found.append((before, int(match.group(1))))
        before = element.label if element.label and not element.clickable else None
    return found


_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
# Words before an item that leave its count open ("the Oranges in my cart", "some Apples").
_OPEN_COUNT = frozenset({"the", "my", "your", "our", "this", "that", "these", "those", "some", "few", "several",
                         "all", "more", "extra", "any", "many", "lots", "of", "couple", "pair", "dozen", "enough"})


def asked_count(name: str, instruction_words: str) -> int | None:
    """How many of ``name`` (normalized) the instruction (normalized, space-padded) asks for: the
    number or number word before it ("2 Butter", "two Butter", "a Butter"), 1 when it is named
    bare ("Buy Pasta", "get me Pasta and pay for it"), None when the words leave it open ("the
    Oranges in my cart", "some Apples") or it is not named."""
    before = re.findall(rf"(?<= )(\S+) {re.escape(name)} ", instruction_words)
    if not before and not instruction_words.startswith(f" {name} "):
        return None
    counts = (int(w) if w.isdigit() else _COUNT_WORDS.get(w) for w in before)
    given = next((c for c in counts if c is not None), None)
    if given is not None:
        return given
    return None if any(w in _OPEN_COUNT for w in before) else 1


def order_not_asked(screen: Screen, instruction_words: str) -> str | None:
    """What of the order on ``screen`` the instruction (normalized, space-padded) does not ask
    for: an item it does not name, or another quantity than it asks for (``asked_count``: "Buy
    2 Butter" or "Buy Butter" with 4 Butter in the cart); None when the order matches or none is
    shown. An instruction that names no item of the order ("Check out my cart") takes the cart as
    it is."""
    lines = order_lines(screen)
    named = [f" {normalize(item)} " in instruction_words for item, _ in lines]
    for (item, qty), is_named in zip(lines, named):
        name = normalize(item)
        if not is_named and any(named):
            return f"the order holds {item}, which the task does not name"
        asked = asked_count(name, instruction_words) if is_named else None
        if asked is not None and asked != qty:
            return f"the order holds {qty} {item}, the task asks for {asked}"
    if lines:  # "Buy 2 Butter and 1 Tea" with no Butter in the order
        first_words = {normalize(item).split()[0] for item, _ in lines if normalize(item)}
        for count, word in re.findall(r" (\d+) (\w+)(?= )", instruction_words):
            if word not in first_words and not word.isdigit():
                return f"the task asks for {count} {word}, the order has none"
    return None


# Capitalized words that are not part of a name the instruction gives ("Hey, Message Ana").
_NOT_NAME_WORDS = frozenset({"hey", "hi", "hello", "ok", "okay", "quick", "one", "thanks", "thank", "please", "pls",
                             "sms", "dm", "asap", "i d", "i m", "i ll", "i ve"})  # "I'd like you to …"
_WORD = re.compile(r"[^\W\d_][\w'’.-]*")


def named_people(instruction: str) -> list[str]:
    """The names an instruction gives (normalized): runs of capitalized words outside quotes,
    less request and politeness words ("Message Umar Cook 'hi'" → ["umar cook"]). Who a
    message or call goes to is among them when the user wrote it with capitals."""
    text = _QUOTED.sub(" | ", unicodedata.normalize("NFKC", instruction))
    skip = REQUEST_LEAD_INS | set(REQUEST_VERBS) | set(REQUEST_PHRASES) | _NOT_NAME_WORDS
    names, run = [], []
    for token in re.split(r"(\s+)", text):
        word = _WORD.fullmatch(token.strip(",;:!?"))
        if word and token[:1].isupper() and normalize(word.group()) not in skip:
            run.append(word.group().removesuffix("'s").removesuffix("’s"))
            if token.rstrip()[-1:] in ",;:!?":  # "Ana, hi" ends the name at the comma
                names.append(normalize(" ".join(run)))
                run = []
        elif not token.isspace():
            if run:
                names.append(normalize(" ".join(run)))
            run = []
    if run:
        names.append(normalize(" ".join(run)))
    return [n for n in names if n]


def recipient_not_named(screen: Screen, names: Sequence[str]) -> str | None:
    """Why a message or call on ``screen`` does not go to anyone the instruction names: it names
    people (``names``), and none of them is on the screen (a conversation shows who it is with;
    a contact page, whom it calls). None when one is there, or the instruction names no one."""
    if not names:
        return None
    shown = [f" {normalize(e.label)} " for e in screen.elements if e.label]
    if any(f" {name} " in label for name in names for label in shown):
        return None
    return f"the task names {', '.join(names)}, and this screen does not show {'them' if len(names) > 1 else 'it'}"


def deed_kind(reason: str) -> str:
    """The kind of deed a ``sensitive_reason`` names: the word before its colon."""
    return reason.split(":", 1)[0]


# What ``--sensitive`` may say (``run`` and ``demo``): put each sensitive step to the user,
# refuse them all, let those of the kinds the task asks for run (``allow``), or let them all run.
SENSITIVE_POLICIES = ("ask", "deny", "allow", "allow-all")


@dataclass
class ConfirmationGate:
    """Decides whether a sensitive action may run.

    ``confirm`` is asked when set (interactive runs); otherwise ``allow_sensitive`` decides
    (the ``--allow-sensitive`` flag). Every decision is recorded in the trace.
    """

    allow_sensitive: bool = False
    confirm: ConfirmCallback | None = None
    task_scoped: bool = False  # allow only the deeds the task asks for (``allow``, not ``allow-all``)
    asked: frozenset[str] | None = None  # those deeds, once ``for_task`` has read the instruction
    times: frozenset[str] = frozenset()  # the clock times the instruction names
    words: str = ""  # the instruction, normalized: a deletion button's named object must be in it
    people: tuple[str, ...] = ()  # the names it gives: a message or call must go to one of them

    @classmethod
    def for_policy(cls, policy: str, confirm: ConfirmCallback | None = None) -> ConfirmationGate:
        """The gate of a ``--sensitive`` policy: ``allow`` lets a sensitive step run when the
        task asks for its kind of deed, ``allow-all`` lets every one run, ``deny`` refuses
        them, ``ask`` puts each to ``confirm``; with no one to ask (``confirm`` None: no
        terminal) an unanswered question is a no, so ``ask`` denies."""
        if policy not in SENSITIVE_POLICIES:
            raise ValueError(f"sensitive policy {policy!r}: expected one of {', '.join(SENSITIVE_POLICIES)}")
        if policy == "ask" and confirm is not None:
            return cls(confirm=confirm)
        return cls(allow_sensitive=policy in ("allow", "allow-all"), task_scoped=policy == "allow")

    def for_task(self, instruction: str) -> ConfirmationGate:
        """This gate for one task: a scoped gate learns the deeds the instruction asks for."""
        if not self.task_scoped:
            return self
        return replace(self, asked=requested_deeds(instruction), times=named_times(instruction),
                       words=f" {normalize(instruction)} ", people=tuple(named_people(instruction)))

    @property
    def in_effect(self) -> str:
        """What the gate does with a sensitive step: ask, deny, allow (what the task asks) or allow-all."""
        if self.confirm is not None:
            return "ask"
        if not self.allow_sensitive:
            return "deny"
        return "allow" if self.task_scoped else "allow-all"

    def check(self, action: Action, screen: Screen | None) -> tuple[bool, str | None]:
        reason = sensitive_reason(action, screen)
        if reason is None:
            return True, None
        if self.confirm is not None:
            return bool(self.confirm(action, reason)), reason
        if self.allow_sensitive and self.task_scoped:
            if deed_kind(reason) not in (self.asked or ()):
                asked = ", ".join(sorted(self.asked or ())) or "no sensitive deed"
                return False, f"{reason} (not asked for: the task asks for {asked})"
            # The deed is asked for, but of another object: "Delete the 16:00 alarm" does not
            # consent to a tap on "Delete alarm 13:45".
            other = named_times(reason) - self.times
            if self.times and other:
                return False, f"{reason} (not asked for: the task names {', '.join(sorted(self.times))}, not {', '.join(sorted(other))})"
            # "Remove Oranges from my cart" does not consent to a tap on "Remove Coffee".
            element = target_element(action, screen) if deed_kind(reason) == "deletion" and screen else None
            thing = named_object(element.label) if element is not None else None
            if thing and f" {thing} " not in self.words:
                return False, f"{reason} (not asked for: the task does not name {thing!r})"
            # "Buy 2 Butter and 1 Tea" does not consent to paying for 1 Butter, or for Rice.
            wrong = order_not_asked(screen, self.words) if deed_kind(reason) == "payment" and screen else None
            if wrong:
                return False, f"{reason} (not asked for: {wrong})"
            # "Message Umar Cook" does not consent to sending in the thread with Uma Green.
            stranger = (recipient_not_named(screen, self.people)
                        if deed_kind(reason) in ("message", "call") and screen else None)
            if stranger:
                return False, f"{reason} (not asked for: {stranger})"
        return self.allow_sensitive, reason
