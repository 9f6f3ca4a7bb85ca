"""The Device interface: what the agent loop needs from a phone.

Two implementations share it: ``AdbDevice`` (real phones and dev boards over the adb server)
and ``EmulatedPhone`` (pure Python, the embedded default). Both speak in the same low-level
primitives a real phone takes over adb (tap, swipe, key events, text input, launch), and
``act`` turns one schema action into those primitives here, once, for every device.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from PIL import Image

from android_bridge.actions import Action
from android_bridge.uitree import UIElement


class DeviceError(RuntimeError):
    """The device could not do what was asked (disconnected, refused, bad target)."""


@dataclass
class Screen:
    """One observation: a screenshot plus the UI elements of the same moment."""

    image: Image.Image
    elements: list[UIElement]
    size: tuple[int, int]  # physical screen size in pixels (width, height)
    app: str | None = None  # foreground app/package when known

    def element(self, index: int) -> UIElement:
        for e in self.elements:
            if e.index == index:
                return e
        raise DeviceError(f"no element with index {index} on this screen (indices 0..{len(self.elements) - 1})")


@dataclass
class Battery:
    """A battery reading, in SI-ish units, with what the device actually reported.

    Every field is optional: a dev board has no battery, a phone may hide current_now.
    ``current_ma`` is positive when discharging (energy leaving the battery), after the
    vendor sign/unit normalisation recorded in ``notes``.
    """

    level_pct: float | None = None
    voltage_v: float | None = None
    current_ma: float | None = None
    charge_counter_mah: float | None = None
    temperature_c: float | None = None
    charging: bool | None = None
    source: str = "unknown"
    timestamp: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)


# Android key codes used by the primitives (android.view.KeyEvent).
KEYCODE_HOME = 3
KEYCODE_BACK = 4
KEYCODE_ENTER = 66
KEYCODE_DEL = 67

SWIPE_MS = 300
LONG_PRESS_MS = 800
WAIT_S = 1.0


class Device(ABC):
    """A phone the agent can observe and act on."""

    def __init__(self) -> None:
        self._last_screen: Screen | None = None

    # --- what each device implements ----------------------------------------------------
    @abstractmethod
    def _capture(self) -> Screen:
        """Take a screenshot and the UI elements now."""

    @abstractmethod
    def size(self) -> tuple[int, int]:
        """Physical screen size (width, height) in pixels."""

    @abstractmethod
    def tap(self, x: int, y: int) -> None: ...

    @abstractmethod
    def swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = SWIPE_MS) -> None:
        """A finger drag; a drag with no movement and a long duration is a long press."""

    @abstractmethod
    def key(self, keycode: int) -> None: ...

    @abstractmethod
    def input_text(self, text: str) -> None:
        """Type ``text`` into the focused field, literally."""

    @abstractmethod
    def launch(self, app: str) -> None:
        """Bring ``app`` (a name the device knows, or an Android package) to the foreground."""

    @abstractmethod
    def battery(self) -> Battery: ...

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # --- shared behaviour ------------------------------------------------------------
    def screen(self) -> Screen:
        self._last_screen = self._capture()
        return self._last_screen

    def _target_point(self, action: Action) -> tuple[int, int]:
        """Where an index/x,y action lands, checked against the screen it was chosen on."""
        w, h = self.size()
        if action.index is not None:
            if self._last_screen is None:
                raise DeviceError("an index action needs a screen() first: indices refer to the last observation")
            el = self._last_screen.element(action.index)
            if action.element is not None and action.element != el.label:
                raise DeviceError(
                    f"element {action.index} is {el.label!r}, but the action names {action.element!r}; refusing to act on a mismatch"
                )
            x, y = el.center
        else:
            assert action.x is not None and action.y is not None
            x, y = action.x, action.y
        if not (0 <= x < w and 0 <= y < h):
            raise DeviceError(f"point ({x}, {y}) is outside the {w}x{h} screen")
        return x, y

    def act(self, action: Action) -> None:
        """Carry out one schema action with the device's primitives."""
        w, h = self.size()
        kind = action.action
        if kind == "tap":
            self.tap(*self._target_point(action))
        elif kind == "long_press":
            x, y = self._target_point(action)
            self.swipe(x, y, x, y, LONG_PRESS_MS)
        elif kind == "type":
            if action.index is not None:
                self.tap(*self._target_point(action))  # focus the field first, as a finger would
            assert action.text is not None
            self.input_text(action.text)
        elif kind in ("swipe", "scroll"):
            if action.index is not None:
                el = self._last_screen.element(action.index) if self._last_screen else None
                x1, y1, x2, y2 = el.bounds if el else (0, 0, w, h)
            else:
                x1, y1, x2, y2 = 0, 0, w, h
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            dx, dy = (x2 - x1) // 3, (y2 - y1) // 3
            # ``swipe`` names the finger's direction; ``scroll`` names where the content goes
            # (scroll down = reveal what is below = finger moves up), as AndroidWorld does.
            finger = action.direction
            if kind == "scroll":
                finger = {"up": "down", "down": "up", "left": "right", "right": "left"}[action.direction]
            vec = {"up": (0, -dy), "down": (0, dy), "left": (-dx, 0), "right": (dx, 0)}[finger]
            self.swipe(cx - vec[0], cy - vec[1], cx + vec[0], cy + vec[1], SWIPE_MS)
        elif kind == "back":
            self.key(KEYCODE_BACK)
        elif kind == "home":
            self.key(KEYCODE_HOME)
        elif kind == "open_app":
            assert action.app is not None
            self.launch(action.app)
        elif kind == "wait":
            self.sleep(WAIT_S)
        elif kind == "done":
            pass  # terminal: the loop stops, nothing to do on the device
        else:  # pragma: no cover - validate() rejects unknown kinds first
            raise DeviceError(f"cannot execute action {kind!r}")
