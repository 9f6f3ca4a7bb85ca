"""EmulatedPhone: a pure-Python Android phone with real app state, the embedded default Device.

It takes the same low-level input a phone takes over adb (tap, swipe, key events, text,
launch) and answers with the same uiautomator XML, so the agent loop, the expert policy and
the adb bridge (emulator/adb_server.py serves this object) all see one phone.

Behaviour an agent has to cope with, as on a real phone:
- text goes only to the focused field (tap a field first; typing with nothing focused is lost);
- lists show only the rows that fit; a vertical swipe on a list scrolls it;
- BACK closes a dialog, else goes up one page, else goes home; HOME goes to the launcher;
- a tap outside a dialog cancels it; touches outside the screen are ignored (as a phone does).
- ``launch`` restarts an app on its main page (like ``am start -S``); data is kept.

Sensitive actions (send, pay, delete, call) are marked on the views that perform them;
``is_sensitive`` answers from that ground truth. On any phone the agent's safety gate
(``edgeagent.agent.safety``) applies a label rule instead; the tests check that on every
emulated screen the rule and these marks agree.
"""

from __future__ import annotations

import math
import random

from PIL import Image

from android_bridge.device import (
    KEYCODE_BACK,
    KEYCODE_DEL,
    KEYCODE_ENTER,
    KEYCODE_HOME,
    Battery,
    Device,
    DeviceError,
    Screen,
)
from android_bridge.actions import Action
from android_bridge.emulator.apps import APPS, App, Launcher
from android_bridge.emulator.dump import dump_xml
from android_bridge.emulator.widgets import Frame, StatusBar, layout_page
from android_bridge.emulator.world import World, make_world
from android_bridge.uitree import parse_dump

DEFAULT_SIZE = (1080, 2400)
MIN_SIZE = (240, 400)
# A press held at least this long without moving is a long press (ViewConfiguration's
# default long-press timeout is 400-500 ms).
LONG_PRESS_MS = 500
BATTERY_CAPACITY_MAH = 4500.0
MAH_PER_INPUT = 0.02  # simulated drain per touch/key, so repeated readings move


class EmulatedScreen(Screen):
    """A Screen whose screenshot is drawn only when someone looks at ``image``.

    The expert policy and the trace writer read only the elements; rendering every frame
    would dominate their run time. The laid-out frame is kept, so the picture drawn later is
    the screen of this moment even if the phone has moved on.
    """

    def __init__(self, frame: Frame, elements: list, size: tuple[int, int], app: str | None) -> None:
        self.frame = frame
        self._image: Image.Image | None = None
        super().__init__(image=None, elements=elements, size=size, app=app)  # type: ignore[arg-type]

    @property  # type: ignore[override]
    def image(self) -> Image.Image:
        if self._image is None:
            from android_bridge.emulator.render import render_frame

            self._image = render_frame(self.frame)
        return self._image

    @image.setter
    def image(self, value: Image.Image | None) -> None:
        self._image = value


