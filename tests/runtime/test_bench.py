"""`edgeagent bench`'s decode headline is throughput (tokens after the first / wall time from
first to last token), the median gap is secondary, and a run that did not get its CPU says so."""

from __future__ import annotations

import statistics
import time

import pytest

from edgeagent import bench


def test_headline_is_throughput_and_the_median_gap_is_secondary():
    # Three tokens 10 ms apart, then one after a 980 ms stall (a preempted step).
    figures = bench._decode_figures([0.0, 10.0, 20.0, 1000.0])
    assert figures["decode_tokens_per_s"] == pytest.approx(3 / 1.0)  # 3 tokens after the first in 1 s
    assert figures["decode_tokens_per_s_median_gap"] == pytest.approx(100.0)  # the 10 ms steps


def busy(seconds: float) -> dict:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return {}


def test_cpu_utilization_tells_waiting_from_working():
    # Compared within one run: a loaded machine (a training job beside the tests) gives the busy
    # loop less than a whole core, but still many times what a sleeping process gets.
    working = bench._timed(lambda: busy(0.2), threads=1)["cpu_utilization"]
    idle = bench._timed(lambda: (time.sleep(0.2), {})[1], threads=1)["cpu_utilization"]
    assert idle < 0.1 < bench.CONTENDED_BELOW
    assert working > max(3 * idle, 0.15)


def test_contention_note():
    quiet = {"cpu_utilization": 0.97, "threads": 1, "contended": False}
    loaded = {"cpu_utilization": 0.36, "threads": 2, "contended": True}
    assert bench.contention_note(quiet).startswith("not contended: the process got 97 %")
    assert bench.contention_note(loaded).startswith("CONTENDED: the process got 36 % of 2 thread(s)")


@pytest.fixture(scope="module")
def builtin_q8():
    pytest.importorskip("llama_cpp")
    from edgeagent.builtin import builtin_bundle

    return builtin_bundle(threads=1) / "builtin-q8_0.gguf"


def test_bench_throughput_reports_both_figures_and_contention(builtin_q8):
    r = bench.bench_throughput(builtin_q8, threads=1, prompt_tokens=16, gen_tokens=16, reps=2, warmup=0)
    throughputs = [run["engine"]["decode_tokens_per_s"] for run in r["runs"]]
    assert r["engine_tokens_per_s"] == pytest.approx(statistics.median(throughputs))
    assert r["engine_tokens_per_s_median_gap"] > 0 and r["baseline_tokens_per_s_median_gap"] > 0
    assert 0 < r["cpu_utilization"] <= 1.5 and r["contended"] is (r["cpu_utilization"] < bench.CONTENDED_BELOW)
    columns, rows = bench.throughput_rows(r)
    assert columns[-2:] == ["t/s", "t/s (median gap)"] and rows[1][5] == "tg16" and rows[1][7]
