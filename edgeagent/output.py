"""One way to print results: a rich table for people, JSON for machines (``--json``)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def finite(obj: Any) -> Any:
    """``obj`` with every infinite or NaN float replaced by None: JSON has no such numbers,
    and ``Infinity`` in a ``--json`` output breaks strict parsers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    """``obj`` as strict JSON on stdout (no ``Infinity``/``NaN``: they print as null)."""
    sys.stdout.write(json.dumps(finite(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def fail(message: str, code: int = 2) -> None:
    """Exit with a one-line reason on stderr and exit code 2 (the output contract for bad input)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)
