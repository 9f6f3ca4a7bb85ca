"""Which actions have consequences a person should approve before the agent takes them.

The emulated apps mark the views that send, pay, delete or call (``View.sensitive``), and
``EmulatedPhone.is_sensitive`` answers from those marks. A real phone has no marks, so the
agent's safety gate applies this label rule to the screen it sees instead; the tests check
that on every emulated screen the rule and the marks agree exactly.

The rule reads what a label means ("Pay now", "Confirm and pay", "Delete alarm 7:30"), so
the button that opens a confirming dialog is marked as well as the dialog's own button.
"""

from __future__ import annotations

from android_bridge.device import Screen
from android_bridge.uitree import UIElement
from edgeagent.agent.actions import Action
from edgeagent.agent.safety import sensitive_element, sensitive_reason



def is_sensitive_element(element: UIElement) -> bool:
    return sensitive_element(element) is not None


def is_sensitive_action(action: Action, screen: Screen) -> bool:
    """True when ``action`` taps a sensitive element of ``screen`` (by index or by point)."""
    return sensitive_reason(action, screen) is not None
