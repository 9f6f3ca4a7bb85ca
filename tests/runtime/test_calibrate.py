"""`edgeagent calibrate` and `estimate --validate`: the decode fit recovers a known line, the
TOML writer round-trips, an invalid profile is never written, calibrate writes a profile that
`load_profile` validates, and the estimator is set beside measurements for every variant.

Probes are tiny (a few MiB) so a full calibration takes seconds; one thread throughout."""

from __future__ import annotations

import datetime
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeagent.calibrate import (STEP_CACHED_TOKENS, CalibrationError, choose_flash_attn, choose_huge_pages,
                                 choose_repack, fit_decode, probe_layers_for, step_ms, to_toml, write_profile)
from edgeagent.cli import app
from edgeagent.hugepages import available
from edgeagent.llama import default_repack
from edgeagent.profiles import ProfileError, load_profile

REPO = Path(__file__).resolve().parents[2]


def test_decode_fit_recovers_overhead_and_bandwidth_exactly() -> None:
    overhead_s, bandwidth = 0.0012, 18e9
    points = [(b, overhead_s + b / bandwidth) for b in (5e6, 55e6, 170e6)]
    got_overhead, got_bandwidth = fit_decode(points)
    assert got_overhead == pytest.approx(overhead_s, rel=1e-9)
    assert got_bandwidth == pytest.approx(bandwidth, rel=1e-9)
    with pytest.raises(CalibrationError, match="at least two different sizes"):
        fit_decode([(5e6, 0.001), (5e6, 0.002)])
    with pytest.raises(CalibrationError, match="did not grow"):
        fit_decode([(5e6, 0.003), (50e6, 0.002)])


def test_flash_attention_goes_off_only_when_a_step_is_clearly_faster_without() -> None:
    assert step_ms(100.0, 10.0) == pytest.approx(250.0)  # 16 tokens: the first comes out of the prefill
    assert choose_flash_attn(off_step_ms=250.0, on_step_ms=200.0)
    assert choose_flash_attn(off_step_ms=248.0, on_step_ms=250.0)  # within the 2 % noise margin: llama.cpp's default
    assert not choose_flash_attn(off_step_ms=200.0, on_step_ms=250.0)
    assert choose_huge_pages(off_step_ms=248.0, on_step_ms=250.0)  # huge pages stay on within the noise
    assert not choose_huge_pages(off_step_ms=200.0, on_step_ms=250.0)
    assert choose_repack(off_step_ms=248.0, on_step_ms=250.0) and not choose_repack(off_step_ms=200.0, on_step_ms=250.0)


def test_probe_size_is_what_was_asked() -> None:
    per_block = 34 / 32 * (2 * 768**2 + 2 * 768 * 256 + 3 * 768 * 2048)
    assert probe_layers_for(10 * per_block) == 10
    assert probe_layers_for(1) == 1


def test_toml_writer_round_trips_the_shipped_host_profile(tmp_path) -> None:
    data = tomllib.loads((REPO / "device_profiles" / "host.toml").read_text())
    text = to_toml(data, "a header\nline two")
    assert text.startswith("# a header\n# line two\n")
    assert tomllib.loads(text) == data
    path = write_profile(data, tmp_path / "h.toml")
    assert load_profile(path).model_dump() == load_profile("host").model_dump()


