"""``edgeagent profile``: what N agent inferences of one variant cost, measured where the
hardware allows and estimated on the target where it does not, side by side.

One agent inference is one model call as the agent makes it: ``ModelPolicy.decide`` on a
screen (the prompt, the per-screen action grammar, greedy decoding), through ``Engine``, in
this process. The screens come from

- ``emulator``: the agent itself driving the emulated phone through generated tasks (its
  own actions decide the next screen), until N calls are made;
- ``host`` and ``adb``: recorded screens, the expert's trajectories on the same generated
  tasks, replayed in order. On a real phone nothing is tapped: the battery is sampled while
  the model answers recorded screens.

Measured here: process RSS peak (model load included), TTFT, TPOT and tokens/s per call
(median and p90). Energy is *measured* only on an adb device that exposes its battery
current (``energy.BatterySampler`` at >= 4 Hz, an idle baseline measured the same way just
before the run, trapezoid integration, vendor units/signs normalised, a warning when the
device charges); everywhere else it is *estimated* for the target device from the profile
(``estimate.py``: its latency and its power per phase). Latency measured on this machine
is not the target's, and neither is this machine's power: the estimated-on-target figures
sit beside the measured-here ones, never mixed into them.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgeagent.metrics import PeakRSS, cpu_model, percentile, rss_mb

DEVICES = ("host", "emulator", "adb")
TASK_SEED = 1000  # generated tasks training never saw (the built-in recipe trains on seed 1)


def parse_device(spec: str) -> tuple[str, str | None]:
    """``host`` | ``emulator`` | ``adb`` | ``adb:SERIAL`` -> (kind, serial)."""
    kind, _, serial = spec.partition(":")
    if kind not in DEVICES or (serial and kind != "adb"):
        raise ValueError(f"--device {spec!r}: expected host, emulator, adb or adb:SERIAL")
    return kind, serial or None


# --- the workload -------------------------------------------------------------------------


def _policy(engine, prompt_format, apps: Sequence[str] | None):
    """The agent's policy with prompts in the bundle's format (else what the GGUF implies)."""
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format

    return ModelPolicy(engine, apps=apps, copy_text=True,
                       prompt_format=engine_prompt_format(engine, bundle_format=prompt_format))


def recorded_screens(n: int, seed: int = TASK_SEED, exclude_apps: Sequence[str] = ()) -> list[tuple]:
    """``n`` (instruction, screen, previous action) triples from the expert's trajectories on
    generated tasks, in order: the screens an agent sees, without an agent to produce them."""
    from android_bridge.actions import Action
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode

    screens: list[tuple] = []
    phone = EmulatedPhone()
    batch = 0
    while len(screens) < n:
        for task in generate_tasks(10, seed + batch, exclude_apps=exclude_apps or None):
            def keep(step, screen, instruction=task.instruction):
                previous = Action.from_dict(step.previous) if step.previous else None
                screens.append((instruction, screen, previous))

            run_episode(phone, task, expert_action, on_step=keep)
            if len(screens) >= n:
                break
        batch += 1
    return screens[:n]


def replay_calls(engine, prompt_format, screens: Sequence[tuple], apps: Sequence[str],
                 progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """One model call per recorded screen; each call's metrics."""
    policy = _policy(engine, prompt_format, apps)
    calls = []
    for i, (instruction, screen, previous) in enumerate(screens):
        calls.append(policy.decide(instruction, screen, previous).metrics)
        if progress:
            progress(i + 1, len(screens))
    return calls


