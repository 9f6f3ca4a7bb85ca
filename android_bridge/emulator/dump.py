"""A laid-out frame written exactly as ``uiautomator dump`` writes a window hierarchy.

The format is the one a real phone gives (one line, ``<node>`` elements with the same
attributes in the same order, leaf nodes self-closed with `` />``), so the agent's parser
(android_bridge.uitree.parse_dump) sees the emulator and a phone through the same code.
Only the focused window is written, as uiautomator does: with a dialog up, the dump is the
dialog. Editable fields also carry ``hint`` (as newer uiautomator versions write it), so an
empty field has a name.
"""

from __future__ import annotations

import re

from android_bridge.emulator.widgets import Field, Frame, View

XML_HEADER = "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>"
# Characters XML 1.0 cannot carry at all; uiautomator drops them too (its serializer would
# otherwise write a file no parser reads).
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def escape_attr(value: str) -> str:
    """Escape for a double-quoted attribute. Newlines and tabs become character references,
    because a parser normalises literal ones in attributes to spaces."""
    value = _INVALID_XML.sub("", value)
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _node(view: View, index: int, package: str, out: list[str]) -> None:
    x1, y1, x2, y2 = view.bounds
    attrs = [
        ("index", str(index)),
        ("text", view.text),
        ("resource-id", f"{package}:id/{view.rid}" if view.rid else ""),
        ("class", view.CLASS),
        ("package", package),
        ("content-desc", view.desc),
        ("checkable", _flag(view.checkable)),
        ("checked", _flag(view.checked)),
        ("clickable", _flag(view.clickable)),
        ("enabled", _flag(view.enabled)),
        ("focusable", _flag(view.focusable)),
        ("focused", _flag(view.focused)),
        ("scrollable", _flag(view.scrollable)),
        ("long-clickable", "false"),
        ("password", "false"),
        ("selected", "false"),
    ]
    if isinstance(view, Field):
        attrs.append(("hint", view.hint))
    attrs.append(("bounds", f"[{x1},{y1}][{x2},{y2}]"))
    out.append("<node " + " ".join(f'{k}="{escape_attr(v)}"' for k, v in attrs))
    children = view.children()
    if not children:
        out.append(" />")
        return
    out.append(">")
    for i, child in enumerate(children):
        _node(child, i, package, out)
    out.append("</node>")


def dump_xml(frame: Frame) -> str:
    out = [XML_HEADER, '<hierarchy rotation="0">']
    _node(frame.focus_window(), 0, frame.package, out)
    out.append("</hierarchy>")
    return "".join(out)
