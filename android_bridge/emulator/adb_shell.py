"""The phone-side commands behind the loopback adb server: ``adb shell`` without a shell.

A command line arrives as text, the way adbd receives it. It is split with ``shlex`` and
dispatched to a small table of the commands an agent (and a person poking with ``adb shell``)
uses: ``input``, ``screencap``, ``uiautomator dump``, ``cat``, ``monkey``, ``am``, ``wm``,
``dumpsys battery``, ``getprop``... Nothing is ever handed to a real shell.

A phone's shell would expand ``$(...)``, globs, ``;`` and friends where ``shlex`` takes them
literally. Rather than quietly differ from a phone (a test passing here while the same command
runs something on a real device), command lines that use shell syntax are refused with
exit code 2. Properly quoted text, as ``android_bridge.escape`` produces, goes through.

Output mimics a phone's where a client parses it (``wm size``, ``dumpsys battery``, sysfs
battery files in kernel ABI units, ``uiautomator``'s ``UI hierchary dumped to:`` with
Android's own typo, ``/system/bin/sh: X: not found`` with exit code 127).

Length (about 700 lines) on purpose: one ``PhoneShell`` whose methods are the rows of the
command table above, all sharing its parser and its view of the phone's files; a split by
command would pass that state around without shortening any command.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import io
import math
import posixpath
import shlex
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from android_bridge.device import Battery, DeviceError
from android_bridge.escape import ADB_KEYBOARD_B64_ACTION, ADB_KEYBOARD_IME, decode_input_text

# (current_ma, voltage_v): current positive when discharging, as in ``Battery``.
BatteryReading = tuple[float, float]
# A scripted battery: a function of seconds since the server started, or readings taken one
# per battery query (the last one repeats), so energy integration can be tested exactly.
BatteryScript = Union[Callable[[float], BatteryReading], Sequence[BatteryReading]]

BATTERY_SYSFS = "/sys/class/power_supply/battery"


@dataclass(frozen=True)
class BatteryQuirks:
    """How a scripted phone's sysfs battery files depart from the kernel ABI, as real vendors'
    do: ``current_unit`` "uA" (the ABI) or "mA"; ``sign`` "kernel" (negative = discharging)
    or "flipped"; ``charge_counter`` False hides the coulomb counter. With a script, the
    counter follows the scripted current (integrated between queries), as a gauge's does."""

    current_unit: str = "uA"
    sign: str = "kernel"
    charge_counter: bool = True

    def __post_init__(self) -> None:
        if self.current_unit not in ("uA", "mA") or self.sign not in ("kernel", "flipped"):
            raise ValueError(f"battery quirks: current_unit must be uA or mA, sign kernel or flipped (got {self})")
DEFAULT_DUMP_PATH = "/sdcard/window_dump.xml"
LATIN_IME = "com.android.inputmethod.latin/.LatinIME"
ADB_KEYBOARD_B64_TEXT = "ADB_INPUT_TEXT"
MONKEY_ABORTED_EXIT = 252  # what `monkey` exits with when it finds nothing to launch

# Where `adb push` / `screencap FILE` / `uiautomator dump FILE` may write, as on a phone.
WRITABLE_DIRS = ("/sdcard", "/data/local/tmp")
_DIRECTORIES = frozenset({
    "/", "/sdcard", "/data", "/data/local", "/data/local/tmp", "/sys", "/sys/class",
    "/sys/class/power_supply", BATTERY_SYSFS,
})

# android.view.KeyEvent names `input keyevent` accepts besides numbers (a useful subset).
KEYCODES = {
    "HOME": 3, "BACK": 4, "CALL": 5, "ENDCALL": 6, "DPAD_UP": 19, "DPAD_DOWN": 20,
    "DPAD_LEFT": 21, "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24, "VOLUME_DOWN": 25,
    "POWER": 26, "TAB": 61, "SPACE": 62, "ENTER": 66, "DEL": 67, "MENU": 82, "SEARCH": 84,
    "ESCAPE": 111, "FORWARD_DEL": 112, "MOVE_HOME": 122, "MOVE_END": 123, "APP_SWITCH": 187,
}

