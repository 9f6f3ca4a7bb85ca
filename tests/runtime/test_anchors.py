"""The published anchors: the 8 Elite profile holds what the in-sample fit gives, held-out rows
never move a fit, and `estimate --compare-published --json` keeps its output contract."""

from __future__ import annotations

import dataclasses
import json

import pytest
from typer.testing import CliRunner

from edgeagent import anchors
from edgeagent import estimate as est
from edgeagent.profiles import load_profile

ELITE = load_profile("snapdragon-8-elite")


def test_elite_profile_holds_the_in_sample_fit() -> None:
    fit = anchors.fit_phone_model("ehsani2026", ELITE.bandwidth_theoretical_gbs,
                                  prefill_type_rates=ELITE.runtime.prefill_type_rates)
    assert fit.rows == 10
    assert ELITE.bandwidth_efficiency == pytest.approx(fit.bandwidth_efficiency, abs=5e-4)
    assert ELITE.runtime.decode_overhead_ms == pytest.approx(fit.decode_overhead_ms, abs=0.05)
    assert ELITE.compute_gflops_sustained == pytest.approx(fit.compute_gflops_sustained, abs=0.05)
    assert ELITE.power.prefill_w == pytest.approx(fit.prefill_w, abs=0.05)
    assert ELITE.power.decode_w == pytest.approx(fit.decode_w, abs=0.05)


def test_dimensity_8400_holds_its_decode_fit_and_carries_it_to_the_held_out_models() -> None:
    """The profile's bandwidth efficiency is the one fitted on the source's in-sample rows (one
    model); held-out rows never move it, and the held-out models read within the tolerance."""
    prof = load_profile("dimensity-8400")
    eta = anchors.fit_decode_efficiency("pocketpal-klee", prof)
    assert prof.bandwidth_efficiency == pytest.approx(eta, abs=5e-4)
    in_sample = [r for r in anchors.PUBLISHED if r.source == "pocketpal-klee" and not r.held_out]
    assert {r.model for r in in_sample} == {"Qwen2.5-1.5B"}
    scrambled = tuple(dataclasses.replace(r, decode_tokens_per_s=1.0) if r.held_out else r for r in anchors.PUBLISHED)
    assert anchors.fit_decode_efficiency("pocketpal-klee", prof, scrambled) == eta
    faster = tuple(dataclasses.replace(r, decode_tokens_per_s=1.2 * r.decode_tokens_per_s)
                   if r.source == "pocketpal-klee" and not r.held_out else r for r in anchors.PUBLISHED)
    assert anchors.fit_decode_efficiency("pocketpal-klee", prof, faster) > 1.15 * eta
    rows = anchors.compare_published(only_profile="dimensity-8400")["rows"]
    held = [r["decode_tokens_per_s"]["ratio"] for r in rows if r["held_out"]]
    assert len(held) == 8 and all(abs(x - 1) <= anchors.TOLERANCE for x in held), held
    with pytest.raises(ValueError, match="no in-sample row"):
        anchors.fit_decode_efficiency("tummalapalli2026", load_profile("snapdragon-8-gen-3"))


def test_dimensity_8400_holds_its_prefill_fit_and_the_held_out_models_read_within_the_tolerance() -> None:
    """The compute is fitted on the same two in-sample rows as the efficiency, in Q4_K's FLOPs;
    the held-out rows (Q4_0 and Q4_K_M of four other models) never move it and read within
    the tolerance, where one compute figure for every type read Q4_0 0.83-0.89, Q4_K_M 1.26-1.47."""
    prof = load_profile("dimensity-8400")
    compute = anchors.fit_prefill_compute("pocketpal-klee", prof)
    assert prof.compute_gflops_sustained == pytest.approx(compute, abs=0.05)
    scrambled = tuple(dataclasses.replace(r, prefill_tokens_per_s=1.0) if r.held_out else r for r in anchors.PUBLISHED)
    assert anchors.fit_prefill_compute("pocketpal-klee", prof, scrambled) == compute
    rows = anchors.compare_published(only_profile="dimensity-8400")["rows"]
    held = [r["prefill_tokens_per_s"]["ratio"] for r in rows if r["held_out"]]
    assert len(held) == 8 and all(abs(x - 1) <= anchors.TOLERANCE for x in held), held
    with pytest.raises(ValueError, match="reach a little core"):
        anchors.fit_prefill_compute("pocketpal-s23", load_profile("snapdragon-8-gen-2"),
                                    tuple(dataclasses.replace(r, held_out=False) for r in anchors.PUBLISHED))


def test_prefill_type_rates_are_fitted_on_a_phone_with_no_rows_and_the_others_agree() -> None:
    """Every profile that carries prefill_type_rates holds the fit on PocketPal's 8 Elite Gen 5
    (a phone no profile or published row stands for, so the S23 and X7 Pro rows stay held out)
    and cites it; the two other phones' own medians are within 10 % of it, type by type."""
    from edgeagent.profiles import list_profiles

    fitted = anchors.prefill_type_rates()
    assert anchors.PREFILL_RATE_DEVICE == "poco-myron" and fitted == anchors.prefill_type_rates("poco-myron")
    assert fitted["Q4_0"] > 1.2 and fitted["Q8_0"] > 1.2 and fitted["Q5_K"] < 0.8 and fitted["Q6_K"] < 0.8
    for device in ("samsung-s23", "poco-x7-klee"):
        own = anchors.prefill_type_rates(device)
        assert all(abs(own[t] / fitted[t] - 1) <= 0.10 for t in fitted), (device, own)
    carrying = []
    for name in list_profiles():
        p = load_profile(name)
        if p.runtime.prefill_type_rates:
            carrying.append(name)
            assert p.runtime.prefill_type_rates == pytest.approx(fitted, abs=0.005), name
            assert any("poco-myron.json" in (s.citation or "") for s in p.sources
                       if "prefill_type_rates" in s.what), name
    assert {"snapdragon-8-gen-2", "snapdragon-8-elite", "dimensity-8400"} <= set(carrying)
    assert "host" not in carrying


def test_prefill_rate_cells_are_the_rows_cells() -> None:
    """PREFILL_RATE_PP repeats the S23's and the X7 Pro's Q4_0 and Q4_K_M prefill cells that are
    also --compare-published rows: the two tables hold the same numbers."""
    sources = {"pocketpal-s23": "samsung-s23", "pocketpal-klee": "poco-x7-klee"}
    by_id = {model: pid for pid, (model, _, _) in anchors.POCKETPAL_MODELS.items()}
    checked = 0
    for r in anchors.PUBLISHED:
        if r.source in sources and r.shape:
            cells = dict(zip(anchors.PREFILL_RATE_FILES, anchors.PREFILL_RATE_PP[sources[r.source]][by_id[r.model]]))
            assert cells[r.quant.lower()] == r.prefill_tokens_per_s, (r.source, r.model, r.quant)
            checked += 1
    assert checked == 20


