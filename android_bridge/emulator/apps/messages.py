"""Messages: conversations, a new-message recipient picker and a compose bar with Send."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App
from android_bridge.emulator.apps.contacts import matches
from android_bridge.emulator.widgets import Button, IconButton, ListItem, Page, Row, Text, View
from android_bridge.emulator.world import Message


class MessagesApp(App):
    name = "Messages"
    package = "com.edgeagent.messages"
    color = "#188038"

    def page_main(self) -> Page:
        rows: list[View] = []
        for name in self.world.threads():
            last = self.world.conversation(name)[-1]
            rows.append(ListItem(desc=name, subtitle=last.text, height=72, rid="thread", style="avatar",
                                 on_tap=lambda n=name: self.go("conversation", name=n)))
        return Page(
            title="Messages",
            body=[self.list_view("threads", rows, 72, empty_text="No conversations")],
            fab=IconButton(desc="New message", icon="edit", on_tap=lambda: self.go("new_message"), rid="fab"),
        )

    def page_new_message(self) -> Page:
        query = self.value("to")
        rows: list[View] = [
            ListItem(desc=c.name, rid="recipient", style="avatar",
                     on_tap=lambda c=c: self._open_conversation(c.name))
            for c in sorted(self.world.contacts, key=lambda c: c.name.casefold())
            if matches(query, c)
        ]
        return Page(
            title="New message",
            on_up=self.up,
            body=[
                self.field("to", "To", style="search"),
                self.list_view("recipients", rows, 64, empty_text="No contacts found"),
            ],
        )

    def page_conversation(self, name: str) -> Page:
        # A bubble's content-desc says who wrote it, as messaging apps tell screen readers: the
        # side of the screen a bubble sits on is not in a UI dump, and "the last message X sent
        # me" is not always the last message of the thread.
        bubbles: list[View] = [
            Text(text=m.text, desc="received" if m.incoming else "sent",
                 rid="message_in" if m.incoming else "message_out",
                 style="bubble_in" if m.incoming else "bubble_out", margin=0)
            for m in self.world.conversation(name)
        ]
        return Page(
            title=name,
            on_up=self.up,
            body=[self.list_view("messages", bubbles, 56, start_at_end=True)],
            bottom=[Row(items=[
                self.field("compose", "Message", max_len=200, margin=0),
                Button(text="Send", on_tap=lambda: self._send(name), sensitive=True, rid="send", width=88),
            ], height=56)],
        )

    # --- behaviour --------------------------------------------------------------------
    def _open_conversation(self, name: str) -> None:
        # The picker is replaced by the conversation, so BACK returns to the thread list.
        self.up()
        self.go("conversation", name=name)

    def _send(self, name: str) -> None:
        text = self.value("compose").strip()
        if not text:
            return
        self.world.messages.append(Message(name, text, incoming=False))
        self.top.fields["compose"] = ""
        self.top.scroll.pop("messages", None)  # jump to the newest message
