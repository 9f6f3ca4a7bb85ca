"""UI elements from a uiautomator dump, parsed as the untrusted input it is.

A dump comes from the device (``uiautomator dump``), and a hostile app controls its text.
defusedxml refuses DTDs, entity declarations and external entities, so a billion-laughs or
``file:///etc/passwd`` entity fails fast with an error instead of hanging or reading files.

Indices: only elements an agent can use are kept (clickable, editable, scrollable, checkable,
or carrying text / content-desc), numbered in document order. The emulated phone and a real
phone go through this same function, so an index means the same thing on both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

# Coordinates of at most 9 digits: a hostile dump's 5,000-digit number is a malformed dump,
# not a ValueError from int() (Python refuses to convert more than 4,300 digits).
_BOUNDS = re.compile(r"^\[(-?\d{1,9}),(-?\d{1,9})\]\[(-?\d{1,9}),(-?\d{1,9})\]$")
# uiautomator prints this before the XML when the app never idles; it is not an error for us.
_NOISE_PREFIXES = ("ERROR: could not get idle state.", "UI hierchary dumped to", "UI hierarchy dumped to")
MAX_DUMP_BYTES = 8 * 1024 * 1024
EDITABLE_CLASSES = ("android.widget.EditText", "android.widget.AutoCompleteTextView")


class UIDumpError(ValueError):
    """The dump could not be read as a uiautomator hierarchy. The message says why."""


@dataclass(frozen=True)
class UIElement:
    index: int
    text: str = ""
    content_desc: str = ""
    resource_id: str = ""
    class_name: str = ""
    package: str = ""
    bounds: tuple[int, int, int, int] = (0, 0, 0, 0)  # x1, y1, x2, y2
    clickable: bool = False
    long_clickable: bool = False
    checkable: bool = False
    checked: bool = False
    enabled: bool = True
    focusable: bool = False
    focused: bool = False
    scrollable: bool = False
    selected: bool = False
    password: bool = False
    hint: str = ""
    extras: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Text, content-desc and resource-id of the descendants whose taps this element receives
    # (those not inside a clickable descendant of their own): a clickable row or button whose
    # words sit on child views, as in most real apps.
    inner_text: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def center(self) -> tuple[int, int]:
        x1, y1, x2, y2 = self.bounds
        return (x1 + x2) // 2, (y1 + y2) // 2

    @property
    def editable(self) -> bool:
        return self.class_name in EDITABLE_CLASSES

    @property
    def label(self) -> str:
        """The name a person would use for this element: its text, else its description,
        else the hint of an empty field, else the last part of its resource id."""
        if self.text and not self.editable:
            return self.text
        if self.content_desc:
            return self.content_desc
        if self.hint:
            return self.hint
        if self.text:
            return self.text
        return self.resource_id.rsplit("/", 1)[-1]


def parse_bounds(value: str) -> tuple[int, int, int, int]:
    m = _BOUNDS.match(value.strip())
    if not m:
        raise UIDumpError(f"bad bounds attribute {value!r}; expected '[x1,y1][x2,y2]'")
    x1, y1, x2, y2 = (int(g) for g in m.groups())
    return x1, y1, x2, y2


def _strip_noise(xml: str) -> str:
    text = xml.lstrip("\ufeff")
    lines = text.splitlines()
    while lines and (not lines[0].strip() or lines[0].strip().startswith(_NOISE_PREFIXES)):
        lines.pop(0)
    text = "\n".join(lines)
    # "UI hierchary dumped to: /dev/tty" can also trail the XML when dumping to stdout.
    end = text.rfind("</hierarchy>")
    if end != -1:
        text = text[: end + len("</hierarchy>")]
    return text


def _flag(node: Element, name: str) -> bool:
    return node.get(name, "false").lower() == "true"


def _is_useful(node: Element) -> bool:
    if not _flag(node, "visible-to-user") and node.get("visible-to-user") is not None:
        return False
    return (
        _flag(node, "clickable")
        or _flag(node, "long-clickable")
        or _flag(node, "checkable")
        or _flag(node, "scrollable")
        or node.get("class", "") in EDITABLE_CLASSES
        or bool(node.get("text", "").strip())
        or bool(node.get("content-desc", "").strip())
    )


MAX_INNER_TEXTS = 16  # per element: enough for a button or a row, bounded for a hostile dump
_WORD_ATTRIBUTES = ("text", "content-desc", "resource-id")


def _inner_text(root: Element) -> dict[Element, tuple[str, ...]]:
    """For every node, the words of the descendants that hand their taps to it: children that
    are not clickable themselves, and their own such descendants (Android delivers a tap on a
    non-clickable view to its nearest clickable ancestor). Iterative, so a dump nested
    100,000 deep cannot exhaust the stack; each node keeps at most ``MAX_INNER_TEXTS``."""
    order: list[Element] = []
    stack = [root]
    while stack:  # pre-order; reversed below, every child comes before its parent
        node = stack.pop()
        order.append(node)
        stack.extend(node)
    inner: dict[Element, tuple[str, ...]] = {}
    for node in reversed(order):
        texts: list[str] = []
        for child in node:
            if _flag(child, "clickable") or _flag(child, "long-clickable"):
                continue
            texts.extend(v for a in _WORD_ATTRIBUTES if (v := child.get(a, "").strip()))
            texts.extend(inner.get(child, ()))
        if texts:
            inner[node] = tuple(texts[:MAX_INNER_TEXTS])
    return inner


_KNOWN = {
    "index", "text", "resource-id", "class", "package", "content-desc", "checkable", "checked",
    "clickable", "enabled", "focusable", "focused", "scrollable", "long-clickable", "password",
    "selected", "bounds", "hint", "visible-to-user",
}


def parse_dump(xml: str | bytes) -> list[UIElement]:
    """Parse a uiautomator dump into the agent's indexed elements.

    Raises UIDumpError (never hangs, never reads files) on hostile or malformed input.
    """
    if isinstance(xml, bytes):
        if len(xml) > MAX_DUMP_BYTES:
            raise UIDumpError(f"dump is {len(xml)} bytes; refusing more than {MAX_DUMP_BYTES}")
        xml = xml.decode("utf-8", errors="replace")
    if len(xml) > MAX_DUMP_BYTES:
        raise UIDumpError(f"dump is {len(xml)} characters; refusing more than {MAX_DUMP_BYTES}")
    text = _strip_noise(xml)
    if not text.strip():
        raise UIDumpError("empty uiautomator dump")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UIDumpError(f"refusing unsafe XML in uiautomator dump: {type(exc).__name__}") from None
    except ParseError as exc:
        raise UIDumpError(f"malformed uiautomator dump: {exc}") from None
    if root.tag != "hierarchy":
        raise UIDumpError(f"not a uiautomator dump: root element is <{root.tag}>, expected <hierarchy>")

    inner = _inner_text(root)
    elements: list[UIElement] = []
    for node in root.iter("node"):
        if not _is_useful(node):
            continue
        raw_bounds = node.get("bounds")
        if raw_bounds is None:
            continue
        bounds = parse_bounds(raw_bounds)
        if bounds[2] <= bounds[0] or bounds[3] <= bounds[1]:
            continue  # zero-size nodes cannot be touched
        elements.append(
            UIElement(
                index=len(elements),
                text=node.get("text", ""),
                content_desc=node.get("content-desc", ""),
                resource_id=node.get("resource-id", ""),
                class_name=node.get("class", ""),
                package=node.get("package", ""),
                bounds=bounds,
                clickable=_flag(node, "clickable"),
                long_clickable=_flag(node, "long-clickable"),
                checkable=_flag(node, "checkable"),
                checked=_flag(node, "checked"),
                enabled=node.get("enabled", "true").lower() == "true",
                focusable=_flag(node, "focusable"),
                focused=_flag(node, "focused"),
                scrollable=_flag(node, "scrollable"),
                selected=_flag(node, "selected"),
                password=_flag(node, "password"),
                hint=node.get("hint", ""),
                extras={k: v for k, v in node.attrib.items() if k not in _KNOWN},
                inner_text=inner.get(node, ()),
            )
        )
    return elements
