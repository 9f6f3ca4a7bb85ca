"""``edgeagent bench``: measured speed on this machine, one plain function per mode.

`bench_throughput` runs the engine and plain llama-cpp-python side by side in one process,
alternating which goes first each repetition, on the same GGUF, threads and sampler, so the
comparison survives the noise of a shared machine: compare the two columns of one run, not
figures from different runs. Each repetition starts from an empty KV cache and measures
prefill (prompt tokens/s, llama.cpp's counters) and decode. The decode headline is throughput:
tokens generated after the first divided by the wall time from the first token to the last,
what a caller waiting for the answer gets. The median gap between consecutive tokens is kept
as a secondary figure: it shows the speed of an undisturbed step, and on a loaded machine it
can be many times the throughput (the steps that wait for the CPU are the ones it drops).
Figures are medians over repetitions with their sample stddev.

Every run also records how much CPU the process got: process CPU time over wall time per
llama.cpp thread. Below `CONTENDED_BELOW` the threads spent a good part of the run waiting for
a core, so the result says ``contended`` and the figures describe the load, not the model.

Other modes (early exit, ablations) belong here as further ``bench_<mode>`` functions that
return a dict with ``mode`` and ``measured: true``, plus a ``<mode>_rows`` for the table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from edgeagent.engine import Engine, EngineError, load_llama
from edgeagent.llama import ATTENTION_SETUPS
from edgeagent.metrics import LlamaPerf, median_std, per_second

PROMPT_TEXT = (
    "You are an assistant that operates an Android phone. The screen shows the Settings app "
    "with the items Network, Bluetooth, Display, Battery, Storage and Apps. The user asked: "
    "turn the screen brightness down to thirty percent and then go back to the home screen. "
)


def bench_prompt(engine: Engine, n_tokens: int) -> list[int]:
    """Exactly `n_tokens` prompt tokens of ordinary text (BOS first if the model adds one)."""
    tokens = engine.tokenize(PROMPT_TEXT)
    while len(tokens) < n_tokens:
        tokens += engine.tokenize(PROMPT_TEXT, add_bos=False)
    return tokens[:n_tokens]


# A run whose threads got less than this share of their wall time on a CPU was contended.
CONTENDED_BELOW = 0.8


def _decode_rates(times_ms: list[float]) -> tuple[float, float]:
    """(tokens/s from the median gap between tokens, tokens/s from first to last token).
    The median shrugs off the odd preemption on a shared machine; both are reported."""
    gaps = sorted(b - a for a, b in zip(times_ms, times_ms[1:]))
    median = gaps[len(gaps) // 2] if gaps else 0.0
    return per_second(1, median), per_second(len(times_ms) - 1, times_ms[-1] - times_ms[0] if times_ms else 0.0)


def _timed(run: Callable[[], dict], threads: int) -> dict:
    """`run()`'s result plus the share of its wall time the process's `threads` spent on a CPU."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {**result, "cpu_utilization": cpu / (wall * threads) if wall > 0 else 0.0}


def _decode_figures(times_ms: list[float]) -> dict:
    gap_rate, throughput = _decode_rates(times_ms)
    return {"decode_tokens_per_s": throughput, "decode_tokens_per_s_median_gap": gap_rate}


def generate_after_prefix(engine: Engine, prompt: list[int], n_gen: int, cached: int = 0):
    """From an empty KV cache: the first ``cached`` tokens of ``prompt`` evaluated untimed (an
    agent's earlier steps), then ``prompt`` generated from greedily, so the returned call
    evaluates only the tokens after them (checked)."""
    engine.reset()
    if cached:
        engine.generate(prompt[:cached], max_tokens=1)
    g = engine.generate(prompt, max_tokens=n_gen, temperature=0.0, ignore_eos=True)
    if g.metrics.evaluated_prompt_tokens != len(prompt) - cached:
        raise EngineError(f"the engine evaluated {g.metrics.evaluated_prompt_tokens} prompt tokens, "
                          f"not the {len(prompt) - cached} after the cached {cached}")
    return g


def _run_engine(engine: Engine, prompt: list[int], n_gen: int, depth: int = 0) -> dict:
    g = generate_after_prefix(engine, prompt, n_gen, depth)
    return {
        **_decode_figures(g.token_times_ms),
        "prefill_tokens_per_s": g.metrics.prefill_tokens_per_s,
        "ttft_ms": g.metrics.ttft_ms,
        "generated_tokens": g.metrics.generated_tokens,
        "peak_rss_mb": g.metrics.peak_rss_mb,
    }


