"""What every emulated app shares: a page stack, per-page field values, focus and scroll
positions, and one dialog at a time.

An app subclass writes ``page_<name>(**args) -> Page`` for each screen and
``dialog_<name>(**args) -> Dialog`` for each dialog; navigation is ``go``/``up``/``show_dialog``.
Data lives in the phone's ``World``; only UI state (what is typed, focused, scrolled) lives
here, so relaunching an app starts it fresh on its main page with the data intact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from android_bridge.emulator.widgets import Dialog, Field, ListView, Page, View
from android_bridge.emulator.world import World

if TYPE_CHECKING:
    from android_bridge.emulator.phone import EmulatedPhone


@dataclass
class PageState:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    scroll: dict[str, int] = field(default_factory=dict)
    focus: str | None = None
    notice: str = ""  # a one-line message (snackbar / form error) shown on the page


class App:
    name: ClassVar[str]  # display name, as on the launcher
    package: ClassVar[str]
    color: ClassVar[str] = "#1a73e8"  # launcher icon colour

    def __init__(self, phone: EmulatedPhone) -> None:
        self.phone = phone
        self.stack: list[PageState] = []
        self.dialog: tuple[str, dict[str, Any]] | None = None
        self.reset_ui()

    @property
    def world(self) -> World:
        return self.phone.world

    # --- navigation -------------------------------------------------------------------
    def reset_ui(self) -> None:
        self.stack = [PageState("main")]
        self.dialog = None

    @property
    def top(self) -> PageState:
        return self.stack[-1]

    def go(self, page: str, /, fields: dict[str, str] | None = None, **args: Any) -> None:
        self.dialog = None
        self.stack.append(PageState(page, args, dict(fields or {})))

    def up(self) -> None:
        self.dialog = None
        if len(self.stack) > 1:
            self.stack.pop()

    def show_dialog(self, dialog: str, /, **args: Any) -> None:
        self.dialog = (dialog, args)

    def close_dialog(self) -> None:
        self.dialog = None

    def back(self) -> bool:
        """Handle the BACK key; False means the app has nothing to close and the phone goes home."""
        if self.dialog is not None:
            self.dialog = None
            return True
        if len(self.stack) > 1:
            self.stack.pop()
            return True
        return False

    def build(self) -> Page:
        state = self.top
        page: Page = getattr(self, f"page_{state.name}")(**state.args)
        if self.dialog is not None:
            name, args = self.dialog
            page.dialog = getattr(self, f"dialog_{name}")(**args)
            if page.dialog.on_cancel is None:
                page.dialog.on_cancel = self.close_dialog
        return page

    # --- widgets bound to the page state --------------------------------------------
    def field(self, fid: str, hint: str, **kwargs: Any) -> Field:
        """A text field whose value and focus live in the current page's state."""
        state = self.top

        def focus() -> None:
            state.focus = fid

        def change(value: str) -> None:
            state.fields[fid] = value

        return Field(text=state.fields.get(fid, ""), hint=hint, rid=fid, has_focus=state.focus == fid,
                     on_tap=focus, on_change=change, **kwargs)

    def value(self, fid: str) -> str:
        return self.top.fields.get(fid, "")

    def list_view(self, lid: str, rows: list[View], row_height: float, empty_text: str = "",
                  start_at_end: bool = False) -> ListView:
        """A list whose scroll position lives in the current page's state."""
        state = self.top
        default = len(rows) if start_at_end else 0  # clamped at layout to the last full screen

        def scroll(offset: int) -> None:
            state.scroll[lid] = offset

        return ListView(rows=rows, row_height=row_height, offset=state.scroll.get(lid, default),
                        on_scroll=scroll, empty_text=empty_text, rid=lid)

    def page_main(self) -> Page:  # pragma: no cover - every app defines its main page
        raise NotImplementedError


def confirm(title: str, message: str, action_label: str, on_confirm: Any, on_cancel: Any) -> Dialog:
    """A confirmation dialog whose confirming button is sensitive (it has consequences)."""
    from android_bridge.emulator.widgets import Button

    return Dialog(
        title=title,
        message=message,
        buttons=[
            Button(text="Cancel", style="text", on_tap=on_cancel, rid="button2"),
            Button(text=action_label, style="text", on_tap=on_confirm, sensitive=True, rid="button1"),
        ],
        on_cancel=on_cancel,
    )
