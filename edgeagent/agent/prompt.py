"""How a screen and a task are written for the model, and how its answer is read back.

The format is designed for a small model to learn (see converters/recipes/):
- one line per UI element, ``[index] role "label"`` plus its state, so a label the
  instruction mentions appears verbatim, quoted, on the screen;
- the model names the element it means (``"element":"Wi-Fi"``) before its ``index``; the
  per-screen grammar (edgeagent.agent.grammar) then allows only the indices carrying that label,
  so the model copies a name instead of doing an index lookup it may never learn;
- the previous action is shown, so multi-step tasks know where they are.

The same text is what ``edgeagent traces`` writes as ``observation``: training and
inference see identical prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from android_bridge.uitree import UIElement

# A chat-free plain format: the built-in model is trained on exactly this, and HF chat models
# get it wrapped in their own chat template by converters.finetune.
TASK_PREFIX = "Task: "
PREVIOUS_PREFIX = "Previous: "
SCREEN_PREFIX = "Screen"
ACTION_PREFIX = "Action: "
MAX_LABEL_CHARS = 40
MAX_ELEMENTS = 40

_ROLES = {
    "android.widget.Button": "button",
    "android.widget.ImageButton": "icon",
    "android.widget.ImageView": "image",
    "android.widget.Switch": "switch",
    "android.widget.ToggleButton": "switch",
    "android.widget.CheckBox": "check",
    "android.widget.RadioButton": "radio",
    "android.widget.EditText": "field",
    "android.widget.AutoCompleteTextView": "field",
    "android.widget.SeekBar": "slider",
    "android.widget.TextView": "text",
}


def role(e: UIElement) -> str:
    r = _ROLES.get(e.class_name)
    if r is None:
        if e.scrollable:
            return "list"
        r = "button" if e.clickable else "text"
    return r


def quote(s: str) -> str:
    return json.dumps(s[:MAX_LABEL_CHARS], ensure_ascii=False)


def element_line(e: UIElement) -> str:
    r = role(e)
    line = f"[{e.index}] {r} {quote(e.label)}"
    if e.checkable or r in ("switch", "check", "radio"):
        line += " on" if e.checked else " off"
    if e.editable:
        line += f" = {quote(e.text)}"
        if e.focused:
            line += " focused"
    elif r != "text" and e.text and e.text != e.label:
        line += f" {quote(e.text)}"
    elif r == "text" and e.content_desc and e.content_desc != e.label:
        line += f" {quote(e.content_desc)}"  # e.g. a message bubble's "received" / "sent"
    if not e.enabled:
        line += " disabled"
    if e.scrollable:
        line += " scrollable"
    return line


def observation_text(elements: Sequence[UIElement], app: str | None = None) -> str:
    """The screen as the model reads it. Screen text is data: it is quoted, never obeyed."""
    head = f"{SCREEN_PREFIX} ({app}):" if app else f"{SCREEN_PREFIX}:"
    lines = [head] + [element_line(e) for e in list(elements)[:MAX_ELEMENTS]]
    return "\n".join(lines)


def build_prompt(instruction: str, observation: str, previous_action: str | None) -> str:
    """Everything before the model's answer. The answer is one action JSON and a newline.

    The task comes last, right before the answer: a small model trained from scratch with
    the task at the top (100+ tokens away) stayed on the plateau where it ignores the task
    for 600 steps (measured with the recipe); next to the answer it is the easiest context
    to attend to.
    """
    prev = previous_action if previous_action else "none"
    return f"{PREVIOUS_PREFIX}{prev}\n{observation}\n{TASK_PREFIX}{instruction}\n{ACTION_PREFIX}"