class EmulatedPhone(Device):
    """A 1080x2400 phone (or ``size``) whose data is fixed by ``seed``."""

    def __init__(self, seed: int = 0, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        size = tuple(size) if size is not None else DEFAULT_SIZE  # type: ignore[assignment]
        if (len(size) != 2 or not all(isinstance(v, int) for v in size)
                or size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1]):
            raise ValueError(f"screen size must be (width, height) integers of at least {MIN_SIZE}, got {size!r}")
        self._size: tuple[int, int] = size  # type: ignore[assignment]
        self.seed = seed
        self.reset(seed)

    # --- state ------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Fresh data from ``seed`` (default: the current one), every app closed, home screen."""
        if seed is not None:
            self.seed = seed
        self.world: World = make_world(self.seed)
        self.apps: dict[str, App] = {cls.package: cls(self) for cls in APPS}
        self.launcher = Launcher(self)
        self.foreground: App = self.launcher
        rng = random.Random(self.seed ^ 0x5EED)
        self._battery_start_pct = 40.0 + rng.random() * 55.0
        self._battery_base_ma = 180.0 + rng.random() * 80.0
        self._inputs = 0
        self._last_screen = None
        self._frame: Frame | None = None

    @property
    def current_app(self) -> str:
        """Package of the app in the foreground (the launcher's on the home screen)."""
        return self.foreground.package

    def app_names(self) -> list[str]:
        return [a.name for a in self.apps.values()]

    def find_app(self, name: str) -> App:
        """An app by display name (any case) or package; DeviceError lists the known ones."""
        key = name.strip().casefold()
        for app in (*self.apps.values(), self.launcher):
            if key in (app.name.casefold(), app.package):
                return app
        if key in ("launcher", "home screen"):
            return self.launcher
        known = ", ".join(f"{a.name} ({a.package})" for a in self.apps.values())
        raise DeviceError(f"unknown app {name!r}; the emulated phone has: {known}")

    def frame(self) -> Frame:
        """The screen as it is now, laid out (cached until the next input changes it)."""
        if self._frame is None:
            page = self.foreground.build()
            s = self.world.settings
            status = StatusBar(
                time=f"{self.world.clock_minutes // 60}:{self.world.clock_minutes % 60:02d}",
                battery_pct=int(self.battery().level_pct or 0),
                wifi=s.wifi, bluetooth=s.bluetooth, airplane=s.airplane,
            )
            self._frame = layout_page(page, self.foreground.package, self._size, status, s.dark_mode)
        return self._frame

    def _changed(self) -> None:
        self._inputs += 1
        self._frame = None

    # --- what a person (or adb) sees ----------------------------------------------------
    def dump_xml(self) -> str:
        """The focused window as ``uiautomator dump`` writes it."""
        return dump_xml(self.frame())

    def screenshot(self) -> Image.Image:
        from android_bridge.emulator.render import render_frame

        return render_frame(self.frame())

    def _capture(self) -> Screen:
        frame = self.frame()
        # Through the XML and the shared parser, so indices are exactly what adb would give.
        elements = parse_dump(dump_xml(frame))
        return EmulatedScreen(frame, elements, self._size, app=frame.package)

    def size(self) -> tuple[int, int]:
        return self._size

    # --- input primitives ---------------------------------------------------------------
    def _on_screen(self, x: int, y: int) -> bool:
        w, h = self._size
        return 0 <= x < w and 0 <= y < h

    def tap(self, x: int, y: int) -> None:
        if not self._on_screen(x, y):
            return  # a phone ignores touches it cannot see; Device.act refuses them earlier
        frame = self.frame()
        if frame.dialog is not None and not frame.dialog.contains(x, y):
            if frame.on_dialog_cancel is not None:
                frame.on_dialog_cancel()
        else:
            view = frame.hit(x, y)
            if view is not None:
                view.tap_at(x, y)
        self._changed()

    def swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = 300) -> None:
        if not self._on_screen(x1, y1):
            return
        frame = self.frame()
        if math.hypot(x2 - x1, y2 - y1) < 8 * frame.dp:
            # A press that does not move. Views here have no long-click action, and Android
            # then clicks on release, so a long press acts as a tap.
            self.tap(x1, y1)
            return
        if abs(y2 - y1) >= abs(x2 - x1):
            # The list under the finger; else the one under the gesture's middle, as a page
            # whose header scrolls with its list (CoordinatorLayout) passes the drag on.
            target = frame.scroll_target(x1, y1) or frame.scroll_target((x1 + x2) // 2, (y1 + y2) // 2)
            if target is not None:
                target.scroll_by_pixels(y1 - y2, frame.dp)  # finger up = content moves up
        self._changed()

    def key(self, keycode: int) -> None:
        if keycode == KEYCODE_HOME:
            self.go_home()
        elif keycode == KEYCODE_BACK:
            if self.foreground is not self.launcher and not self.foreground.back():
                self.go_home()
        elif keycode in (KEYCODE_ENTER, KEYCODE_DEL):
            field = self.frame().focused_field()
            if field is not None:
                if keycode == KEYCODE_DEL:
                    field.delete_char()
                elif field.on_submit is not None:
                    field.on_submit()
        # Other key codes (volume, power, ...) change nothing the agent can see.
        self._changed()

    def input_text(self, text: str) -> None:
        field = self.frame().focused_field()
        if field is not None:  # with nothing focused, the keyboard is not up: text is lost
            field.type_text(text)
        self._changed()

    def launch(self, app: str) -> None:
        target = self.find_app(app)
        target.reset_ui()
        self.foreground = target
        self._changed()

    def go_home(self) -> None:
        self.launcher.reset_ui()
        self.foreground = self.launcher
        self._changed()

    def sleep(self, seconds: float) -> None:
        """Nothing here runs in the background, so waiting only advances the clock."""
        self.world.clock_minutes = (self.world.clock_minutes + max(0, int(seconds // 60))) % (24 * 60)

    def battery(self) -> Battery:
        used_mah = self._inputs * MAH_PER_INPUT
        charge = BATTERY_CAPACITY_MAH * self._battery_start_pct / 100.0 - used_mah
        level = max(0.0, 100.0 * charge / BATTERY_CAPACITY_MAH)
        return Battery(
            level_pct=round(level, 1),
            voltage_v=round(3.45 + 0.0075 * level, 3),  # a rough Li-ion curve, 3.45 V empty to 4.2 V full
            current_ma=round(self._battery_base_ma + 30.0 * math.sin(self._inputs / 3.0), 1),
            charge_counter_mah=round(charge, 2),
            temperature_c=round(31.0 + min(4.0, self._inputs * 0.01), 2),
            charging=False,
            source="emulated",
            notes=["simulated by EmulatedPhone: a simple discharge model, not a measurement"],
        )

    # --- safety -------------------------------------------------------------------------
    def is_sensitive(self, action: Action, screen: Screen | None = None) -> bool:
        """Whether ``action`` would press a view marked sensitive (Send, Pay, Delete, Call) on
        ``screen`` (default: the screen now). Ground truth for the emulator; on other phones
        the safety gate's label rule judges (``edgeagent.agent.safety.sensitive_reason``)."""
        if action.action not in ("tap", "long_press"):
            return False
        frame = screen.frame if isinstance(screen, EmulatedScreen) else self.frame()
        if action.index is not None:
            elements = screen.elements if screen is not None else parse_dump(dump_xml(frame))
            match = [e for e in elements if e.index == action.index]
            if not match:
                return False
            x, y = match[0].center
        else:
            assert action.x is not None and action.y is not None
            x, y = action.x, action.y
        if frame.dialog is not None and not frame.dialog.contains(x, y):
            return False
        view = frame.hit(x, y)
        return bool(view is not None and view.sensitive)
