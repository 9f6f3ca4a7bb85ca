"""uiautomator dumps are untrusted: hostile XML fails fast with UIDumpError and reads no file."""

from __future__ import annotations

import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from android_bridge.uitree import MAX_DUMP_BYTES, UIDumpError, parse_dump

HEADER = "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
NODE = (
    '<node index="0" text="{text}" resource-id="com.example:id/{rid}" class="{cls}" package="com.example" '
    'content-desc="" checkable="false" checked="false" clickable="{clickable}" enabled="true" focusable="true" '
    'focused="false" scrollable="false" long-clickable="false" password="false" selected="false" bounds="{bounds}" />'
)
DUMP = (
    HEADER
    + '<hierarchy rotation="0"><node index="0" text="" resource-id="" class="android.widget.FrameLayout" '
    'package="com.example" content-desc="" checkable="false" checked="false" clickable="false" enabled="true" '
    'focusable="false" focused="false" scrollable="false" long-clickable="false" password="false" selected="false" '
    'bounds="[0,0][1080,2400]">'
    + NODE.format(text="Wi-Fi", rid="wifi", cls="android.widget.TextView", clickable="true", bounds="[0,200][1080,320]")
    + NODE.format(text="", rid="search", cls="android.widget.EditText", clickable="true", bounds="[40,400][1040,520]")
    + NODE.format(text="", rid="spacer", cls="android.view.View", clickable="false", bounds="[0,600][1080,700]")
    + "</node></hierarchy>"
)
FAST_S = 1.0


class FileOpenWatch:
    """Records every file the interpreter opens while active (PEP 578 audit hooks)."""

    installed = False
    active: list[str] | None = None

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if cls.active is not None and event == "open" and isinstance(args[0], (str, bytes)):
            cls.active.append(str(args[0]))

    def __enter__(self) -> list[str]:
        if not FileOpenWatch.installed:
            sys.addaudithook(FileOpenWatch.hook)  # cannot be removed; inert while inactive
            FileOpenWatch.installed = True
        FileOpenWatch.active = []
        return FileOpenWatch.active

    def __exit__(self, *exc: object) -> None:
        FileOpenWatch.active = None


def parse_fails_fast(xml: str | bytes, match: str) -> None:
    start = time.monotonic()
    with pytest.raises(UIDumpError, match=match):
        parse_dump(xml)
    assert time.monotonic() - start < FAST_S


def test_a_real_dump_gives_the_useful_elements_in_order():
    elements = parse_dump(DUMP)
    assert [(e.index, e.label, e.bounds, e.clickable, e.editable) for e in elements] == [
        (0, "Wi-Fi", (0, 200, 1080, 320), True, False),
        (1, "search", (40, 400, 1040, 520), True, True),
    ]
    assert elements[0].center == (540, 260)
    assert parse_dump(DUMP.encode("utf-8")) == elements


def test_billion_laughs_is_refused_fast():
    entities = ['<!ENTITY lol "lol">'] + [f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10)]
    xml = f'<?xml version="1.0"?><!DOCTYPE hierarchy [{"".join(entities)}]><hierarchy><node text="&lol9;" bounds="[0,0][1,1]"/></hierarchy>'
    parse_fails_fast(xml, "unsafe XML")


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE hierarchy [<!ENTITY xxe SYSTEM "file://{path}">]>',
        '<!DOCTYPE hierarchy [<!ENTITY % xxe SYSTEM "file://{path}"> %xxe;]>',
        '<!DOCTYPE hierarchy SYSTEM "file://{path}">',
    ],
)
def test_external_entities_are_refused_without_reading_the_file(tmp_path, doctype):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    with FileOpenWatch() as opened:
        secret.read_text()
    assert opened == [str(secret)]  # the watch sees file reads
    for path in (str(secret), "/etc/passwd"):
        xml = doctype.format(path=path) + '<hierarchy><node text="&xxe;" bounds="[0,0][10,10]"/></hierarchy>'
        with FileOpenWatch() as opened:
            with pytest.raises(UIDumpError) as exc:
                parse_dump(xml)
        assert not [p for p in opened if p.endswith(("secret.txt", "passwd"))]
        assert "TOP-SECRET" not in str(exc.value) and "root:" not in str(exc.value)


def test_any_dtd_is_refused():
    parse_fails_fast("<!DOCTYPE hierarchy><hierarchy/>", "DTD")


@pytest.mark.parametrize("cut", [10, len(DUMP) // 2, len(DUMP) - 5])
def test_truncated_dump_is_malformed(cut):
    parse_fails_fast(DUMP[:cut], "malformed|empty")


def test_idle_state_error_line_and_trailing_status_are_tolerated():
    noisy = "ERROR: could not get idle state.\n" + DUMP + "UI hierchary dumped to: /dev/tty\n"
    assert parse_dump(noisy) == parse_dump(DUMP)


def test_only_the_idle_error_is_an_empty_dump():
    parse_fails_fast("ERROR: could not get idle state.\n", "empty")


@pytest.mark.parametrize("as_bytes", [False, True])
def test_huge_input_is_refused_before_parsing(as_bytes):
    huge = "<hierarchy>" + " " * MAX_DUMP_BYTES + "</hierarchy>"
    parse_fails_fast(huge.encode() if as_bytes else huge, "refusing more than")


def test_deep_nesting_does_not_crash():
    deep = "<hierarchy>" + "<node>" * 100_000 + "</node>" * 100_000 + "</hierarchy>"
    assert parse_dump(deep) == []


@pytest.mark.parametrize(
    "xml, match",
    [
        ("<html><body/></html>", "root element is <html>"),
        ('<hierarchy><node text="x" bounds="[0,0]" /></hierarchy>', "bad bounds"),
        ("not xml at all", "malformed"),
        ("", "empty"),
    ],
)
def test_wrong_documents(xml, match):
    parse_fails_fast(xml, match)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.builds(lambda i, s: DUMP[:i] + s + DUMP[i:], st.integers(0, len(DUMP)), st.text(max_size=20))))
def test_anything_parses_or_raises_uidumperror(data):
    try:
        elements = parse_dump(data)
    except UIDumpError:
        return
    assert [e.index for e in elements] == list(range(len(elements)))
