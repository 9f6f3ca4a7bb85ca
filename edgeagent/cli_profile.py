"""Commands of this area, registered on the main ``edgeagent`` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
