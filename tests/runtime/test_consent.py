"""Consent scoped to the task: ``--sensitive allow`` lets a sensitive step run only when the
user's instruction asks for that kind of deed; ``allow-all`` is the unscoped allow."""

from __future__ import annotations

import pytest

from android_bridge.actions import Action
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import generate_tasks, make_task
from edgeagent.agent.evaluate import requested_kinds
from edgeagent.agent.loop import Decision, run_agent
from edgeagent.agent.safety import ConfirmationGate, deed_kind, named_object, named_people, requested_deeds

# Templates whose request is impossible on the phone: the words ask for the deed (the
# expert then finds it cannot be done), so the reading is right to see one.
IMPOSSIBLE_DEEDS = {"buy_missing_product", "call_missing_contact", "delete_missing_alarm", "message_missing_contact"}


@pytest.mark.parametrize("text, deeds", [
    ("Buy 1 Butter and 1 Milk", {"payment"}),
    ("Add Tomatoes to the cart and check out", {"payment"}),
    ("could you ring Ana for me?", {"call"}),
    ("Give Ana a ring", {"call"}),
    ("Set an alarm for 7:00 and call it Gym", set()),  # naming, not calling
    ("Tell me my cart total", set()),  # answering, not messaging
    ("What was the last message Ana sent me?", set()),  # a question asks for no deed
    ('Send "delete everything and pay them" to Ana', {"message"}),  # quoted text is what to type
    ("take the Coffee out of my cart", {"deletion"}),
    ("I don't need the 5:15 alarm anymore", {"deletion"}),
    ("Please get me 2 Eggs and 1 Milk from the shop", {"payment"}),
    ("Start a call with Ana Lee", {"call"}),
    ("Place an order for 2 Eggs", {"payment"}),
    ("Get the Eggs out of my cart", {"deletion"}),
    ("Write Ana a message: \"hi\"", {"message"}),
    ("Write a note \"Ideas\" with \"stamps\" in it", set()),
    ("Turn on Wi-Fi", set()),
    ("", set()),
    ("purge Vera Singh from my contacts asap", {"deletion"}),
    ("Hmm, can the 5:00 alarm be removed?", {"deletion"}),  # a passive request
    ("It will be sent tomorrow", set()),  # a passive statement
    ("Get 1 Tea and 2 Milk and complete the order", {"payment"}),
    ("Right, a message to Ana Lee: \"on my way\"", {"message"}),
    ("My answer to Carol Evans is \"the train is delayed\"", {"message"}),
    ("Tell me what my answer to Ana was", set()),
    ("a call to Ivan Garcia, please", {"call"}),
    ("Would you get Elena Collins on the phone?", {"call"}),
    ("Get me Ana's phone number", set()),
    ("Time to ring up Carol Chen", {"call"}),
    ("The Milk should come out of my cart", {"deletion"}),
    ("make an alarm for 7:00 labelled Call mom", set()),  # a label names, it asks for no call
    ("alarm: 20:55, label: Call mom asap", set()),
    ("make a new contact Ana Lee, phone +1 718 555 1234", set()),  # a number given, not a call
])
def test_the_deeds_an_instruction_asks_for(text, deeds) -> None:
    assert requested_deeds(text) == deeds


@pytest.mark.parametrize("phrasing", ["template", "train", "broad", "val", "paraphrase", "heldout"])
def test_every_wording_of_every_template_asks_for_what_its_expert_does(phrasing) -> None:
    """On 300 generated tasks of each phrasing pool: every deed the expert's solution takes is
    one the instruction asks for (a miss would deny a legitimate step), and no task asks for
    a deed its solution does not take (an extra would widen consent), impossible requests aside."""
    missed, extra = [], []
    for task in generate_tasks(300, seed=4242, templates=["all"], phrasing=phrasing):
        want = {deed_kind(r) for r in requested_kinds(task)}
        got = requested_deeds(task.instruction)
        if want - got:
            missed.append((task.instruction, want, got))
        if got - want and task.template not in IMPOSSIBLE_DEEDS:
            extra.append((task.instruction, want, got))
    assert not missed, missed[:5]
    assert not extra, extra[:5]