def test_an_invalid_profile_is_refused_and_nothing_is_written(tmp_path) -> None:
    data = tomllib.loads((REPO / "device_profiles" / "host.toml").read_text())
    data["runtime"]["threads"] = 0
    del data["power"]["decode_w"]
    target = tmp_path / "bad.toml"
    with pytest.raises(ProfileError) as info:
        write_profile(data, target)
    assert f"{target}: power.decode_w: field required" in str(info.value)
    assert "runtime.threads" in str(info.value)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("calibrate") / "host.toml"
    r = CliRunner().invoke(app, ["calibrate", "-o", str(out), "--model-dir", str(tiny_model_dir), "--threads", "1",
                                 "--probe-mb", "8,22", "--json"],
                           env={"EDGEAGENT_CACHE": str(out.parent / "cache")})
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_calibrate_writes_a_profile_load_profile_accepts(calibrated) -> None:
    path, result = calibrated
    p = load_profile(path)
    assert p.name == "host" and p.kind == "host"
    assert p.runtime.threads == 1
    assert 0 < p.bandwidth_efficiency <= 1
    # the ceiling is the fastest stream measured: numpy's read or llama.cpp's own decode
    fit = result["measurements"]["decode_fit"]
    ceiling = max(result["measurements"]["numpy"]["read_gbs"], fit["bandwidth_reached_gbs"])
    assert p.bandwidth_theoretical_gbs == pytest.approx(ceiling, abs=0.01)
    # eta stands for 4-bit weights, as on the phone profiles: the Q8_0 fit's rate over the
    # Q4_K_M probe's measured wide_weight_rate
    narrow = result["measurements"]["narrow_read"]
    assert p.runtime.wide_weight_rate == pytest.approx(narrow["wide_weight_rate"], abs=1e-3) and narrow["wide_weight_rate"] >= 1
    assert narrow["model"].endswith("-q4_k_m.gguf") and narrow["narrow_bytes"] > narrow["wide_bytes"] > 0
    assert p.bandwidth_efficiency == pytest.approx(fit["bandwidth_reached_gbs"] / narrow["wide_weight_rate"] / ceiling,
                                                   abs=1e-3)
    assert p.compute_gflops_sustained == pytest.approx(result["measurements"]["prefill"]["gflops_effective"], abs=0.01)
    assert p.runtime.decode_overhead_ms == pytest.approx(result["measurements"]["decode_fit"]["overhead_ms"], abs=1e-4)
    memory = result["measurements"]["run_memory"]  # the baseline plus what a run holds beyond llama.cpp's buffers
    assert memory["extra_mb"] is not None and memory["extra_mb"] >= 0
    assert p.runtime.overhead_mb == pytest.approx(result["measurements"]["runtime_baseline_mb"] + memory["extra_mb"], abs=0.06)
    attention = result["measurements"]["decode_attention"]
    assert attention["tpot_ms"][1] > attention["tpot_ms"][0]  # decode slows down as the cache fills
    # the profile's attention is measured with the flash attention setting it runs with, per head dimension
    by_dim = result["measurements"]["decode_attention_by_head_dim"]["profile"]
    assert {a["flash_attn"] for a in by_dim.values()} == {p.runtime.flash_attn}
    assert p.runtime.decode_attention_gflops_by_head_dim == pytest.approx(
        {dim: a["attention_gflops"] for dim, a in by_dim.items()}, abs=1e-3)
    assert p.runtime.decode_attention_gflops in p.runtime.decode_attention_gflops_by_head_dim.values()
    today = datetime.date.today().isoformat()
    measured = [s for s in p.sources if s.citation and s.citation.startswith(f"measured by edgeagent calibrate on {today}")]
    assert len(measured) >= 4
    assert any(s.citation == "assumption" and "power" in s.what for s in p.sources)
    flash = result["measurements"]["flash_attn"]  # measured three ways, the profile takes the choice
    for side in ("off", "on", "exact"):
        assert flash[side]["step_ms"] == pytest.approx(step_ms(flash[side]["prefill_ms"], flash[side]["tpot_ms"]))
    assert flash["exact_here"]["exact"]  # the exact set-up is exact here: a reused prefix gives a fresh context's bits
    assert set(flash["exact_here"]) == {"off", "on", "exact"}
    assert p.runtime.flash_attn == choose_flash_attn(flash["off"]["step_ms"], flash["on"]["step_ms"])
    assert flash["cached_tokens"] == STEP_CACHED_TOKENS > 0  # a step decodes at an episode's depth
    assert any(s.what.startswith(f"runtime.flash_attn = {str(p.runtime.flash_attn).lower()}: one agent step")
               for s in p.sources)
    repack = result["measurements"]["weight_repack"]  # measured on the Q4_K_M probe where repacking is safe
    assert p.runtime.weight_repack is repack["weight_repack"]
    if repack["measured"]:
        assert repack["model"].endswith("-q4_k_m.gguf") and repack["repacked_mb"] > 0
        assert repack["weight_repack"] == choose_repack(repack["off"]["step_ms"], repack["on"]["step_ms"])
        assert any(s.what.startswith(f"runtime.weight_repack = {str(p.runtime.weight_repack).lower()}: one agent step")
                   for s in p.sources)
    else:
        assert repack["weight_repack"] is default_repack() or "repacks none" in repack["why"]
    huge = result["measurements"]["huge_pages"]  # on / off on the same step where the kernel gives them
    if huge["huge_pages"] is None:
        assert p.runtime.huge_pages is None and not available()
    else:
        assert huge["on"]["huge_mb"] > 0 and huge["off"]["huge_mb"] == 0
        assert p.runtime.huge_pages == choose_huge_pages(huge["off"]["step_ms"], huge["on"]["step_ms"])
        assert any(s.what.startswith(f"runtime.huge_pages = {str(p.runtime.huge_pages).lower()}: the same step")
                   for s in p.sources)
    probes = result["measurements"]["decode_probes"]
    assert len(probes) == 3 and probes[0]["weights_mb"] < probes[1]["weights_mb"] < probes[2]["weights_mb"]
    assert result["path"] == str(path)


def test_validate_sets_estimates_beside_measurements_for_every_variant(calibrated, tiny_bundle) -> None:
    path, _ = calibrated
    r = CliRunner().invoke(app, ["estimate", "--validate", "--profile", str(path), "--bundle", str(tiny_bundle),
                                 "--prompt-tokens", "32", "--gen-tokens", "24", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [row["id"] for row in out["rows"]] == ["tiny-f32", "tiny-q8_0"]
    for row in out["rows"]:
        for key, target in (("memory_mb", 0.10), ("tokens_per_s", 0.25), ("ttft_ms", None)):
            c = row[key]
            assert c["estimated"] > 0 and c["measured"] > 0
            assert c["ratio"] == pytest.approx(c["estimated"] / c["measured"])
            assert c["target"] == target
            assert c["within_target"] == (None if target is None else abs(c["ratio"] - 1) <= target)
        assert row["measured"]["threads"] == 1 and row["measured"]["source"] == "measured"
    assert out["all_within_target"] == all(r["memory_mb"]["within_target"] and r["tokens_per_s"]["within_target"]
                                           for r in out["rows"])


def test_a_measured_step_on_a_cached_prefix_evaluates_only_its_own_tokens(tiny_bundle) -> None:
    """measure_gguf(cached_tokens=N): the prefix is in the KV cache before each timed call, so
    the call evaluates only its prompt tokens and decodes at that depth."""
    from edgeagent.measure import measure_gguf

    q8 = next(tiny_bundle.glob("*q8_0*.gguf"))
    plain = measure_gguf(q8, prompt_tokens=16, gen_tokens=4, n_ctx=128, threads=1, reps=1)
    deep = measure_gguf(q8, prompt_tokens=16, gen_tokens=4, n_ctx=128, threads=1, reps=1, cached_tokens=40)
    assert plain["cached_tokens"] == 0 and plain["evaluated_prompt_tokens"] == plain["prompt_tokens"] == 16
    assert deep["cached_tokens"] == 40 and deep["evaluated_prompt_tokens"] == deep["prompt_tokens"] == 16
