"""One checkpoint format for every trainer: atomic, with the RNG state, and a torn file is
one clear error."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from converters.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402


def test_a_resumed_run_draws_what_the_uninterrupted_one_would(tmp_path) -> None:
    torch.manual_seed(3)
    random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"step": 7, "weights": torch.ones(2)})
    want = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)  # another process, another state
    state = load_checkpoint(tmp_path / "c.pt")
    assert state["step"] == 7 and torch.equal(state["weights"], torch.ones(2))
    got = (torch.rand(3), random.random())
    assert torch.equal(want[0], got[0]) and want[1] == got[1]


def test_a_torn_checkpoint_is_one_error_naming_the_file(tmp_path) -> None:
    save_checkpoint(tmp_path / "c.pt", {"step": 1})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "c.pt")
    assert not list(tmp_path.glob(".c.pt*"))  # no temporary file left beside it
