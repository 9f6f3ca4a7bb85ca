"""converters.schedule.warmup_cosine: the one learning-rate schedule of the three trainers."""

from __future__ import annotations

import math

import pytest

from converters.schedule import warmup_cosine


def rate(step: int) -> float:
    return warmup_cosine(step, peak=1e-3, floor=1e-4, warmup=4, total=14)


def test_warmup_ramps_linearly_to_the_peak():
    assert [rate(s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


def test_cosine_decays_from_peak_to_floor_and_holds_it():
    assert rate(4) == pytest.approx(1e-3)
    assert rate(9) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way: the midpoint
    assert rate(14) == pytest.approx(1e-4)
    assert rate(1000) == pytest.approx(1e-4)
    decay = [rate(s) for s in range(4, 15)]
    assert decay == sorted(decay, reverse=True)


def test_as_a_multiplier_it_is_the_finetune_lambda():
    # converters.finetune hands it to LambdaLR with peak 1 and the min-lr ratio as the floor
    m = [warmup_cosine(s, peak=1.0, floor=0.1, warmup=2, total=10) for s in range(12)]
    assert m[:2] == [0.5, 1.0]
    assert m[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert m[-1] == pytest.approx(0.1)


def test_no_warmup_starts_at_the_peak():
    assert warmup_cosine(0, peak=2.0, floor=0.0, warmup=0, total=10) == pytest.approx(2.0)
