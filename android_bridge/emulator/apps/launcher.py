"""The home screen: a clock and a grid of app icons."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.widgets import AppIcon, Page, Row, Text, View

ICONS_PER_ROW = 4


class Launcher(App):
    name = "Home"
    package = "com.edgeagent.launcher"

    def page_main(self) -> Page:
        minutes = self.world.clock_minutes
        icons: list[View] = []
        for app in self.phone.apps.values():
            icons.append(AppIcon(text=app.name, desc=app.name, color=app.color, rid="icon",
                                 on_tap=lambda package=app.package: self.phone.launch(package)))
        rows: list[View] = [
            Row(items=icons[i : i + ICONS_PER_ROW], height=112, margin=8, gap=0)
            for i in range(0, len(icons), ICONS_PER_ROW)
        ]
        return Page(
            title="Home",
            app_bar=False,
            background="wallpaper",
            body=[
                Text(text=f"{minutes // 60}:{minutes % 60:02d}", style="clock", height=112, rid="clock"),
                Text(text="Tuesday, 14 May", style="date", height=32, rid="date"),
                Text(text="", height=0),  # pushes the icon grid to the bottom
                *rows,
                Text(text="", height=16),  # the gesture-bar margin under the dock
            ],
        )
