"""Text from a model reaches the phone's `input text` literally and never runs as shell code.

The commands are checked the way the phone reads them: parsed by a POSIX shell (shlex, and a
real `sh` running them with `input` replaced by a function that prints its argv), then decoded
with Android's `%s` rule.
"""

from __future__ import annotations

import base64
import os
import shlex
import string
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from android_bridge.escape import (
    ADB_KEYBOARD_B64_ACTION,
    ADB_KEYBOARD_PACKAGE,
    KEYCODE_ENTER,
    KEYCODE_TAB,
    TextInputError,
    decode_input_text,
    input_text_argvs,
    shell_command,
    typing_argvs,
)

PWNED = "a; touch /tmp/pwned $(id)"
ASCII_TEXT = st.text(alphabet=string.printable, max_size=60)  # printable ASCII plus \t\n\r\x0b\x0c
# Heavy on the characters that matter: the %s rule, quotes and shell metacharacters.
TRICKY_TEXT = st.text(alphabet="%s %%ss'\"\\$`;&|()<>*?[]{}!#~\n\ta", max_size=40)


def typed(argvs: list[list[str]]) -> str:
    """What a phone types for these commands: `input text` decoded with Android's rule,
    ENTER/TAB key events, and ADB Keyboard's base64 broadcast."""
    out = []
    for argv in argvs:
        if argv[:2] == ["input", "text"]:
            assert len(argv) == 3
            out.append(decode_input_text(argv[2]))
        elif argv[:2] == ["input", "keyevent"]:
            out.append({str(KEYCODE_ENTER): "\n", str(KEYCODE_TAB): "\t"}[argv[2]])
        else:
            assert argv[:7] == ["am", "broadcast", "-a", ADB_KEYBOARD_B64_ACTION, "-p", ADB_KEYBOARD_PACKAGE, "--es"]
            assert argv[7] == "msg" and len(argv) == 9
            out.append(base64.b64decode(argv[8], validate=True).decode("utf-8"))
    return "".join(out)


def run_in_sh(commands: list[str], cwd: str) -> list[list[str]]:
    """Run command lines in a real POSIX sh where `input` and `am` print their argv."""
    script = "\n".join(
        ['show() { printf "%s\\0" "$@"; printf "\\001\\0"; }', 'input() { show input "$@"; }', 'am() { show am "$@"; }']
        + commands
    )
    done = subprocess.run(["sh", "-c", script], capture_output=True, cwd=cwd, timeout=10, check=True)
    words = done.stdout.decode("utf-8").split("\0")[:-1]
    argvs, current = [], []
    for w in words:
        if w == "\x01":
            argvs.append(current)
            current = []
        else:
            current.append(w)
    assert current == [] and done.stderr == b""
    return argvs


def typeable(text: str) -> str:
    """Drop the characters no keyboard types (\\r, vertical tab, form feed)."""
    return "".join(c for c in text if c in string.printable and c not in "\r\x0b\x0c")


@given(ASCII_TEXT.map(typeable) | TRICKY_TEXT)
def test_ascii_text_round_trips_through_shlex_and_android_decoding(text):
    argvs = input_text_argvs(text)
    for argv in argvs:
        assert shlex.split(shell_command(argv)) == argv
        assert argv[0] == "input" and argv[1] in ("text", "keyevent") and len(argv) == 3
        if argv[1] == "text":
            assert " " not in argv[2] and argv[2]  # spaces go as %s; never an empty payload
    assert typed(argvs) == text


