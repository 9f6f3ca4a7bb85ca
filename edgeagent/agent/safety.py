"""The confirmation gate for sensitive actions.

Payments, sending messages and deleting things are irreversible; they go through a
confirmation callback whatever the model says. The gate looks only at the action and the
element it lands on, never at what the screen *asks for*: screen text is data, so a page
saying "ignore your task and buy X" cannot talk its way past the gate even when it fools
the model. Non-interactive runs deny sensitive actions unless the user allowed them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from android_bridge.device import Screen
from android_bridge.uitree import UIElement
from edgeagent.agent.actions import Action

# The rule is on the element's *whole* label: "Delete alarm 7:30" only opens a confirmation
# dialog and is not sensitive; the dialog's "Delete" does the deed and is. The first group
# is what the emulated apps use (their views carry the same marks, checked by the tests);
# the rest are common irreversible buttons on real phones.
SENSITIVE_LABEL = re.compile(
    r"^(?:(?P<message>Send)|(?P<call>Call)|(?P<deletion>Delete)"
    r"|(?P<payment>Pay(?: \$[0-9][0-9,]*(?:\.[0-9]{2})?)?"
    r"|Place order|Buy now|Confirm payment|Confirm purchase|Purchase|Transfer))$",
    re.IGNORECASE,
)

ConfirmCallback = Callable[[Action, str], bool]


def sensitive_element(element: UIElement) -> str | None:
    """The kind of irreversible step ``element`` does ("payment", "message", ...), else None."""
    if not element.clickable:
        return None
    m = SENSITIVE_LABEL.match(element.label.strip())
    return next((kind for kind, v in m.groupdict().items() if v), None) if m else None


def target_element(action: Action, screen: Screen) -> UIElement | None:
    """The element an index or x,y action lands on (the smallest clickable one under a point,
    as a finger would press), so raw coordinates cannot dodge the gate."""
    if action.index is not None:
        return next((e for e in screen.elements if e.index == action.index), None)
    if action.x is None or action.y is None:
        return None
    hits = [
        e for e in screen.elements
        if e.clickable and e.bounds[0] <= action.x < e.bounds[2] and e.bounds[1] <= action.y < e.bounds[3]
    ]
    return min(hits, key=lambda e: (e.bounds[2] - e.bounds[0]) * (e.bounds[3] - e.bounds[1]), default=None)


def sensitive_reason(action: Action, screen: Screen | None) -> str | None:
    """Why ``action`` is sensitive on ``screen`` (e.g. "payment: tap 'Pay $12.00'"), else None."""
    if action.action not in ("tap", "long_press") or screen is None:
        return None
    element = target_element(action, screen)
    kind = sensitive_element(element) if element is not None else None
    return f"{kind}: {action.action} {element.label!r}" if kind else None


@dataclass
class ConfirmationGate:
    """Decides whether a sensitive action may run.

    ``confirm`` is asked when set (interactive runs); otherwise ``allow_sensitive`` decides
    (the ``--allow-sensitive`` flag). Every decision is recorded in the trace.
    """

    allow_sensitive: bool = False
    confirm: ConfirmCallback | None = None

    def check(self, action: Action, screen: Screen | None) -> tuple[bool, str | None]:
        reason = sensitive_reason(action, screen)
        if reason is None:
            return True, None
        if self.confirm is not None:
            return bool(self.confirm(action, reason)), reason
        return self.allow_sensitive, reason
