"""A loopback adb server with one device: the emulated phone.

This is the host side of adb, what ``adb start-server`` runs on port 5037 and what clients
(adbutils, Google's ``adb`` with ``-P PORT``) talk to, so the real client code path runs end
to end against an ``EmulatedPhone``. Protocol (AOSP ``adb/OVERVIEW.TXT``, ``SERVICES.TXT``,
``SYNC.TXT``):

* a request is 4 hex digits of length + payload; the reply is ``OKAY`` or ``FAIL`` + 4 hex
  digits + message. Host queries (``host:version``, ``host:devices[-l]``, ``host:features``,
  ``host-serial:SERIAL:features``...) answer with a length-prefixed string and close.
* ``host:transport:SERIAL`` / ``host:transport-any`` / ``host:transport-id:N`` select the
  device and keep the connection; ``host:tport:...`` does the same and also sends the 8-byte
  little-endian transport id (adb >= 1.0.41; adbutils uses it).
* then one device service: ``shell:CMD`` (output until close), ``shell,v2,...:CMD`` (packets:
  id byte + u32 LE length + data; 1 stdout, 2 stderr, 3 exit code), ``exec:CMD`` (raw stdout,
  as ``adb exec-out``), or ``sync:`` (file requests: 4-byte id + u32 LE + data, see
  ``_serve_sync``).

Shell commands are run by ``PhoneShell`` (``adb_shell.py``), which never uses a real shell.
The server binds 127.0.0.1 only: it drives a phone for anyone who can connect.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
from typing import Any

from android_bridge.emulator import adb_shell
from android_bridge.emulator.adb_shell import BatteryQuirks, BatteryScript, PhoneShell, ShellResult

log = logging.getLogger(__name__)

DEFAULT_SERIAL = "emulator-edgeagent"
TRANSPORT_ID = 1
# Google's client kills and restarts a server whose version differs from its own; 41 is the
# version of platform-tools 29+ (adb 1.0.41), the lowest for which adbutils uses host:tport.
ADB_SERVER_VERSION = 41
# What the emulated adbd supports. shell_v2 gives clients exit codes and separate stderr;
# stat_v2 makes clients use STA2/LST2, which carry errno and 64-bit sizes.
DEVICE_FEATURES = ("shell_v2", "cmd", "stat_v2", "fixed_push_mkdir", "fixed_push_symlink_timestamp")
SYNC_MAX_CHUNK = 64 * 1024
MAX_REQUEST_LEN = 64 * 1024
# Bytes a client may still be sending (stdin packets of `adb shell`) when we finish; reading
# them before close avoids a TCP reset that could discard output the client has not read.
_LINGER_S = 1.0
_IDLE_TIMEOUT_S = 300.0

# Shell protocol packet ids (adb/shell_protocol.h).
SHELL_STDOUT, SHELL_STDERR, SHELL_EXIT = 1, 2, 3
ENOENT, EACCES = 2, 13


class _ClientGone(Exception):
    """The client closed the connection or sent something unusable; end this session."""


class _Connection:
    """Framing helpers over one client socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise _ClientGone("connection closed")
            buf += chunk
        return bytes(buf)

    def read_request(self) -> str | None:
        """One host request, or None when the client closed between requests."""
        head = self.sock.recv(4)
        if not head:
            return None
        head += self.read_exact(4 - len(head)) if len(head) < 4 else b""
        try:
            length = int(head.decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            raise _ClientGone(f"bad request length {head!r}") from None
        if length > MAX_REQUEST_LEN:
            raise _ClientGone(f"request of {length} bytes is too long")
        return self.read_exact(length).decode("utf-8", errors="replace")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def okay(self, payload: str | None = None) -> None:
        self.send(b"OKAY" + (_block(payload) if payload is not None else b""))

    def fail(self, message: str) -> None:
        self.send(b"FAIL" + _block(message))


def _block(text: str) -> bytes:
    data = text.encode("utf-8")
    return f"{len(data):04x}".encode() + data


class AdbServer:
    """Serves one phone over the adb host protocol on 127.0.0.1.

    >>> with AdbServer(phone, port=0) as server:   # port 0: pick a free port
    ...     AdbDevice(port=server.port)             # or: adb -P <port> devices

    ``battery_script`` replaces the phone's current and voltage with scripted readings (see
    ``adb_shell.BatteryScript``) and ``battery_quirks`` makes its sysfs files misreport like a
    vendor's (mA, flipped sign, no charge_counter). ``adb_keyboard`` says whether the emulated phone has ADB
    Keyboard as its input method (so non-ASCII text can be typed, as on a prepared phone).
    """

    def __init__(
        self,
        phone: Any,
        port: int = 0,
        *,
        serial: str = DEFAULT_SERIAL,
        battery_script: BatteryScript | None = None,
        battery_quirks: BatteryQuirks = BatteryQuirks(),
        adb_keyboard: bool = True,
    ) -> None:
        self.serial = serial
        self.shell = PhoneShell(phone, serial=serial, battery_script=battery_script, battery_quirks=battery_quirks,
                                adb_keyboard=adb_keyboard)
        self._requested_port = port
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()

    @property
    def phone(self) -> Any:
        return self.shell.phone

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the adb server is not started")
        return self._server.server_address[1]

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> "AdbServer":
        if self._server is not None:
            return self
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve_client(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self._server = Server(("127.0.0.1", self._requested_port), Handler)
        except OSError as exc:
            raise OSError(f"cannot listen on 127.0.0.1:{self._requested_port} ({exc.strerror}); choose another --adb-port") from None
        # A short poll interval so stop() (and a test's "kill the server") takes effect at once.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="adb-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every client, as a killed adb server would."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "AdbServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until stop() (from another thread) or Ctrl-C."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    # --- one client connection ---------------------------------------------------------
    def _serve_client(self, sock: socket.socket) -> None:
        sock.settimeout(_IDLE_TIMEOUT_S)
        with self._clients_lock:
            self._clients.add(sock)
        conn = _Connection(sock)
        try:
            self._session(conn)
            self._finish(sock)
        except (_ClientGone, OSError) as exc:
            log.debug("adb client session ended: %s", exc)
        finally:
            with self._clients_lock:
                self._clients.discard(sock)

    def _finish(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(_LINGER_S)
            while sock.recv(4096):
                pass
        except OSError:
            pass

    def _session(self, conn: _Connection) -> None:
        """Host requests until one ends the session; after a transport, one device service."""
        while True:
            request = conn.read_request()
            if request is None:
                return
            log.debug("adb request %r", request)
            selected = self._host_request(conn, request)
            if selected is None:
                return  # answered a host query; the client reads it and closes
            if not selected:
                continue
            service = conn.read_request()
            if service is None:
                return
            log.debug("adb device service %r", service)
            self._device_service(conn, service)
            return

    def _host_request(self, conn: _Connection, request: str) -> bool | None:
        """Answer a host request. True: the device is selected for a service; None: done."""
        # Transport selection.
        if request in ("host:transport-any", "host:transport-usb", "host:transport-local") or request in (
            f"host:transport:{self.serial}", f"host:transport-id:{TRANSPORT_ID}",
        ):
            conn.okay()
            return True
        if request in ("host:tport:any", "host:tport:usb", "host:tport:local", f"host:tport:serial:{self.serial}"):
            conn.okay()
            conn.send(struct.pack("<Q", TRANSPORT_ID))
            return True
        if request.startswith(("host:transport:", "host:tport:serial:")):
            conn.fail(f"device '{request.split(':', 2)[-1].removeprefix('serial:')}' not found")
            return None
        if request.startswith(("host:transport-id:", "host:tport:")):
            conn.fail(f"no device for {request!r}")
            return None

        # Host queries, optionally about one device: host-serial:S:Q, host-transport-id:N:Q.
        query = self._device_query(conn, request)
        if query is None:
            return None
        if query == "version":
            conn.okay(f"{ADB_SERVER_VERSION:04x}")
        elif query == "devices":
            conn.okay(f"{self.serial}\tdevice\n")
        elif query == "devices-l":
            conn.okay(
                f"{self.serial:<22} device product:edgeagent_phone model:EdgeAgent_Emulated_Phone "
                f"device:edgeagent transport_id:{TRANSPORT_ID}\n"
            )
        elif query in ("features", "host-features"):
            conn.okay(",".join(DEVICE_FEATURES))
        elif query == "get-state":
            conn.okay("device")
        elif query == "get-serialno":
            conn.okay(self.serial)
        elif query == "get-devpath":
            conn.okay("emulated")
        elif query == "list-forward":
            conn.okay("")
        elif query == "track-devices":
            conn.okay(f"{self.serial}\tdevice\n")
            while conn.sock.recv(4096):  # the list never changes; wait for the client to leave
                pass
        elif query.startswith("wait-for-"):
            if query.endswith(("-device", "-any")) and not query.endswith("-disconnect"):
                conn.okay()
                conn.okay()
            else:
                conn.fail(f"the emulated phone never reaches {query!r}")
        elif query == "kill":
            # Acknowledged so `adb kill-server` returns; the emulator stops with Ctrl-C.
            conn.okay()
        else:
            conn.fail(f"unsupported host service {request!r} (edgeagent emulator)")
        return None

    def _device_query(self, conn: _Connection, request: str) -> str | None:
        """The query part of a host request, after checking which device it names."""
        for prefix in (f"host-serial:{self.serial}:", f"host-transport-id:{TRANSPORT_ID}:", "host-usb:", "host-local:", "host:"):
            if request.startswith(prefix):
                return request[len(prefix):]
        if request.startswith("host-serial:"):
            conn.fail(f"device '{request.split(':')[1]}' not found")
        elif request.startswith("host-transport-id:"):
            conn.fail(f"no device with transport id {request.split(':')[1]}")
        else:
            conn.fail(f"unsupported host service {request!r} (edgeagent emulator)")
        return None

    # --- device services ---------------------------------------------------------------
    def _device_service(self, conn: _Connection, service: str) -> None:
        name, _, command = service.partition(":")
        kind, *options = name.split(",")
        if kind == "shell" and "v2" in options:
            conn.okay()
            self._shell_v2(conn, command)
        elif kind == "shell":
            conn.okay()
            result = self._run(command)
            conn.send(result.stdout + result.stderr)  # a v1 shell has one stream
        elif kind == "exec":
            conn.okay()
            result = self._run(command)
            conn.send(result.stdout + result.stderr)
        elif service == "sync:":
            conn.okay()
            self._serve_sync(conn)
        else:
            conn.fail(f"unsupported device service {service!r} (edgeagent emulator)")

    def _run(self, command: str) -> ShellResult:
        if not command.strip():
            return ShellResult(stderr=b"edgeagent emulator: interactive shells are not supported; pass a command\n", exit_code=1)
        try:
            return self.shell.run(command)
        except Exception as exc:  # a bug in the emulated phone must not kill the server thread
            log.exception("emulated phone failed on %r", command)
            return ShellResult(stderr=f"edgeagent emulator: internal error: {type(exc).__name__}: {exc}\n".encode(), exit_code=1)

    def _shell_v2(self, conn: _Connection, command: str) -> None:
        result = self._run(command)
        packets = bytearray()
        for packet_id, data in ((SHELL_STDOUT, result.stdout), (SHELL_STDERR, result.stderr)):
            for i in range(0, len(data), SYNC_MAX_CHUNK):
                chunk = data[i : i + SYNC_MAX_CHUNK]
                packets += struct.pack("<BI", packet_id, len(chunk)) + chunk
        packets += struct.pack("<BIB", SHELL_EXIT, 1, result.exit_code & 0xFF)
        conn.send(bytes(packets))

    # --- sync: file transfer -----------------------------------------------------------
    def _serve_sync(self, conn: _Connection) -> None:
        """Requests until QUIT: STAT/LSTA/STA2/LST2 (stat), LIST (directory), RECV (pull),
        SEND (push). Each is a 4-byte id + u32 LE length + path."""
        while True:
            head = conn.sock.recv(8)
            if not head:
                return
            if len(head) < 8:
                head += conn.read_exact(8 - len(head))
            command, length = head[:4].decode("ascii", errors="replace"), struct.unpack("<I", head[4:])[0]
            if command == "QUIT":
                return
            if length > MAX_REQUEST_LEN:
                raise _ClientGone(f"sync path of {length} bytes is too long")
            path = conn.read_exact(length).decode("utf-8", errors="replace")
            log.debug("adb sync %s %r", command, path)
            if command in ("STAT", "LSTA"):
                st = self.shell.stat(path)
                conn.send(struct.pack("<4sIII", command.encode(), *(st.mode, st.size, st.mtime) if st else (0, 0, 0)))
            elif command in ("STA2", "LST2"):
                conn.send(self._stat_v2(command, path))
            elif command == "LIST":
                self._sync_list(conn, path)
            elif command == "RECV":
                self._sync_recv(conn, path)
            elif command == "SEND":
                if not self._sync_send(conn, path):
                    return
            else:
                self._sync_fail(conn, f"unsupported sync request {command!r} (edgeagent emulator)")
                return

    def _stat_v2(self, command: str, path: str) -> bytes:
        st = self.shell.stat(path)
        if st is None:
            return struct.pack("<4sIQQIIIIQqqq", command.encode(), ENOENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        # id, errno, dev, ino, mode, nlink, uid, gid, size, atime, mtime, ctime
        return struct.pack("<4sIQQIIIIQqqq", command.encode(), 0, 1, 1, st.mode, 1, 2000, 2000, st.size, st.mtime, st.mtime, st.mtime)

    def _sync_list(self, conn: _Connection, path: str) -> None:
        out = bytearray()
        st = self.shell.stat(path)
        if st is not None:
            for name, entry in [(".", st), ("..", st)] + self.shell.list_dir(path):
                raw = name.encode("utf-8")
                out += struct.pack("<4sIIII", b"DENT", entry.mode, entry.size, entry.mtime, len(raw)) + raw
        out += struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0)
        conn.send(bytes(out))

    def _sync_recv(self, conn: _Connection, path: str) -> None:
        try:
            data = self.shell.read_file(path)
        except OSError as exc:
            self._sync_fail(conn, str(exc.args[0]) if exc.args else f"{path}: cannot read")
            return
        out = bytearray()
        for i in range(0, len(data), SYNC_MAX_CHUNK):
            chunk = data[i : i + SYNC_MAX_CHUNK]
            out += b"DATA" + struct.pack("<I", len(chunk)) + chunk
        out += b"DONE" + struct.pack("<I", 0)
        conn.send(bytes(out))

    def _sync_send(self, conn: _Connection, path_and_mode: str) -> bool:
        """A push: the file's chunks until DONE. A file over the size cap is read to its end
        but not kept, and answered with FAIL, so the client prints the reason."""
        path = path_and_mode.rsplit(",", 1)[0]
        data = bytearray()
        received = 0
        while True:
            kind, length = struct.unpack("<4sI", conn.read_exact(8))
            if kind == b"DATA":
                if length > SYNC_MAX_CHUNK:
                    raise _ClientGone(f"sync DATA of {length} bytes exceeds {SYNC_MAX_CHUNK}")
                chunk = conn.read_exact(length)
                received += length
                if received <= adb_shell.MAX_FILE_BYTES:
                    data += chunk
                else:
                    data = bytearray()  # over the cap: drain the rest, keep nothing
            elif kind == b"DONE":  # length is the mtime here
                break
            else:
                raise _ClientGone(f"unexpected {kind!r} during sync SEND")
        try:
            adb_shell.check_file_size(path, received)
            self.shell.write_file(path, bytes(data))
        except OSError as exc:
            self._sync_fail(conn, exc.strerror or (str(exc.args[0]) if exc.args else f"{path}: cannot write"))
            return False
        conn.send(b"OKAY" + struct.pack("<I", 0))
        return True

    @staticmethod
    def _sync_fail(conn: _Connection, message: str) -> None:
        raw = message.encode("utf-8")
        conn.send(b"FAIL" + struct.pack("<I", len(raw)) + raw)