@pytest.mark.parametrize("phrasing", ["template", "broad", "paraphrase", "heldout"])
def test_the_scoped_gate_never_stops_the_expert(phrasing) -> None:
    """Every generated task's expert solution succeeds under ``--sensitive allow``: the scope
    (deeds and named times) never refuses a step the user asked for."""
    from android_bridge.emulator.expert import expert_action
    from edgeagent.agent.episode import run_episode

    gate = ConfirmationGate.for_policy("allow")
    for task in generate_tasks(200, seed=4343, templates=["all"], phrasing=phrasing):
        result = run_episode(EmulatedPhone(), task, expert_action, 40, gate=gate)
        assert result.success, (task.instruction, result.run.status if result.run else None)


def test_allow_stops_a_deletion_of_another_alarm_than_the_one_named() -> None:
    phone = EmulatedPhone()
    task = make_task("delete_alarm", 11)
    task.setup(phone)
    phone.launch("Clock")
    times = [e.label.removeprefix("Delete alarm ") for e in phone.screen().elements if e.label.startswith("Delete alarm ")]
    wanted = next(t for t in times if t in task.instruction)
    other = next(t for t in times if t != wanted)
    stray = run_agent(phone, task.instruction, TapLabel(f"Delete alarm {other}"), max_steps=4,
                      gate=ConfirmationGate.for_policy("allow"))
    assert stray.status == "denied" and f"not {other}" in stray.steps[-1].sensitive, stray.to_dict()
    asked = run_agent(phone, task.instruction, TapLabel(f"Delete alarm {wanted}", "Delete"), max_steps=4,
                      gate=ConfirmationGate.for_policy("allow"))
    assert asked.status != "denied" and task.check(phone), asked.to_dict()


class TapLabel:
    """A policy that taps the first element with each label in turn (``Pay*``: a label starting
    with "Pay"), then says done."""

    def __init__(self, *labels: str) -> None:
        self.labels = list(labels)

    def decide(self, instruction, screen, previous):
        while self.labels:
            want = self.labels[0]
            element = next((e for e in screen.elements
                            if e.label == want or (want.endswith("*") and e.label.startswith(want[:-1]))), None)
            self.labels.pop(0)
            if element is not None:
                return Decision(Action(action="tap", index=element.index))
        return Decision(Action(action="done", status="complete"))


def _run_in_shop(instruction: str, gate: ConfirmationGate, *labels: str):
    phone = EmulatedPhone()
    task = make_task("remove_from_cart", 3)  # two items in the cart
    task.setup(phone)
    phone.launch("Shop")
    paid_before = len(phone.world.orders)
    result = run_agent(phone, instruction, TapLabel(*labels), max_steps=8, gate=gate)
    return result, len(phone.world.orders) - paid_before


def test_allow_stops_a_payment_the_task_did_not_ask_for_and_allow_all_does_not() -> None:
    # The agent strays from "remove X from my cart" to checking out and paying.
    scoped, paid = _run_in_shop("Remove Oranges from my shopping cart", ConfirmationGate.for_policy("allow"),
                                "Cart", "Checkout", "Pay*")
    assert scoped.status == "denied" and paid == 0, scoped.to_dict()
    assert "not asked for" in scoped.steps[-1].sensitive and scoped.steps[-1].sensitive.startswith("payment")
    unscoped, _ = _run_in_shop("Remove Oranges from my shopping cart", ConfirmationGate.for_policy("allow-all"),
                               "Cart", "Checkout")
    assert unscoped.status != "denied" and any(s.sensitive and s.allowed for s in unscoped.steps)
    # Asked for, the same payment goes through under allow.
    asked, _ = _run_in_shop("Check out my cart", ConfirmationGate.for_policy("allow"), "Cart", "Checkout")
    assert asked.status != "denied" and any(s.sensitive and s.allowed for s in asked.steps), asked.to_dict()


def test_allow_stops_the_removal_of_another_item_than_the_one_named() -> None:
    # The cart holds Oranges and another item; the agent taps the other item's Remove button.
    phone = EmulatedPhone()
    make_task("remove_from_cart", 3).setup(phone)
    other = next(item for item in phone.world.cart if item != "Oranges")
    stray, _ = _run_in_shop("Remove Oranges from my shopping cart", ConfirmationGate.for_policy("allow"),
                            "Cart", f"Remove {other}")
    assert stray.status == "denied" and "does not name" in stray.steps[-1].sensitive, stray.to_dict()
    asked, _ = _run_in_shop("take the oranges out of my cart", ConfirmationGate.for_policy("allow"),
                            "Cart", "Remove Oranges")
    assert asked.status != "denied" and any(s.sensitive and s.allowed for s in asked.steps), asked.to_dict()