# Characters a POSIX shell treats specially outside quotes (operators, expansions, globs,
# comments, tilde, history/negation), and inside double quotes (expansions, escapes).
_SPECIAL_UNQUOTED = frozenset(";&|<>()$`*?[]{}~#!\n\r")
_SPECIAL_IN_DOUBLE_QUOTES = frozenset("$`\\")


@dataclass
class ShellResult:
    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0


MAX_INPUT_NUMBER = 1e9  # pixels or milliseconds; a larger `input` argument is a mistake

# The emulated phone keeps pushed and written files in memory: bounded, so `adb push` of a
# few large files cannot take the host's memory.
MAX_FILE_BYTES = 64 * 2**20
MAX_TOTAL_BYTES = 256 * 2**20


def check_file_size(path: str, size: int) -> None:
    """OSError (EFBIG) naming ``path`` when a file of ``size`` bytes is over ``MAX_FILE_BYTES``."""
    if size > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"{path}: File too large (the emulator takes files up to {MAX_FILE_BYTES >> 20} MiB)")


class _CommandFailed(Exception):
    """Raised inside a command to end it with a message on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def shell_syntax_problem(command: str) -> str | None:
    """Why a real shell would read ``command`` differently from ``shlex.split``, or None."""
    quote: str | None = None
    escaped = False
    for c in command:
        if escaped:
            escaped = False
        elif quote == "'":
            if c == "'":
                quote = None
        elif quote == '"':
            if c == '"':
                quote = None
            elif c in _SPECIAL_IN_DOUBLE_QUOTES:
                return f"{c!r} inside double quotes"
        elif c == "\\":
            escaped = True
        elif c in "'\"":
            quote = c
        elif c in _SPECIAL_UNQUOTED:
            return f"unquoted {c!r}"
    if quote is not None or escaped:
        return "an unterminated quote or escape"
    return None


@dataclass(frozen=True)
class FileStat:
    mode: int
    size: int
    mtime: int


class PhoneShell:
    """Runs adb shell command lines against one phone.

    ``phone`` is anything with the Device primitives (``tap``, ``swipe``, ``key``,
    ``input_text``, ``launch``, ``size``, ``battery``) plus ``dump_xml()`` and
    ``screenshot()``; ``installed_packages()`` is used when it exists. Calls into the phone
    are serialised by one lock, since adb clients may connect from several threads.
    """

    def __init__(
        self,
        phone: Any,
        *,
        serial: str,
        battery_script: BatteryScript | None = None,
        battery_quirks: BatteryQuirks = BatteryQuirks(),
        adb_keyboard: bool = True,
    ) -> None:
        self.phone = phone
        self.serial = serial
        self.battery_script = battery_script
        self.battery_quirks = battery_quirks
        self._counter: tuple[float, float, float] | None = None  # (t, current mA, counter mAh) at the last query
        self.adb_keyboard = adb_keyboard  # ADB Keyboard is the current IME: non-ASCII typing works
        self.lock = threading.RLock()
        self.files: dict[str, tuple[bytes, int]] = {}  # path -> (content, mtime)
        # Fault injection for tests: the next N `uiautomator dump`s fail like a phone whose
        # screen never idles; screencap PNG bytes pass through this hook when set.
        self.idle_failures = 0
        self.screencap_hook: Callable[[bytes], bytes] | None = None
        self._started = time.monotonic()
        self._battery_queries = 0
        self._commands: dict[str, Callable[[list[str]], ShellResult]] = {
            "am": self._am,
            "cat": self._cat,
            "dumpsys": self._dumpsys,
            "echo": self._echo,
            "getprop": self._getprop,
            "ime": self._ime,
            "input": self._input,
            "ls": self._ls,
            "monkey": self._monkey,
            "pm": self._pm,
            "rm": self._rm,
            "screencap": self._screencap,
            "settings": self._settings,
            "uiautomator": self._uiautomator,
            "wm": self._wm,
        }

    # --- entry point -------------------------------------------------------------------
    def run(self, command: str) -> ShellResult:
        problem = shell_syntax_problem(command)
        if problem:
            return ShellResult(
                stderr=(
                    f"/system/bin/sh: edgeagent emulator: {problem} is shell syntax, which this "
                    "emulated phone does not run; send one command with its arguments quoted\n"
                ).encode(),
                exit_code=2,
            )
        argv = shlex.split(command)
        if not argv:
            return ShellResult()
        handler = self._commands.get(argv[0])
        if handler is None:
            return ShellResult(stderr=f"/system/bin/sh: {argv[0]}: not found\n".encode(), exit_code=127)
        # screencap takes the lock only to draw, so its PNG encoding overlaps other commands
        # (a client may dump the UI while the screenshot is on its way, as AdbDevice does).
        lock = self.lock if argv[0] != "screencap" else contextlib.nullcontext()
        with lock:
            try:
                return handler(argv[1:])
            except _CommandFailed as exc:
                return ShellResult(stderr=f"{exc}\n".encode(), exit_code=exc.exit_code)
            except DeviceError as exc:
                return ShellResult(stderr=f"{argv[0]}: {exc}\n".encode(), exit_code=1)

    # --- files -------------------------------------------------------------------------
    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath(posixpath.join("/", path))

    def write_file(self, path: str, data: bytes) -> None:
        """Store a file; refused (OSError with the reason) outside the writable directories,
        above ``MAX_FILE_BYTES``, or when the files held would pass ``MAX_TOTAL_BYTES``."""
        path = self._norm(path)
        if not any(path.startswith(d + "/") for d in WRITABLE_DIRS):
            raise PermissionError(f"{path}: Read-only file system")
        check_file_size(path, len(data))
        with self.lock:
            held = sum(len(content) for p, (content, _) in self.files.items() if p != path)
            if held + len(data) > MAX_TOTAL_BYTES:
                raise OSError(errno.ENOSPC, f"{path}: No space left on device (the emulator holds at most "
                                            f"{MAX_TOTAL_BYTES >> 20} MiB of files; {held >> 20} MiB used)")
            self.files[path] = (bytes(data), int(time.time()))

    def read_file(self, path: str) -> bytes:
        path = self._norm(path)
        with self.lock:
            if path in self.files:
                return self.files[path][0]
            if posixpath.dirname(path) == BATTERY_SYSFS:
                value = self._battery_sysfs().get(posixpath.basename(path))
                if value is not None:
                    return f"{value}\n".encode()
            if self._is_dir(path):
                raise IsADirectoryError(f"{path}: Is a directory")
        raise FileNotFoundError(f"{path}: No such file or directory")

    def _is_dir(self, path: str) -> bool:
        return path in _DIRECTORIES or any(p.startswith(path.rstrip("/") + "/") for p in self.files)

    def stat(self, path: str) -> FileStat | None:
        path = self._norm(path)
        with self.lock:
            if self._is_dir(path):
                return FileStat(stat.S_IFDIR | 0o771, 4096, int(self._started_wall()))
            if posixpath.dirname(path) == BATTERY_SYSFS and path not in self.files:
                # sysfs files report a 4096-byte size whatever they hold, as on a phone.
                present = self._battery_sysfs(self.battery_reading(advance=False)).get(posixpath.basename(path))
                return None if present is None else FileStat(stat.S_IFREG | 0o444, 4096, int(time.time()))
            try:
                data = self.read_file(path)
            except OSError:
                return None
            mtime = self.files[path][1] if path in self.files else int(time.time())
            return FileStat(stat.S_IFREG | 0o660, len(data), mtime)

    def list_dir(self, path: str) -> list[tuple[str, FileStat]]:
        path = self._norm(path)
        with self.lock:
            names: set[str] = set()
            prefix = path.rstrip("/") + "/"
            for p in list(self.files) + sorted(_DIRECTORIES):
                if p.startswith(prefix) and p != prefix:
                    names.add(p[len(prefix):].split("/", 1)[0])
            if path == BATTERY_SYSFS:
                names.update(self._battery_sysfs_names())
            entries = []
            for name in sorted(names):
                st = self.stat(prefix + name)
                if st is not None:
                    entries.append((name, st))
            return entries

    def _started_wall(self) -> float:
        return time.time() - (time.monotonic() - self._started)

    # --- battery -----------------------------------------------------------------------
    def battery_reading(self, advance: bool = True) -> Battery:
        """The phone's battery now, with the scripted current/voltage when a script is set.

        Each query takes the next scripted reading; ``advance=False`` peeks (a sync STAT
        before a pull is not a second sample).
        """
        base = self.phone.battery()
        script = self.battery_script
        if script is None:
            return base
        if callable(script):
            current_ma, voltage_v = script(time.monotonic() - self._started)
        else:
            if not script:
                raise DeviceError("the scripted battery has no readings")
            current_ma, voltage_v = script[min(self._battery_queries, len(script) - 1)]
        counter = self._scripted_counter(base.charge_counter_mah, current_ma, advance)
        if advance:
            self._battery_queries += 1
        return Battery(
            level_pct=base.level_pct,
            voltage_v=voltage_v,
            current_ma=current_ma,
            charge_counter_mah=counter if self.battery_quirks.charge_counter else None,
            temperature_c=base.temperature_c,
            charging=current_ma < 0,  # the script decides which way the current flows
            source="scripted",
        )

    def _scripted_counter(self, start_mah: float | None, current_ma: float, advance: bool) -> float | None:
        """The coulomb counter under a script: it starts at the phone's and falls by the
        trapezoid of the scripted discharge current between queries."""
        if start_mah is None:
            return None
        now = time.monotonic()
        t, last_ma, counter = self._counter or (now, current_ma, start_mah)
        counter -= (now - t) * (last_ma + current_ma) / 2 / 3600.0
        if advance:
            self._counter = (now, current_ma, counter)
        return counter

    @staticmethod
    def _battery_sysfs_names() -> list[str]:
        return ["capacity", "charge_counter", "current_now", "status", "temp", "voltage_now"]

    def _battery_sysfs(self, reading: Battery | None = None) -> dict[str, str | None]:
        """sysfs files in kernel ABI units (Documentation/ABI/testing/sysfs-class-power):
        µA with negative = discharging, µV, µAh, tenths of a degree C."""
        b = reading or self.battery_reading()
        status = "Unknown" if b.charging is None else ("Charging" if b.charging else "Discharging")
        if b.charging is False and b.level_pct is not None and b.level_pct >= 100:
            status = "Full"
        return {
            "capacity": None if b.level_pct is None else str(round(b.level_pct)),
            "charge_counter": None if b.charge_counter_mah is None else str(round(b.charge_counter_mah * 1000)),
            "current_now": None if b.current_ma is None else self._current_now(b.current_ma),
            "status": status,
            "temp": None if b.temperature_c is None else str(round(b.temperature_c * 10)),
            "voltage_now": None if b.voltage_v is None else str(round(b.voltage_v * 1_000_000)),
        }

    def _current_now(self, discharge_ma: float) -> str:
        q = self.battery_quirks
        value = -discharge_ma if q.sign == "kernel" else discharge_ma
        return str(round(value * (1000 if q.current_unit == "uA" else 1)))

    # --- commands ----------------------------------------------------------------------
    def _cat(self, args: list[str]) -> ShellResult:
        out, err, code = io.BytesIO(), io.BytesIO(), 0
        battery: dict[str, str | None] | None = None  # one reading per command, like one sample
        for path in args:
            norm = self._norm(path)
            try:
                if posixpath.dirname(norm) == BATTERY_SYSFS and norm not in self.files:
                    battery = battery if battery is not None else self._battery_sysfs()
                    value = battery.get(posixpath.basename(norm))
                    if value is None:
                        raise FileNotFoundError(f"{path}: No such file or directory")
                    out.write(f"{value}\n".encode())
                else:
                    out.write(self.read_file(norm))
            except OSError as exc:
                err.write(f"cat: {path}: {exc.args[0].split(': ', 1)[-1]}\n".encode())
                code = 1
        return ShellResult(out.getvalue(), err.getvalue(), code)

    def _echo(self, args: list[str]) -> ShellResult:
        return ShellResult((" ".join(args) + "\n").encode())

    def _ls(self, args: list[str]) -> ShellResult:
        paths = [a for a in args if not a.startswith("-")] or ["/"]
        out, err, code = [], [], 0
        for path in paths:
            st = self.stat(path)
            if st is None:
                err.append(f"ls: {path}: No such file or directory\n")
                code = 1
            elif stat.S_ISDIR(st.mode):
                out.extend(f"{name}\n" for name, _ in self.list_dir(path))
            else:
                out.append(f"{path}\n")
        return ShellResult("".join(out).encode(), "".join(err).encode(), code)

    def _rm(self, args: list[str]) -> ShellResult:
        force = any(a.startswith("-") and "f" in a for a in args)
        err, code = [], 0
        for path in (a for a in args if not a.startswith("-")):
            norm = self._norm(path)
            if norm in self.files:
                del self.files[norm]
            elif not force:
                err.append(f"rm: {path}: No such file or directory\n")
                code = 1
        return ShellResult(b"", "".join(err).encode(), code)

    def _screencap_png(self) -> bytes:
        with self.lock:
            image = self.phone.screenshot()
        buf = io.BytesIO()
        # compress_level 1: a screenshot per agent step, so encoding speed beats file size.
        image.save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
        return self.screencap_hook(data) if self.screencap_hook else data

    def _screencap(self, args: list[str]) -> ShellResult:
        png = "-p" in args
        rest = [a for a in args if a != "-p"]
        if "-d" in rest:  # display id: the emulated phone has one display
            i = rest.index("-d")
            del rest[i : i + 2]
        path = rest[0] if rest else None
        if path is not None and path.endswith(".png"):
            png = True
        if not png:
            raise _CommandFailed("screencap: the edgeagent emulator only writes PNG; use screencap -p")
        data = self._screencap_png()
        if path is None:
            return ShellResult(data)
        self._write_or_fail(path, data, "screencap")
        return ShellResult()

    def _write_or_fail(self, path: str, data: bytes, who: str) -> None:
        try:
            self.write_file(path, data)
        except PermissionError as exc:
            raise _CommandFailed(f"{who}: {exc}") from None

    def _uiautomator(self, args: list[str]) -> ShellResult:
        if not args or args[0] != "dump":
            raise _CommandFailed("uiautomator: the edgeagent emulator supports `uiautomator dump [FILE]`")
        paths = [a for a in args[1:] if not a.startswith("--")]  # --compressed, --windows
        path = paths[0] if paths else DEFAULT_DUMP_PATH
        if self.idle_failures > 0:
            # What UiAutomator's DumpCommand does when the screen never idles: say so, dump nothing.
            self.idle_failures -= 1
            return ShellResult(stderr=b"ERROR: could not get idle state.\n")
        xml = self.phone.dump_xml().encode("utf-8")
        done = f"UI hierchary dumped to: {path}\n".encode()
        if path == "/dev/tty":
            return ShellResult(xml + done)
        self._write_or_fail(path, xml, "uiautomator")
        return ShellResult(done)

    def _input(self, args: list[str]) -> ShellResult:
        # `input [SOURCE] COMMAND ARGS`: a source such as "touchscreen" may come first.
        if args and args[0] in ("touchscreen", "touchpad", "keyboard", "mouse", "stylus", "dpad", "gamepad", "trackball"):
            args = args[1:]
        if not args:
            raise _CommandFailed("usage: input [<source>] <command> [<arg>...]")
        cmd, rest = args[0], args[1:]
        if cmd == "tap":
            x, y = self._numbers(rest, 2, "input tap <x> <y>")
            self.phone.tap(x, y)
        elif cmd in ("swipe", "draganddrop"):
            if len(rest) not in (4, 5):
                raise _CommandFailed(f"usage: input {cmd} <x1> <y1> <x2> <y2> [duration(ms)]")
            x1, y1, x2, y2, *ms = self._numbers(rest, len(rest), f"input {cmd} <x1> <y1> <x2> <y2> [duration(ms)]")
            self.phone.swipe(x1, y1, x2, y2, ms[0] if ms else 300)
        elif cmd == "keyevent":
            codes = [a for a in rest if a not in ("--longpress", "--doubletap")]
            if not codes:
                raise _CommandFailed("usage: input keyevent [--longpress] <key code number or name> ...")
            for code in codes:
                self.phone.key(self._keycode(code))
        elif cmd == "text":
            if not rest:
                raise _CommandFailed("usage: input text <string>")
            # Android types only the first argument; `%s` in it stands for a space.
            self.phone.input_text(decode_input_text(rest[0]))
        else:
            raise _CommandFailed(f"Error: Unknown command: {cmd}")
        return ShellResult()

    @staticmethod
    def _numbers(args: list[str], n: int, usage: str) -> list[int]:
        if len(args) != n:
            raise _CommandFailed(f"usage: {usage}")
        try:
            values = [float(a) for a in args]  # `input` accepts floats and truncates
        except ValueError:
            raise _CommandFailed(f"input: not a number in {args}; usage: {usage}") from None
        bad = next((a for a, v in zip(args, values) if not math.isfinite(v) or abs(v) > MAX_INPUT_NUMBER), None)
        if bad is not None:
            raise _CommandFailed(f"input: {bad[:40]!r} is not a finite number up to {MAX_INPUT_NUMBER:.0e}; usage: {usage}")
        return [int(v) for v in values]

    @staticmethod
    def _keycode(name: str) -> int:
        if name.isdigit():
            if len(name) > 9:
                raise _CommandFailed(f"input keyevent: key code {name[:20]}... is out of range")
            return int(name)
        code = KEYCODES.get(name.removeprefix("KEYCODE_"))
        if code is None:
            raise _CommandFailed(f"Error: unknown keycode {name!r}")
        return code

    def _packages(self) -> list[str]:
        """Installed packages: ``phone.installed_packages()`` when the phone has it, else the
        keys of its ``apps`` table and its launcher's package (as EmulatedPhone keeps them)."""
        listing = getattr(self.phone, "installed_packages", None)
        if callable(listing):
            return sorted(listing())
        packages = set(getattr(self.phone, "apps", None) or {})
        launcher = getattr(getattr(self.phone, "launcher", None), "package", None)
        if launcher:
            packages.add(launcher)
        return sorted(packages)

    def _launch(self, package: str) -> None:
        packages = self._packages()
        if packages and package not in packages:
            raise DeviceError(f"no launcher activity for package {package!r}")
        self.phone.launch(package)

    def _monkey(self, args: list[str]) -> ShellResult:
        package = None
        for i, a in enumerate(args):
            if a == "-p" and i + 1 < len(args):
                package = args[i + 1]
        if package is None:
            raise _CommandFailed("usage: monkey -p <package> [-c <category>] <event-count>")
        try:
            self._launch(package)
        except DeviceError:
            return ShellResult(b"  bash arg: -p\n** No activities found to run, monkey aborted.\n", exit_code=MONKEY_ABORTED_EXIT)
        return ShellResult(f"  bash arg: -p\n  bash arg: {package}\nEvents injected: 1\n## Network stats: elapsed time=5ms\n".encode())

    def _am(self, args: list[str]) -> ShellResult:
        if not args:
            raise _CommandFailed("usage: am start -n <package>/<activity> | am broadcast -a <action> ...")
        sub, opts = args[0], self._intent_options(args[1:])
        if sub == "start":
            component = opts.get("-n", "")
            package = component.split("/", 1)[0] if component else opts.get("-p", "")
            if not package:
                raise _CommandFailed("Error: the edgeagent emulator starts apps by component: am start -n <package>/<activity>")
            try:
                self._launch(package)
            except DeviceError:
                return ShellResult(
                    f"Starting: Intent {{ cmp={component or package} }}\n".encode(),
                    f"Error type 3\nError: Activity class {{{component or package}}} does not exist.\n".encode(),
                    1,
                )
            return ShellResult(f"Starting: Intent {{ cmp={component or package} }}\n".encode())
        if sub == "broadcast":
            return self._broadcast(opts)
        if sub == "force-stop":
            return ShellResult()
        raise _CommandFailed(f"Error: unknown am command {sub!r}")

    @staticmethod
    def _intent_options(args: list[str]) -> dict[str, str]:
        opts: dict[str, str] = {}
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("--es", "--ei", "--ez") and i + 2 < len(args):
                opts[f"extra:{args[i + 1]}"] = args[i + 2]
                i += 3
            elif a.startswith("-") and i + 1 < len(args) and a not in ("-W", "-S", "--user"):
                opts[a] = args[i + 1]
                i += 2
            else:
                i += 1
        return opts

    def _broadcast(self, opts: dict[str, str]) -> ShellResult:
        action = opts.get("-a", "")
        pkg = f" pkg={opts['-p']}" if "-p" in opts else ""
        msg = opts.get("extra:msg")
        head = f"Broadcasting: Intent {{ act={action}{pkg} flg=0x400000 (has extras) }}\n".encode()
        if self.adb_keyboard and action in (ADB_KEYBOARD_B64_ACTION, ADB_KEYBOARD_B64_TEXT) and msg is not None:
            if action == ADB_KEYBOARD_B64_ACTION:
                try:
                    msg = base64.b64decode(msg, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    return ShellResult(head + b"Broadcast completed: result=0\n")  # the IME ignores it
            self.phone.input_text(msg)
        return ShellResult(head + b"Broadcast completed: result=0\n")

    def _pm(self, args: list[str]) -> ShellResult:
        if args[:2] != ["list", "packages"]:
            raise _CommandFailed("pm: the edgeagent emulator supports `pm list packages [FILTER]`")
        words = [a for a in args[2:] if not a.startswith("-")]
        listed = [p for p in self._packages() if not words or words[0] in p]
        return ShellResult("".join(f"package:{p}\n" for p in listed).encode())

    def _wm(self, args: list[str]) -> ShellResult:
        if args == ["size"]:
            w, h = self.phone.size()
            return ShellResult(f"Physical size: {w}x{h}\n".encode())
        if args == ["density"]:
            return ShellResult(b"Physical density: 420\n")
        raise _CommandFailed("wm: the edgeagent emulator supports `wm size` and `wm density`")

    def _dumpsys(self, args: list[str]) -> ShellResult:
        if args[:1] != ["battery"]:
            service = args[0] if args else ""
            return ShellResult(f"Can't find service: {service}\n".encode())
        b = self.battery_reading()
        status = {None: 1, True: 2, False: 3}[b.charging]
        lines = [
            "Current Battery Service state:",
            "  AC powered: false",
            f"  USB powered: {'true' if b.charging else 'false'}",
            "  Wireless powered: false",
        ]
        if b.charge_counter_mah is not None:
            lines.append(f"  Charge counter: {round(b.charge_counter_mah * 1000)}")
        lines += [f"  status: {status}", "  health: 2", "  present: true"]
        if b.level_pct is not None:
            lines.append(f"  level: {round(b.level_pct)}")
        lines.append("  scale: 100")
        if b.voltage_v is not None:
            lines.append(f"  voltage: {round(b.voltage_v * 1000)}")  # dumpsys reports mV
        if b.temperature_c is not None:
            lines.append(f"  temperature: {round(b.temperature_c * 10)}")
        lines.append("  technology: Li-ion")
        return ShellResult(("\n".join(lines) + "\n").encode())

    def properties(self) -> dict[str, str]:
        return {
            "ro.product.model": "EdgeAgent Emulated Phone",
            "ro.product.manufacturer": "edgeagent",
            "ro.product.brand": "edgeagent",
            "ro.product.name": "edgeagent_phone",
            "ro.product.device": "edgeagent",
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.build.version.release": "14",
            "ro.build.version.sdk": "34",
            "ro.serialno": self.serial,
            "sys.boot_completed": "1",
        }

    def _getprop(self, args: list[str]) -> ShellResult:
        props = self.properties()
        if args:
            return ShellResult(f"{props.get(args[0], args[1] if len(args) > 1 else '')}\n".encode())
        return ShellResult("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())).encode())

    def _current_ime(self) -> str:
        return ADB_KEYBOARD_IME if self.adb_keyboard else LATIN_IME

    def _settings(self, args: list[str]) -> ShellResult:
        if args == ["get", "secure", "default_input_method"]:
            return ShellResult(f"{self._current_ime()}\n".encode())
        if len(args) == 3 and args[0] == "get":
            return ShellResult(b"null\n")
        raise _CommandFailed("settings: the edgeagent emulator supports `settings get NAMESPACE KEY`")

    def _ime(self, args: list[str]) -> ShellResult:
        if args[:1] != ["list"]:
            raise _CommandFailed("ime: the edgeagent emulator supports `ime list -s`")
        imes = [LATIN_IME] + ([ADB_KEYBOARD_IME] if self.adb_keyboard else [])
        return ShellResult("".join(f"{i}\n" for i in imes).encode())
