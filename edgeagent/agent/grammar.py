"""A llama.cpp grammar (GBNF) for the action schema, narrowed to the screen at hand.

Built from ``actions.py`` every step: the model can only emit a well-formed action, and an
element it names must be one on this screen, with the index (or indices) that carry that
label. So ``{"action":"tap","element":"Wi-Fi","index":`` is followed by the one index that
"Wi-Fi" has: the model copies a visible name and never has to do an index lookup.

Options narrow further where the deployment wants it: ``apps`` (names open_app may use),
``allow_xy`` (raw coordinates), ``text_choices`` / ``answer_choices`` (type or answer only
one of these strings: for a small model that should copy, not invent, these are the word
spans of the instruction and of the screen's labels, see ``copy_spans``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from android_bridge.actions import DIRECTIONS, DONE_STATUSES
from android_bridge.uitree import UIElement
from edgeagent.agent.prompt import MAX_ELEMENTS, MAX_LABEL_CHARS

MAX_FREE_TEXT = 120
MAX_SPAN_WORDS = 8
# Word runs: whole whitespace-separated words, and the same split at ':' (so "7:30" also
# offers "7" and "30" for a time picker's hour and minute fields).
_WORD_PATTERNS = (re.compile(r'[^\s"]+'), re.compile(r'[^\s":]+'))
_POSSESSIVE = re.compile(r"['\u2019]s$")


def copy_spans(text: str, max_words: int = MAX_SPAN_WORDS) -> set[str]:
    """Every run of up to ``max_words`` consecutive words of ``text``, also with trailing .,?!
    and a possessive 's dropped ("What is Nina Scott's number?" offers "Nina Scott")."""
    spans: set[str] = set()
    for pattern in _WORD_PATTERNS:
        words = list(pattern.finditer(text))
        for i in range(len(words)):
            for j in range(i, min(len(words), i + max_words)):
                span = text[words[i].start(): words[j].end()]
                for s in (span, span.rstrip(".,?!")):
                    spans.add(s)
                    spans.add(_POSSESSIVE.sub("", s))
    spans.discard("")
    return spans


def gbnf_literal(s: str) -> str:
    """A GBNF string literal matching ``s`` exactly."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_str(s: str) -> str:
    """How ``s`` appears in the compact action JSON (Action.to_json)."""
    return json.dumps(s, ensure_ascii=False)


def _alts(options: Iterable[str]) -> str:
    return " | ".join(options)


def action_grammar(
    elements: Sequence[UIElement],
    *,
    apps: Sequence[str] | None = None,
    allow_xy: bool = True,
    text_choices: Sequence[str] | None = None,
    answer_choices: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> str:
    """GBNF for one action on this screen (see module docstring); ``exclude`` leaves out
    action kinds ("tap", "done", ...), for a second choice after a first was rejected."""
    elements = list(elements)[:MAX_ELEMENTS]
    rules: dict[str, str] = {}

    # element + index, grouped by label: the index follows from the name.
    by_label: dict[str, list[int]] = {}
    fields_by_label: dict[str, list[int]] = {}
    lists_by_label: dict[str, list[int]] = {}
    for e in elements:
        label = e.label[:MAX_LABEL_CHARS]
        by_label.setdefault(label, []).append(e.index)
        if e.editable:
            fields_by_label.setdefault(label, []).append(e.index)
        if e.scrollable:
            lists_by_label.setdefault(label, []).append(e.index)

    def target_rule(groups: dict[str, list[int]]) -> str:
        return _alts(
            gbnf_literal(f'"element":{json_str(label)},"index":')
            + " "
            + (f"({_alts(gbnf_literal(str(i)) for i in idx)})" if len(idx) > 1 else gbnf_literal(str(idx[0])))
            for label, idx in groups.items()
        )

    # action kind -> what follows '{"action":' for it
    kinds: dict[str, str] = {k: gbnf_literal(json_str(k)) for k in ("back", "home", "wait")}
    pointers = []
    if by_label:
        rules["elem"] = target_rule(by_label)
        pointers.append("elem")
    if allow_xy:
        rules["xy"] = '"\\"x\\":" num ",\\"y\\":" num'
        rules["num"] = "[0-9] | [1-9] [0-9] | [1-9] [0-9] [0-9] | [1-9] [0-9] [0-9] [0-9]"
        pointers.append("xy")
    if pointers:
        rules["target"] = _alts(pointers)
        kinds["tap"] = '"\\"tap\\"," target'
        kinds["long_press"] = '"\\"long_press\\"," target'

    if text_choices is not None:
        choices = sorted({t for t in text_choices if t})
        if choices:
            rules["text"] = _alts(gbnf_literal(json_str(t)) for t in choices)
    else:
        rules["text"] = '"\\"" char{1,%d} "\\""' % MAX_FREE_TEXT
    if "text" in rules:
        if fields_by_label:
            rules["field"] = target_rule(fields_by_label)
            kinds["type"] = '"\\"type\\"," (field ",")? "\\"text\\":" text'
        else:
            kinds["type"] = '"\\"type\\",\\"text\\":" text'

    # A scroll or swipe names the list it moves, as the expert writes it
    # ({"action":"scroll","element":"products","index":3,"direction":"down"}), or no element.
    rules["dir"] = _alts(gbnf_literal(json_str(d)) for d in DIRECTIONS)
    on_list = ""
    if lists_by_label:
        rules["list"] = target_rule(lists_by_label)
        on_list = ' (list ",")?'
    kinds["scroll"] = '"\\"scroll\\","%s "\\"direction\\":" dir' % on_list
    kinds["swipe"] = '"\\"swipe\\","%s "\\"direction\\":" dir' % on_list

    if apps:
        rules["app"] = _alts(gbnf_literal(json_str(a)) for a in apps)
    else:
        rules["app"] = '"\\"" char{1,40} "\\""'
    kinds["open_app"] = '"\\"open_app\\",\\"app\\":" app'

    rules["status"] = _alts(gbnf_literal(json_str(s)) for s in DONE_STATUSES)
    answers = sorted({a for a in answer_choices or () if a})
    if answers:
        rules["answer"] = _alts(gbnf_literal(json_str(a)) for a in answers)
    else:
        rules["answer"] = '"\\"" char{1,%d} "\\""' % MAX_FREE_TEXT
    kinds["done"] = '"\\"done\\",\\"status\\":" status (",\\"answer\\":" answer)?'

    # One JSON string character: anything but a quote, backslash or control character, or
    # a JSON escape.
    rules["char"] = '[^"\\\\\\x00-\\x1f] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})'

    for kind in exclude:
        kinds.pop(kind, None)
    if not kinds:
        raise ValueError(f"every action kind is excluded ({sorted(exclude)})")
    lines = ['root ::= "{\\"action\\":" kind "}"', "kind ::= " + " | ".join(f"({k})" for k in kinds.values())]
    lines += [f"{name} ::= {body}" for name, body in rules.items()]
    return "\n".join(lines) + "\n"