def test_prefill_type_rates_split_each_file_by_its_q6_k_share() -> None:
    """A model's per-type rates reproduce its whole-file pp ratios when the estimator's shape
    of each file is weighed by them (the split is exact, not a fit)."""
    from edgeagent.estimate import prefill_work
    from edgeagent.shapes import shape_from_config

    rates = anchors.prefill_type_rates_by_model()["qwen2.5-1.5b"]
    pp = dict(zip(anchors.PREFILL_RATE_FILES, anchors.PREFILL_RATE_PP["poco-myron"]["qwen2.5-1.5b"]))

    def blocks(quant: str) -> float:  # the block matmuls' time per token, in Q4_K's FLOPs
        s = shape_from_config("qwen2.5-1.5b", quant)
        return sum(n / rates.get(t, 1.0) for t, n in s.block_matmul_params_by_type.items())

    for quant in ("q4_0", "q5_k_m", "q6_k", "q8_0"):
        assert blocks("q4_k_m") / blocks(quant) == pytest.approx(pp[quant] / pp["q4_k_m"], rel=1e-9), quant
    assert prefill_work(shape_from_config("qwen2.5-1.5b", "q8_0"), 100, None) == pytest.approx(
        prefill_work(shape_from_config("qwen2.5-1.5b", "q8_0"), 100, {"Q8_0": 1.0}))


def test_snapdragon_8_gen_2_holds_its_five_big_core_fit() -> None:
    """The 8 Gen 2's bandwidth efficiency is the published 5-big-core run's (a row without a
    shape: its file's bytes x tok/s / the bus), and the S23 rows it does not read stay held out."""
    prof = load_profile("snapdragon-8-gen-2")
    eta = anchors.fit_decode_efficiency("llamacpp-s23u", prof)
    (row,) = [r for r in anchors.PUBLISHED if r.source == "llamacpp-s23u"]
    assert not row.held_out and row.shape is None and row.threads == prof.runtime.threads == 5
    assert eta == pytest.approx(row.weights_mib * 2**20 * row.decode_tokens_per_s / 67.2e9)
    assert prof.bandwidth_efficiency == pytest.approx(eta, abs=5e-4)
    assert all(r.held_out for r in anchors.PUBLISHED if r.source == "pocketpal-s23" and r.shape)
    compared = anchors.compare_row(row, prof, None)
    assert compared["estimated"] is False and compared["decode_tokens_per_s"]["ratio"] is None


def test_memory_rows_count_a_repacked_tied_head_twice_where_the_build_repacks_it() -> None:
    """PocketPal's load-log footprints (2026 builds: Q4_K and Q6_K repacked) need the repacked copy
    of a tied head; Ehsani's build repacked only Q4_0 and IQ4_NL, so its Q4_K_M rows hold it once."""
    rows = anchors.compare_published()["rows"]
    mem = {(r["source"], r["model"], r["quant"]): r["peak_memory_mb"]["ratio"] for r in rows
           if r["held_out"] and r["peak_memory_mb"]["ratio"] is not None}
    assert len(mem) == 22 and all(abs(x - 1) <= 0.10 for x in mem.values()), mem
    assert anchors.SOURCES["ehsani2026"]["repacked_types"] == {"Q4_0": 4, "IQ4_NL": 4}
    qwen = next(r for r in rows if r["source"] == "pocketpal-s23" and r["model"] == "Qwen2.5-1.5B"
                and r["quant"] == "Q4_K_M")
    once = anchors.compare_row(next(a for a in anchors.PUBLISHED if a.source == "pocketpal-s23"
                                    and a.model == "Qwen2.5-1.5B" and a.quant == "Q4_K_M"),
                               # as an x86 host repacks: not the Q6_K head
                               load_profile("snapdragon-8-gen-2").model_copy(update={"kind": "host"}), None)
    assert once["peak_memory_mb"]["ratio"] < 0.9 < qwen["peak_memory_mb"]["ratio"]


def test_a510_pace_is_the_pairs_and_carries_to_the_held_out_s23_models() -> None:
    """estimate.CORE_DECODE_BYTES_PER_CYCLE's A510 figure is fitted on the same GGUF at 5 big-core
    and 6 threads (neither a held-out row); the ten held-out S23 rows then read within tolerance."""
    gen2 = load_profile("snapdragon-8-gen-2")
    big, slow = anchors.a510_pace_rows()
    core, pace = anchors.fit_core_decode_pace(gen2, big, slow)
    assert core == "Cortex-A510" and est.CORE_DECODE_BYTES_PER_CYCLE[core] == pytest.approx(pace, abs=5e-4)
    assert pace == pytest.approx(slow.decode_tokens_per_s * big.weights_mib * 2**20 / (6 * 2.0e9))
    assert est.little_decode_pace("Cortex-A510") == est.CORE_DECODE_BYTES_PER_CYCLE["Cortex-A510"]
    assert est.little_decode_pace("Cortex-A520") == est.LITTLE_CORE_BYTES_PER_CYCLE
    assert est.little_decode_pace("Cortex-A510 (Kryo Silver)") == est.little_decode_pace("Cortex-A510")
    with pytest.raises(ValueError, match="not the slower one"):
        anchors.fit_core_decode_pace(gen2, big, dataclasses.replace(slow, decode_tokens_per_s=20.0))
    with pytest.raises(ValueError, match="must reach a little core"):
        anchors.fit_core_decode_pace(gen2, big, dataclasses.replace(slow, threads=5))
    rows = anchors.compare_published(only_profile="snapdragon-8-gen-2")["rows"]
    held = [r["decode_tokens_per_s"]["ratio"] for r in rows if r["held_out"] and r["source"] == "pocketpal-s23"]
    assert len(held) == 10 and all(abs(x - 1) <= anchors.TOLERANCE for x in held), held


UNFITTED_PHONES = ("snapdragon-8-gen-3", "snapdragon-7-plus-gen-2", "dimensity-9300", "tensor-g3")