def _run_baseline(llm, prompt: list[int], n_gen: int, depth: int = 0) -> dict:
    """Plain llama-cpp-python: the Llama.generate token loop with the engine's sampler
    settings (greedy, llama-cpp-python's defaults otherwise), timed at the same points; the
    first `depth` tokens evaluated first, untimed (Llama.generate reuses the matching prefix)."""
    import llama_cpp

    llm.reset()
    if depth:
        llm.eval(prompt[:depth])
        # llama.cpp adds a decode to its counters when it next synchronizes; do it now so the
        # counters reset below do not count the cached tokens as this call's prefill
        llama_cpp.llama_synchronize(llm.ctx)
    LlamaPerf.reset(llm.ctx)
    started = time.perf_counter()
    times: list[float] = []
    prefill = None
    tokens = llm.generate(prompt, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0)
    for _ in tokens:
        times.append(time.perf_counter())
        if prefill is None:
            prefill = LlamaPerf.read(llm.ctx)
        if len(times) >= n_gen:
            break
    tokens.close()
    if prefill is not None and prefill.tokens != len(prompt) - depth:
        raise EngineError(f"llama-cpp-python evaluated {prefill.tokens} prompt tokens, "
                           f"not the {len(prompt) - depth} after the cached {depth}")
    times_ms = [(t - started) * 1000 for t in times]
    return {
        **_decode_figures(times_ms),
        "prefill_tokens_per_s": per_second(prefill.tokens, prefill.ms) if prefill else 0.0,
        "ttft_ms": times_ms[0] if times_ms else 0.0,
        "generated_tokens": len(times),
    }


def bench_throughput(
    model_path: str | os.PathLike,
    *,
    threads: int | None = None,
    prompt_tokens: int = 128,
    gen_tokens: int = 64,
    reps: int = 5,
    warmup: int = 1,
    repack: bool | None = None,
    depth: int = 0,
    progress: Callable[[int, int], None] | None = None,
    attention: str = "on",
) -> dict:
    """Engine vs plain llama-cpp-python tokens/s, and prefill vs decode, measured here; the
    result names the llama.cpp settings the engine ran with (``edgeagent bench stock`` hands
    them to llama-bench). With ``depth`` each repetition first puts that many tokens in the KV
    cache, untimed, as an agent's earlier steps have: prefill is then the ``prompt_tokens`` on
    top of them and decode runs at depth + prompt (llama-bench's ``-d``). ``attention``: flash
    attention "on" (the engine's default), "off", or the engine's "exact" set-up
    (``LlamaSettings.exact``)."""
    if attention not in ATTENTION_SETUPS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_SETUPS)}, not {attention!r}")
    if prompt_tokens < 2 or gen_tokens < 2 or reps < 1 or depth < 0:
        raise ValueError("need prompt_tokens >= 2, gen_tokens >= 2, reps >= 1 and depth >= 0")
    model_path = Path(model_path)
    n_ctx = depth + prompt_tokens + gen_tokens + 16
    engine = Engine(model_path, n_ctx=n_ctx, n_threads=threads, repack=repack, seed=0, **ATTENTION_SETUPS[attention])
    baseline = load_llama(model_path, repack=engine.repack, seed=0, **engine.settings.llama_kwargs())  # the same context
    try:
        prompt = bench_prompt(engine, depth + prompt_tokens)
        runs: list[dict] = []
        total = warmup + reps
        for rep in range(total):
            # Alternate the order so drift (thermal, other jobs) hits both sides alike.
            order = ("engine", "baseline") if rep % 2 == 0 else ("baseline", "engine")
            results = {}
            for side in order:
                if side == "engine":
                    results[side] = _timed(lambda: _run_engine(engine, prompt, gen_tokens, depth), engine.n_threads)
                else:
                    results[side] = _timed(lambda: _run_baseline(baseline, prompt, gen_tokens, depth), engine.n_threads)
            if rep >= warmup:
                runs.append({"rep": rep - warmup, "first": order[0], **{f"{k}": v for k, v in results.items()}})
            if progress is not None:
                progress(rep + 1, total)
        info = engine.info()
    finally:
        baseline.close()
        engine.close()

    def stat(side: str, key: str) -> tuple[float, float]:
        return median_std([r[side][key] for r in runs])

    engine_tps, engine_tps_std = stat("engine", "decode_tokens_per_s")
    base_tps, base_tps_std = stat("baseline", "decode_tokens_per_s")
    engine_gap, engine_gap_std = stat("engine", "decode_tokens_per_s_median_gap")
    base_gap, base_gap_std = stat("baseline", "decode_tokens_per_s_median_gap")
    utilization = min(median_std([r[side]["cpu_utilization"] for r in runs])[0] for side in ("engine", "baseline"))
    # Per-repetition overhead, paired: each rep's two runs ran back to back.
    overheads = [
        100.0 * (r["baseline"]["decode_tokens_per_s"] - r["engine"]["decode_tokens_per_s"]) / r["baseline"]["decode_tokens_per_s"]
        for r in runs
    ]
    overhead, overhead_std = median_std(overheads)
    prefill, prefill_std = stat("engine", "prefill_tokens_per_s")
    base_prefill, base_prefill_std = stat("baseline", "prefill_tokens_per_s")
    ttft, ttft_std = stat("engine", "ttft_ms")
    base_ttft, base_ttft_std = stat("baseline", "ttft_ms")
    size_bytes, n_params = _model_size(model_path)
    return {
        "mode": "throughput",
        "measured": True,
        "statistic": "median over reps, with sample stddev",
        "model": str(model_path),
        "model_size_bytes": size_bytes,
        "model_params": n_params,
        "arch": info["arch"],
        "file_type": _file_type_name(info["file_type"]),
        "threads": info["threads"],
        "repack": info["repack"],
        "huge_pages": info["huge_pages"],
        "flash_attn": engine.settings.attention[0],
        "n_batch": engine.settings.n_batch,
        "n_ubatch": engine.settings.ubatch,
        "kv_type": engine.settings.kv_type or "f16",
        "kv_types": list(engine.settings.attention[1:]),  # K, V as llama.cpp got them
        "exact": engine.settings.exact,
        "machine": info["machine"],
        "cpu_count": os.cpu_count(),
        "llama_cpp_python": _llama_cpp_version(),
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "depth": depth,
        "reps": reps,
        "decode_statistic": "throughput: tokens after the first / wall time from first to last token",
        "engine_tokens_per_s": engine_tps,
        "engine_tokens_per_s_std": engine_tps_std,
        "baseline_tokens_per_s": base_tps,
        "baseline_tokens_per_s_std": base_tps_std,
        "engine_tokens_per_s_median_gap": engine_gap,
        "engine_tokens_per_s_median_gap_std": engine_gap_std,
        "baseline_tokens_per_s_median_gap": base_gap,
        "baseline_tokens_per_s_median_gap_std": base_gap_std,
        "cpu_utilization": utilization,
        "contended": utilization < CONTENDED_BELOW,
        "overhead_pct": overhead,
        "overhead_pct_std": overhead_std,
        "prefill_tokens_per_s": prefill,
        "prefill_tokens_per_s_std": prefill_std,
        "baseline_prefill_tokens_per_s": base_prefill,
        "baseline_prefill_tokens_per_s_std": base_prefill_std,
        "ttft_ms": ttft,
        "ttft_ms_std": ttft_std,
        "baseline_ttft_ms": base_ttft,
        "baseline_ttft_ms_std": base_ttft_std,
        "peak_rss_mb": max(r["engine"]["peak_rss_mb"] for r in runs),
        "runs": runs,
    }


