"""Settings: radio switches on the main page, Display (dark mode, brightness) and About phone."""

from __future__ import annotations

import string

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.widgets import Button, IconButton, ListItem, Page, Row, Slider, Switch, Text, View

BRIGHTNESS_STEP = 10


class SettingsApp(App):
    name = "Settings"
    package = "com.edgeagent.settings"
    color = "#5f6368"

    def page_main(self) -> Page:
        s = self.world.settings
        return Page(
            title="Settings",
            body=[
                Switch(text="Wi-Fi", is_on=s.wifi, on_tap=lambda: self._set_wifi(not s.wifi), rid="wifi"),
                Switch(text="Bluetooth", is_on=s.bluetooth, on_tap=lambda: self._set_bluetooth(not s.bluetooth),
                       rid="bluetooth"),
                Switch(text="Airplane mode", is_on=s.airplane, on_tap=lambda: self._set_airplane(not s.airplane),
                       rid="airplane"),
                ListItem(desc="Display", on_tap=lambda: self.go("display"), rid="display", height=64),
                ListItem(desc="About phone", on_tap=lambda: self.go("about"), rid="about", height=64),
            ],
        )

    def page_display(self) -> Page:
        s = self.world.settings
        return Page(
            title="Display",
            on_up=self.up,
            body=[
                Switch(text="Dark mode", is_on=s.dark_mode, on_tap=self._toggle_dark_mode, rid="dark_mode"),
                # Tapping the level opens a page to type one, as a preference row opens its editor.
                Text(text=f"Brightness: {s.brightness}%", rid="brightness_value", height=40,
                     on_tap=lambda: self.go("brightness")),
                Row(items=[
                    IconButton(desc="Brightness down", icon="minus", on_tap=lambda: self._set_brightness(s.brightness - BRIGHTNESS_STEP),
                               rid="brightness_down"),
                    Slider(desc="Brightness", value=s.brightness, on_set=self._set_brightness, rid="brightness"),
                    IconButton(desc="Brightness up", icon="plus", on_tap=lambda: self._set_brightness(s.brightness + BRIGHTNESS_STEP),
                               rid="brightness_up"),
                ]),
            ],
        )

    def page_brightness(self) -> Page:
        """A level typed in. The page refuses one past 100 %, so an agent reads the refusal off
        the screen rather than judging the number from the request alone."""
        body: list[View] = [
            Text(text=f"Brightness: {self.world.settings.brightness}%", rid="brightness_value", height=40),
            self.field("brightness_level", "Level (0-100)", allowed=string.digits, max_len=3),
        ]
        if self.top.notice:
            body.append(Text(text=self.top.notice, style="error", rid="error"))
        body.append(Button(text="Set", on_tap=self._set_typed_brightness, rid="set_brightness"))
        return Page(title="Brightness level", on_up=self.up, body=body)

    def page_about(self) -> Page:
        s = self.world.settings
        return Page(
            title="About phone",
            on_up=self.up,
            body=[
                Text(text=f"Model: {s.model_name}", rid="model", height=40),
                Text(text=f"Android version: {s.android_version}", rid="android_version", height=40),
                Text(text=f"Build: EA{s.android_version}.{self.world.seed % 1000:03d}", rid="build", height=40,
                     style="secondary"),
            ],
        )

    # Airplane mode turns the radios off, as on a real phone; they can be turned back on in it.
    def _set_airplane(self, on: bool) -> None:
        s = self.world.settings
        s.airplane = on
        if on:
            s.wifi = False
            s.bluetooth = False

    def _set_wifi(self, on: bool) -> None:
        self.world.settings.wifi = on

    def _set_bluetooth(self, on: bool) -> None:
        self.world.settings.bluetooth = on

    def _toggle_dark_mode(self) -> None:
        self.world.settings.dark_mode = not self.world.settings.dark_mode

    def _set_brightness(self, value: int) -> None:
        self.world.settings.brightness = min(100, max(0, value))

    def _set_typed_brightness(self) -> None:
        typed = self.value("brightness_level")
        if not typed.isdigit() or int(typed) > 100:
            self.top.notice = "Enter a level from 0 to 100"
            return
        self._set_brightness(int(typed))
        self.up()
