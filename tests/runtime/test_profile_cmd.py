"""`edgeagent profile`: the JSON contract (every figure with its source), measured-here beside
estimated-on-target, the emulated device, and measured energy through the whole path: a
scripted battery behind the loopback adb server, read over the real adb protocol while the
model runs, integrated against an idle baseline -- within 1 % of the analytic answer.

A tiny random llama (real GGUFs, real llama.cpp, one thread) keeps every run to seconds."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

pytest.importorskip("llama_cpp")

from android_bridge.emulator.adb_server import DEFAULT_SERIAL, AdbServer  # noqa: E402
from android_bridge.emulator.phone import EmulatedPhone  # noqa: E402
from edgeagent.cli import app  # noqa: E402
from edgeagent.profiles import load_profile  # noqa: E402

S8G2 = load_profile("snapdragon-8-gen-2")
FLAT = ("rss_peak_mb", "ttft_ms", "tpot_ms", "tokens_per_s", "joules_per_inference", "mah_per_100_inferences")


def _profile(args: list[str], env: dict | None = None) -> dict:
    r = CliRunner().invoke(app, ["profile", "--profile", "snapdragon-8-gen-2", "--threads", "1", "--json", *args],
                           env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_profile_json_contract_on_host(tiny_bundle) -> None:
    out = _profile(["--bundle", str(tiny_bundle), "--runs", "12", "--device", "host"])
    for key in FLAT:
        assert isinstance(out[key], float) and out[key] > 0, key
        assert out["figures"][key]["value"] == out[key]
    assert out["sources"] == {"rss_peak_mb": "measured", "ttft_ms": "measured", "tpot_ms": "measured",
                              "tokens_per_s": "measured", "joules_per_inference": "estimated",
                              "mah_per_100_inferences": "estimated"}
    assert "snapdragon-8-gen-2" in out["figures"]["joules_per_inference"]["where"]
    assert out["variant"]["id"] == "tiny-q8_0"  # equal quality: the cheaper variant
    here, target = out["measured_here"], out["estimated_on_target"]
    assert here["source"] == "measured" and target["source"] == "estimated"
    assert here["ttft_ms_p90"] >= here["ttft_ms"] and here["tpot_ms_p90"] >= here["tpot_ms"]
    assert here["tokens_per_s_p90"] <= here["tokens_per_s"]  # the slow tail of a speed
    assert out["mah_per_100_inferences"] == pytest.approx(target["mah_per_100_inferences"])
    assert out["joules_per_inference"] == pytest.approx(target["joules_per_inference"])
    assert target["mah_per_100_inferences"] == pytest.approx(100 * target["joules_per_inference"] / (3.6 * 3.88))
    steps = out["per_step"]
    assert len(steps) == out["workload"]["runs"] == 12
    assert all(s["total_ms"] >= s["ttft_ms"] > 0 and s["generated_tokens"] >= 1 for s in steps)
    assert here["rss_peak_mb"] >= here["rss_before_load_mb"]


def test_profile_on_the_emulated_phone_runs_the_agent(tiny_bundle) -> None:
    out = _profile(["--bundle", str(tiny_bundle), "--runs", "6", "--device", "emulator", "--variant", "tiny-f32"])
    assert out["variant"]["id"] == "tiny-f32"
    assert out["workload"]["runs"] == 6 and out["workload"]["episodes"]["tasks"] >= 1
    assert "agent's own emulated episodes" in out["workload"]["what"]


def test_profile_unknown_variant_and_bad_device_are_refused(tiny_bundle) -> None:
    r = CliRunner().invoke(app, ["profile", "--bundle", str(tiny_bundle), "--profile", "snapdragon-8-gen-2",
                                 "--variant", "nope", "--runs", "1"])
    assert r.exit_code != 0 and "no variant 'nope'" in r.stderr
    r = CliRunner().invoke(app, ["profile", "--bundle", str(tiny_bundle), "--profile", "snapdragon-8-gen-2",
                                 "--device", "phone", "--runs", "1"])
    assert r.exit_code != 0 and "expected host, emulator, adb or adb:SERIAL" in r.stderr


def test_profile_a_shipped_agent_without_a_bundle(tmp_path) -> None:
    """``--agent`` profiles a shipped agent's GGUF (the built-in model here: always installed)
    with no selection, the held-out app left out as in its training, and an HTML report
    without the variants' table."""
    out = _profile(["--agent", "builtin", "--quant", "q8_0", "--runs", "4", "--html", str(tmp_path / "r.html")])
    assert out["variant"]["id"] == "builtin-q8_0" and out["variant"]["exit_layer"] == out["variant"]["n_layers"]
    assert (out["agent"], out["bundle"], out["selection"]) == ("builtin", None, None)
    assert out["figures"]["mah_per_100_inferences"]["low"] < out["mah_per_100_inferences"] \
        < out["figures"]["mah_per_100_inferences"]["high"]
    # the target's held-out decode rows (the Galaxy S23's) are within the tolerance: no caveat
    assert "caveat" not in out["figures"]["mah_per_100_inferences"]
    html = (tmp_path / "r.html").read_text()
    assert "builtin-q8_0" in html and "Variants on" not in html


