"""Notes: a list of notes and an editor (title, text) to create, edit and delete them."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App, confirm
from android_bridge.emulator.widgets import Button, Dialog, IconButton, ListItem, Page, Text, View
from android_bridge.emulator.world import Note


class NotesApp(App):
    name = "Notes"
    package = "com.edgeagent.notes"
    color = "#f9ab00"

    def page_main(self) -> Page:
        rows: list[View] = [
            ListItem(desc=n.title, rid="note", on_tap=lambda n=n: self._open(n.title))
            for n in self.world.notes
        ]
        return Page(
            title="Notes",
            body=[self.list_view("notes", rows, 64, empty_text="No notes")],
            fab=IconButton(desc="New note", icon="plus", on_tap=lambda: self.go("editor", title=None), rid="fab"),
        )

    def page_editor(self, title: str | None) -> Page:
        body: list[View] = [
            self.field("title", "Title", max_len=40),
            self.field("body", "Note text", multiline=True, height=200, max_len=400),
        ]
        if self.top.notice:
            body.append(Text(text=self.top.notice, style="error", rid="error"))
        body.append(Button(text="Save", on_tap=lambda: self._save(title), rid="save"))
        actions = []
        if title is not None:
            actions.append(IconButton(desc="Delete note", icon="delete", rid="delete", sensitive=True,
                                      on_tap=lambda: self.show_dialog("delete", title=title)))
        return Page(title="Edit note" if title is not None else "New note", on_up=self.up, actions=actions, body=body)

    def dialog_delete(self, title: str) -> Dialog:
        return confirm("Delete this note?", f"\"{title}\" will be deleted.", "Delete",
                       on_confirm=lambda: self._delete(title), on_cancel=self.close_dialog)

    # --- behaviour --------------------------------------------------------------------
    def _open(self, title: str) -> None:
        note = self.world.note(title)
        if note is not None:
            self.go("editor", fields={"title": note.title, "body": note.body}, title=title)

    def _save(self, original_title: str | None) -> None:
        title, body = self.value("title").strip(), self.value("body")
        if not title:
            self.top.notice = "Give the note a title"
            return
        clash = self.world.note(title)
        if clash is not None and title != original_title:
            self.top.notice = f"A note called {title} exists"
            return
        note = self.world.note(original_title) if original_title is not None else None
        if note is None:
            self.world.notes.append(Note(title, body))
        else:
            note.title, note.body = title, body
        self.up()

    def _delete(self, title: str) -> None:
        self.world.notes[:] = [n for n in self.world.notes if n.title != title]
        self.close_dialog()
        self.up()