@pytest.mark.parametrize("name", UNFITTED_PHONES)
def test_a_phone_with_no_run_of_its_own_takes_the_fitted_phones_median(name: str) -> None:
    """Its bandwidth efficiency is the median effective efficiency of the fitted phones (the
    8 Elite's counts its per-token overhead in), to two decimals, and it says so."""
    prof = load_profile(name)
    assert prof.bandwidth_efficiency == pytest.approx(anchors.unfitted_efficiency(), abs=0.005)
    assert any("unfitted_efficiency" in s.what for s in prof.sources)
    # a profile's effective efficiency is its efficiency when it has no per-token overhead
    assert anchors.effective_efficiency(prof) == pytest.approx(prof.bandwidth_efficiency, rel=0.01)


@pytest.mark.parametrize("name", ("snapdragon-8-gen-2",) + UNFITTED_PHONES)
def test_a_phone_with_no_prefill_run_takes_the_fitted_compute_fraction(name: str) -> None:
    """Its compute is the fitted phones' fraction of the int8 peak of its default threads' cores
    (the Dimensity 8400's, fitted on a 2026 build), to a tenth of a GFLOP/s, and it says so."""
    prof = load_profile(name)
    u = anchors.unfitted_compute_utilization()
    assert u == pytest.approx(anchors.compute_utilization(load_profile("dimensity-8400")))
    assert prof.compute_gflops_sustained == pytest.approx(u * anchors.int8_peak_gops(prof), abs=0.06)
    assert any("unfitted_compute_utilization" in s.what for s in prof.sources)


def test_int8_peak_counts_the_fastest_cores_first() -> None:
    gen2 = load_profile("snapdragon-8-gen-2")  # 1x X3 3.2 + 2x A715 2.8 + 2x A710 2.8 + 3x A510
    assert anchors.int8_peak_gops(gen2) == pytest.approx(3.2 * 128 + 4 * 2.8 * 64)
    assert anchors.int8_peak_gops(gen2, threads=1) == pytest.approx(3.2 * 128)
    with pytest.raises(ValueError, match="no int8 rate"):
        anchors.int8_peak_gops(gen2, threads=6)  # the sixth thread is an A510's: paced by its own term
    assert anchors.compute_utilization(load_profile("snapdragon-8-elite")) < 0.1  # a 2025 llama-cli fit, not used
    printed = anchors.compare_published(only_profile="dimensity-8400")["compute_utilization"]
    assert printed["unfitted_phones_take"] == anchors.unfitted_compute_utilization()
    assert printed["fitted"]["dimensity-8400"] == pytest.approx(0.29, abs=0.005)


def test_every_phone_profile_is_fitted_or_takes_the_fitted_median() -> None:
    from edgeagent.profiles import list_profiles

    phones = {n for n in list_profiles() if load_profile(n).kind == "phone"}
    assert phones == set(anchors.FITTED_PHONES) | set(UNFITTED_PHONES)
    fitted = {n: anchors.effective_efficiency(load_profile(n)) for n in anchors.FITTED_PHONES}
    assert min(fitted.values()) <= anchors.unfitted_efficiency() <= max(fitted.values())


def test_held_out_rows_never_move_the_fit() -> None:
    base = anchors.fit_phone_model("ehsani2026", 84.8)
    scrambled = tuple(dataclasses.replace(r, joules_per_run=1e4, decode_tokens_per_s=1.0, prefill_s=99.0)
                      if r.held_out else r for r in anchors.PUBLISHED)
    assert anchors.fit_phone_model("ehsani2026", 84.8, scrambled) == base
    in_sample = tuple(dataclasses.replace(r, joules_per_run=2 * r.joules_per_run)
                      if not r.held_out and r.source == "ehsani2026" else r for r in anchors.PUBLISHED)
    assert anchors.fit_phone_model("ehsani2026", 84.8, in_sample).decode_w == pytest.approx(2 * base.decode_w)


def test_energy_fit_describes_each_of_its_own_rows_within_the_tolerance() -> None:
    """The fit is judged by ratio, so it is fitted in relative error: an absolute least squares
    let the longest runs set a 32 J start-up energy and read the 0.5B row (36.8 J) at 1.67."""
    fit = anchors.fit_phone_model("ehsani2026", ELITE.bandwidth_theoretical_gbs)
    rows = [r for r in anchors.PUBLISHED if r.source == "ehsani2026" and not r.held_out]
    residuals = {f"{r.model} {r.quant}": anchors.fit_residual(r, fit) for r in rows}
    assert all(abs(v - 1.0) <= anchors.TOLERANCE for v in residuals.values()), residuals
    assert 0.0 < fit.setup_j < min(r.joules_per_run for r in rows) / 2  # the start-up is a small part of a window


def test_least_squares_recovers_a_known_line_and_refuses_a_singular_system() -> None:
    xs = [[x, 1.0] for x in (0.0, 1.0, 2.0, 3.0)]
    assert anchors._least_squares(xs, [1 + 2 * x[0] for x in xs]) == pytest.approx([2.0, 1.0])
    with pytest.raises(ValueError, match="singular"):
        anchors._least_squares([[1.0, 1.0], [2.0, 2.0]], [1.0, 2.0])


def test_range_divides_by_the_held_out_ratios() -> None:
    assert anchors.with_range(10.0, (0.8, 1.25)) == {"value": 10.0, "low": 8.0, "high": 12.5}
    assert anchors.with_range(10.0, (1.1, 1.2)) == pytest.approx({"value": 10.0, "low": 10 / 1.2, "high": 10.0})