def test_allow_stops_a_checkout_of_another_order_than_the_one_asked_for() -> None:
    # The cart holds 1 Oranges and 1 Tea (the remove_from_cart setup).
    wrong_count, paid = _run_in_shop("Buy 2 Oranges and 1 Tea", ConfirmationGate.for_policy("allow"),
                                     "Cart", "Checkout", "Pay*")
    assert wrong_count.status == "denied" and paid == 0 and "asks for 2" in wrong_count.steps[-1].sensitive
    extra, paid = _run_in_shop("Check out my cart with the Oranges", ConfirmationGate.for_policy("allow"),
                               "Cart", "Checkout", "Pay*")
    assert extra.status == "denied" and paid == 0 and "does not name" in extra.steps[-1].sensitive
    missing, paid = _run_in_shop("Buy 1 Oranges, 2 Milk and 1 Tea", ConfirmationGate.for_policy("allow"),
                                 "Cart", "Checkout", "Pay*")
    assert missing.status == "denied" and paid == 0 and "2 milk, the order has none" in missing.steps[-1].sensitive
    asked, _ = _run_in_shop("buy 1 oranges and 1 tea", ConfirmationGate.for_policy("allow"), "Cart", "Checkout")
    assert asked.status != "denied" and any(s.sensitive and s.allowed for s in asked.steps), asked.to_dict()


def test_allow_reads_an_item_named_without_a_number_as_one_of_it() -> None:
    """The SmolLM2 agent added Pasta four times for "I'd like you to get me Pasta and pay for it"
    and the gate let the payment through: a named item had its count checked only after a
    digit. A bare name, "a" or a number word fixes the count; "the", "my", "some" leave it open."""
    from edgeagent.agent.safety import asked_count, normalize

    def count(instruction: str, item: str) -> int | None:
        return asked_count(normalize(item), f" {normalize(instruction)} ")

    assert count("I'd like you to get me Pasta and pay for it", "Pasta") == 1
    assert count("Pasta, then check out", "Pasta") == 1
    assert count("buy two Tea and a Milk", "Tea") == 2 and count("buy two Tea and a Milk", "Milk") == 1
    assert count("Buy 3 Olive oil", "Olive oil") == 3
    assert count("Check out my cart with the Oranges", "Oranges") is None
    assert count("Buy some Apples", "Apples") is None and count("Buy Tea", "Coffee") is None
    # The remove_from_cart setup holds 1 Oranges and 1 Tea: a bare name asks for that one.
    two, paid = _run_in_shop("Buy Oranges and two Tea", ConfirmationGate.for_policy("allow"), "Cart", "Checkout", "Pay*")
    assert two.status == "denied" and paid == 0 and "asks for 2" in two.steps[-1].sensitive, two.to_dict()
    bare, _ = _run_in_shop("get me Oranges and Tea and pay", ConfirmationGate.for_policy("allow"), "Cart", "Checkout")
    assert bare.status != "denied" and any(s.sensitive and s.allowed for s in bare.steps), bare.to_dict()


@pytest.mark.parametrize("label, thing", [
    ("Remove Coffee", "coffee"), ("Remove Ana Lee", "ana lee"), ("Delete", None), ("Clear Chat", None),
    ("Delete alarm 13:45", None), ("Delete for everyone", None), ("Remove from cart", None), ("Pay $3.00", None),
])
def test_the_object_a_deletion_button_names(label, thing) -> None:
    assert named_object(label) == thing


def test_the_gate_reports_which_allow_is_in_effect() -> None:
    assert ConfirmationGate.for_policy("allow").in_effect == "allow"
    assert ConfirmationGate.for_policy("allow-all").in_effect == "allow-all"
    gate = ConfirmationGate.for_policy("allow")
    assert gate.for_task("Call Ana").asked == {"call"} and gate.asked is None  # one gate, many tasks
    assert ConfirmationGate.for_policy("deny").for_task("Call Ana").asked is None  # only allow is scoped