def agent_calls(engine, prompt_format, n: int, seed: int = TASK_SEED, max_steps: int = 15,
                exclude_apps: Sequence[str] = (),
                progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict]:
    """The agent on the emulated phone, task after generated task, until ``n`` model calls;
    the first ``n`` calls' metrics and the tasks' outcome."""
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode

    phone = EmulatedPhone()
    policy = _policy(engine, prompt_format, phone.app_names())
    calls: list[dict] = []
    outcomes = []
    batch = 0
    while len(calls) < n:
        for task in generate_tasks(10, seed + batch, exclude_apps=exclude_apps or None):
            ep = run_episode(phone, task, policy, max_steps)
            calls += [s.metrics for s in ep.run.steps if s.metrics and "ttft_ms" in s.metrics]
            outcomes.append(ep.success)
            if progress:
                progress(min(len(calls), n), n)
            if len(calls) >= n:
                break
        batch += 1
    return calls[:n], {"tasks": len(outcomes), "task_success": sum(outcomes) / len(outcomes)}


# --- summaries ----------------------------------------------------------------------------


def per_step(calls: Sequence[dict]) -> list[dict]:
    """What each call cost, wall clock as the agent sees it (TPOT: time after the first token
    per further token, grammar sampling included)."""
    rows = []
    for i, m in enumerate(calls):
        n = int(m.get("generated_tokens", 0))
        decode_ms = max(0.0, float(m["total_ms"]) - float(m["ttft_ms"]))
        rows.append({
            "call": i,
            "prompt_tokens": int(m.get("prompt_tokens", 0)),
            "evaluated_prompt_tokens": int(m.get("evaluated_prompt_tokens", m.get("prompt_tokens", 0))),
            "generated_tokens": n,
            "ttft_ms": float(m["ttft_ms"]),
            "decode_ms": decode_ms,
            "total_ms": float(m["total_ms"]),
            "tpot_ms": decode_ms / (n - 1) if n > 1 else None,
            "tpot_compute_ms": float(m.get("tpot_ms", 0.0)) or None,  # llama.cpp's counter, no sampling
            "peak_rss_mb": float(m.get("peak_rss_mb", 0.0)),
        })
    return rows


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    return {"median": statistics.median(values) if values else None, "p90": percentile(values, 0.9),
            "mean": statistics.fmean(values) if values else None}


def summarize_steps(steps: Sequence[dict]) -> dict[str, Any]:
    tpot = _stats([s["tpot_ms"] for s in steps])
    tps = [1000.0 / s["tpot_ms"] for s in steps if s["tpot_ms"]]
    return {
        "ttft_ms": _stats([s["ttft_ms"] for s in steps]),
        "tpot_ms": tpot,
        "tokens_per_s": {"median": statistics.median(tps) if tps else None,
                         # the p90 of a speed is its slow tail: the 10th percentile of tokens/s
                         "p90": percentile(tps, 0.1), "mean": statistics.fmean(tps) if tps else None},
        "step_ms": _stats([s["total_ms"] for s in steps]),
        "prompt_tokens": _stats([s["prompt_tokens"] for s in steps]),
        "evaluated_prompt_tokens": _stats([s["evaluated_prompt_tokens"] for s in steps]),
        "generated_tokens": _stats([s["generated_tokens"] for s in steps]),
    }


# --- energy -------------------------------------------------------------------------------


def _measured_energy(read, run: Callable[[], Any], nominal_v: float, baseline_s: float, hz: float):
    """(run's result, EnergyResult, trace times): the idle baseline, then the run under the
    sampler, both kept so the report can say exactly which window was integrated."""
    from edgeagent.energy import BatterySampler, energy_from_traces, measure_idle

    baseline = measure_idle(read, baseline_s, hz, nominal_v) if baseline_s > 0 else None
    with BatterySampler(read, hz=hz, nominal_v=nominal_v) as sampler:
        out = run()
    trace = sampler.trace
    energy = energy_from_traces(trace, baseline, nominal_v)
    window = {
        "clock": "time.monotonic",
        "run_t_start": trace.samples[0].t, "run_t_end": trace.samples[-1].t,
        "baseline_t_start": baseline.samples[0].t if baseline and baseline.samples else None,
        "baseline_t_end": baseline.samples[-1].t if baseline and baseline.samples else None,
        "baseline_samples": len(baseline.samples) if baseline else 0,
    }
    return out, energy, window


