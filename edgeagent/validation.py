"""Pydantic validation errors as the one-line-per-problem messages the CLI prints:
``FILE: key.sub[2].name: what is wrong (got VALUE)``. Shared by device profiles and bundle
manifests; the standard library and pydantic only (it runs on phones)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


def _model_along(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (to list its allowed keys)."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def key_path(loc: tuple[Any, ...]) -> str:
    """``("power", "decode_w")`` -> ``power.decode_w``; list positions as ``[i]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(root: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"{key_path(loc)}: field required"
    if kind == "extra_forbidden":
        owner = _model_along(root, loc)
        allowed = ", ".join(owner.model_fields) if owner else "?"
        return f"{key_path(loc)}: unknown key (allowed here: {allowed})"
    where = key_path(loc) or "(top level)"
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{where}: {err['msg']} (got {shown})"


def describe(exc: ValidationError, origin: str, root: type[BaseModel]) -> str:
    """One line per problem, each starting with ``origin`` (the file)."""
    return "\n".join(f"{origin}: {_explain(root, e)}" for e in exc.errors())
