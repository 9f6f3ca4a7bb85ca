"""Text from a model, typed on a phone literally, never run as a command.

``adb shell`` hands its command line to the phone's shell (mksh on Android), so anything we
send is shell source. Every command here is therefore built as an argv list and quoted word by
word with ``shlex.quote`` (single quotes, inside which a POSIX shell interprets nothing); the
text never meets a shell unquoted.

What the phone does with the argument after the shell has removed the quotes matters too:

* ``input text`` (Android's ``Input``/``InputShellCommand``) replaces every ``%s`` with a
  space. Spaces are sent as ``%s`` (older versions only typed the first word of a text with
  spaces), and a literal ``%`` followed by ``s`` is split across two ``input text`` calls so
  the pair is never read as an escape. ``decode_input_text`` is that Android rule, written
  out, so tests and the emulated phone decode payloads exactly as a phone does.
* ``input text`` types through the virtual keyboard's key map, which covers printable ASCII
  only: ``é``, ``你好`` or an emoji are dropped or fail on most phones. Newline and tab are
  sent as the ENTER and TAB keys a keyboard would press.

Non-ASCII fallback: ADB Keyboard (``com.android.adbkeyboard``, an open-source IME made for
this) types any Unicode text it receives by broadcast. When it is the phone's current input
method, text containing non-ASCII characters is sent whole as one ``ADB_INPUT_B64`` broadcast
(base64 of the UTF-8 bytes: an alphabet the shell cannot misread, and no ``%s`` rule). The
broadcast is addressed to that package only, so other apps do not receive the typed text.
Without ADB Keyboard, ``TextInputError`` says how to install it; we never type a lossy
approximation of what the model asked for.
"""

from __future__ import annotations

import base64
import shlex
import unicodedata

ADB_KEYBOARD_PACKAGE = "com.android.adbkeyboard"
ADB_KEYBOARD_IME = "com.android.adbkeyboard/.AdbIME"
ADB_KEYBOARD_B64_ACTION = "ADB_INPUT_B64"

# Characters the phone's `input text` can type: printable ASCII (space to tilde).
_INPUT_TEXT_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F))
# Whitespace a keyboard types with a key of its own (android.view.KeyEvent codes).
KEYCODE_TAB = 61
KEYCODE_ENTER = 66
_KEY_CHARS = {"\t": KEYCODE_TAB, "\n": KEYCODE_ENTER}


class TextInputError(ValueError):
    """Text that cannot be typed faithfully on this phone. The message says what to do."""


def shell_command(argv: list[str]) -> str:
    """One shell command line whose words, after the shell parses it, are exactly ``argv``."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(word) for word in argv)


def decode_input_text(payload: str) -> str:
    """What Android's ``input text PAYLOAD`` types: each ``%s`` becomes a space.

    Android scans left to right; after a ``%`` an ``s`` turns the pair into one space, and the
    space it leaves cannot start a new pair. So ``%%s`` types ``% `` and ``%s%s`` two spaces.
    """
    out: list[str] = []
    i = 0
    while i < len(payload):
        if payload[i] == "%" and payload[i + 1 : i + 2] == "s":
            out.append(" ")
            i += 2
        else:
            out.append(payload[i])
            i += 1
    return "".join(out)


def typeable_with_input_text(text: str) -> bool:
    """True when ``input text`` (plus ENTER/TAB keys) can type ``text`` on any phone."""
    return all(c in _INPUT_TEXT_CHARS or c in _KEY_CHARS for c in text)


def _payloads(run: str) -> list[str]:
    """``input text`` payloads that together type the printable-ASCII ``run``.

    A ``%`` directly followed by ``s`` in the text would read as an escape, so the run is cut
    between the two; the escape state does not carry over from one ``input text`` to the next.
    """
    pieces: list[str] = []
    start = 0
    for i in range(len(run) - 1):
        if run[i] == "%" and run[i + 1] == "s":
            pieces.append(run[start : i + 1])
            start = i + 1
    pieces.append(run[start:])
    return [p.replace(" ", "%s") for p in pieces if p]


def input_text_argvs(text: str) -> list[list[str]]:
    """The ``input`` commands (as argv lists) that type ASCII ``text`` literally.

    Raises TextInputError for characters ``input text`` cannot type (non-ASCII, control).
    """
    bad = sorted({c for c in text if c not in _INPUT_TEXT_CHARS and c not in _KEY_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise TextInputError(f"`input text` cannot type {shown}: it only types printable ASCII")
    argvs: list[list[str]] = []
    run: list[str] = []
    for c in text:
        if c in _KEY_CHARS:
            argvs += [["input", "text", p] for p in _payloads("".join(run))]
            run = []
            argvs.append(["input", "keyevent", str(_KEY_CHARS[c])])
        else:
            run.append(c)
    argvs += [["input", "text", p] for p in _payloads("".join(run))]
    return argvs


def adb_keyboard_argv(text: str) -> list[str]:
    """The broadcast that makes ADB Keyboard type ``text`` (any Unicode) into the focused field."""
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return ["am", "broadcast", "-a", ADB_KEYBOARD_B64_ACTION, "-p", ADB_KEYBOARD_PACKAGE, "--es", "msg", encoded]


def typing_argvs(text: str, *, adb_keyboard: bool) -> list[list[str]]:
    """Commands (argv lists, to be quoted with ``shell_command``) that type ``text`` literally.

    ASCII text goes through ``input text``; text with other characters goes through ADB
    Keyboard when ``adb_keyboard`` says it is the phone's current input method.
    """
    if not text:
        return []
    control = sorted({c for c in text if c not in _KEY_CHARS and unicodedata.category(c) in ("Cc", "Cs")})
    if control:
        shown = ", ".join(repr(c) for c in control[:5])
        raise TextInputError(f"cannot type control or surrogate characters ({shown}); only text, newline and tab")
    if typeable_with_input_text(text):
        return input_text_argvs(text)
    if adb_keyboard:
        return [adb_keyboard_argv(text)]
    others = sorted({c for c in text if c not in _INPUT_TEXT_CHARS and c not in _KEY_CHARS})
    shown = ", ".join(repr(c) for c in others[:5])
    raise TextInputError(
        f"cannot type {shown}: Android's `input text` only types printable ASCII. To type any "
        f"Unicode, install ADB Keyboard ({ADB_KEYBOARD_PACKAGE}) and make it the input method: "
        f"`adb shell ime enable {ADB_KEYBOARD_IME}` then `adb shell ime set {ADB_KEYBOARD_IME}`"
    )
