"""AdbDevice and the loopback adb server, end to end over the real client code paths.

AdbDevice (adbutils) -> AdbServer (adb host protocol on 127.0.0.1) -> EmulatedPhone, and
Google's `adb -P PORT` client against the same server. Every test uses its own server on a
free port; Google's client is only run while our server listens on that port, so it never
starts a daemon of its own (and the teardown would kill one if it had).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbutils
import pytest
from PIL import Image

from android_bridge.adb import (
    AdbDevice,
    battery_from_dumpsys,
    battery_from_sysfs,
    decode_png,
    parse_wm_size,
    resolve_package,
)
from android_bridge.actions import Action
from android_bridge.device import Battery, DeviceError
from android_bridge.emulator.adb_server import AdbServer
from android_bridge.emulator.phone import EmulatedPhone

REPO = Path(__file__).resolve().parents[2]
PWNED = "a; touch /tmp/pwned $(id)"
QUICK_S = 3.0  # "a clear error quickly": well under this
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE hierarchy [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
    + ']><hierarchy><node text="&i;" bounds="[0,0][1,1]"/></hierarchy>'
)


@pytest.fixture
def phone():
    return EmulatedPhone(seed=3)


@pytest.fixture
def server(phone):
    with AdbServer(phone, port=0) as s:
        yield s


@pytest.fixture
def device(server):
    return AdbDevice(port=server.port, timeout_s=5)


def focused_field_text(device: AdbDevice) -> str:
    fields = [e for e in device.screen().elements if e.editable]
    assert len(fields) == 1
    return fields[0].text


def pwned_mtime() -> int | None:
    return os.stat("/tmp/pwned").st_mtime_ns if os.path.exists("/tmp/pwned") else None


# --- the server speaks adb to adbutils ------------------------------------------------------

def test_host_queries(server):
    client = adbutils.AdbClient("127.0.0.1", server.port)
    assert client.server_version() == 41
    assert [(d.serial, d.state) for d in client.list()] == [("emulator-edgeagent", "device")]
    [info] = client.list(extended=True)
    assert info.tags["transport_id"] == "1" and info.tags["model"] == "EdgeAgent_Emulated_Phone"
    d = client.device("emulator-edgeagent")
    assert "shell_v2" in d.get_features().split(",")
    assert d.get_state() == "device" and d.get_serialno() == "emulator-edgeagent"
    with pytest.raises(adbutils.AdbError, match="device 'other' not found"):
        client.device("other").shell("echo hi")


def test_shell_v1_v2_and_exit_codes(server):
    d = adbutils.AdbClient("127.0.0.1", server.port).device("emulator-edgeagent")
    assert d.shell("wm size") == "Physical size: 1080x2400"  # shell: (v1)
    assert d.getprop("ro.product.model") == "EdgeAgent Emulated Phone"
    r = d.shell2("nosuchcmd --flag", v2=True)
    assert (r.returncode, r.stdout, r.stderr) == (127, "", "/system/bin/sh: nosuchcmd: not found\n")
    r = d.shell2(["cat", "/sdcard/missing.txt"], v2=True)
    assert r.returncode == 1 and "No such file or directory" in r.stderr


def test_shell_syntax_is_refused_not_interpreted(server, phone):
    d = adbutils.AdbClient("127.0.0.1", server.port).device("emulator-edgeagent")
    before = pwned_mtime()
    for command in ("input text hi; touch /tmp/pwned", "input text $(id)", "echo `id`", 'echo "$HOME"', "ls *"):
        r = d.shell2(command, v2=True)
        assert r.returncode == 2 and "shell syntax" in r.stderr, command
    assert pwned_mtime() == before


def test_sync_stat_list_pull_push(server):
    d = adbutils.AdbClient("127.0.0.1", server.port).device("emulator-edgeagent")
    assert d.shell("uiautomator dump") == "UI hierchary dumped to: /sdcard/window_dump.xml"
    xml = d.sync.read_bytes("/sdcard/window_dump.xml")
    assert xml == server.phone.dump_xml().encode()
    st = d.sync.stat("/sdcard/window_dump.xml")
    assert st.size == len(xml) and st.mode & 0o100000
    assert "window_dump.xml" in [f.path for f in d.sync.list("/sdcard")]
    d.sync.push(b"hello\n", "/data/local/tmp/hello.txt")
    assert d.shell("cat /data/local/tmp/hello.txt") == "hello"
    with pytest.raises(adbutils.AdbError, match="No such file"):
        d.sync.read_bytes("/sdcard/nothing.xml")
    with pytest.raises(adbutils.AdbError):  # adbutils shows only "FAIL", not our reason
        d.sync.push(b"x", "/system/x")
    assert d.sync.exists("/system/x") is False


# --- AdbDevice over the server ----------------------------------------------------------------

def test_screen_matches_the_backing_phone(device, phone):
    seen = device.screen()
    assert seen.elements == phone.screen().elements
    assert seen.size == phone.size() == device.size() == (1080, 2400)
    assert seen.image.size == (1080, 2400)
    assert seen.image.tobytes() == phone.screenshot().tobytes()  # PNG is lossless
    assert seen.app == "com.edgeagent.launcher"


def test_tap_key_and_launch_change_the_phone(device, phone):
    screen = device.screen()
    settings = next(e for e in screen.elements if e.label == "Settings")
    device.act(Action(action="tap", index=settings.index, element="Settings"))
    assert phone.current_app == "com.edgeagent.settings"
    device.act(Action(action="home"))
    assert phone.current_app == "com.edgeagent.launcher"
    device.act(Action(action="open_app", app="Clock"))  # a name, resolved on the device
    assert phone.current_app == "com.edgeagent.clock"
    device.launch("com.edgeagent.notes")  # a package, passed through
    assert phone.current_app == "com.edgeagent.notes"
    device.act(Action(action="back"))
    assert phone.current_app == "com.edgeagent.launcher"


def test_typing_is_literal(device, phone):
    before = pwned_mtime()
    device.launch("Browser")
    field = next(e for e in device.screen().elements if e.editable)
    device.act(Action(action="type", index=field.index, text=PWNED))
    assert focused_field_text(device) == PWNED
    assert pwned_mtime() == before  # nothing ran, here or anywhere
    device.key(67)  # DEL
    device.input_text("] 100%sure 'q' \"d\" \\ `x` *?")
    assert focused_field_text(device) == PWNED[:-1] + "] 100%sure 'q' \"d\" \\ `x` *?"


def test_non_ascii_goes_through_adb_keyboard(device, phone):
    device.launch("Browser")
    field = next(e for e in device.screen().elements if e.editable)
    device.act(Action(action="type", index=field.index, text="café 你好"))
    assert focused_field_text(device) == "café 你好"


def test_non_ascii_without_adb_keyboard_is_a_clear_error():
    with AdbServer(EmulatedPhone(seed=1), port=0, adb_keyboard=False) as server:
        device = AdbDevice(port=server.port)
        with pytest.raises(DeviceError, match="ADB Keyboard"):
            device.input_text("café")
        device.input_text("cafe")  # ASCII still types


def test_unknown_app_and_bad_packages(device, phone):
    with pytest.raises(DeviceError, match="unknown app 'Tetris'"):
        device.launch("Tetris")
    with pytest.raises(DeviceError, match="'com.evil.app' is not installed"):
        device.launch("com.evil.app")
    with pytest.raises(DeviceError, match="not an Android package name"):
        device.launch("com.x;reboot")
    with pytest.raises(DeviceError, match="not an Android package name"):
        device.launch("com.example.$(id)")
    assert phone.current_app == "com.edgeagent.launcher"


def test_out_of_screen_coordinates(device, phone):
    for x, y in ((1080, 5), (5, 2400), (-1, 5)):
        with pytest.raises(DeviceError, match="outside the 1080x2400 screen"):
            device.tap(x, y)
    with pytest.raises(DeviceError, match="outside"):
        device.swipe(10, 10, 10, 5000)
    with pytest.raises(DeviceError, match="outside the 1080x2400 screen"):
        device.act(Action(action="tap", x=4000, y=10))


def test_truncated_or_corrupt_png_is_a_clear_error(server, device):
    server.shell.screencap_hook = lambda png: png[: len(png) // 2]
    with pytest.raises(DeviceError, match="truncated PNG"):
        device.screen()
    server.shell.screencap_hook = lambda png: png[:100] + bytes(200) + png[300:]
    with pytest.raises(DeviceError, match="corrupt PNG"):
        device.screen()
    server.shell.screencap_hook = lambda png: b"screencap: permission denied\n"
    with pytest.raises(DeviceError, match="did not return a PNG"):
        device.screen()
    server.shell.screencap_hook = None
    assert device.screen().image.size == (1080, 2400)


def test_hostile_ui_dump_is_a_clear_error(phone):
    class HostilePhone(EmulatedPhone):
        def dump_xml(self) -> str:
            return BILLION_LAUGHS

    with AdbServer(HostilePhone(seed=0), port=0) as server:
        device = AdbDevice(port=server.port)
        start = time.monotonic()
        with pytest.raises(DeviceError, match="UI dump .* is unusable: refusing unsafe XML"):
            device.screen()
        assert time.monotonic() - start < QUICK_S


def test_screen_that_never_idles(server, device):
    server.shell.idle_failures = 1  # one "could not get idle state", then a dump: retried
    assert device.screen().elements
    server.shell.idle_failures = 100
    with pytest.raises(DeviceError, match="never went idle"):
        device.screen()


def test_server_killed_mid_session(server, device):
    device.screen()

    def stop_while_capturing(png: bytes) -> bytes:
        server.stop()  # from inside the request: the client is mid-command
        return png

    server.shell.screencap_hook = stop_while_capturing
    start = time.monotonic()
    with pytest.raises(DeviceError):
        device.screen()
    with pytest.raises(DeviceError, match="cannot reach the adb server"):
        device.tap(10, 10)
    assert time.monotonic() - start < QUICK_S


def test_silent_server_times_out():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever answers
    try:
        start = time.monotonic()
        with pytest.raises(DeviceError, match="no answer from the adb server .* within 1 s"):
            AdbDevice(port=silent.getsockname()[1], timeout_s=1)
        assert time.monotonic() - start < QUICK_S
    finally:
        silent.close()


def test_no_server_is_a_clear_error_and_starts_nothing():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port nobody listens on
    start = time.monotonic()
    with pytest.raises(DeviceError, match=f"cannot reach the adb server at 127.0.0.1:{port}.*edgeagent emulator"):
        AdbDevice(port=port)
    assert time.monotonic() - start < QUICK_S
    with socket.socket() as s:  # adbutils' default would have spawned `adb start-server` here
        assert s.connect_ex(("127.0.0.1", port)) != 0


class DeviceListServer:
    """A stub adb server whose `host:devices` answer is given: for zero or several devices."""

    def __init__(self, listing: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.listing = listing.encode()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                n = int(conn.recv(4), 16)
                conn.recv(n)
                conn.sendall(b"OKAY" + f"{len(self.listing):04x}".encode() + self.listing)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "listing, match",
    [
        ("", "no device attached"),
        ("abc\tunauthorized\n", "no device attached .* abc \\(unauthorized\\).*USB debugging prompt"),
        ("one\tdevice\ntwo\tdevice\n", "2 devices attached \\(one, two\\); choose one by serial"),
    ],
)
def test_device_choice(listing, match):
    stub = DeviceListServer(listing)
    try:
        with pytest.raises(DeviceError, match=match):
            AdbDevice(port=stub.port)
    finally:
        stub.close()


def test_named_serial_must_be_attached(server):
    with pytest.raises(DeviceError, match="'emulator-5554' is not attached .* ready: emulator-edgeagent"):
        AdbDevice("emulator-5554", port=server.port)
    assert AdbDevice("emulator-edgeagent", port=server.port).serial == "emulator-edgeagent"


# --- battery ------------------------------------------------------------------------------------

def test_battery_matches_the_phone(device, phone):
    expected = phone.battery()
    b = device.battery()
    assert b.source == "sysfs"
    assert b.current_ma == pytest.approx(expected.current_ma, abs=0.001)
    assert b.voltage_v == pytest.approx(expected.voltage_v, abs=1e-6)
    assert b.charge_counter_mah == pytest.approx(expected.charge_counter_mah, abs=0.001)
    assert b.level_pct == round(expected.level_pct)
    assert b.temperature_c == pytest.approx(expected.temperature_c, abs=0.1)
    assert b.charging is False
    assert "current_now sign per kernel ABI (negative = discharging)" in b.notes


def test_scripted_battery_readings():
    readings = [(250.0, 4.1), (300.0, 4.05), (-500.0, 4.2)]
    with AdbServer(EmulatedPhone(seed=0), port=0, battery_script=readings) as server:
        device = AdbDevice(port=server.port)
        got = [device.battery() for _ in range(4)]
    assert [(b.current_ma, b.voltage_v) for b in got] == readings + [readings[-1]]


def test_scripted_battery_function_of_time():
    with AdbServer(EmulatedPhone(seed=0), port=0, battery_script=lambda t: (100.0 + 1000 * t, 3.8)) as server:
        device = AdbDevice(port=server.port)
        first = device.battery().current_ma
        time.sleep(0.05)
        second = device.battery().current_ma
    assert 100.0 <= first < second


def test_battery_falls_back_to_dumpsys(phone):
    class NoSysfsLevel(EmulatedPhone):
        def battery(self) -> Battery:
            b = super().battery()
            b.level_pct = None  # sysfs capacity missing: the level comes from dumpsys
            return b

    with AdbServer(NoSysfsLevel(seed=0), port=0) as server:
        b = AdbDevice(port=server.port).battery()
    assert b.source == "sysfs+dumpsys battery"
    assert b.level_pct is None  # dumpsys without a level cannot fill it either
    assert b.current_ma is not None and b.voltage_v is not None


@pytest.mark.parametrize(
    "values, current_ma, note",
    [
        ({"current_now": "-350000", "status": "Discharging"}, 350.0, "kernel ABI"),
        ({"current_now": "350000", "status": "Discharging"}, 350.0, "vendor sign convention"),
        ({"current_now": "-350", "status": "Discharging"}, 350.0, "read as mA"),
        ({"current_now": "1200000", "status": "Charging"}, -1200.0, "kernel ABI"),
        ({"current_now": "-90000", "status": "Full"}, 90.0, "kernel ABI"),
    ],
)
def test_sysfs_units_and_sign(values, current_ma, note):
    b = battery_from_sysfs({"voltage_now": "4012000", "capacity": "77", "temp": "287", "charge_counter": "2500000", **values})
    assert b.current_ma == current_ma
    assert any(note in n for n in b.notes)
    assert (b.voltage_v, b.level_pct, b.temperature_c, b.charge_counter_mah) == (4.012, 77.0, 28.7, 2500.0)
    assert b.charging is (values["status"] == "Charging")


def test_sysfs_voltage_in_millivolts_is_noted():
    b = battery_from_sysfs({"voltage_now": "3950"})
    assert b.voltage_v == 3.95 and "read as mV" in b.notes[0]
    with pytest.raises(DeviceError, match="unexpected battery sysfs"):
        battery_from_sysfs({"capacity": "lots"})


def test_dumpsys_battery_parse():
    text = (
        "Current Battery Service state:\n  AC powered: false\n  USB powered: true\n  Charge counter: 2810000\n"
        "  status: 2\n  health: 2\n  present: true\n  level: 76\n  scale: 100\n  voltage: 4181\n"
        "  temperature: 285\n  technology: Li-ion\n"
    )
    b = battery_from_dumpsys(text)
    assert (b.level_pct, b.voltage_v, b.temperature_c, b.charge_counter_mah, b.charging) == (76.0, 4.181, 28.5, 2810.0, True)
    assert b.current_ma is None


# --- pure helpers ---------------------------------------------------------------------------------

def test_wm_size_override_wins():
    assert parse_wm_size("Physical size: 1080x2400\n") == (1080, 2400)
    assert parse_wm_size("Physical size: 1440x3120\nOverride size: 1080x2340\n") == (1080, 2340)
    with pytest.raises(DeviceError, match="cannot read the screen size"):
        parse_wm_size("Error: no display")


def test_resolve_package():
    installed = ["com.android.settings", "com.google.android.deskclock", "com.edgeagent.notes"]
    assert resolve_package("Settings", installed) == "com.android.settings"
    assert resolve_package(" clock ", installed) == "com.google.android.deskclock"
    assert resolve_package("Notes", installed) == "com.edgeagent.notes"  # by the package's last part
    assert resolve_package("Clock", None) == "com.google.android.deskclock"  # unknown list: first candidate
    assert resolve_package("com.example.app", None) == "com.example.app"
    with pytest.raises(DeviceError, match="'Camera' is not installed"):
        resolve_package("Camera", installed)
    with pytest.raises(DeviceError, match="unknown app"):
        resolve_package("rm -rf", installed)


def test_decode_png_checks():
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (1, 2, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    assert decode_png(png).getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(DeviceError, match="no data"):
        decode_png(b"")
    with pytest.raises(DeviceError, match="line endings were rewritten"):
        decode_png(png.replace(b"\r\n", b"\r\r\n"))


# --- Google's adb client against the server -------------------------------------------------

@pytest.fixture
def google_adb(server, tmp_path):
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("Google's `adb` client is not on PATH (Debian: apt-get install adb)")
    env = {**os.environ, "HOME": str(tmp_path)}  # the client may write ~/.android
    env.pop("ANDROID_ADB_SERVER_PORT", None)

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([adb, "-P", str(server.port), *args], stdout=kwargs.pop("stdout", subprocess.PIPE),
                              stderr=subprocess.PIPE, timeout=20, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)

    yield run
    port = server.port
    server.stop()
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:  # a daemon the client started: ours to stop
            subprocess.run([adb, "-P", str(port), "kill-server"], timeout=10, env=env, capture_output=True)


def test_google_adb_devices_and_shell(google_adb):
    r = google_adb("devices")
    assert r.returncode == 0 and r.stdout.decode().splitlines()[1] == "emulator-edgeagent\tdevice"
    r = google_adb("shell", "wm", "size")
    assert (r.returncode, r.stdout) == (0, b"Physical size: 1080x2400\n")
    r = google_adb("shell", "getprop", "ro.product.model")
    assert r.stdout == b"EdgeAgent Emulated Phone\n"
    r = google_adb("shell", "nosuchcmd")
    assert r.returncode == 127 and r.stderr == b"/system/bin/sh: nosuchcmd: not found\n"


def test_google_adb_exec_out_screencap(google_adb, phone, tmp_path):
    with open(tmp_path / "screen.png", "wb") as out:
        r = google_adb("exec-out", "screencap", "-p", stdout=out)
    assert r.returncode == 0
    with Image.open(tmp_path / "screen.png") as image:
        assert image.tobytes() == phone.screenshot().tobytes()


def test_google_adb_pull_dump(google_adb, phone, tmp_path):
    assert google_adb("shell", "uiautomator", "dump").stdout == b"UI hierchary dumped to: /sdcard/window_dump.xml\n"
    r = google_adb("pull", "/sdcard/window_dump.xml", str(tmp_path / "dump.xml"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dump.xml").read_text() == phone.dump_xml()
    r = google_adb("pull", "/sdcard/nothing.xml", str(tmp_path / "nothing.xml"))
    assert r.returncode == 1 and b"No such file or directory" in r.stdout + r.stderr


def test_google_adb_input_reaches_the_phone(google_adb, phone):
    r = google_adb("shell", "input", "tap", "150", "1800")  # the Settings icon on the launcher
    assert r.returncode == 0
    assert phone.current_app == "com.edgeagent.settings"


# --- the `edgeagent emulator` command ---------------------------------------------------------

def test_emulator_command_serves_until_interrupted():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeagent.cli", "emulator", "--adb-port", "0", "--seed", "5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO,
        # Ctrl-C reaches the child whatever this runner inherited: a runner started in the
        # background ignores SIGINT, and a child would inherit that and never stop.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        printed = ""
        while True:  # one JSON object, perhaps over several lines
            printed += proc.stdout.readline().decode()
            try:
                info = json.loads(printed)
                break
            except json.JSONDecodeError:
                assert printed.strip() and proc.poll() is None, proc.stderr.read().decode()
        assert info["serial"] == "emulator-edgeagent" and info["seed"] == 5
        device = AdbDevice(port=info["port"])
        assert device.size() == (1080, 2400)
        device.launch("Settings")
        assert device.screen().app == "com.edgeagent.settings"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # generous: a loaded CI machine is slow to shut down
    assert proc.returncode == 0, err.decode()
    with pytest.raises(DeviceError, match="cannot reach"):
        AdbDevice(port=info["port"])


# --- the task suite through adb ----------------------------------------------------------------

def run_expert_over_adb(n: int, seed: int) -> list:
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode

    phone = EmulatedPhone()
    with AdbServer(phone, port=0) as server:
        device = AdbDevice(port=server.port)
        return [run_episode(device, task, expert_action, phone=phone) for task in generate_tasks(n, seed=seed)]


def test_expert_solves_tasks_through_adb():
    results = run_expert_over_adb(40, seed=11)
    failed = [r.summary() for r in results if not r.success]
    assert failed == []
    assert not [r.errors for r in results if r.errors]


@pytest.mark.slow
def test_expert_solves_200_tasks_through_adb():
    results = run_expert_over_adb(200, seed=0)
    failed = [r.summary() for r in results if not r.success]
    assert failed == [] and len(results) == 200
