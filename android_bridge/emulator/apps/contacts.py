"""Contacts: a searchable list longer than the screen, a contact card (call, message,
delete), and a form to add a contact."""

from __future__ import annotations

from android_bridge.emulator.apps.base import App, confirm
from android_bridge.emulator.widgets import Button, Dialog, IconButton, ListItem, Page, Row, Text, View
from android_bridge.emulator.world import Contact

PHONE_CHARS = "0123456789+-() "


def matches(query: str, contact: Contact) -> bool:
    q = query.strip().casefold()
    return q in contact.name.casefold() or (q != "" and q in contact.phone)


class ContactsApp(App):
    name = "Contacts"
    package = "com.edgeagent.contacts"
    color = "#e8710a"

    def page_main(self) -> Page:
        query = self.value("search")
        rows: list[View] = [
            ListItem(desc=c.name, rid="contact", style="avatar", on_tap=lambda c=c: self.go("contact", name=c.name))
            for c in sorted(self.world.contacts, key=lambda c: c.name.casefold())
            if matches(query, c)
        ]
        return Page(
            title="Contacts",
            actions=[IconButton(desc="Add contact", icon="plus", on_tap=lambda: self.go("new_contact"), rid="add")],
            body=[
                self.field("search", "Search contacts", style="search"),
                self.list_view("contact_list", rows, 64, empty_text="No contacts found"),
            ],
        )

    def page_contact(self, name: str) -> Page:
        contact = self.world.contact(name)
        if contact is None:  # deleted while open
            self.up()
            return self.page_main()
        return Page(
            title=contact.name,
            on_up=self.up,
            actions=[IconButton(desc="Delete contact", icon="delete", rid="delete", sensitive=True,
                                on_tap=lambda: self.show_dialog("delete", name=name))],
            body=[
                Text(text="Mobile", style="secondary", height=24),
                Text(text=contact.phone, rid="phone_number", style="headline", height=40),
                Row(items=[
                    Button(text="Call", on_tap=lambda: self._call(name), sensitive=True, rid="call"),
                    Button(text="Message", style="outlined", on_tap=lambda: self._message(name), rid="message"),
                ]),
            ],
        )

    def page_calling(self, name: str) -> Page:
        return Page(
            title="Call",
            body=[
                Text(text=f"Calling {name}", style="headline", rid="call_status", height=56),
                Text(text="", height=0),
                Button(text="End call", on_tap=self.up, rid="end_call", style="danger"),
            ],
        )

    def page_new_contact(self) -> Page:
        body: list[View] = [
            self.field("name", "Name", max_len=40),
            self.field("phone", "Phone", allowed=PHONE_CHARS, max_len=20),
        ]
        if self.top.notice:
            body.append(Text(text=self.top.notice, style="error", rid="error"))
        body.append(Button(text="Save", on_tap=self._save, rid="save"))
        return Page(title="New contact", on_up=self.up, body=body)

    def dialog_delete(self, name: str) -> Dialog:
        return confirm("Delete contact?", f"{name} will be removed from your contacts.", "Delete",
                       on_confirm=lambda: self._delete(name), on_cancel=self.close_dialog)

    # --- behaviour --------------------------------------------------------------------
    def _call(self, name: str) -> None:
        self.world.call_log.append(name)
        self.go("calling", name=name)

    def _message(self, name: str) -> None:
        self.phone.launch("com.edgeagent.messages")
        self.phone.apps["com.edgeagent.messages"].go("conversation", name=name)

    def _save(self) -> None:
        name, phone = self.value("name").strip(), self.value("phone").strip()
        if not name or not any(ch.isdigit() for ch in phone):
            self.top.notice = "Enter a name and a phone number"
            return
        if self.world.contact(name) is not None:
            self.top.notice = f"{name} is already a contact"
            return
        self.world.contacts.append(Contact(name, phone))
        self.world.contacts.sort(key=lambda c: c.name.casefold())
        self.up()

    def _delete(self, name: str) -> None:
        self.world.contacts[:] = [c for c in self.world.contacts if c.name != name]
        self.close_dialog()
        self.up()