def _on_device_itself() -> bool:
    """Whether this process runs on an Android device (Termux): only then is a battery
    measured over adb the energy of *this* inference."""
    import os

    return "ANDROID_ROOT" in os.environ or os.path.exists("/system/build.prop")


# --- the whole profile --------------------------------------------------------------------


def profile_variant(
    variant: Any,
    prompt_format: Any,
    profile: Any,
    *,
    runs: int = 100,
    device: str = "host",
    threads: int | None = None,
    seed: int = TASK_SEED,
    hz: float = 10.0,
    baseline_s: float = 3.0,
    exclude_apps: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run ``runs`` agent inferences of ``variant`` (a ``bundle.Variant``) and report measured
    and estimated figures. ``device`` is host | emulator | adb | adb:SERIAL."""
    from edgeagent.engine import Engine
    from edgeagent.select import estimate_variant, variant_context

    kind, serial = parse_device(device)
    if runs < 1:
        raise ValueError("--runs must be at least 1")
    warnings: list[str] = []
    adb_device = battery_read = None
    if kind == "adb":
        from android_bridge.adb import AdbDevice

        adb_device = AdbDevice(serial)  # DeviceError says what is wrong with the connection
        first = adb_device.battery()
        if first.current_ma is None:
            warnings.append(f"{adb_device.serial} exposes no battery current (no current_now): energy is estimated")
        else:
            battery_read = adb_device.battery
            if not _on_device_itself():
                warnings.append(
                    f"the model ran on this machine ({platform.machine()}, {cpu_model()}), not on {adb_device.serial}: "
                    "the measured battery draw is the device's during the run, which is this inference's energy "
                    "only when edgeagent runs on the device itself (Termux)")
    screens = recorded_screens(runs, seed, exclude_apps) if kind != "emulator" else None

    n_ctx = variant_context(variant)
    rss_before = rss_mb()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        engine = Engine(variant.path, n_ctx=n_ctx, n_threads=threads, seed=0)
        load_ms = (time.perf_counter() - t0) * 1e3
        try:
            if kind == "emulator":
                def work():
                    return agent_calls(engine, prompt_format, runs, seed, exclude_apps=exclude_apps, progress=progress)
            else:
                from android_bridge.emulator.phone import EmulatedPhone

                apps = EmulatedPhone().app_names()

                def work():
                    return replay_calls(engine, prompt_format, screens, apps, progress), None

            energy = window = None
            t_run = time.perf_counter()
            if battery_read is not None:
                (calls, outcome), energy, window = _measured_energy(
                    battery_read, work, profile.battery.nominal_v, baseline_s, hz)
            else:
                calls, outcome = work()
            run_s = time.perf_counter() - t_run
            used_threads = engine.n_threads
        finally:
            engine.close()

    steps = per_step(calls)
    summary = summarize_steps(steps)
    here = {
        "rss_peak_mb": peak.peak_mb,
        "rss_before_load_mb": rss_before,
        "model_rss_mb": peak.peak_mb - rss_before,
        "ttft_ms": summary["ttft_ms"]["median"],
        "ttft_ms_p90": summary["ttft_ms"]["p90"],
        "tpot_ms": summary["tpot_ms"]["median"],
        "tpot_ms_p90": summary["tpot_ms"]["p90"],
        "tokens_per_s": summary["tokens_per_s"]["median"],
        "tokens_per_s_p90": summary["tokens_per_s"]["p90"],
        "step_ms": summary["step_ms"]["median"],
        "step_ms_p90": summary["step_ms"]["p90"],
        "load_ms": load_ms,
        "run_s": run_s,
        "where": f"this machine: {platform.machine()}, {cpu_model()}, {used_threads} thread(s)",
        "source": "measured",
    }
    if energy is not None:
        per = energy.per_inference(len(calls))
        here.update(per, energy=energy.to_dict(), energy_window=window,
                    energy_where=f"battery of {adb_device.serial} over adb, {energy.sample_hz:.1f} Hz")
        warnings += [w for w in energy.warnings if w not in warnings]

    # The same work on the target: the median call's evaluated prompt and output lengths.
    prompt_tokens = max(1, round(summary["evaluated_prompt_tokens"]["median"]))
    gen_tokens = max(1, round(summary["generated_tokens"]["median"]))
    target = {
        **estimate_variant(variant, profile, prompt_tokens, gen_tokens, n_ctx=n_ctx),
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "where": f"{profile.name} ({profile.soc}), roofline",
    }
    measured_energy = energy is not None

    def fig(value, unit, source, where):
        return {"value": value, "unit": unit, "source": source, "where": where}

    energy_src = ("measured", here.get("energy_where")) if measured_energy else ("estimated", target["where"])
    figures = {
        "rss_peak_mb": fig(here["rss_peak_mb"], "MiB", "measured", here["where"]),
        "ttft_ms": fig(here["ttft_ms"], "ms", "measured", here["where"]),
        "tpot_ms": fig(here["tpot_ms"], "ms", "measured", here["where"]),
        "tokens_per_s": fig(here["tokens_per_s"], "tokens/s", "measured", here["where"]),
        "joules_per_inference": fig(here["joules_per_inference"] if measured_energy else target["joules_per_inference"],
                                    "J", *energy_src),
        "mah_per_100_inferences": fig(here["mah_per_100_inferences"] if measured_energy
                                      else target["mah_per_100_inferences"], "mAh", *energy_src),
    }
    return {
        "variant": {"id": variant.id, "quant": variant.quant, "exit_layer": variant.exit_layer,
                    "n_layers": variant.n_layers, "path": str(variant.path), "size_bytes": variant.size_bytes},
        "profile": profile.name,
        "device": device,
        "workload": {
            "runs": len(calls),
            "what": "agent inferences: ModelPolicy.decide (prompt + per-screen grammar, greedy) on "
                    + ("the agent's own emulated episodes" if kind == "emulator" else "recorded emulated screens (expert trajectories)"),
            "task_seed": seed, "context": n_ctx, **({"episodes": outcome} if outcome else {}),
        },
        **{k: v["value"] for k, v in figures.items()},
        "sources": {k: v["source"] for k, v in figures.items()},
        "figures": figures,
        "measured_here": here,
        "estimated_on_target": target,
        "summary": summary,
        "per_step": steps,
        "warnings": warnings,
    }


def profile_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The side-by-side table ``edgeagent profile`` prints."""
    here, target = result["measured_here"], result["estimated_on_target"]

    def f(v, d=1):
        return "-" if v is None else f"{v:,.{d}f}"

    rows = [
        ["RSS peak / memory (MiB)", f(here["rss_peak_mb"], 0), "-", f(target["memory_mb"], 0)],
        ["TTFT (ms)", f(here["ttft_ms"]), f(here["ttft_ms_p90"]), f(target["ttft_ms"])],
        ["TPOT (ms)", f(here["tpot_ms"], 2), f(here["tpot_ms_p90"], 2), f(target["tpot_ms"], 2)],
        ["tokens/s", f(here["tokens_per_s"]), f(here["tokens_per_s_p90"]), f(target["tokens_per_s"])],
        ["step (ms)", f(here["step_ms"]), f(here["step_ms_p90"]), f(target["step_ms"])],
        ["J / inference", f(here.get("joules_per_inference"), 4), "-", f(target["joules_per_inference"], 4)],
        ["mAh / 100 inferences", f(here.get("mah_per_100_inferences"), 4), "-", f(target["mah_per_100_inferences"], 4)],
    ]
    return ["figure", "measured here (median)", "measured here (p90)", f"estimated on {result['profile']}"], rows