def test_compare_published_json_contract() -> None:
    from edgeagent.cli import app

    r = CliRunner().invoke(app, ["estimate", "--compare-published", "--json"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert {row["source"] for row in data["rows"]} == {"ehsani2026", "geerling-q6a", "tummalapalli2026",
                                                       "huang2025-8elite", "huang2025-8gen3", "xiao2024",
                                                       "llmrs2-s25", "pocketpal-s23", "pocketpal-klee",
                                                       "llamacpp-s23u", "qmesh-s25u"}
    for row in data["rows"]:
        assert isinstance(row["held_out"], bool) and isinstance(row["comparable"], bool)
        for key in ("decode_tokens_per_s", "run_s", "joules_per_run", "peak_memory_mb"):
            c = row[key]
            assert set(c) == {"estimated", "published", "ratio"}
            if c["ratio"] is not None:
                assert c["ratio"] == pytest.approx(c["estimated"] / c["published"])
    qwen = next(r for r in data["rows"] if r["model"] == "Qwen2.5-1.5B" and r["quant"] == "Q4_K_M")
    assert qwen["held_out"] and qwen["decode_tokens_per_s"]["published"] == 31.6
    assert qwen["joules_per_run"]["published"] == 92.87 and qwen["run_s"]["published"] == 4.37
    s = data["summary"]["joules_per_run"]
    assert s["held_out_rows"] == 4 and s["min_ratio"] <= s["median_ratio"] <= s["max_ratio"]
    assert set(data["type_rates"]["devices"]) == {"poco-myron", "samsung-s23", "poco-x7-klee"}
    r = CliRunner().invoke(app, ["estimate", "--compare-published", "--profile", "tensor-g3"])
    assert r.exit_code != 0 and "no published measurements for profile 'tensor-g3'" in r.stderr


def test_third_source_rows_load_cited_and_held_out() -> None:
    src = anchors.SOURCES["tummalapalli2026"]
    for key in ("citation", "url", "device", "profile", "runtime", "energy_includes", "time_is", "memory_is"):
        assert src[key], key
    assert "2603.23640" in src["url"] and "Table 8" in src["citation"]
    load_profile(src["profile"])  # the source's device has a profile
    rows = [r for r in anchors.PUBLISHED if r.source == "tummalapalli2026"]
    assert rows and all(r.held_out for r in rows)
    row = rows[0]
    assert (row.prompt_tokens, row.gen_tokens, row.decode_tokens_per_s) == (250, 504, 9.93)
    assert row.run_s == pytest.approx(25.128 + 51.294) and row.joules_per_run is None
    # every row's source is cited
    assert {r.source for r in anchors.PUBLISHED} <= set(anchors.SOURCES)


def test_third_source_is_never_read_by_a_fit() -> None:
    with pytest.raises(ValueError, match="0 in-sample rows"):
        anchors.fit_phone_model("tummalapalli2026", 76.8)
    base = anchors.fit_phone_model("ehsani2026", 84.8)
    scrambled = tuple(dataclasses.replace(r, decode_tokens_per_s=1.0, run_s=1e3, joules_per_run=1e4)
                      if r.source == "tummalapalli2026" else r for r in anchors.PUBLISHED)
    assert anchors.fit_phone_model("ehsani2026", 84.8, scrambled) == base


def test_summary_shows_an_unreconciled_runtime_apart_with_its_reason() -> None:
    cmp = anchors.compare_published()
    row = next(r for r in cmp["rows"] if r["source"] == "tummalapalli2026")
    assert row["held_out"] and row["estimated"] and row["comparable"] is False
    assert "MLC-LLM" in row["why_not_comparable"]
    assert row["decode_tokens_per_s"]["published"] == 9.93 and row["joules_per_run"]["published"] is None
    s = cmp["summary"]
    for key in ("decode_tokens_per_s", "run_s"):
        (entry,) = s[key]["not_comparable"]
        assert entry["source"] == "tummalapalli2026" and entry["ratio"] == row[key]["ratio"] and entry["why"]
        comparable = [r[key]["ratio"] for r in cmp["rows"] if r["held_out"] and r["comparable"] and r[key]["ratio"]]
        assert s[key]["held_out_rows"] == len(comparable) and s[key]["max_ratio"] == max(comparable)
    assert any(n.startswith("tummalapalli2026 is not in the held-out summary") for n in cmp["notes"])
    only = anchors.compare_published(only_profile="snapdragon-8-gen-3")
    assert {r["source"] for r in only["rows"]} == {"tummalapalli2026", "huang2025-8gen3"}
    # only the llama.cpp rows count on this profile; the MLC row stays apart
    assert only["summary"]["decode_tokens_per_s"]["held_out_rows"] == 4
    assert [e["source"] for e in only["summary"]["decode_tokens_per_s"]["not_comparable"]] == ["tummalapalli2026"]


def test_the_s25_f16_rows_are_held_out_cited_and_compared_on_decode() -> None:
    """A sixth source: F16 runs on a Galaxy S25 (the same bytes whoever made the file); its
    Q4_0 runs are left out with the reason, in the output."""
    src = anchors.SOURCES["llmrs2-s25"]
    assert "llm_rs2" in src["url"] and "31a97d30" in src["citation"] and src["profile"] == "snapdragon-8-elite"
    rows = [r for r in anchors.PUBLISHED if r.source == "llmrs2-s25"]
    assert {(r.model, r.quant, r.threads) for r in rows} == {("Qwen2.5-1.5B", "F16", 6), ("Llama-3.2-1B", "F16", 8)}
    assert all(r.held_out for r in rows)
    cmp = anchors.compare_published(only_profile="snapdragon-8-elite")
    mine = {r["model"]: r for r in cmp["rows"] if r["source"] == "llmrs2-s25"}
    assert mine["Qwen2.5-1.5B"]["decode_tokens_per_s"]["published"] == 19.76
    assert mine["Qwen2.5-1.5B"]["prefill_tokens_per_s"]["published"] == 108.49
    assert mine["Llama-3.2-1B"]["prefill_tokens_per_s"]["published"] is None  # a 12-token prompt: not compared
    for r in mine.values():  # the estimator's F16 shape is the published file
        assert r["comparable"] and r["decode_tokens_per_s"]["ratio"] is not None
    assert any(n.startswith("llmrs2-s25 leaves out the same notes' Q4_0 runs") for n in cmp["notes"])


HUANG = ("huang2025-8elite", "huang2025-8gen3")


def test_huang_and_xiao_rows_load_cited_and_held_out() -> None:
    for sid in HUANG + ("xiao2024",):
        src = anchors.SOURCES[sid]
        for key in ("citation", "url", "device", "profile", "runtime", "energy_includes", "time_is", "memory_is"):
            assert src[key], (sid, key)
        load_profile(src["profile"])  # the source's SoC has a profile
        rows = [r for r in anchors.PUBLISHED if r.source == sid]
        assert rows and all(r.held_out for r in rows)
    assert "2506.19884" in anchors.SOURCES["huang2025-8elite"]["url"] and "Table 9" in anchors.SOURCES["huang2025-8gen3"]["citation"]
    assert "2410.03613" in anchors.SOURCES["xiao2024"]["url"] and "Table II" in anchors.SOURCES["xiao2024"]["citation"]
    elite = {r.model: r for r in anchors.PUBLISHED if r.source == "huang2025-8elite"}
    assert set(elite) == {"Qwen2.5-1.5B", "Qwen2.5-3B", "Llama3.2-1B", "Llama3.2-3B"}
    qwen = elite["Qwen2.5-1.5B"]
    assert (qwen.decode_tokens_per_s, qwen.decode_mj_per_token, qwen.joules_per_run) == (33.5, 318.7, None)
    gen3 = next(r for r in anchors.PUBLISHED if r.source == "huang2025-8gen3" and r.model == "Llama3.2-3B")
    assert (gen3.decode_tokens_per_s, gen3.decode_mj_per_token) == (7.3, 1226.8)
    (xiao,) = [r for r in anchors.PUBLISHED if r.source == "xiao2024"]
    assert (xiao.prompt_tokens, xiao.gen_tokens, xiao.mah_per_run, xiao.decode_tokens_per_s) == (64, 128, 4.54, 8.22)
    assert xiao.shape is None


def test_huang_and_xiao_rows_are_never_read_by_a_fit() -> None:
    for sid in HUANG + ("xiao2024",):
        with pytest.raises(ValueError, match="0 in-sample rows"):
            anchors.fit_phone_model(sid, 84.8)
    base = anchors.fit_phone_model("ehsani2026", 84.8)
    scrambled = tuple(dataclasses.replace(r, decode_tokens_per_s=1.0, decode_mj_per_token=1e5, mah_per_run=1e3,
                                          joules_per_run=1e4, prefill_s=99.0, decode_s=99.0, weights_mib=1.0)
                      if r.source in HUANG + ("xiao2024",) else r for r in anchors.PUBLISHED)
    assert anchors.fit_phone_model("ehsani2026", 84.8, scrambled) == base


def test_summary_counts_the_per_token_energy_rows() -> None:
    cmp = anchors.compare_published()
    s = cmp["summary"]
    rows = [r for r in cmp["rows"] if r["source"] in HUANG]
    assert len(rows) == 8 and all(r["held_out"] and r["comparable"] and r["estimated"] for r in rows)
    for r in rows:
        c = r["decode_mj_per_token"]
        assert c["ratio"] == pytest.approx(c["estimated"] / c["published"])
        assert r["joules_per_run"]["published"] is None and r["joules_per_run"]["ratio"] is None
    # the published figure keeps the whole draw: the estimate is (decode_w + idle_w) / estimated tok/s
    row = next(r for r in rows if r["source"] == "huang2025-8elite" and r["model"] == "Qwen2.5-1.5B")
    elite = load_profile("snapdragon-8-elite")
    assert row["decode_mj_per_token"]["estimated"] == pytest.approx(
        (elite.power.decode_w + elite.power.idle_w) / row["decode_tokens_per_s"]["estimated"] * 1e3)
    e = s["decode_mj_per_token"]
    assert e["held_out_rows"] == 8 and e["min_ratio"] <= e["median_ratio"] <= e["max_ratio"]
    # decode speed: every comparable held-out row, the eight new ones among them (Geerling's
    # TinyLlama row is in-sample: the little-core constants are fitted on it)
    decode = [r["decode_tokens_per_s"]["ratio"] for r in cmp["rows"]
              if r["held_out"] and r["comparable"] and r["decode_tokens_per_s"]["ratio"] is not None]
    assert s["decode_tokens_per_s"]["held_out_rows"] == len(decode) and len(decode) >= 12
    # the energy-per-run figure (and the mAh range built on it) still reads Ehsani's held-out rows only
    assert s["joules_per_run"]["held_out_rows"] == 4
    # the tablet row has no estimator shape: listed with its published figures and the reason, no ratio
    xiao = next(r for r in cmp["rows"] if r["source"] == "xiao2024")
    assert xiao["estimated"] is False and "no estimator shape" in xiao["why"]
    assert xiao["mah_per_run"] == {"estimated": None, "published": 4.54, "ratio": None}
    assert s["mah_per_run"]["held_out_rows"] == 0
    assert any(n.startswith("huang2025-8gen3: llama.cpp ran 8 threads") for n in cmp["notes"])


# --- threads on little cores -----------------------------------------------------------------


def test_every_row_carries_the_threads_its_source_ran() -> None:
    for r in anchors.PUBLISHED:
        prof = load_profile(anchors.SOURCES[r.source]["profile"])
        assert isinstance(r.threads, int) and 1 <= r.threads <= prof.cores, (r.source, r.model)
        if r.source in ("ehsani2026", "geerling-q6a") + HUANG:
            assert r.threads == 8 and "8 threads" in anchors.SOURCES[r.source]["runtime"]
    (mlc,) = [r for r in anchors.PUBLISHED if r.source == "tummalapalli2026"]
    # a GPU run has no CPU thread count: the profile's default, and the notes say so
    assert mlc.threads == load_profile("snapdragon-8-gen-3").runtime.threads
    assert any("profile's default" in n for n in mlc.notes)
    threads = {(r.source, r.model, r.quant): r.threads for r in anchors.PUBLISHED}
    for row in anchors.compare_published()["rows"]:
        assert row["threads"] == threads[row["source"], row["model"], row["quant"]]


def test_little_core_constants_come_from_exactly_one_in_sample_row() -> None:
    from edgeagent import estimate as est

    fit = anchors.fit_little_cores()
    assert (fit.source, fit.model, fit.threads, fit.ghz) == ("geerling-q6a", "TinyLlama-1.1B", 8, 1.9)
    (row,) = [r for r in anchors.PUBLISHED if r.source == fit.source and r.model == fit.model]
    assert not row.held_out and any(n.startswith("IN-SAMPLE") for n in row.notes)
    # every other row of that board and every row of the 8 Gen 3 phone is held out
    assert all(r.held_out for r in anchors.PUBLISHED if r.source in ("geerling-q6a", "huang2025-8gen3") and r is not row)
    # the estimator's constants are this fit, rounded
    assert est.LITTLE_CORE_BYTES_PER_CYCLE == pytest.approx(fit.bytes_per_cycle, abs=5e-4)
    assert est.LITTLE_CORE_INT8_OPS_PER_CYCLE == pytest.approx(fit.int8_ops_per_cycle, abs=5e-3)
    # held-out rows never move it; the in-sample row does, in proportion
    scrambled = tuple(dataclasses.replace(r, decode_tokens_per_s=1.0, prefill_tokens_per_s=1.0) if r.held_out else r
                      for r in anchors.PUBLISHED)
    assert anchors.fit_little_cores(scrambled) == fit
    faster = tuple(dataclasses.replace(r, prefill_tokens_per_s=2 * r.prefill_tokens_per_s) if r is row else r
                   for r in anchors.PUBLISHED)
    assert anchors.fit_little_cores(faster).int8_ops_per_cycle == pytest.approx(2 * fit.int8_ops_per_cycle)
    # zero or two such in-sample rows is an error, not a silent average
    none = tuple(dataclasses.replace(r, held_out=True) if r is row else r for r in anchors.PUBLISHED)
    with pytest.raises(ValueError, match="exactly one in-sample row .* found 0"):
        anchors.fit_little_cores(none)
    two = tuple(dataclasses.replace(r, held_out=False) if r.source == "huang2025-8gen3" and r.model == "Llama3.2-1B"
                else r for r in anchors.PUBLISHED)
    with pytest.raises(ValueError, match="found 2"):
        anchors.fit_little_cores(two)


def test_held_out_little_core_runs_come_within_25_percent() -> None:
    cmp = anchors.compare_published()
    rows = {(r["source"], r["model"]): r for r in cmp["rows"]}
    gen3 = [r for r in cmp["rows"] if r["source"] == "huang2025-8gen3"]
    assert len(gen3) == 4
    for r in gen3:
        assert r["held_out"] and r["threads"] == 8 and r["paced_by"]["decode"] == "little-core"
        assert r["paced_by"]["little_core"]["core"] == "Cortex-A520"
        assert 0.75 <= r["decode_tokens_per_s"]["ratio"] <= 1.25, (r["model"], r["decode_tokens_per_s"])
    q6a_3b = rows[("geerling-q6a", "Llama-3.2-3B")]
    assert q6a_3b["held_out"] and q6a_3b["paced_by"]["prefill"] == "little-core"
    assert 0.75 <= q6a_3b["prefill_tokens_per_s"]["ratio"] <= 1.25
    # the in-sample row is reproduced (up to the constants' rounding) and counts in no summary
    fitted = rows[("geerling-q6a", "TinyLlama-1.1B")]
    assert not fitted["held_out"]
    for key in ("decode_tokens_per_s", "prefill_tokens_per_s"):
        assert fitted[key]["ratio"] == pytest.approx(1.0, abs=0.005)
    assert cmp["little_cores"]["fit"]["model"] == "TinyLlama-1.1B"
    # energy per token at 8 threads: the profile's decode power for 8 threads, each busy core's
    # share by its published per-core power (+ idle, as the source keeps it)
    from edgeagent.estimate import phase_power_w

    gen3_profile = load_profile("snapdragon-8-gen-3")
    assert gen3_profile.per_core_power
    watts = phase_power_w(gen3_profile, 8)[1] + gen3_profile.power.idle_w
    for r in gen3:
        assert r["decode_mj_per_token"]["estimated"] == pytest.approx(watts / r["decode_tokens_per_s"]["estimated"] * 1e3)


def test_a_profile_without_the_cores_a_row_ran_on_is_refused_with_the_row_named() -> None:
    gen3 = load_profile("snapdragon-8-gen-3")
    six_cores = gen3.model_copy(update={"cpu_clusters": gen3.cpu_clusters[:3]})
    with pytest.raises(ValueError, match="huang2025-8gen3 .* on snapdragon-8-gen-3: threads must be between 1 and "
                                         "the profile's 6 cores, not 8"):
        anchors.compare_published({"snapdragon-8-gen-3": six_cores}, only_profile="snapdragon-8-gen-3")


def test_every_held_out_figure_outside_the_tolerance_carries_its_checks_and_no_other() -> None:
    cmp = anchors.compare_published()
    for r in cmp["rows"]:
        if not (r["held_out"] and r["comparable"] and r["estimated"]):
            assert "misses" not in r
            continue
        outside = {k for k in anchors.FIGURES + anchors.EXTRA_FIGURES
                   if r[k]["ratio"] is not None and abs(r[k]["ratio"] - 1) > anchors.TOLERANCE}
        assert {m["figure"] for m in r.get("misses", ())} == outside, (r["source"], r["model"])
        for m in r.get("misses", ()):
            assert m["ratio"] == r[m["figure"]]["ratio"] and m["why"]


def test_a_miss_names_the_other_source_on_the_same_profile_and_shape() -> None:
    rows = anchors.compare_published()["rows"]
    by = {(r["source"], r["model"]): r for r in rows if r["estimated"]}
    # two rows of one shape on one profile from two sources; scale one so it misses
    mine, other = by[("huang2025-8elite", "Qwen2.5-1.5B")], by[("ehsani2026", "Qwen2.5-1.5B")]
    mine = {**mine, "decode_tokens_per_s": {**mine["decode_tokens_per_s"], "ratio": 1.6}}
    anchors.explain_misses([mine, other], anchors.PUBLISHED, {})
    (miss,) = [m for m in mine["misses"] if m["figure"] == "decode_tokens_per_s"]
    (why,) = miss["why"]
    assert why.startswith("ehsani2026 Qwen2.5-1.5B Q4_K_M") and f"{1.6 / other['decode_tokens_per_s']['ratio']:.2f}x" in why


def test_a_miss_lists_the_same_sources_other_rows_on_that_profile() -> None:
    rows = anchors.compare_published()["rows"]
    elite = [r for r in rows if r["source"] == "huang2025-8elite"]
    mine = {**elite[0], "decode_tokens_per_s": {**elite[0]["decode_tokens_per_s"], "ratio": 1.6}}
    anchors.explain_misses([mine, *elite[1:]], anchors.PUBLISHED, {})
    (miss,) = [m for m in mine["misses"] if m["figure"] == "decode_tokens_per_s"]
    (line,) = [w for w in miss["why"] if w.startswith("the same source's other rows")]
    for o in elite[1:]:
        assert f"{o['model']} {o['decode_tokens_per_s']['ratio']:.2f}" in line
    inside = all(abs(o["decode_tokens_per_s"]["ratio"] - 1) <= anchors.TOLERANCE for o in elite[1:])
    assert line.endswith("this row departs from its own source's level") == inside


def test_a_spread_wider_than_the_band_is_named_with_what_the_extreme_rows_differ_in() -> None:
    rows = anchors.compare_published()["rows"]
    by = {(r["source"], r["model"], r["quant"]): r for r in rows if r["estimated"] and r["held_out"] and r["comparable"]}
    a = by[("qmesh-s25u", "Qwen3-4B-Instruct-2507", "Q4_0")]
    b = by[("huang2025-8elite", "Qwen2.5-3B", "Q4_1 (4-bit)")]
    band = (1 + anchors.TOLERANCE) / (1 - anchors.TOLERANCE)

    def at(r, ratio):
        return {**r, "decode_tokens_per_s": {**r["decode_tokens_per_s"], "ratio": ratio}}

    # just inside the band: no line; just outside: a line naming both rows and how they differ
    assert anchors.profile_spread([at(a, 0.8), at(b, 0.8 * band * 0.999)],
                                  "snapdragon-8-elite", "decode_tokens_per_s") is None
    line = anchors.profile_spread([at(a, 0.7), at(b, 0.7 * band * 1.01)],
                                  "snapdragon-8-elite", "decode_tokens_per_s")
    assert line is not None and f"{band * 1.01:.2f}x" in line and f"{band:.2f}x" in line
    assert "0.70 (qmesh-s25u Qwen3-4B-Instruct-2507)" in line
    assert "source (qmesh-s25u vs huang2025-8elite)" in line and "threads (6 vs 8)" in line
    assert "weight type (Q4_0 vs Q4_1 (4-bit))" in line
    assert f"lengths ({a['prompt_tokens']}+{a['gen_tokens']} vs {b['prompt_tokens']}+{b['gen_tokens']} tokens)" in line
    # in-sample rows and other profiles' rows do not count
    assert anchors.profile_spread([at(a, 0.7), {**at(b, 2.0), "held_out": False}],
                                  "snapdragon-8-elite", "decode_tokens_per_s") is None
    assert anchors.profile_spread([at(a, 0.7), {**at(b, 2.0), "profile": "snapdragon-8-gen-3"}],
                                  "snapdragon-8-elite", "decode_tokens_per_s") is None
    # and explain_misses carries it on both misses
    pair = [at(a, 0.6), at(b, 1.3)]
    anchors.explain_misses(pair, anchors.PUBLISHED, {})
    for r in pair:
        assert any(w.startswith("the held-out rows on snapdragon-8-elite span 0.60") for w in r["misses"][0]["why"])


def test_an_energy_per_token_miss_splits_into_power_and_speed() -> None:
    rows = anchors.compare_published()["rows"]
    gen3 = [r for r in rows if r["source"] == "huang2025-8gen3" and r["estimated"]]
    assert gen3
    for r in gen3:
        mj, tps = r["decode_mj_per_token"], r["decode_tokens_per_s"]
        line = anchors.per_token_energy_parts(r)
        watts = (mj["estimated"] * tps["estimated"] / 1e3, mj["published"] * tps["published"] / 1e3)
        # the two parts multiply to the ratio: power ratio / speed ratio
        assert (watts[0] / watts[1]) / tps["ratio"] == pytest.approx(mj["ratio"])
        assert f"({watts[0]:.1f} against {watts[1]:.1f} W)" in line and line.endswith(f"= {mj['ratio']:.2f}")
        if abs(mj["ratio"] - 1) > anchors.TOLERANCE:
            (miss,) = [m for m in r["misses"] if m["figure"] == "decode_mj_per_token"]
            assert line in miss["why"]
    no_speed = {**gen3[0], "decode_tokens_per_s": {**gen3[0]["decode_tokens_per_s"], "published": None}}
    assert anchors.per_token_energy_parts(no_speed) is None

def test_huang_rows_are_estimated_as_the_q4_1_their_testbed_lists() -> None:
    from edgeagent.shapes import shape_from_config

    rows = [r for r in anchors.PUBLISHED if r.source in HUANG]
    assert rows and all(r.estimator_quant == "q4_1" for r in rows)
    # Q4_1 is 5 bits per weight (32 weights in 20 bytes), Q4_0 4.5: the linear weights read 10/9 the bytes
    q41, q40 = shape_from_config("qwen2.5-3b", "q4_1"), shape_from_config("qwen2.5-3b", "q4_0")
    ffn = [(a, b) for a, b in zip(q41.tensors, q40.tensors) if a.name.endswith("ffn_up.weight")]
    assert ffn and all(a.ggml_type == "Q4_1" and a.n_bytes * 9 == b.n_bytes * 10 for a, b in ffn)
    # the tied embedding goes to Q6_K in both mixes, as llama-quantize does
    assert q41.tensors[0].ggml_type == q40.tensors[0].ggml_type == "Q6_K"


def test_an_energy_miss_reads_the_fit_on_the_same_models_in_sample_row() -> None:
    prof = load_profile("snapdragon-8-elite")
    fit = anchors.fit_phone_model("ehsani2026", prof.bandwidth_theoretical_gbs)
    (twin,) = [a for a in anchors.PUBLISHED if a.source == "ehsani2026" and a.model == "Qwen2.5-3B" and not a.held_out]
    held = next(r for r in anchors.compare_published()["rows"]
                if r["source"] == "ehsani2026" and r["model"] == "Qwen2.5-3B" and r["held_out"])
    held = {**held, "joules_per_run": {**held["joules_per_run"], "ratio": 0.5}}
    anchors.explain_misses([held], anchors.PUBLISHED, {"ehsani2026": fit})
    (miss,) = held["misses"]
    assert f"{anchors.fit_residual(twin, fit):.2f}" in miss["why"][0] and twin.quant in miss["why"][0]
    assert f"{twin.average_power_w:g} W" in miss["why"][0]


@pytest.mark.parametrize(("profile", "device"), [("snapdragon-8-elite", "poco-myron"),
                                                 ("snapdragon-8-gen-2", "samsung-s23"),
                                                 ("dimensity-8400", "poco-x7-klee")])
def test_wide_weight_rate_is_the_published_median(profile: str, device: str) -> None:
    """A profile's runtime.wide_weight_rate is the median Q8_0 / Q4_K_M bytes-per-second ratio of
    the PocketPal rows it cites (anchors.TYPE_RATE_ROWS), to two decimals."""
    assert load_profile(profile).runtime.wide_weight_rate == pytest.approx(anchors.wide_weight_rate(device), abs=0.005)
    cited = " ".join(s.citation or "" for s in load_profile(profile).sources if "wide_weight_rate" in s.what)
    assert f"{device}.json" in cited


def test_profiles_without_a_type_measurement_say_where_their_rate_comes_from() -> None:
    from edgeagent.profiles import list_profiles

    for name in list_profiles():
        p = load_profile(name)
        if p.runtime.wide_weight_rate != 1.0:
            assert any("wide_weight_rate" in s.what for s in p.sources), name


def test_seventh_source_rows_are_held_out_and_fit_nothing() -> None:
    """The Galaxy S23 rows of PocketPal's matrix sit on the snapdragon-8-gen-2 profile, held out;
    no fit reads them, and the Q8_0 row whose ratio set the profile's rate is not among them."""
    src = anchors.SOURCES["pocketpal-s23"]
    assert src["profile"] == "snapdragon-8-gen-2" and "samsung-s23.json" in src["citation"] and src["caveat"]
    rows = [r for r in anchors.PUBLISHED if r.source == "pocketpal-s23"]
    assert {(r.quant, r.decode_tokens_per_s, r.prefill_tokens_per_s) for r in rows if r.model == "Qwen2.5-1.5B"} == {
        ("Q4_0", 19.66, 119.81), ("Q4_K_M", 18.48, 85.9)}
    shaped = [r for r in rows if r.shape]
    assert len(shaped) == 10 and {r.quant for r in shaped} == {"Q4_0", "Q4_K_M"}
    assert all(r.held_out and r.threads == 6 for r in shaped)
    # the one in-sample row is the A510 pair's, with no shape: no ratio of it enters a summary
    (pair,) = [r for r in rows if not r.held_out]
    assert pair is anchors.a510_pace_rows()[1] and pair.shape is None
    with pytest.raises(ValueError, match="1 in-sample rows"):
        anchors.fit_phone_model("pocketpal-s23", 67.2)


@pytest.mark.parametrize(("source", "device", "models"), [("pocketpal-s23", "samsung-s23", 4),
                                                          ("pocketpal-klee", "poco-x7-klee", 3)])
def test_pocketpal_rows_agree_with_the_type_rate_table(source: str, device: str, models: int) -> None:
    """A model in both a phone's rows and its TYPE_RATE_ROWS has the same Q4_K_M weights and speed
    in each: both are read from the one report."""
    _, rate_rows = anchors.TYPE_RATE_ROWS[device]
    by_id = {r[0]: r for r in rate_rows}
    checked = 0
    for row in anchors.PUBLISHED:
        pid = row.notes[0].split(", ")[1].split()[0] if row.source == source else None
        if pid in by_id and row.quant == "Q4_K_M":
            assert (row.weights_mib, row.decode_tokens_per_s) == (by_id[pid][1], by_id[pid][2]), pid
            checked += 1
    # qwen2.5-1.5b, smollm2-1.7b, qwen3-1.7b (and on the S23 the A510 pair's qwen3.5-2b); the Phi
    # models have no Q8_0 cell
    assert checked == models


def test_decode_misses_names_a_profiles_held_out_rows_outside_the_tolerance() -> None:
    def row(ratio, held_out=True, comparable=True, profile="p", source="s"):
        return {"profile": profile, "held_out": held_out, "comparable": comparable, "source": source,
                "decode_tokens_per_s": {"ratio": ratio}}

    cmp = {"rows": [row(1.24), row(0.76), row(None), row(2.0, held_out=False), row(3.0, comparable=False),
                    row(0.5, profile="q")]}
    assert anchors.decode_misses("p", cmp) is None
    cmp["rows"] += [row(1.26, source="b"), row(0.40, source="a")]
    line = anchors.decode_misses("p", cmp)
    assert "0.40-1.26" in line and "(2 rows, a, b)" in line and "energy-per-run error only" in line
    assert "0.50 (1 row, s)" in anchors.decode_misses("q", cmp)
    assert anchors.decode_misses("tensor-g3") is None
    assert anchors.decode_misses("snapdragon-8-gen-2") is None  # its S23 rows read 0.82-1.05
    assert "huang2025-8elite" in anchors.decode_misses("snapdragon-8-elite")


def test_qmesh_rows_are_held_out_and_their_shape_is_the_published_file() -> None:
    """The 2026 release-build rows on the 8 Elite are held out (nothing is fitted on them), and the
    estimator's Qwen3-4B Q4_0 shape holds the bytes llama-bench printed for the file (2.21 GiB)."""
    from edgeagent.shapes import shape_from_config

    rows = [r for r in anchors.PUBLISHED if r.source == "qmesh-s25u"]
    assert len(rows) == 2 and all(r.held_out and r.threads == 6 and r.shape == "qwen3-4b" for r in rows)
    shape = shape_from_config("qwen3-4b", "q4_0")
    assert shape.weights_bytes / 2**30 == pytest.approx(2.21, rel=0.01)
    scrambled = tuple(dataclasses.replace(r, decode_tokens_per_s=1.0, prefill_tokens_per_s=1.0)
                      if r.source == "qmesh-s25u" else r for r in anchors.PUBLISHED)
    rates = ELITE.runtime.prefill_type_rates
    assert (anchors.fit_phone_model("ehsani2026", 84.8, scrambled, rates)
            == anchors.fit_phone_model("ehsani2026", 84.8, anchors.PUBLISHED, rates))


def test_the_a510_prefill_pace_is_its_in_sample_fit_and_the_s23_rows_read_within_the_tolerance() -> None:
    """The A510's prefill pace comes from the in-sample S23 Qwen3.5-2B cell (its work from the
    file's block bytes); the ten held-out S23 rows, fitted by nothing, then read within ±25 %
    (0.14-0.17 at the A55's pace). Every other little core keeps the A55's fitted pace."""
    gen2 = load_profile("snapdragon-8-gen-2")
    core, pace = anchors.fit_core_prefill_pace(gen2, *anchors.a510_pace_rows())
    assert core == "Cortex-A510" and est.CORE_PREFILL_OPS_PER_CYCLE[core] == pytest.approx(pace, abs=0.01)
    assert est.little_prefill_pace("Cortex-A55 (Kryo 670 Silver)") == est.LITTLE_CORE_INT8_OPS_PER_CYCLE
    assert est.little_prefill_pace("Cortex-A510") == est.CORE_PREFILL_OPS_PER_CYCLE["Cortex-A510"]
    # the work per block byte of a Q4_K_M file hardly depends on its Q4_K/Q6_K split
    assert 3.5 < anchors.q4_k_m_work_per_byte(gen2) < 3.7
    rows = anchors.compare_published(only_profile="snapdragon-8-gen-2")["rows"]
    held = [r["prefill_tokens_per_s"]["ratio"] for r in rows if r["held_out"] and r["source"] == "pocketpal-s23"]
    assert len(held) == 10 and all(abs(x - 1) <= anchors.TOLERANCE for x in held), held
    with pytest.raises(ValueError, match="must reach a little core"):
        anchors.fit_core_prefill_pace(gen2, anchors.a510_pace_rows()[0], anchors.a510_pace_rows()[0])