@settings(max_examples=60, deadline=None)
@given(ASCII_TEXT.map(typeable) | TRICKY_TEXT)
def test_ascii_text_round_trips_through_a_real_shell(tmp_path_factory, text):
    cwd = tmp_path_factory.mktemp("sh")
    argvs = input_text_argvs(text)
    assert run_in_sh([shell_command(a) for a in argvs], str(cwd)) == argvs
    assert typed(argvs) == text
    assert os.listdir(cwd) == []  # nothing the text says was run


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30))
def test_any_text_is_typed_exactly_or_refused_clearly(text):
    try:
        argvs = typing_argvs(text, adb_keyboard=True)
    except TextInputError as exc:
        assert any(ord(c) < 0x20 and c not in "\n\t" or c == "\x7f" or 0x80 <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in text)
        assert "control" in str(exc)
        return
    for argv in argvs:
        assert shlex.split(shell_command(argv)) == argv
    assert typed(argvs) == text


@given(st.text(min_size=1, max_size=20).filter(lambda t: any(ord(c) > 0x7F for c in t)))
def test_non_ascii_without_adb_keyboard_is_refused_with_instructions(text):
    with pytest.raises(TextInputError) as exc:
        typing_argvs(text, adb_keyboard=False)
    message = str(exc.value)
    assert ("ADB Keyboard" in message and "ime set com.android.adbkeyboard/.AdbIME" in message) or "control" in message


def test_non_ascii_goes_whole_through_one_adb_keyboard_broadcast():
    argvs = typing_argvs("héllo 你好 👋", adb_keyboard=True)
    assert len(argvs) == 1
    assert typed(argvs) == "héllo 你好 👋"
    assert set(argvs[0][-1]) <= set(string.ascii_letters + string.digits + "+/=")


def test_injection_payload_is_typed_literally_and_runs_nothing(tmp_path):
    before = os.stat("/tmp/pwned").st_mtime_ns if os.path.exists("/tmp/pwned") else None
    local = f"a; touch {tmp_path}/pwned $(id) `id` && touch {tmp_path}/pwned2 | x > {tmp_path}/out"
    for text in (PWNED, local):
        argvs = input_text_argvs(text)
        assert argvs == [["input", "text", text.replace(" ", "%s")]]
        assert run_in_sh([shell_command(a) for a in argvs], str(tmp_path)) == argvs
        assert typed(argvs) == text
    assert sorted(os.listdir(tmp_path)) == []
    after = os.stat("/tmp/pwned").st_mtime_ns if os.path.exists("/tmp/pwned") else None
    assert after == before


@pytest.mark.parametrize(
    "text, payloads",
    [
        ("hello world", ["hello%sworld"]),
        ("100%sure", ["100%", "sure"]),  # a literal "%s" must not turn into a space
        ("%s", ["%", "s"]),
        ("50% off", ["50%%soff"]),  # Android reads "%%s" as "%" then " "
        ("it's", ["it's"]),
        ("a%", ["a%"]),
    ],
)
def test_payload_examples(text, payloads):
    assert input_text_argvs(text) == [["input", "text", p] for p in payloads]


def test_newline_and_tab_are_keys():
    assert input_text_argvs("a b\nc\t") == [
        ["input", "text", "a%sb"],
        ["input", "keyevent", "66"],
        ["input", "text", "c"],
        ["input", "keyevent", "61"],
    ]


@pytest.mark.parametrize("payload, typed_text", [("%%s", "% "), ("%s%s", "  "), ("a%", "a%"), ("%x", "%x"), ("%ss", " s")])
def test_decode_follows_android(payload, typed_text):
    assert decode_input_text(payload) == typed_text


def test_shell_command_quotes_every_word():
    assert shell_command(["input", "text", "it's"]) == "input text 'it'\"'\"'s'"
    assert shell_command(["input", "text", PWNED.replace(" ", "%s")]) == "input text 'a;%stouch%s/tmp/pwned%s$(id)'"
    with pytest.raises(ValueError):
        shell_command([])


@pytest.mark.parametrize("text", ["a\x00b", "bell\x07", "\x1b[31m", "cr\r", "\ud800"])
def test_control_characters_are_refused(text):
    with pytest.raises(TextInputError, match="control"):
        typing_argvs(text, adb_keyboard=True)
