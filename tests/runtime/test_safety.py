"""The confirmation gate judges what a tap means: real apps' labels, Unicode tricks, words on
child views, Enter in a message field, unknown buttons on payment and compose screens."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from android_bridge.actions import Action
from android_bridge.device import Screen
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.uitree import UIElement, parse_dump
from edgeagent.agent.loop import run_agent
from edgeagent.agent.safety import ConfirmationGate, normalize, sensitive_element, sensitive_reason

LABELS = Path(__file__).resolve().parents[1] / "data" / "real_app_labels.csv"
FIELD = {"text": "text", "content-desc": "content_desc", "resource-id": "resource_id"}
# What makes a screen a payment or a compose screen in the table's "screen" column.
CONTEXT = {
    "payment": UIElement(index=90, text="Total: $23.40", bounds=(0, 0, 100, 20)),
    "compose": UIElement(index=90, class_name="android.widget.EditText", hint="Type a message",
                         resource_id="com.app:id/compose_text", clickable=True, bounds=(0, 20, 80, 40)),
}


def _screen(*elements: UIElement) -> Screen:
    return Screen(Image.new("RGB", (200, 200)), list(elements), (200, 200))


def _button(**fields) -> UIElement:
    return UIElement(index=0, clickable=True, bounds=(100, 100, 180, 140), class_name="android.widget.Button",
                     **fields)


def _gate_says(row: dict) -> str | None:
    element = _button(**{FIELD[row["attribute"]]: row["value"]})
    context = [CONTEXT[row["screen"]]] if row["screen"] else []
    reason = sensitive_reason(Action(action="tap", index=0), _screen(element, *context))
    return reason.split(":", 1)[0] if reason else None


def label_table_figures() -> dict:
    rows = list(csv.DictReader(LABELS.open(encoding="utf-8")))
    sensitive = [r for r in rows if r["expected"] != "benign"]
    benign = [r for r in rows if r["expected"] == "benign"]
    missed = [r for r in sensitive if _gate_says(r) != r["expected"]]
    false_positives = [r for r in benign if _gate_says(r) is not None]
    return {
        "labels": len(rows), "sensitive": len(sensitive), "benign": len(benign),
        "recall": 1 - len(missed) / len(sensitive), "false_positive_rate": len(false_positives) / len(benign),
        "missed": [(r["app"], r["value"]) for r in missed],
        "false_positives": [(r["app"], r["value"]) for r in false_positives],
        "apps": len({r["app"] for r in rows}),
    }


def test_real_app_labels_recall_and_false_positives() -> None:
    """Every sensitive label of the table is gated with the right kind; at most 5 % of the
    benign ones are (the figures the issue asks for)."""
    f = label_table_figures()
    assert f["labels"] >= 60 and f["sensitive"] >= 30 and f["benign"] >= 30 and f["apps"] >= 20
    assert f["missed"] == [] and f["recall"] == 1.0
    assert f["false_positive_rate"] <= 0.05, f["false_positives"]


def test_the_labels_the_report_found_ungated_are_gated() -> None:
    for label, kind in [("Pay now", "payment"), ("Send message", "message"), ("Send money", "payment"),
                        ("Checkout", "payment"), ("Place your order", "payment"), ("Buy", "payment"),
                        ("Confirm and pay", "payment"), ("Delete all", "deletion"), ("Remove", "deletion"),
                        ("Uninstall", "install"), ("Transfer money", "payment")]:
        assert sensitive_element(_button(text=label)) == kind, label


def test_unicode_disguises_do_not_hide_a_label() -> None:
    assert normalize("P\u200bay") == "pay" and normalize("Ｐａｙ") == "pay"
    for disguised in ("P\u200bay", "Ｐａｙ", "P\u00adA\u2060Y", "\u202ePay", "PAY", "Check\u200dout", "btn_payNow"):
        attribute = "resource_id" if disguised.startswith("btn") else "text"
        assert sensitive_element(_button(**{attribute: disguised})) == "payment", repr(disguised)


def test_words_on_a_child_view_count_for_the_clickable_parent() -> None:
    """A clickable container whose "Pay" text sits on a non-clickable child: tapped by the
    container's index, by the child's index, or by a point on it, the gate sees "Pay"."""
    xml = """<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation="0">
    <node index="0" class="android.widget.FrameLayout" bounds="[0,0][1080,2400]">
      <node index="0" class="android.widget.TextView" text="Order summary" bounds="[0,0][1080,200]" />
      <node index="1" class="android.view.ViewGroup" resource-id="com.shop:id/cta" clickable="true" bounds="[0,2200][1080,2400]">
        <node index="0" class="android.widget.LinearLayout" bounds="[0,2200][1080,2400]">
          <node index="0" class="android.widget.TextView" text="Pay" bounds="[400,2250][680,2350]" />
        </node>
      </node>
      <node index="2" class="android.view.ViewGroup" clickable="true" bounds="[0,1000][1080,1200]">
        <node index="0" class="android.widget.Button" text="Delete" clickable="true" bounds="[900,1000][1080,1200]" />
        <node index="1" class="android.widget.TextView" text="Groceries" bounds="[0,1000][800,1200]" />
      </node>
    </node></hierarchy>"""
    screen = _screen(*parse_dump(xml))
    container = next(e for e in screen.elements if e.resource_id == "com.shop:id/cta")
    child = next(e for e in screen.elements if e.text == "Pay")
    assert container.label == "cta" and container.inner_text == ("Pay",)
    assert sensitive_reason(Action(action="tap", index=container.index), screen).startswith("payment")
    assert sensitive_reason(Action(action="tap", index=child.index), screen).startswith("payment")
    assert sensitive_reason(Action(action="tap", x=540, y=2300), screen).startswith("payment")
    # A row's own clickable "Delete" is its own target: the row itself is not a deletion.
    row = next(e for e in screen.elements if e.clickable and e.inner_text == ("Groceries",))
    assert sensitive_reason(Action(action="tap", index=row.index), screen) is None
    assert sensitive_reason(Action(action="tap", x=1000, y=1100), screen).startswith("deletion")


def test_enter_in_a_message_field_is_a_send() -> None:
    field = UIElement(index=0, class_name="android.widget.EditText", hint="Message", resource_id="com.app:id/compose",
                      clickable=True, focused=True, bounds=(0, 150, 150, 190))
    search = UIElement(index=0, class_name="android.widget.EditText", hint="Search", resource_id="com.app:id/search_src_text",
                       clickable=True, focused=True, bounds=(0, 0, 200, 40))
    on_compose, on_search = _screen(field), _screen(search)
    assert sensitive_reason(Action(action="type", text="hello\n", index=0), on_compose).startswith("message")
    assert sensitive_reason(Action(action="type", text="hello\n"), on_compose).startswith("message")  # focused field
    assert sensitive_reason(Action(action="type", text="hi\nthere"), on_compose).startswith("message")
    assert sensitive_reason(Action(action="type", text="hello", index=0), on_compose) is None  # no Enter, no send
    assert sensitive_reason(Action(action="type", text="shoes\n", index=0), on_search) is None  # Enter searches


def test_an_unknown_button_counts_as_the_deed_on_a_payment_or_compose_screen() -> None:
    arrow = _button(content_desc="→")
    nameless = _button(resource_id="com.app:id/fab")
    cancel = _button(text="Cancel")
    for context, kind in (("payment", "payment"), ("compose", "message")):
        for element in (arrow, nameless, _button(text="Continue"), _button(text="OK")):
            reason = sensitive_reason(Action(action="tap", index=0), _screen(element, CONTEXT[context]))
            assert reason is not None and reason.startswith(kind), (element, context)
        assert sensitive_reason(Action(action="tap", index=0), _screen(cancel, CONTEXT[context])) is None
    # Elsewhere an unknown button is not a deed.
    assert sensitive_reason(Action(action="tap", index=0), _screen(arrow)) is None
    # "Total storage" on a settings screen is no payment screen: a total needs a currency.
    storage = UIElement(index=1, text="Total storage 64 GB", bounds=(0, 0, 100, 20))
    assert sensitive_reason(Action(action="tap", index=0), _screen(arrow, storage)) is None


def test_a_typed_enter_is_denied_in_a_real_emulated_conversation() -> None:
    """Through the agent loop on the emulated Messages app: "hello" + Enter into the
    conversation's field is refused without confirmation, and nothing is sent."""
    from android_bridge.emulator.tasks import make_task

    phone = EmulatedPhone()
    task = make_task("send_message", 1)
    task.setup(phone)
    phone.launch("Messages")
    sent_before = sum(not m.incoming for m in phone.world.messages)
    class OpenThenType:
        def decide(self, instruction, screen, previous):
            from edgeagent.agent.loop import Decision

            field = next((e for e in screen.elements if e.editable and e.resource_id.endswith("compose")), None)
            if field is None:  # open the first conversation
                row = next(e for e in screen.elements if e.clickable and e.label not in ("Navigate up", "New message"))
                return Decision(Action(action="tap", index=row.index))
            return Decision(Action(action="type", index=field.index, text="hello\n"))

    result = run_agent(phone, "say hello", OpenThenType(), max_steps=6, gate=ConfirmationGate())
    assert result.status == "denied", result.to_dict()
    assert result.steps[-1].sensitive.startswith("message")
    assert sum(not m.incoming for m in phone.world.messages) == sent_before
