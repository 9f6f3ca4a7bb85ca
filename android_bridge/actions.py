"""The action schema the agent speaks: one JSON object per step.

Modelled on AndroidWorld's ``JSONAction`` (android_world/env/json_action.py): a single flat
record with an ``action`` kind and the optional fields that kind uses. It is the vocabulary a
device executes, so it lives in the device layer (``Device.act``); the agent (``edgeagent``)
writes it.

    {"action": "tap", "index": 3}
    {"action": "tap", "x": 540, "y": 1200}
    {"action": "type", "text": "hello", "index": 5}
    {"action": "scroll", "direction": "down"}
    {"action": "open_app", "app": "Settings"}
    {"action": "done", "status": "complete", "answer": "42"}

``element`` is an optional label the model writes before ``index`` (the visible text of the
element it means). The runtime checks it against the screen, so a model that names "Cancel"
but points at "Pay" is caught instead of executed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

SCHEMA_VERSION = 1

ACTION_KINDS = (
    "tap",
    "long_press",
    "type",
    "swipe",
    "scroll",
    "back",
    "home",
    "open_app",
    "wait",
    "done",
)
DIRECTIONS = ("up", "down", "left", "right")
DONE_STATUSES = ("complete", "infeasible")

# Which optional fields each kind may carry. Anything else is an error, so a typo such as
# {"action": "tap", "idx": 3} is reported instead of silently tapping nothing.
_ALLOWED: dict[str, frozenset[str]] = {
    "tap": frozenset({"index", "x", "y", "element"}),
    "long_press": frozenset({"index", "x", "y", "element"}),
    "type": frozenset({"text", "index", "element"}),
    "swipe": frozenset({"direction", "index", "element"}),
    "scroll": frozenset({"direction", "index", "element"}),
    "back": frozenset(),
    "home": frozenset(),
    "open_app": frozenset({"app"}),
    "wait": frozenset(),
    "done": frozenset({"status", "answer"}),
}

MAX_TEXT_CHARS = 500


def action_json(action: dict[str, Any]) -> str:
    """An action as the model writes it and is trained on it: compact JSON, keys in the dict's
    order, non-ASCII kept (``Action.to_json``, and every trace step's completion through
    ``edgeagent.agent.prompt.training_example``)."""
    return json.dumps(action, ensure_ascii=False, separators=(",", ":"))


class ActionError(ValueError):
    """An action that does not follow the schema. The message says which field and why."""


@dataclass(frozen=True)
class Action:
    # Field order is the JSON order: ``element`` comes before ``index`` so a model names the
    # element it means before it points at it (the grammar then forces the index).
    action: str
    element: str | None = None
    index: int | None = None
    x: int | None = None
    y: int | None = None
    text: str | None = None
    direction: str | None = None
    app: str | None = None
    status: str | None = None
    answer: str | None = None

    def __post_init__(self) -> None:
        validate(self)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Only the fields that are set, ``action`` first (the order the grammar emits)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_json(self) -> str:
        return action_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> "Action":
        if not isinstance(data, dict):
            raise ActionError(f"an action must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ActionError(f"unknown action field(s) {unknown}; allowed: {sorted(known)}")
        if "action" not in data:
            raise ActionError(f"missing field 'action' (one of {', '.join(ACTION_KINDS)})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Action":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ActionError(f"action is not valid JSON ({exc.msg} at char {exc.pos}): {text[:80]!r}") from None
        return cls.from_dict(data)

    # --- convenience -----------------------------------------------------------------
    @property
    def targets_point(self) -> bool:
        return self.x is not None

    @property
    def is_terminal(self) -> bool:
        return self.action == "done"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(a: Action) -> None:
    """Raise ActionError naming the offending field when ``a`` breaks the schema."""
    if a.action not in ACTION_KINDS:
        raise ActionError(f"unknown action {a.action!r}; expected one of {', '.join(ACTION_KINDS)}")
    present = {f.name for f in fields(a) if f.name != "action" and getattr(a, f.name) is not None}
    extra = present - _ALLOWED[a.action]
    if extra:
        raise ActionError(f"{a.action!r} does not take {sorted(extra)}; it takes {sorted(_ALLOWED[a.action]) or 'no fields'}")

    if a.index is not None and (not _is_int(a.index) or a.index < 0):
        raise ActionError(f"'index' must be a non-negative integer, got {a.index!r}")
    for name in ("x", "y"):
        value = getattr(a, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ActionError(f"{name!r} must be a non-negative integer pixel coordinate, got {value!r}")
    if (a.x is None) != (a.y is None):
        raise ActionError(f"{a.action!r} needs both 'x' and 'y', or neither")

    if a.action in ("tap", "long_press"):
        if a.index is None and a.x is None:
            raise ActionError(f"{a.action!r} needs an element 'index' or 'x' and 'y'")
        if a.index is not None and a.x is not None:
            raise ActionError(f"{a.action!r} takes an element 'index' or 'x','y', not both")
    if a.action == "type":
        if not isinstance(a.text, str) or a.text == "":
            raise ActionError("'type' needs a non-empty string 'text'")
        if len(a.text) > MAX_TEXT_CHARS:
            raise ActionError(f"'text' is {len(a.text)} characters; the limit is {MAX_TEXT_CHARS}")
    if a.action in ("swipe", "scroll") and a.direction not in DIRECTIONS:
        raise ActionError(f"{a.action!r} needs 'direction' in {DIRECTIONS}, got {a.direction!r}")
    if a.action == "open_app" and (not isinstance(a.app, str) or not a.app.strip()):
        raise ActionError("'open_app' needs a non-empty string 'app'")
    if a.action == "done":
        if a.status not in DONE_STATUSES:
            raise ActionError(f"'done' needs 'status' in {DONE_STATUSES}, got {a.status!r}")
        if a.answer is not None and not isinstance(a.answer, str):
            raise ActionError(f"'answer' must be a string, got {type(a.answer).__name__}")
    for name in ("text", "app", "element"):
        value = getattr(a, name)
        if value is not None and not isinstance(value, str):
            raise ActionError(f"{name!r} must be a string, got {type(value).__name__}")


# --- coordinates -------------------------------------------------------------------------

def scale_point(x: int, y: int, from_size: tuple[int, int], to_size: tuple[int, int]) -> tuple[int, int]:
    """Map a point between two pixel spaces of the same screen.

    A model sees a screenshot downscaled from the physical screen (say 540x1200 of 1080x2400);
    the point it picks must be scaled back before ``input tap``. Pixel centres are kept: pixel
    i of an axis of n pixels covers [i, i+1), so it maps through its centre i + 0.5.
    """
    (fw, fh), (tw, th) = from_size, to_size
    if min(fw, fh, tw, th) <= 0:
        raise ValueError(f"sizes must be positive, got {from_size} -> {to_size}")
    if not (0 <= x < fw and 0 <= y < fh):
        raise ValueError(f"point ({x}, {y}) is outside the {fw}x{fh} source space")
    sx = int((x + 0.5) * tw / fw)
    sy = int((y + 0.5) * th / fh)
    return min(sx, tw - 1), min(sy, th - 1)


def scale_action(a: Action, from_size: tuple[int, int], to_size: tuple[int, int]) -> Action:
    """The same action with its x,y (if any) moved from screenshot space to screen space."""
    if a.x is None or a.y is None:
        return a
    x, y = scale_point(a.x, a.y, from_size, to_size)
    return Action(**{**a.to_dict(), "x": x, "y": y})