def test_profile_defaults_to_the_agents_quantizations_selected_for_the_target() -> None:
    """With no --bundle or --agent, ``profile`` selects among the default agent's measured
    quantizations (its bundle, ``ShippedAgent.bundle``) for the target, where the agent extra is
    installed; else among the built-in model's bundle, as before."""
    from edgeagent.agents import DEFAULT_AGENT, AgentUnavailable, shipped_agent

    try:
        shipped_agent(DEFAULT_AGENT).gguf("q8_0", quiet=True)
        expected = DEFAULT_AGENT
    except AgentUnavailable:
        expected = "builtin"
    out = _profile(["--runs", "2"])
    assert out["agent"] is None and out["selection"]["selected"] == out["variant"]["id"]
    assert out["variant"]["id"].startswith(f"{expected}-")
    ids = {v["id"] for v in out["selection"]["variants"]}
    if expected == DEFAULT_AGENT:  # the quantizations quality.json measured, at their measured quality
        assert ids == {f"{DEFAULT_AGENT}-q8_0", f"{DEFAULT_AGENT}-q4_k_m"}
        assert out["variant"]["id"] == f"{DEFAULT_AGENT}-q8_0"  # the best quality, and it fits an 8 Gen 2


def test_profile_agent_refuses_a_bundle_and_an_unknown_agent(tiny_bundle) -> None:
    for args, says in ((["--agent", "builtin", "--bundle", str(tiny_bundle)], "--agent"),
                       (["--agent", "nosuch"], "nosuch")):
        r = CliRunner().invoke(app, ["profile", "--profile", "snapdragon-8-gen-2", "--runs", "1", *args])
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], r.stderr


A_MA, B_MA_PER_S = 300.0, 900.0  # the scripted current: I(t) = A + B t, t since the test's t0


def test_scripted_adb_battery_through_the_whole_profile_path_within_one_percent(tiny_bundle) -> None:
    """The battery's current ramps linearly in time, so the trapezoid rule is exact and the
    answer is known: the run's charge minus the idle baseline's mean current over the run.
    Voltage is the profile's nominal 3.88 V, so mAh from joules equals the coulomb count."""
    t0 = time.monotonic()

    def script(_server_t: float) -> tuple[float, float]:
        return A_MA + B_MA_PER_S * (time.monotonic() - t0), S8G2.battery.nominal_v

    with AdbServer(EmulatedPhone(seed=0), port=0, battery_script=script) as server:
        out = _profile(["--bundle", str(tiny_bundle), "--runs", "16", "--device", f"adb:{DEFAULT_SERIAL}",
                        "--hz", "20", "--baseline-s", "0.6"], env={"ANDROID_ADB_SERVER_PORT": str(server.port)})

    assert out["sources"]["joules_per_inference"] == "measured"
    assert out["sources"]["mah_per_100_inferences"] == "measured"
    here = out["measured_here"]
    w, energy = here["energy_window"], here["energy"]
    assert energy["sample_hz"] >= 4.0 and energy["samples"] >= 3 and w["baseline_samples"] >= 3

    def integral(a: float, b: float) -> float:  # of I dt over [a, b], mA*s, times on the monotonic clock
        ta, tb = a - t0, b - t0
        return A_MA * (tb - ta) + B_MA_PER_S * (tb**2 - ta**2) / 2

    bs, be, rs, re = w["baseline_t_start"], w["baseline_t_end"], w["run_t_start"], w["run_t_end"]
    baseline_ma = integral(bs, be) / (be - bs)
    expected_mah = (integral(rs, re) - baseline_ma * (re - rs)) / 3600.0
    assert expected_mah > 0.01  # a real signal, not a rounding error (how much depends on how fast this host runs the 16 inferences)
    assert energy["mah"] == pytest.approx(expected_mah, rel=0.01)
    assert energy["mah_coulomb"] == pytest.approx(expected_mah, rel=0.01)
    runs = out["workload"]["runs"]
    assert out["mah_per_100_inferences"] == pytest.approx(100 * expected_mah / runs, rel=0.01)
    assert out["joules_per_inference"] == pytest.approx(expected_mah * 3.6 * 3.88 / runs, rel=0.01)
    assert energy["reliable"] and not any("charging" in x for x in out["warnings"])
    # the model ran here, not on the phone: said, not hidden
    assert any("not on" in x and DEFAULT_SERIAL in x for x in out["warnings"])


def test_a_charging_adb_device_is_flagged(tiny_bundle) -> None:
    with AdbServer(EmulatedPhone(seed=0), port=0, battery_script=lambda t: (-500.0, 4.2)) as server:
        out = _profile(["--bundle", str(tiny_bundle), "--runs", "3", "--device", "adb", "--hz", "20",
                        "--baseline-s", "0.3"], env={"ANDROID_ADB_SERVER_PORT": str(server.port)})
    assert out["sources"]["mah_per_100_inferences"] == "measured"
    assert not out["measured_here"]["energy"]["reliable"]
    assert any("charging" in x and "unreliable" in x for x in out["warnings"])


def test_validate_one_gguf_against_this_machine(tiny_bundle) -> None:
    """`estimate --validate --model F.gguf`: one file (the agent's own GGUFs are not a bundle),
    estimated and measured here; a missing file or both --model and --bundle is one line, exit 2."""
    gguf = next(tiny_bundle.glob("*q8_0*.gguf"))
    r = CliRunner().invoke(app, ["estimate", "--validate", "--profile", "host", "--model", str(gguf), "--context", "256",
                                 "--prompt-tokens", "32", "--gen-tokens", "8", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["model"] == str(gguf) and [row["id"] for row in out["rows"]] == [gguf.stem]
    row = out["rows"][0]
    assert row["memory_mb"]["measured"] > 0 and row["tokens_per_s"]["measured"] > 0
    for args in (["--model", str(gguf.with_name("missing.gguf"))], ["--model", str(gguf), "--bundle", str(tiny_bundle)]):
        r = CliRunner().invoke(app, ["estimate", "--validate", "--profile", "host", *args])
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
