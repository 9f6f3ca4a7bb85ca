"""Clock: the alarm list (switch and delete per alarm) and a time picker to add one."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App, confirm
from android_bridge.emulator.widgets import Button, Dialog, IconButton, ListItem, Page, Row, Switch, Text, View
from android_bridge.emulator.world import Alarm, format_time

DIGITS = "0123456789"


class ClockApp(App):
    name = "Clock"
    package = "com.edgeagent.clock"
    color = "#1967d2"

    def page_main(self) -> Page:
        rows: list[View] = []
        for alarm in self.world.alarms:
            t = alarm.time
            rows.append(ListItem(
                desc=t, subtitle=alarm.label, height=80, rid="alarm", style="alarm",
                trailing=[
                    self._alarm_switch(alarm),
                    IconButton(desc=f"Delete alarm {t}", icon="delete", rid="delete_alarm", sensitive=True,
                               on_tap=lambda a=alarm: self.show_dialog("delete", hour=a.hour, minute=a.minute)),
                ],
            ))
        return Page(
            title="Clock",
            body=[self.list_view("alarms", rows, 80, empty_text="No alarms")],
            fab=IconButton(desc="Add alarm", icon="plus", on_tap=lambda: self.go("new_alarm"), rid="fab"),
        )

    def page_new_alarm(self) -> Page:
        body: list[View] = [
            Text(text="Hour (0-23) and minute", style="secondary", height=32),
            self._spinner("hour", "Hour", 24),
            self._spinner("minute", "Minute", 60),
            self.field("label", "Label (optional)", max_len=30),
        ]
        if self.top.notice:
            body.append(Text(text=self.top.notice, style="error", rid="error"))
        body.append(Button(text="Save", on_tap=self._save, rid="save"))
        return Page(title="New alarm", on_up=self.up, body=body)

    def dialog_delete(self, hour: int, minute: int) -> Dialog:
        t = format_time(hour, minute)
        return confirm(f"Delete alarm {t}?", "This alarm will be removed.", "Delete",
                       on_confirm=lambda: self._delete(hour, minute), on_cancel=self.close_dialog)

    # --- behaviour --------------------------------------------------------------------
    def _spinner(self, fid: str, hint: str, modulo: int) -> Row:
        """A number field between - and + buttons, as Android's time picker in keyboard mode."""
        def step(delta: int) -> None:
            current = int(self.value(fid)) if self.value(fid).isdigit() else 0
            new = (current + delta) % modulo
            self.top.fields[fid] = str(new) if fid == "hour" else f"{new:02d}"

        return Row(items=[
            IconButton(desc=f"{hint} down", icon="minus", on_tap=lambda: step(-1), rid=f"{fid}_down"),
            self.field(fid, hint, allowed=DIGITS, max_len=2),
            IconButton(desc=f"{hint} up", icon="plus", on_tap=lambda: step(+1), rid=f"{fid}_up"),
        ], height=64)

    def _alarm_switch(self, alarm: Alarm) -> Switch:
        def toggle() -> None:
            alarm.enabled = not alarm.enabled

        return Switch(desc=f"Alarm {alarm.time}", is_on=alarm.enabled, on_tap=toggle, rid="alarm_switch",
                      width=64, height=48)

    def _save(self) -> None:
        hour, minute = self.value("hour"), self.value("minute")
        if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
            self.top.notice = "Enter an hour 0-23 and a minute 0-59"
            return
        h, m = int(hour), int(minute)
        existing = self.world.alarm(h, m)
        if existing is not None:
            existing.enabled = True
            existing.label = self.value("label") or existing.label
        else:
            self.world.alarms.append(Alarm(h, m, enabled=True, label=self.value("label")))
            self.world.alarms.sort(key=lambda a: (a.hour, a.minute))
        self.up()

    def _delete(self, hour: int, minute: int) -> None:
        self.world.alarms[:] = [a for a in self.world.alarms if (a.hour, a.minute) != (hour, minute)]
        self.close_dialog()

