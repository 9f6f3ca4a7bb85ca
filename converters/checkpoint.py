"""Training checkpoints, one way for every trainer (the fine-tune, the exit heads, the built-in
model's recipe): written atomically (a killed run leaves the previous checkpoint whole), with
the random-number state so a resumed run draws what the uninterrupted one would, and read back
with one clear error when the file is not a checkpoint."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from edgeagent.atomic import atomic_path


class CheckpointError(Exception):
    pass


def rng_state() -> dict:
    """Python's and torch's random-number state (and CUDA's, where there is one)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any], *, with_rng: bool = True) -> None:
    """``state`` (and, unless told not to, this process's RNG state under "rng") to ``path``, atomically."""
    if with_rng:
        state = {**state, "rng": rng_state()}
    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, *, restore_rng: bool = True) -> dict[str, Any]:
    """A checkpoint ``save_checkpoint`` wrote; restores its RNG state when it has one. The
    file is the run's own (written by this code), so it is loaded with pickles allowed."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
    except Exception as e:  # a torn or foreign file: one line, not a traceback
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(e).strip()[:160]}); delete it to start over") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this trainer")
    if restore_rng and isinstance(state.get("rng"), dict) and "python" in state["rng"]:
        set_rng_state(state["rng"])
    return state