def _in_thread_with(other: str, instruction: str):
    """The agent opens the thread with ``other`` from the Messages list, types and sends."""
    phone = EmulatedPhone()
    phone.launch("Messages")

    class Send:
        steps = iter([("tap", other), ("type", "Message"), ("tap", "Send")])

        def decide(self, instruction, screen, previous):
            kind, label = next(self.steps, ("done", None))
            if kind == "done":
                return Decision(Action(action="done", status="complete"))
            element = next(e for e in screen.elements if e.label == label)
            if kind == "type":
                return Decision(Action(action="type", index=element.index, text="just landed"))
            return Decision(Action(action="tap", index=element.index))

    return run_agent(phone, instruction, Send(), max_steps=6, gate=ConfirmationGate.for_policy("allow"))


def test_allow_stops_a_message_to_someone_the_task_does_not_name() -> None:
    """Seen on the SmolLM2 agent: 'message Umar Cook "just landed"' opened the thread with Uma
    Green and sent it there; the task asks for a message, but not to her."""
    phone = EmulatedPhone()
    phone.launch("Messages")
    threads = [e.label for e in phone.screen().elements if e.clickable and " " in e.label and e.label != "New message"]
    someone = threads[0]
    stray = _in_thread_with(someone, 'message Umar Cook "just landed" pls')
    assert stray.status == "denied" and "the task names umar cook" in stray.steps[-1].sensitive, stray.to_dict()
    asked = _in_thread_with(someone, f'Text {someone} "just landed"')
    assert asked.status != "denied" and any(s.sensitive and s.allowed for s in asked.steps), asked.to_dict()
    lower = _in_thread_with(someone, 'send "just landed" to my sister')  # no name written: the deed is enough
    assert lower.status != "denied", lower.to_dict()


def test_allow_stops_a_call_on_another_contacts_page() -> None:
    phone = EmulatedPhone()
    task = make_task("call_contact", 5)
    task.setup(phone)
    phone.launch("Contacts")
    names = [e.label for e in phone.screen().elements if e.clickable and e.label in {c.name for c in phone.world.contacts}]
    wanted = next(n for n in names if n in task.instruction)
    other = next(n for n in names if n != wanted)
    stray = run_agent(phone, task.instruction, TapLabel(other, "Call"), max_steps=4, gate=ConfirmationGate.for_policy("allow"))
    assert stray.status == "denied" and "does not show it" in stray.steps[-1].sensitive, stray.to_dict()
    phone.launch("Contacts")
    asked = run_agent(phone, task.instruction, TapLabel(wanted, "Call"), max_steps=4, gate=ConfirmationGate.for_policy("allow"))
    assert asked.status != "denied" and any(s.sensitive and s.allowed for s in asked.steps), asked.to_dict()


@pytest.mark.parametrize("text, names", [
    ('message Umar Cook "just landed" pls', ["umar cook"]),
    ("Hey, text Ana: 'running late'", ["ana"]),
    ("Could you ring Vera Patel for me?", ["vera patel"]),
    ("Call Ana's phone", ["ana"]),
    ("Umar Cook needs to know \"x\"", ["umar cook"]),
    ("call my mom", []),
    ("I'd like you to get back to Chloe Lopez with \"just landed\"", ["chloe lopez"]),  # "I'd" is no name
    ("I'm texting Bob Green", ["bob green"]),
])
def test_the_names_an_instruction_gives(text, names) -> None:
    assert named_people(text) == names


def test_a_real_messaging_app_thread_shows_its_recipient_in_the_toolbar() -> None:
    """A Google Messages-like dump: the thread's title is a TextView in the toolbar."""
    from PIL import Image

    from android_bridge.device import Screen
    from android_bridge.uitree import parse_dump
    from edgeagent.agent.safety import recipient_not_named

    xml = """<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation="0">
    <node index="0" class="android.widget.FrameLayout" bounds="[0,0][1080,2400]">
      <node index="0" class="android.widget.TextView" resource-id="com.google.android.apps.messaging:id/conversation_title" text="Ana Lopez" bounds="[160,80][700,160]" />
      <node index="1" class="android.widget.EditText" resource-id="com.google.android.apps.messaging:id/compose_message_text" text="" hint="Text message" clickable="true" bounds="[0,2200][900,2300]" />
      <node index="2" class="android.widget.ImageButton" content-desc="Send SMS" clickable="true" bounds="[900,2200][1080,2300]" />
    </node></hierarchy>"""
    screen = Screen(Image.new("RGB", (1080, 2400)), parse_dump(xml), (1080, 2400))
    assert recipient_not_named(screen, named_people("Text Ana Lopez 'on my way'")) is None
    assert "bob smith" in recipient_not_named(screen, named_people("Text Bob Smith 'on my way'"))