def bench_prefix_reuse(
    model_path: str | os.PathLike,
    *,
    threads: int | None = None,
    prompt_tokens: int = 256,
    suffix_tokens: int = 16,
    gen_tokens: int = 16,
    reps: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """What keeping the KV cache between calls saves: the same prompt (a shared prefix plus a
    new suffix, like the next step of an agent loop) served cold and with the prefix cached,
    alternating, greedy. Also checks that both give the same tokens."""
    model_path = Path(model_path)
    engine = Engine(model_path, n_ctx=prompt_tokens + suffix_tokens + gen_tokens + 16, n_threads=threads, seed=0)
    try:
        prefix = bench_prompt(engine, prompt_tokens)
        suffix = []
        while len(suffix) < suffix_tokens:
            suffix += engine.tokenize(" Screen: Display settings, brightness slider at 80%.", add_bos=False)
        prompt = prefix + suffix[:suffix_tokens]
        engine.generate(prompt, max_tokens=2)  # warm-up: first decodes allocate the graphs
        runs = []
        for rep in range(reps):
            result = {}
            for side in (("cold", "cached") if rep % 2 == 0 else ("cached", "cold")):
                engine.reset()
                if side == "cached":
                    engine.generate(prefix, max_tokens=1)  # the previous call left this in the cache
                result[side] = engine.generate(prompt, max_tokens=gen_tokens, temperature=0.0, ignore_eos=True)
            runs.append(result)
            if progress is not None:
                progress(rep + 1, reps)
        info = engine.info()
    finally:
        engine.close()

    def stat(side: str, key: str) -> tuple[float, float]:
        return median_std([getattr(r[side].metrics, key) for r in runs])

    cold_ttft, cold_ttft_std = stat("cold", "ttft_ms")
    cached_ttft, cached_ttft_std = stat("cached", "ttft_ms")
    cold_prefill, _ = stat("cold", "prefill_ms")
    cached_prefill, _ = stat("cached", "prefill_ms")
    return {
        "mode": "prefix_reuse",
        "measured": True,
        "statistic": "median over reps, with sample stddev",
        "model": str(model_path),
        "threads": info["threads"],
        "prompt_tokens": len(prompt),
        "shared_prefix_tokens": len(prefix),
        "reps": reps,
        "cold_evaluated_tokens": runs[0]["cold"].metrics.evaluated_prompt_tokens,
        "cached_evaluated_tokens": runs[0]["cached"].metrics.evaluated_prompt_tokens,
        "cached_reused_tokens": runs[0]["cached"].metrics.reused_prompt_tokens,
        "cold_prefill_ms": cold_prefill,
        "cached_prefill_ms": cached_prefill,
        "cold_ttft_ms": cold_ttft,
        "cold_ttft_ms_std": cold_ttft_std,
        "cached_ttft_ms": cached_ttft,
        "cached_ttft_ms_std": cached_ttft_std,
        "ttft_saved_pct": 100.0 * (cold_ttft - cached_ttft) / cold_ttft if cold_ttft else 0.0,
        "identical_output": all(r["cold"].tokens == r["cached"].tokens for r in runs),
    }


def prefix_reuse_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    columns = ["prompt", "KV cache", "evaluated tokens", "prefill ms", "TTFT ms"]
    rows = [
        [str(result["prompt_tokens"]), "cold", str(result["cold_evaluated_tokens"]),
         f"{result['cold_prefill_ms']:.2f}", f"{result['cold_ttft_ms']:.2f} ± {result['cold_ttft_ms_std']:.2f}"],
        [str(result["prompt_tokens"]), f"{result['cached_reused_tokens']} cached", str(result["cached_evaluated_tokens"]),
         f"{result['cached_prefill_ms']:.2f}", f"{result['cached_ttft_ms']:.2f} ± {result['cached_ttft_ms_std']:.2f}"],
    ]
    return columns, rows


def throughput_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """llama-bench-style table: one row per test and runner, tokens/s +- stddev; decode as
    throughput, with the median-gap rate beside it."""
    columns = ["model", "size", "params", "threads", "runner", "test", "t/s", "t/s (median gap)"]
    model = f"{result['arch']} {result['file_type']}"
    size = f"{result['model_size_bytes'] / 2**20:.2f} MiB"
    params = _human_count(result["model_params"])
    rows = []
    for runner, prefix in (("edgeagent engine", ""), ("llama-cpp-python", "baseline_")):
        pp = _pm(result, prefix + "prefill_tokens_per_s")
        tg_key = "engine_tokens_per_s" if not prefix else "baseline_tokens_per_s"
        rows.append([model, size, params, str(result["threads"]), runner, f"pp{result['prompt_tokens']}", pp, ""])
        rows.append([model, size, params, str(result["threads"]), runner, f"tg{result['gen_tokens']}",
                     _pm(result, tg_key), _pm(result, tg_key + "_median_gap")])
    return columns, rows


def contention_note(result: dict) -> str:
    """One line on how much CPU the run got, and what that means for its figures."""
    share = f"the process got {100 * result['cpu_utilization']:.0f} % of {result['threads']} thread(s)' wall time on a CPU"
    if result["contended"]:
        return (f"CONTENDED: {share} (< {100 * CONTENDED_BELOW:.0f} %): other work held the cores, so these figures "
                "describe the load; the median-gap column shows the speed of the undisturbed steps. Re-run on an idle machine.")
    return f"not contended: {share}"


def _pm(result: dict, key: str) -> str:
    return f"{result[key]:.2f} ± {result[key + '_std']:.2f}"


def _model_size(path: Path) -> tuple[int, int]:
    from edgeagent.gguf_meta import read_gguf_meta

    return path.stat().st_size, int(sum(t.n_elements for t in read_gguf_meta(path).tensors))


def _file_type_name(file_type) -> str:
    from edgeagent.gguf_meta import file_type_name

    try:
        name = file_type_name(int(file_type))
    except (TypeError, ValueError):
        return "unknown"
    return name.replace("MOSTLY_", "").replace("ALL_", "") if name else "unknown"


def _human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def _llama_cpp_version() -> str:
    import llama_cpp

    return llama_cpp.__version__
