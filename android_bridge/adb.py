"""AdbDevice: a real phone or dev board, driven through the adb server with adbutils.

Every command goes to the phone as an argv list quoted word by word (``escape.shell_command``),
so nothing a model writes can become shell syntax on the device. Screens are
``exec-out screencap -p`` (binary-safe, no pty) plus ``uiautomator dump`` read back over sync;
actions are ``input tap|swipe|keyevent|text`` and ``monkey`` launches.

Failures are ``DeviceError`` with a sentence a person can act on, and they come quickly:
every socket has a timeout, and unlike adbutils' default we never start an adb server
behind the user's back when none answers (that would hang for up to 20 s and leave a daemon
on port 5037).

Length (about 500 lines): one class, ``AdbDevice``, whose methods are the Device interface
over adb plus the battery and screen readers that need its connection.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait

import adbutils
from adbutils.errors import AdbConnectionError, AdbTimeout
from PIL import Image

from android_bridge.device import SWIPE_MS, Battery, Device, DeviceError, Screen
from android_bridge.escape import ADB_KEYBOARD_IME, TextInputError, shell_command, typeable_with_input_text, typing_argvs
from android_bridge.uitree import MAX_DUMP_BYTES, UIDumpError, UIElement, parse_dump

DEFAULT_TIMEOUT_S = 10.0
# Slower commands get more: uiautomator waits up to 10 s for the screen to idle before it
# dumps, and a PNG of a large screen over USB 2 takes a few seconds.
DUMP_TIMEOUT_S = 30.0
SCREENCAP_TIMEOUT_S = 20.0
DUMP_PATH = "/sdcard/window_dump.xml"
# uiautomator gives up when the screen never idles (an animation); a second try often works.
DUMP_ATTEMPTS = 3
MAX_SCREENSHOT_BYTES = 64 * 1024 * 1024
BATTERY_SYSFS = "/sys/class/power_supply/battery"
BATTERY_FILES = ("current_now", "voltage_now", "charge_counter", "capacity", "status", "temp")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TRAILER = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG
_PACKAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$")

# Names a model or a person uses for common apps -> candidate packages, first match wins
# (AOSP, Google and Samsung builds ship different packages for the same app).
APP_PACKAGES: dict[str, tuple[str, ...]] = {
    "settings": ("com.android.settings",),
    "clock": ("com.google.android.deskclock", "com.android.deskclock", "com.sec.android.app.clockpackage"),
    "alarm": ("com.google.android.deskclock", "com.android.deskclock", "com.sec.android.app.clockpackage"),
    "contacts": ("com.google.android.contacts", "com.android.contacts", "com.samsung.android.app.contacts"),
    "messages": ("com.google.android.apps.messaging", "com.android.messaging", "com.samsung.android.messaging"),
    "phone": ("com.google.android.dialer", "com.android.dialer", "com.samsung.android.dialer"),
    "calculator": ("com.google.android.calculator", "com.android.calculator2", "com.sec.android.app.popupcalculator"),
    "calendar": ("com.google.android.calendar", "com.android.calendar", "com.samsung.android.calendar"),
    "camera": ("com.google.android.GoogleCamera", "com.android.camera2", "com.sec.android.app.camera"),
    "browser": ("com.android.chrome", "com.android.browser", "org.chromium.webview_shell", "com.sec.android.app.sbrowser"),
    "chrome": ("com.android.chrome",),
    "notes": ("com.google.android.keep", "com.samsung.android.app.notes", "com.android.notes"),
    "keep": ("com.google.android.keep",),
    "files": ("com.google.android.documentsui", "com.android.documentsui"),
    "gmail": ("com.google.android.gm",),
    "email": ("com.google.android.gm", "com.android.email"),
    "maps": ("com.google.android.apps.maps",),
    "photos": ("com.google.android.apps.photos", "com.android.gallery3d"),
    "gallery": ("com.google.android.apps.photos", "com.android.gallery3d", "com.sec.android.gallery3d"),
    "play store": ("com.android.vending",),
    "youtube": ("com.google.android.youtube",),
}


# --- adbutils, made fail-fast --------------------------------------------------------------

class _FailFastConnection(adbutils.AdbConnection):
    def _safe_connect(self) -> socket.socket:
        # adbutils runs `adb start-server` (up to 20 s) when nothing answers. A missing server
        # is the user's to start; say so at once instead.
        return self._create_socket()

    def close(self) -> None:
        # adbutils sleeps 10 ms after every shutdown; an agent step runs several commands and
        # the kernel delivers the FIN without waiting. Its socket lives in a private name.
        if not hasattr(self, "_AdbConnection__conn"):
            return super().close()
        sock = self._AdbConnection__conn
        if sock is None:
            return
        self._AdbConnection__conn = None
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()


class _FailFastClient(adbutils.AdbClient):
    """adbutils' client with connect errors reported at once and the server version cached
    (adbutils asks for it before every transport: a round trip per command otherwise)."""

    _version: int | None = None

    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        conn = _FailFastConnection(self.host, self.port)
        conn.conn.settimeout(timeout or self._timeout_s)
        return conn

    def server_version(self) -> int:
        if self._version is None:
            self._version = super().server_version()
        return self._version

    @property
    def _timeout_s(self) -> float:
        return getattr(self, "timeout_s", DEFAULT_TIMEOUT_S)


# --- parsing what the phone prints -----------------------------------------------------------

def parse_wm_size(text: str) -> tuple[int, int]:
    """Screen size from ``wm size``; an ``Override size`` (set by ``wm size WxH``) wins."""
    for label in ("Override size", "Physical size"):
        m = re.search(rf"{label}:\s*(\d+)\s*x\s*(\d+)", text)
        if m:
            return int(m.group(1)), int(m.group(2))
    raise DeviceError(f"cannot read the screen size from `wm size` output {text.strip()[:200]!r}")


def decode_png(data: bytes) -> Image.Image:
    """The screenshot in ``data``, or a DeviceError saying how it is broken."""
    if not data:
        raise DeviceError("screencap returned no data (screen off, or a secure window blocks capture?)")
    if not data.startswith(PNG_SIGNATURE):
        hint = " (line endings were rewritten: use exec-out, not a pty shell)" if data.startswith(b"\x89PNG\r\r\n") else ""
        raise DeviceError(f"screencap did not return a PNG{hint}; it starts with {data[:16]!r}")
    if not data.endswith(PNG_TRAILER):
        raise DeviceError(f"screencap returned a truncated PNG ({len(data)} bytes, no IEND chunk): the connection dropped mid-image?")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DeviceError(f"screencap returned a corrupt PNG ({len(data)} bytes): {exc}") from None
    return image.convert("RGB")


def resolve_package(app: str, installed: list[str] | None) -> str:
    """The Android package to launch for ``app``: a known name ("Settings") or a package.

    ``installed`` (from ``pm list packages``, None when unknown) picks among a name's
    candidate packages, and lets a name match an installed package's last part
    ("clock" -> com.example.clock).
    """
    name = " ".join(app.strip().lower().split())
    if not name:
        raise DeviceError("open_app needs an app name or package")
    if "." in name:  # a package, passed through once it is known to be one
        package = app.strip()
        if not _PACKAGE.match(package):
            raise DeviceError(f"{app!r} is not an Android package name (letters, digits, '_' and '.' only, like com.android.settings)")
        if installed is not None and package not in installed:
            raise DeviceError(f"package {package!r} is not installed on this device")
        return package
    candidates = APP_PACKAGES.get(name, ())
    if installed is None:
        if candidates:
            return candidates[0]
    else:
        for package in candidates:
            if package in installed:
                return package
        squashed = name.replace(" ", "")
        by_suffix = [p for p in installed if p.rsplit(".", 1)[-1].lower() == squashed]
        if len(by_suffix) == 1:
            return by_suffix[0]
        if len(by_suffix) > 1:
            raise DeviceError(f"app {app!r} is ambiguous on this device: {', '.join(by_suffix)}; pass the package")
        if candidates:
            raise DeviceError(f"app {app!r} is not installed on this device (looked for {', '.join(candidates)})")
    known = ", ".join(sorted(APP_PACKAGES))
    raise DeviceError(f"unknown app {app!r}: pass an Android package (like com.android.settings) or one of: {known}")


def battery_from_sysfs(values: dict[str, str]) -> Battery:
    """A Battery from ``/sys/class/power_supply/battery/*`` contents (kernel ABI units, see
    Documentation/ABI/testing/sysfs-class-power), with every unit or sign guess in ``notes``."""
    try:
        return _battery_from_sysfs(values)
    except ValueError as exc:
        raise DeviceError(f"unexpected battery sysfs contents {values}: {exc}") from None


def _battery_from_sysfs(values: dict[str, str]) -> Battery:
    b = Battery(source="sysfs")
    status = values.get("status", "").strip()
    if status:
        b.charging = {"Charging": True, "Discharging": False, "Not charging": False, "Full": False}.get(status)
    if "capacity" in values:
        b.level_pct = float(values["capacity"])
    if "temp" in values:
        b.temperature_c = int(values["temp"]) / 10  # tenths of a degree Celsius
    if "voltage_now" in values:
        uv = int(values["voltage_now"])
        if uv > 100_000:
            b.voltage_v = uv / 1e6
        elif 1000 <= uv <= 10_000:
            b.voltage_v = uv / 1e3
            b.notes.append(f"voltage_now={uv} read as mV (the kernel ABI says µV)")
        else:
            b.notes.append(f"voltage_now={uv} ignored: neither µV nor mV of a phone battery")
    if "charge_counter" in values:
        b.charge_counter_mah = int(values["charge_counter"]) / 1000  # µAh
    if "current_now" in values:
        raw = int(values["current_now"])
        if abs(raw) <= 10_000:
            into_battery_ma = float(raw)
            b.notes.append(f"current_now={raw}: |value| <= 10000 read as mA (the kernel ABI says µA)")
        else:
            into_battery_ma = raw / 1000
        # Kernel ABI and Android's BatteryManager: positive = current into the battery. Some
        # vendors flip it; a battery that reports "Discharging" cannot take current in.
        if status == "Discharging" and into_battery_ma > 0:
            b.current_ma = into_battery_ma
            b.notes.append("current_now is positive while discharging: vendor sign convention (positive = discharging) assumed")
        else:
            b.current_ma = -into_battery_ma
            b.notes.append("current_now sign per kernel ABI (negative = discharging)")
    return b


def battery_from_dumpsys(text: str) -> Battery:
    """A Battery from ``dumpsys battery`` (voltage in mV, temperature in tenths of °C)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    b = Battery(source="dumpsys battery")
    try:
        if "level" in fields:
            scale = float(fields.get("scale", "100") or 100)
            b.level_pct = float(fields["level"]) * 100 / scale
        if "voltage" in fields:
            mv = float(fields["voltage"])
            b.voltage_v = mv / 1000 if mv > 100 else mv
        if "temperature" in fields:
            b.temperature_c = float(fields["temperature"]) / 10
        if "charge counter" in fields:
            b.charge_counter_mah = float(fields["charge counter"]) / 1000
        if "status" in fields:
            b.charging = {"2": True, "3": False, "4": False, "5": False}.get(fields["status"])
    except ValueError as exc:
        raise DeviceError(f"cannot read `dumpsys battery` output: {exc}") from None
    if not fields:
        raise DeviceError(f"`dumpsys battery` printed nothing usable: {text.strip()[:200]!r}")
    b.notes.append("dumpsys battery has no current; current_ma unknown")
    return b


# --- the device ----------------------------------------------------------------------------

class AdbDevice(Device):
    """A phone behind an adb server (``host``:``port``, default 127.0.0.1:5037 or
    $ANDROID_ADB_SERVER_PORT). ``serial`` picks the device; by default the only one attached."""

    def __init__(
        self,
        serial: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.host = host or os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
        self.port = int(port or os.environ.get("ANDROID_ADB_SERVER_PORT", 5037))
        self.timeout_s = timeout_s
        self._client = _FailFastClient(self.host, self.port)
        self._client.timeout_s = timeout_s
        self.serial = self._choose_serial(serial or os.environ.get("ANDROID_SERIAL") or None)
        self._adb = self._client.device(self.serial)
        self._size: tuple[int, int] | None = None
        self._packages: list[str] | None = None
        self._adb_keyboard: bool | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adb-screencap")

    def __repr__(self) -> str:
        return f"AdbDevice(serial={self.serial!r}, server={self.host}:{self.port})"

    # --- talking to the server ---------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn whatever adbutils or the socket raises into one clear DeviceError."""
        where = f"the adb server at {self.host}:{self.port}"
        try:
            yield
        except DeviceError:
            raise
        except AdbConnectionError:
            raise DeviceError(
                f"cannot reach {where} while {what}: nothing is listening. Start it with `adb start-server` "
                f"(real phones) or `edgeagent emulator --adb-port {self.port}` (the emulated phone)"
            ) from None
        except (AdbTimeout, TimeoutError):
            raise DeviceError(f"no answer from {where} within {self.timeout_s:g} s while {what}; is the device frozen or unplugged?") from None
        except adbutils.AdbError as exc:
            message = str(exc)
            if "not found" in message and "device" in message:
                message += f": the device went away (check `adb -P {self.port} devices`)"
            raise DeviceError(f"adb failed while {what}: {message}") from None
        except (OSError, EOFError, ValueError) as exc:
            raise DeviceError(f"lost the connection to {where} while {what}: {exc or type(exc).__name__}") from None

    def _choose_serial(self, serial: str | None) -> str:
        with self._errors("listing devices"):
            infos = self._client.list()
        ready = [i.serial for i in infos if i.state == "device"]
        others = ", ".join(f"{i.serial} ({i.state})" for i in infos if i.state != "device")
        hint = f"; not ready: {others} (unauthorized: accept the USB debugging prompt on the phone)" if others else ""
        if serial is not None:
            if serial not in ready:
                raise DeviceError(f"device {serial!r} is not attached to the adb server at {self.host}:{self.port}; ready: {', '.join(ready) or 'none'}{hint}")
            return serial
        if not ready:
            raise DeviceError(f"no device attached to the adb server at {self.host}:{self.port}{hint}")
        if len(ready) > 1:
            raise DeviceError(f"{len(ready)} devices attached ({', '.join(ready)}); choose one by serial (adb:SERIAL)")
        return ready[0]

    def shell(self, argv: list[str], *, timeout_s: float | None = None) -> tuple[int, str, str]:
        """Run one command on the device: (exit code, stdout, stderr). ``argv`` is quoted word
        by word, so its items reach the program exactly, whatever characters they hold."""
        code, out, err = self._shell_bytes(argv, timeout_s=timeout_s)
        return code, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")

    def _shell_bytes(self, argv: list[str], *, timeout_s: float | None = None) -> tuple[int, bytes, bytes]:
        command = shell_command(argv)
        with self._errors(f"running `{command[:80]}`"):
            r = self._adb.shell2(command, timeout=timeout_s or self.timeout_s, encoding=None, v2=True)
        if r.stdout or r.stderr:
            return r.returncode, r.stdout, r.stderr
        return r.returncode, r.output, b""  # a shell v1 device mixes both streams

    def _run_checked(self, argv: list[str], what: str) -> str:
        code, out, err = self.shell(argv)
        # `input` reports bad arguments with an exception and, on older Androids, exit code 0.
        if code != 0 or "Exception" in err or err.startswith("Error"):
            detail = (err or out).strip().splitlines()
            raise DeviceError(f"{what} failed on {self.serial} (exit code {code}): {detail[-1] if detail else 'no output'}")
        return out

    def _exec_out(self, argv: list[str], limit: int, timeout_s: float) -> bytes:
        """Raw stdout of a command (``adb exec-out``): no pty, so binary output is intact."""
        command = shell_command(argv)
        with self._errors(f"running `exec-out {command}`"):
            c = self._adb.open_transport(timeout=timeout_s)
            try:
                c.send_command("exec:" + command)
                c.check_okay()
                data = bytearray()
                while chunk := c.conn.recv(256 * 1024):
                    data += chunk
                    if len(data) > limit:
                        raise DeviceError(f"`{command}` sent more than {limit} bytes; refusing the rest")
            finally:
                c.close()
        return bytes(data)

    def _read_file(self, path: str, limit: int) -> bytes:
        with self._errors(f"reading {path}"):
            data = bytearray()
            for chunk in self._adb.sync.iter_content(path):
                data += chunk
                if len(data) > limit:
                    raise DeviceError(f"{path} on the device is larger than {limit} bytes; refusing it")
        return bytes(data)

    # --- observation -------------------------------------------------------------------
    def _capture(self) -> Screen:
        # The screenshot travels while uiautomator dumps: a step costs the slower of the two
        # (on phones the dump, often a second or more), and both show nearly the same moment.
        shot = self._pool.submit(self._exec_out, ["screencap", "-p"], MAX_SCREENSHOT_BYTES, max(self.timeout_s, SCREENCAP_TIMEOUT_S))
        try:
            elements = self.ui_elements()
        finally:
            wait([shot])  # never leave a capture running into the next command
        image = decode_png(shot.result())
        packages = Counter(e.package for e in elements if e.package and e.package != "com.android.systemui")
        app = packages.most_common(1)[0][0] if packages else None
        return Screen(image=image, elements=elements, size=self.size(), app=app)

    def ui_elements(self) -> list[UIElement]:
        """The screen's UI elements from ``uiautomator dump`` (retried while the screen is busy)."""
        printed = ""
        for _ in range(DUMP_ATTEMPTS):
            code, out, err = self.shell(["uiautomator", "dump", DUMP_PATH], timeout_s=max(self.timeout_s, DUMP_TIMEOUT_S))
            printed = (out + err).strip()
            if "dumped to" in printed:
                break
            if "could not get idle state" not in printed:
                raise DeviceError(f"uiautomator dump failed on {self.serial} (exit code {code}): {printed[:300] or 'no output'}")
        else:
            raise DeviceError(
                f"uiautomator could not dump the screen of {self.serial} after {DUMP_ATTEMPTS} tries: it never went "
                "idle (ERROR: could not get idle state.). An animation or video may be playing; pause it and retry"
            )
        try:
            return parse_dump(self._read_file(DUMP_PATH, MAX_DUMP_BYTES))
        except UIDumpError as exc:
            raise DeviceError(f"the UI dump from {self.serial} is unusable: {exc}") from exc

    def size(self) -> tuple[int, int]:
        # Cached: `act` asks for it more than once per action, and it only changes with `wm size`.
        if self._size is None:
            self._size = parse_wm_size(self._run_checked(["wm", "size"], "wm size"))
        return self._size

    # --- actions -------------------------------------------------------------------------
    def _check_point(self, x: int, y: int) -> None:
        w, h = self.size()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y)):
            raise DeviceError(f"coordinates must be integers, got ({x!r}, {y!r})")
        if not (0 <= x < w and 0 <= y < h):
            raise DeviceError(f"point ({x}, {y}) is outside the {w}x{h} screen of {self.serial}")

    def tap(self, x: int, y: int) -> None:
        self._check_point(x, y)
        self._run_checked(["input", "tap", str(x), str(y)], f"tap at ({x}, {y})")

    def swipe(self, x1: int, y1: int, x2: int, y2: int, duration_ms: int = SWIPE_MS) -> None:
        self._check_point(x1, y1)
        self._check_point(x2, y2)
        if not isinstance(duration_ms, int) or not 0 < duration_ms <= 60_000:
            raise DeviceError(f"swipe duration must be 1..60000 ms, got {duration_ms!r}")
        argv = ["input", "swipe", str(x1), str(y1), str(x2), str(y2), str(duration_ms)]
        self._run_checked(argv, f"swipe ({x1}, {y1}) -> ({x2}, {y2})")

    def key(self, keycode: int) -> None:
        if not isinstance(keycode, int) or isinstance(keycode, bool) or not 0 < keycode < 1000:
            raise DeviceError(f"not an Android key code: {keycode!r}")
        self._run_checked(["input", "keyevent", str(keycode)], f"key event {keycode}")

    def input_text(self, text: str) -> None:
        adb_keyboard = False if typeable_with_input_text(text) else self.has_adb_keyboard()
        try:
            argvs = typing_argvs(text, adb_keyboard=adb_keyboard)
        except TextInputError as exc:
            raise DeviceError(f"cannot type {text[:40]!r} on {self.serial}: {exc}") from exc
        for argv in argvs:
            self._run_checked(argv, f"typing {text[:40]!r}")

    def has_adb_keyboard(self) -> bool:
        """Whether ADB Keyboard is the current input method (needed to type non-ASCII)."""
        if self._adb_keyboard is None:
            _, out, _ = self.shell(["settings", "get", "secure", "default_input_method"])
            self._adb_keyboard = out.strip() == ADB_KEYBOARD_IME
        return self._adb_keyboard

    def installed_packages(self) -> list[str] | None:
        """Packages from ``pm list packages`` (cached), or None when the device will not say."""
        if self._packages is None:
            code, out, _ = self.shell(["pm", "list", "packages"])
            if code != 0:
                return None
            self._packages = [line.removeprefix("package:").strip() for line in out.splitlines() if line.startswith("package:")]
        return self._packages

    def launch(self, app: str) -> None:
        try:
            package = resolve_package(app, self.installed_packages())
        except DeviceError:
            if self._packages is None:
                raise
            self._packages = None  # the cached list may predate an install: read it again
            package = resolve_package(app, self.installed_packages())
        code, out, err = self.shell(["monkey", "-p", package, "-c", "android.intent.category.LAUNCHER", "1"])
        printed = out + err
        if code != 0 or "No activities found" in printed or "monkey aborted" in printed:
            raise DeviceError(f"could not launch {app!r} ({package}) on {self.serial}: it has no launcher activity")

    # --- battery ---------------------------------------------------------------------------
    def battery(self) -> Battery:
        """Battery from sysfs (has current), completed from ``dumpsys battery`` when the
        kernel hides some files (SELinux on recent Androids)."""
        values = self._battery_sysfs_values()
        b = battery_from_sysfs(values) if values else Battery(source="none", notes=["no battery sysfs files readable"])
        if b.level_pct is None or b.voltage_v is None or b.charging is None:
            code, out, _ = self.shell(["dumpsys", "battery"])
            if code == 0 and out.strip():
                d = battery_from_dumpsys(out)
                for name in ("level_pct", "voltage_v", "charge_counter_mah", "temperature_c", "charging"):
                    if getattr(b, name) is None:
                        setattr(b, name, getattr(d, name))
                b.source = "dumpsys battery" if not values else "sysfs+dumpsys battery"
                if b.current_ma is None:
                    b.notes += d.notes
        return b

    def _battery_sysfs_values(self) -> dict[str, str]:
        paths = [f"{BATTERY_SYSFS}/{name}" for name in BATTERY_FILES]
        _, out, err = self.shell(["cat", *paths])
        lines = (out + "\n" + err).splitlines()
        errors = [line for line in lines if line.startswith("cat: ")]
        values = [line.strip() for line in lines if line.strip() and not line.startswith("cat: ")]
        present = [n for n, p in zip(BATTERY_FILES, paths) if not any(p + ":" in e for e in errors)]
        if len(values) != len(present):
            return {}  # cannot tell which value belongs to which file
        return dict(zip(present, values))
