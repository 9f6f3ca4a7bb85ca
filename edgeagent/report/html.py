"""One self-contained HTML report: tables, notes and the PNGs embedded as base64, rendered
by jinja2 (autoescaped: variant ids and paths come from a manifest, i.e. from elsewhere)."""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeagent.atomic import write_text


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str | None = None


@dataclass
class Report:
    title: str
    subtitle: str = ""
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG bytes)
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render(report: Report) -> str:
    from jinja2 import Environment, select_autoescape

    template = (resources.files("edgeagent.report") / "templates" / "report.html.j2").read_text(encoding="utf-8")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    images = [(caption, base64.b64encode(png).decode("ascii")) for caption, png in report.images]
    return env.from_string(template).render(report=report, images=images)


def write(report: Report, path: str | os.PathLike) -> Path:
    """Render and write atomically (temp file in the same directory, then rename)."""
    return write_text(path, render(report))


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table_from(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], note: str | None = None) -> Table:
    return Table(title, list(columns), [[fmt(v) for v in r] for r in rows], note)
