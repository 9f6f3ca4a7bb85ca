"""The emulated phone behaves like a phone where it matters to an agent."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from android_bridge.actions import Action, scale_action, scale_point
from android_bridge.device import KEYCODE_BACK, KEYCODE_DEL, KEYCODE_ENTER, KEYCODE_HOME, DeviceError
from android_bridge.emulator.apps.calculator import evaluate
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.render import draw_action
from android_bridge.uitree import UIElement, parse_dump
from edgeagent.agent.safety import sensitive_reason


# --- helpers: drive the phone the way the agent does, through Device.act ----------------

def find(phone: EmulatedPhone, label: str, **flags: bool) -> UIElement:
    screen = phone.screen()
    for e in screen.elements:
        if e.label == label and all(getattr(e, k) == v for k, v in flags.items()):
            return e
    raise AssertionError(f"no {label!r} on screen: {[e.label for e in screen.elements]}")


def labels(phone: EmulatedPhone) -> list[str]:
    return [e.label for e in phone.screen().elements]


def tap(phone: EmulatedPhone, label: str, **flags: bool) -> None:
    e = find(phone, label, **flags)
    phone.act(Action(action="tap", index=e.index, element=e.label))


def type_into(phone: EmulatedPhone, label: str, text: str) -> None:
    e = find(phone, label)
    phone.act(Action(action="type", index=e.index, element=e.label, text=text))


def title(phone: EmulatedPhone) -> str:
    return next(e.text for e in phone.screen().elements if e.resource_id.endswith(":id/title"))


def field_value(phone: EmulatedPhone, hint: str) -> str:
    return find(phone, hint, editable=True).text


@pytest.fixture
def phone() -> EmulatedPhone:
    return EmulatedPhone(seed=7)


# --- the uiautomator dump ------------------------------------------------------------------

def test_dump_has_the_uiautomator_format(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    xml = phone.dump_xml()
    assert xml.startswith(
        "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation=\"0\">"
        '<node index="0" text="" resource-id="" class="android.widget.FrameLayout" package="com.edgeagent.settings" '
        'content-desc="" checkable="false" checked="false" clickable="false" enabled="true" focusable="false" '
        'focused="false" scrollable="false" long-clickable="false" password="false" selected="false" '
        'bounds="[0,0][1080,2400]">'
    )
    assert xml.endswith("</node></hierarchy>")
    assert "\n" not in xml  # uiautomator writes one line
    wifi = find(phone, "Wi-Fi")
    assert (wifi.class_name, wifi.checkable, wifi.clickable) == ("android.widget.Switch", True, True)
    assert wifi.resource_id == "com.edgeagent.settings:id/wifi"


def test_capture_goes_through_parse_dump(phone: EmulatedPhone) -> None:
    for app in ["Home", *phone.app_names()]:
        phone.launch(app)
        screen = phone.screen()
        assert screen.elements == parse_dump(phone.dump_xml())
        assert [e.index for e in screen.elements] == list(range(len(screen.elements)))
        assert screen.app == phone.current_app
        for e in screen.elements:
            x1, y1, x2, y2 = e.bounds
            assert 0 <= x1 < x2 <= 1080 and 0 <= y1 < y2 <= 2400, (app, e)


def test_xml_special_characters_in_typed_text_survive(phone: EmulatedPhone) -> None:
    phone.launch("Notes")
    tap(phone, "New note")
    tricky = "a<b & c>d \"q\" 'x' ]]> &amp;"
    type_into(phone, "Title", tricky)
    type_into(phone, "Note text", "line 1\nline 2")
    assert field_value(phone, "Title") == tricky
    assert field_value(phone, "Note text") == "line 1\nline 2"
    tap(phone, "Save")
    assert find(phone, tricky, clickable=True)
    assert phone.world.note(tricky).body == "line 1\nline 2"


def test_control_characters_are_dropped_not_fatal(phone: EmulatedPhone) -> None:
    phone.launch("Notes")
    tap(phone, "New note")
    type_into(phone, "Title", "ok\x00\x07\x1bdone")
    assert field_value(phone, "Title") == "okdone"


# --- text fields need focus ----------------------------------------------------------------

def test_typing_with_nothing_focused_does_nothing(phone: EmulatedPhone) -> None:
    phone.launch("Contacts")
    phone.screen()
    phone.act(Action(action="type", text="Alice"))  # no index: goes to the focused field, if any
    assert field_value(phone, "Search contacts") == ""
    assert not find(phone, "Search contacts").focused
    tap(phone, "Search contacts")
    assert find(phone, "Search contacts").focused
    phone.act(Action(action="type", text="Al"))
    phone.input_text("i")
    assert field_value(phone, "Search contacts") == "Ali"
    phone.key(KEYCODE_DEL)
    assert field_value(phone, "Search contacts") == "Al"


def test_focus_moves_between_fields(phone: EmulatedPhone) -> None:
    phone.launch("Contacts")
    tap(phone, "Add contact")
    type_into(phone, "Name", "Zed Example")
    type_into(phone, "Phone", "+1 555 0100 abc")  # the phone field takes only phone characters
    assert field_value(phone, "Name") == "Zed Example"
    assert field_value(phone, "Phone") == "+1 555 0100 "
    assert find(phone, "Phone").focused and not find(phone, "Name").focused


# --- lists scroll --------------------------------------------------------------------------

def test_scrolling_reveals_contacts_below_the_fold(phone: EmulatedPhone) -> None:
    phone.launch("Contacts")
    names = sorted((c.name for c in phone.world.contacts), key=str.casefold)
    assert len(names) == 25
    visible = [e.label for e in phone.screen().elements if e.resource_id.endswith("/contact")]
    assert visible == names[: len(visible)] and len(visible) < 25
    assert names[-1] not in visible
    contact_list = find(phone, "contact_list")
    assert contact_list.scrollable
    seen = set(visible)
    for _ in range(5):
        phone.act(Action(action="scroll", direction="down", index=find(phone, "contact_list").index,
                         element="contact_list"))
        seen |= {e.label for e in phone.screen().elements if e.resource_id.endswith("/contact")}
    assert seen == set(names)
    assert names[-1] in labels(phone) and names[0] not in labels(phone)
    tap(phone, names[-1], clickable=True)
    assert title(phone) == names[-1]  # the contact card
    phone.act(Action(action="back"))
    assert names[-1] in labels(phone)  # the list kept its position
    phone.act(Action(action="scroll", direction="up"))  # a full-screen scroll works too
    phone.act(Action(action="scroll", direction="up"))
    phone.act(Action(action="scroll", direction="up"))
    assert names[0] in labels(phone)


def test_search_filters_contacts(phone: EmulatedPhone) -> None:
    phone.launch("contacts")
    target = phone.world.contacts[20].name
    type_into(phone, "Search contacts", target.split()[0].lower())
    rows = [e.label for e in phone.screen().elements if e.resource_id.endswith("/contact")]
    assert target in rows
    assert all(target.split()[0].lower() in r.lower() for r in rows)
    tap(phone, "Search contacts")
    phone.input_text("zzz")
    assert "No contacts found" in labels(phone)
    assert not any(e.resource_id.endswith("/contact") for e in phone.screen().elements)


def test_swipe_outside_a_list_or_sideways_changes_nothing(phone: EmulatedPhone) -> None:
    phone.launch("Contacts")
    before = phone.dump_xml()
    phone.swipe(540, 300, 540, 100)  # on the app bar, not the list
    phone.swipe(900, 1500, 100, 1500)  # sideways
    phone.swipe(-10, 1500, 540, 200)  # starts off the screen
    assert phone.dump_xml() == before


# --- dialogs ask for confirmation --------------------------------------------------------------

def test_delete_alarm_asks_for_confirmation(phone: EmulatedPhone) -> None:
    phone.launch("Clock")
    alarm = phone.world.alarms[0]
    tap(phone, f"Delete alarm {alarm.time}")
    assert phone.world.alarm(alarm.hour, alarm.minute) is not None
    assert labels(phone) == [f"Delete alarm {alarm.time}?", "This alarm will be removed.", "Cancel", "Delete"]
    tap(phone, "Cancel")
    assert phone.world.alarm(alarm.hour, alarm.minute) is not None
    tap(phone, f"Delete alarm {alarm.time}")
    phone.act(Action(action="back"))  # BACK closes the dialog, not the app
    assert phone.current_app == "com.edgeagent.clock" and "Add alarm" in labels(phone)
    tap(phone, f"Delete alarm {alarm.time}")
    phone.tap(540, 150)  # outside the dialog: cancels it
    assert "Add alarm" in labels(phone) and phone.world.alarm(alarm.hour, alarm.minute) is not None
    tap(phone, f"Delete alarm {alarm.time}")
    tap(phone, "Delete")
    assert phone.world.alarm(alarm.hour, alarm.minute) is None
    assert f"Alarm {alarm.time}" not in labels(phone)


def test_typing_while_a_dialog_is_up_goes_nowhere(phone: EmulatedPhone) -> None:
    phone.launch("Notes")
    title = phone.world.notes[0].title
    tap(phone, title, clickable=True)
    tap(phone, "Title")
    tap(phone, "Delete note")
    phone.input_text("xyz")
    phone.key(KEYCODE_BACK)
    assert field_value(phone, "Title") == title


# --- sensitive actions ---------------------------------------------------------------------

def test_paying_is_sensitive(phone: EmulatedPhone) -> None:
    phone.launch("Shop")
    type_into(phone, "Search products", "Bread")
    tap(phone, "Add Bread to cart")
    assert "1 Bread in cart" in labels(phone)
    tap(phone, "Cart")
    price = phone.world.product("Bread").price_cents
    total = f"${price // 100}.{price % 100:02d}"
    assert f"Total: {total}" in labels(phone)
    tap(phone, "Checkout")
    screen = phone.screen()
    assert [e.label for e in screen.elements] == ["Confirm payment", f"Pay {total} with the card ending 4242?",
                                                  "Cancel", f"Pay {total}"]
    pay = find(phone, f"Pay {total}")
    cancel = find(phone, "Cancel")
    pay_action = Action(action="tap", index=pay.index, element=pay.label)
    assert phone.is_sensitive(pay_action, screen)
    assert sensitive_reason(pay_action, screen) is not None
    assert sensitive_reason(Action(action="tap", x=pay.center[0], y=pay.center[1]), screen) is not None
    assert not phone.is_sensitive(Action(action="tap", index=cancel.index), screen)
    assert sensitive_reason(Action(action="tap", index=cancel.index), screen) is None
    assert not phone.world.orders
    phone.act(pay_action)
    assert [o.items for o in phone.world.orders] == [{"Bread": 1}] and phone.world.cart == {}
    assert "Order #1001 confirmed" in labels(phone)


def test_send_call_and_delete_are_sensitive_and_so_is_the_button_that_opens_the_delete_dialog(phone: EmulatedPhone) -> None:
    phone.launch("Clock")
    screen = phone.screen()
    opener = find(phone, f"Delete alarm {phone.world.alarms[0].time}")
    # It means deleting (the dialog only asks again), as "Delete" does on apps without one.
    assert phone.is_sensitive(Action(action="tap", index=opener.index), screen)
    assert sensitive_reason(Action(action="tap", index=opener.index), screen) is not None
    phone.launch("Contacts")
    tap(phone, phone.world.contacts[0].name, clickable=True)
    screen = phone.screen()
    call = find(phone, "Call")
    assert phone.is_sensitive(Action(action="tap", index=call.index), screen)
    assert not phone.is_sensitive(Action(action="type", index=call.index, text="x"), screen)
    tap(phone, "Message")  # opens the conversation in Messages
    assert phone.current_app == "com.edgeagent.messages"
    send = find(phone, "Send")
    assert phone.is_sensitive(Action(action="tap", index=send.index), phone.screen())


def test_send_needs_text_and_clears_the_field(phone: EmulatedPhone) -> None:
    phone.launch("Messages")
    name = phone.world.threads()[0]
    tap(phone, name, clickable=True)
    count = len(phone.world.messages)
    tap(phone, "Send")
    assert len(phone.world.messages) == count
    type_into(phone, "Message", "Tom & Jerry <3")
    tap(phone, "Send")
    last = phone.world.messages[-1]
    assert (last.contact, last.text, last.incoming) == (name, "Tom & Jerry <3", False)
    assert field_value(phone, "Message") == ""
    assert "Tom & Jerry <3" in labels(phone)


# --- keys and apps ---------------------------------------------------------------------------

def test_back_goes_up_then_home_and_home_goes_home(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    tap(phone, "Display")
    assert phone.screen().elements[0].label == "Navigate up"
    phone.act(Action(action="back"))
    assert "Wi-Fi" in labels(phone)
    phone.act(Action(action="back"))
    assert phone.current_app == "com.edgeagent.launcher"
    phone.act(Action(action="back"))  # BACK on the home screen stays there
    assert phone.current_app == "com.edgeagent.launcher"
    tap(phone, "Settings")
    tap(phone, "About phone")
    phone.act(Action(action="home"))
    assert phone.current_app == "com.edgeagent.launcher"
    assert "Calculator" in labels(phone)
    phone.launch("com.edgeagent.settings")  # relaunch: main page, data kept
    assert "Wi-Fi" in labels(phone)


def test_launch_accepts_names_any_case_and_packages(phone: EmulatedPhone) -> None:
    for name, package in [("Settings", "com.edgeagent.settings"), ("clock", "com.edgeagent.clock"),
                          ("  SHOP ", "com.edgeagent.shop"), ("com.edgeagent.notes", "com.edgeagent.notes")]:
        phone.act(Action(action="open_app", app=name))
        assert phone.current_app == package


def test_unknown_app_is_a_clear_error(phone: EmulatedPhone) -> None:
    with pytest.raises(DeviceError) as err:
        phone.act(Action(action="open_app", app="Fakebook"))
    message = str(err.value)
    assert "'Fakebook'" in message
    for name in phone.app_names():
        assert name in message
    assert phone.current_app == "com.edgeagent.launcher"


def test_out_of_screen_taps_are_refused_or_ignored(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    phone.screen()
    before = phone.dump_xml()
    with pytest.raises(DeviceError, match="outside the 1080x2400 screen"):
        phone.act(Action(action="tap", x=5000, y=10))
    with pytest.raises(DeviceError, match="no element with index 99"):
        phone.act(Action(action="tap", index=99))
    phone.tap(1080, 2400)  # the primitive (what `input tap` reaches) ignores it, like a phone
    phone.tap(-1, -1)
    phone.swipe(3000, 3000, 3000, 0)
    assert phone.dump_xml() == before


def test_index_action_naming_another_element_is_refused(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    wifi = find(phone, "Wi-Fi")
    with pytest.raises(DeviceError, match="refusing"):
        phone.act(Action(action="tap", index=wifi.index, element="Bluetooth"))
    assert phone.world.settings.wifi == find(phone, "Wi-Fi").checked


def test_long_press_and_enter(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    wifi = phone.world.settings.wifi
    e = find(phone, "Wi-Fi")
    phone.act(Action(action="long_press", index=e.index, element="Wi-Fi"))  # no long-click: acts as a tap
    assert phone.world.settings.wifi is not wifi
    phone.launch("Browser")
    type_into(phone, "Search or type web address", "jazz history")
    phone.key(KEYCODE_ENTER)
    assert phone.world.browser.searches == ["jazz history"]
    results = [e for e in phone.screen().elements if e.resource_id.endswith("/result")]
    assert 0 < len(results) < 15  # 15 results: the rest are below the fold
    phone.key(KEYCODE_HOME)
    assert phone.current_app == "com.edgeagent.launcher"


def test_wait_does_not_sleep(phone: EmulatedPhone) -> None:
    import time

    start = time.perf_counter()
    phone.act(Action(action="wait"))
    assert time.perf_counter() - start < 0.5


# --- app behaviour -----------------------------------------------------------------------------

def test_settings_switches_and_brightness(phone: EmulatedPhone) -> None:
    s = phone.world.settings
    s.wifi = s.bluetooth = True
    phone.launch("Settings")
    tap(phone, "Airplane mode")
    assert (s.airplane, s.wifi, s.bluetooth) == (True, False, False)
    assert not find(phone, "Wi-Fi").checked
    tap(phone, "Wi-Fi")  # Wi-Fi can come back on in airplane mode
    assert s.wifi and s.airplane
    tap(phone, "Display")
    s.brightness = 90
    tap(phone, "Brightness up")
    tap(phone, "Brightness up")
    assert s.brightness == 100 and "Brightness: 100%" in labels(phone)
    slider = find(phone, "Brightness")
    x1, y1, x2, y2 = slider.bounds
    phone.tap(x1 + 10, (y1 + y2) // 2)  # the slider's left end
    assert s.brightness == 0
    tap(phone, "Dark mode")
    assert s.dark_mode and find(phone, "Dark mode").checked


def test_alarm_time_picker(phone: EmulatedPhone) -> None:
    phone.launch("Clock")
    count = len(phone.world.alarms)
    tap(phone, "Add alarm")
    tap(phone, "Save")  # nothing entered
    assert "Enter an hour 0-23 and a minute 0-59" in labels(phone)
    type_into(phone, "Hour", "2x5")  # digits only, two at most
    assert field_value(phone, "Hour") == "25"
    tap(phone, "Save")
    assert len(phone.world.alarms) == count
    phone.key(KEYCODE_DEL)
    phone.key(KEYCODE_DEL)
    tap(phone, "Hour down")  # empty counts as 0; wraps to 23
    assert field_value(phone, "Hour") == "23"
    tap(phone, "Minute up")
    tap(phone, "Minute up")
    assert field_value(phone, "Minute") == "02"
    type_into(phone, "Label (optional)", "Late")
    tap(phone, "Save")
    assert phone.world.alarm(23, 2).label == "Late"
    assert "Alarm 23:02" in labels(phone) and "Late" in labels(phone)
    tap(phone, "Alarm 23:02")
    assert not phone.world.alarm(23, 2).enabled


@pytest.mark.parametrize("expression, shown", [
    ("12+3×4", "24"), ("7÷2", "3.5"), ("5−9", "−4"), ("1÷0", "Error"), ("2×", "Error"), ("0.1+0.2", "0.3"),
    ("100×15÷100", "15"), ("1÷3", "0.3333333333"), ("40%×312", "124.8"), ("312×40%", "124.8"),
    ("5%3", "Error"), ("5%%", "Error"), ("%", "Error"),
])
def test_calculator_arithmetic(expression: str, shown: str) -> None:
    assert evaluate(expression) == shown


def test_calculator_keypad(phone: EmulatedPhone) -> None:
    phone.launch("Calculator")
    for key in "12+3×4=":
        tap(phone, key, clickable=True)
    assert phone.screen().elements[1].text == "24"
    for key in "−30=":  # an operator continues from the result
        tap(phone, key, clickable=True)
    assert phone.world.calculator.expression == "−6"
    tap(phone, "7", clickable=True)  # a digit starts over
    tap(phone, "Backspace")
    tap(phone, "9", clickable=True)
    tap(phone, "×", clickable=True)
    tap(phone, "÷", clickable=True)  # a second operator replaces the first
    tap(phone, "3", clickable=True)
    tap(phone, "=", clickable=True)
    assert phone.world.calculator.expression == "3"
    tap(phone, "C", clickable=True)
    assert field_value(phone, "Expression") == ""


def test_calculator_display_takes_typed_expressions(phone: EmulatedPhone) -> None:
    """The display is a field (AOSP's CalculatorEditText): typed text goes through the keys,
    spaces dropped and ASCII operators read as the display's signs."""
    phone.launch("Calculator")
    type_into(phone, "Expression", "380 + 11 × 21")
    assert phone.world.calculator.expression == "380+11×21"
    tap(phone, "=", clickable=True)
    assert field_value(phone, "Expression") == "611"
    type_into(phone, "Expression", "*2 - 1")  # an operator continues from the result
    phone.key(KEYCODE_ENTER)  # the keyboard's Enter is "="
    assert phone.world.calculator.expression == "1221"
    type_into(phone, "Expression", "40%")  # a digit starts over
    tap(phone, "×", clickable=True)
    type_into(phone, "Expression", "312 apples")  # letters are not keys
    assert phone.world.calculator.expression == "40%×312"
    phone.key(KEYCODE_DEL)
    assert phone.world.calculator.expression == "40%×31"


def test_battery_is_plausible_and_drains(phone: EmulatedPhone) -> None:
    first = phone.battery()
    assert first.source == "emulated"
    assert 0 < first.level_pct <= 100 and 3.4 < first.voltage_v < 4.3 and first.current_ma > 0
    assert first.charge_counter_mah > 0 and first.charging is False
    for _ in range(50):
        phone.tap(540, 1200)
    later = phone.battery()
    assert later.charge_counter_mah < first.charge_counter_mah


def test_other_screen_sizes_lay_out_inside_the_screen() -> None:
    small = EmulatedPhone(seed=3, size=(720, 1600))
    for app in small.app_names():
        small.launch(app)
        for e in small.screen().elements:
            x1, y1, x2, y2 = e.bounds
            assert 0 <= x1 < x2 <= 720 and 0 <= y1 < y2 <= 1600
    assert small.screenshot().size == (720, 1600)
    with pytest.raises(ValueError, match="screen size"):
        EmulatedPhone(size=(10, 10))


# --- screenshots -------------------------------------------------------------------------------

def test_screenshot_is_a_phone_sized_image_and_round_trips_as_png(phone: EmulatedPhone, tmp_path) -> None:
    for app in ["Home", *phone.app_names()]:
        phone.launch(app)
        image = phone.screen().image
        assert image.size == (1080, 2400) and image.mode == "RGB"
        assert len(image.getcolors(1 << 20)) > 8  # drawn, not blank
    path = tmp_path / "shot.png"
    image.save(path)
    again = Image.open(path)
    assert again.format == "PNG" and again.size == (1080, 2400)
    assert again.convert("RGB").tobytes() == image.tobytes()


def test_screen_image_is_rendered_lazily_from_its_own_moment(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    screen = phone.screen()
    assert screen._image is None  # nothing drawn until someone looks
    before = screen.image
    tap(phone, "Display")
    assert screen.image is before
    assert phone.screen().image.tobytes() != before.tobytes()


def test_dark_mode_changes_the_rendering(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    phone.world.settings.dark_mode = False
    light = phone.screenshot()
    phone.world.settings.dark_mode = True
    phone.launch("Settings")
    dark = phone.screenshot()
    assert light.getpixel((540, 1800)) == (255, 255, 255)
    assert sum(dark.getpixel((540, 1800))) < 100


def test_draw_action_marks_the_tap_point(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    screen = phone.screen()
    wifi = find(phone, "Wi-Fi")
    action = Action(action="tap", index=wifi.index, element="Wi-Fi")
    image = screen.image
    drawn = draw_action(image, action, screen)
    assert drawn.size == image.size and image.tobytes() == screen.image.tobytes()  # input untouched
    x, y = wifi.center
    assert drawn.getpixel((x, y)) != image.getpixel((x, y))
    assert drawn.getpixel((10, 2390)) == image.getpixel((10, 2390))
    small = image.resize((540, 1200))
    drawn_small = draw_action(small, action, screen)
    assert drawn_small.getpixel((x // 2, y // 2)) != small.getpixel((x // 2, y // 2))
    for other in [Action(action="scroll", direction="down"), Action(action="swipe", direction="left"),
                  Action(action="type", text="hi"), Action(action="open_app", app="Clock"),
                  Action(action="done", status="complete", answer="42"), Action(action="back"),
                  Action(action="long_press", x=100, y=100)]:
        assert draw_action(image, other, screen).tobytes() != image.tobytes(), other


def test_rendering_without_any_font_file(phone: EmulatedPhone, monkeypatch) -> None:
    from android_bridge.emulator import render

    render.font.cache_clear()
    monkeypatch.setattr(render, "_FONT_FILES", {False: (), True: ()})
    monkeypatch.setattr(render, "_fc_match", lambda bold: None)
    try:
        phone.launch("Contacts")
        assert phone.screenshot().size == (1080, 2400)
    finally:
        render.font.cache_clear()


# --- coordinates -------------------------------------------------------------------------------

def test_a_tap_picked_on_a_downscaled_screenshot_lands_on_its_element(phone: EmulatedPhone) -> None:
    phone.launch("Settings")
    shot_size = (540, 1200)  # what a model would see
    for label in ("Wi-Fi", "Bluetooth", "Airplane mode"):
        e = find(phone, label)
        x1, y1, x2, y2 = e.bounds
        # a point inside the element, as a model would pick it on the small picture
        sx, sy = ((x1 + x2) // 2) * shot_size[0] // 1080, ((y1 + y2) // 2) * shot_size[1] // 2400
        action = scale_action(Action(action="tap", x=sx, y=sy), shot_size, phone.size())
        assert x1 <= action.x < x2 and y1 <= action.y < y2
        before = find(phone, label).checked
        phone.act(action)
        assert find(phone, label).checked is not before
    assert scale_point(539, 1199, shot_size, (1080, 2400)) == (1079, 2399)


def test_png_bytes_of_a_screenshot(phone: EmulatedPhone) -> None:
    buf = io.BytesIO()
    phone.screenshot().save(buf, format="PNG")
    assert buf.getvalue().startswith(b"\x89PNG\r\n\x1a\n")


@given(text=st.text(min_size=1, max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_typed_text_survives_the_dump(text: str) -> None:
    phone = EmulatedPhone(seed=1)
    phone.launch("Browser")
    tap(phone, "Search or type web address")
    phone.input_text(text)
    # What the field keeps: printable characters (a single-line field drops new lines).
    kept = "".join(ch for ch in text if ch.isprintable() and ch not in "\ufffe\uffff" and not 0xD800 <= ord(ch) <= 0xDFFF)
    assert field_value(phone, "Search or type web address") == kept
