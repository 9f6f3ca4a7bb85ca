"""``edgeagent bench stock``: the engine beside stock ``llama-bench`` on the same GGUF.

The engine side is ``edgeagent.bench.bench_throughput`` (the engine at its own defaults: prefill
tokens/s from llama.cpp's counters, decode throughput over ``gen_tokens`` after a
``prompt_tokens`` prompt). The stock side is ``llama-bench -o json`` at the same thread count,
prompt and generation lengths and repetitions, run twice:

- **same settings**: the engine's flash attention, weight repacking, batch and physical batch
  and F16 KV cache (``-fa``, ``--repack``, ``-b``, ``-ub``, ``-ctk``/``-ctv``);
- **defaults**: only the sizes and threads given, every other setting llama-bench's own (flash
  attention auto, repack on, batch 2048, physical batch 512), except on a CPU with Intel AMX,
  where llama.cpp's default repacking segfaults on quantized models (ggml-org/llama.cpp#20824;
  ``edgeagent.llama.default_repack``): there ``--repack 0``, and the result says so.

Each runs as two invocations: ``-p P -n 0 -d D`` (prefill of a P-token prompt on D tokens
already cached, the engine's ``ppP``) and ``-p 0 -n N -d D+P`` (N tokens decoded after that
context, as the engine decodes after its prompt). D (``--depth``) is 0 by default, llama-bench's
own; an agent step is P ~ 160 new tokens on ~380 cached and N ~ 16 (``edgeagent.calibrate``'s
probe), and there the best settings differ (flash attention speeds decode from an empty cache
and slows it at depth on some CPUs). The rows give prefill and decode tokens/s of both and
engine ÷ stock, and a third row per mode, ``step``: the time of one call of P prompt and N
generated tokens at those rates (P/prefill + N/decode), the figure an agent waits for. llama-bench
does not sample and runs no Python, so a ratio a little under 1 is the engine's own cost; on a
machine busy with other work both sides measure the load (the result says so, ``contended``).
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from edgeagent.stock import StockError

# llama_flash_attn_type as llama-bench prints it.
FLASH_ATTN = {-1: "auto", 0: "off", 1: "on"}
MODES = ("same", "defaults")


def find_llama_bench(explicit: Path | None = None) -> tuple[Path, str] | None:
    """(llama-bench, where it came from): ``explicit``, else the cached stock build of the
    installed llama-cpp-python (the same llama.cpp source as the engine), else ``PATH``."""
    from edgeagent.stock import cached_build

    if explicit is not None:
        if not explicit.is_file():
            raise StockError(f"{explicit}: no such llama-bench")
        return explicit, "given"
    build = cached_build()
    if build is not None:
        return build.tool("llama-bench"), f"stock build: {build.describe()}"
    on_path = shutil.which("llama-bench")
    return (Path(on_path), "PATH") if on_path else None


def llama_bench_args(model: Path, *, threads: int, prompt_tokens: int, gen_tokens: int, reps: int,
                     settings: dict | None = None, repack_crashes: bool = False, depth: int = 0) -> list[list[str]]:
    """The two llama-bench argument lists (prefill on ``depth`` cached tokens; decode after
    depth + prompt), with
    ``settings`` (the engine's: ``flash_attn``, ``repack``, ``n_batch``, ``n_ubatch``, ``kv_types``
    as K and V, else ``kv_type`` for both)
    or None for llama-bench's defaults; with ``repack_crashes`` (a CPU with Intel AMX, see
    ``edgeagent.llama.default_repack``) its default repacking is turned off, or it segfaults."""
    common = ["-m", str(model), "-t", str(threads), "-r", str(reps), "-o", "json"]
    if settings is None and repack_crashes:
        common += ["--repack", "0"]
    if settings is not None:
        k, v = settings.get("kv_types") or [settings.get("kv_type") or "f16"] * 2
        common += ["-fa", "on" if settings["flash_attn"] else "off", "--repack", "1" if settings["repack"] else "0",
                   "-b", str(settings["n_batch"]), "-ub", str(settings["n_ubatch"]), "-ctk", k, "-ctv", v]
    prefill = [*common, "-p", str(prompt_tokens), "-n", "0"] + (["-d", str(depth)] if depth else [])
    return [prefill, [*common, "-p", "0", "-n", str(gen_tokens), "-d", str(depth + prompt_tokens)]]


def parse_llama_bench(text: str) -> list[dict]:
    """llama-bench's ``-o json`` output: a list of test records."""
    try:
        records = json.loads(text)
    except ValueError as e:
        raise StockError(f"llama-bench printed no JSON ({e}): {text.strip()[:120]!r}") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "avg_ts" in r for r in records):
        raise StockError("llama-bench's JSON is not a list of test records with avg_ts")
    return records


def run_llama_bench(binary: Path, args: list[str], timeout: float = 3600) -> tuple[list[dict], float]:
    """Run llama-bench once: (its records, the share of its wall time its threads got on a CPU)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        proc = subprocess.run([str(binary), *args], capture_output=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StockError(f"{binary}: {e}") from None
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise StockError(f"{binary.name} {' '.join(args)} exited with {proc.returncode}: {tail[0][:200]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    threads = int(args[args.index("-t") + 1]) if "-t" in args else 1
    return parse_llama_bench(proc.stdout.decode("utf-8", errors="replace")), cpu / (wall * threads) if wall else 0.0


def stock_figures(records: list[dict], cpu_utilization: float | None = None) -> dict:
    """Prefill and decode tokens/s (llama-bench's mean ± stddev over reps) and the settings it
    ran with, from the records of one mode's invocations."""
    pp = [r for r in records if r["n_prompt"] > 0 and r["n_gen"] == 0]
    tg = [r for r in records if r["n_gen"] > 0 and r["n_prompt"] == 0]
    if len(pp) != 1 or len(tg) != 1:
        raise StockError(f"expected one prefill and one decode test from llama-bench, got {len(pp)} and {len(tg)}")
    pp, tg = pp[0], tg[0]
    return {
        "prefill_tokens_per_s": pp["avg_ts"], "prefill_tokens_per_s_std": pp["stddev_ts"],
        "decode_tokens_per_s": tg["avg_ts"], "decode_tokens_per_s_std": tg["stddev_ts"],
        "prompt_tokens": pp["n_prompt"], "gen_tokens": tg["n_gen"], "prefill_depth": pp.get("n_depth", 0),
        "decode_depth": tg["n_depth"],
        "threads": pp["n_threads"], "flash_attn": FLASH_ATTN.get(pp["flash_attn"], str(pp["flash_attn"])),
        "repack": bool(pp["repack"]), "n_batch": pp["n_batch"], "n_ubatch": pp["n_ubatch"],
        "kv_type": pp["type_k"], "kv_types": [pp["type_k"], pp.get("type_v", pp["type_k"])], "reps": len(pp.get("samples_ts") or []),
        "build_commit": pp["build_commit"], "build_number": pp["build_number"], "cpu_info": pp["cpu_info"],
        "backends": pp["backends"], "cpu_utilization": cpu_utilization,
        "huge_pages": False,  # llama-bench has no such setting: its weights stay mapped from the file
    }


def engine_settings(engine: dict) -> dict:
    """The llama.cpp settings the engine's throughput run used (``bench_throughput``'s result)."""
    return {"flash_attn": bool(engine["flash_attn"]), "repack": bool(engine["repack"]),
            "n_batch": engine["n_batch"], "n_ubatch": engine["n_ubatch"], "kv_type": engine.get("kv_type") or "f16",
            "kv_types": engine.get("kv_types") or [engine.get("kv_type") or "f16"] * 2,
            "threads": engine["threads"], "huge_pages": bool((engine.get("huge_pages") or {}).get("on"))}


def step_ms(prompt_tokens: int, gen_tokens: int, prefill_tokens_per_s: float, decode_tokens_per_s: float) -> float:
    """One call's time at these rates: the prompt's prefill, then the generated tokens."""
    if prefill_tokens_per_s <= 0 or decode_tokens_per_s <= 0:
        return math.nan
    return 1000.0 * (prompt_tokens / prefill_tokens_per_s + gen_tokens / decode_tokens_per_s)


def compare(engine: dict, stock: dict[str, dict], *, binary: str, source: str) -> dict:
    """The side-by-side result: ``engine`` (``bench_throughput``'s) and ``stock`` (mode ->
    ``stock_figures``), one row per mode and test with engine ÷ stock."""
    from edgeagent.bench import CONTENDED_BELOW

    rows = []
    p, n = engine["prompt_tokens"], engine["gen_tokens"]
    for mode, figures in stock.items():
        for test, key, engine_key in (("prefill", "prefill_tokens_per_s", "prefill_tokens_per_s"),
                                      ("decode", "decode_tokens_per_s", "engine_tokens_per_s")):
            e, s = engine[engine_key], figures[key]
            rows.append({"settings": mode, "test": test, "engine_tokens_per_s": e, "stock_tokens_per_s": s,
                         "ratio": e / s if s else math.nan})
        e_ms = step_ms(p, n, engine["prefill_tokens_per_s"], engine["engine_tokens_per_s"])
        s_ms = step_ms(p, n, figures["prefill_tokens_per_s"], figures["decode_tokens_per_s"])
        rows.append({"settings": mode, "test": "step", "engine_ms": e_ms, "stock_ms": s_ms,
                     "ratio": s_ms / e_ms if e_ms else math.nan})
    shares = [engine["cpu_utilization"]] + [f["cpu_utilization"] for f in stock.values() if f["cpu_utilization"]]
    return {
        "mode": "stock",
        "measured": True,
        "model": engine["model"],
        "prompt_tokens": engine["prompt_tokens"],
        "gen_tokens": engine["gen_tokens"],
        "depth": engine.get("depth", 0),
        "reps": engine["reps"],
        "threads": engine["threads"],
        "ratio": "engine / stock tokens/s; step: stock / engine time (above 1: the engine is faster)",
        "engine_statistic": "median over reps; decode = throughput after the first token",
        "stock_statistic": "llama-bench's mean over reps; decode = tg after a prompt-sized context (-d)",
        "engine_settings": engine_settings(engine),
        "llama_cpp_python": engine["llama_cpp_python"],
        "llama_bench": binary,
        "llama_bench_from": source,
        "stock": stock,
        "engine": {k: v for k, v in engine.items() if k != "runs"},
        "rows": rows,
        "contended": min(shares) < CONTENDED_BELOW,
        "cpu_utilization": min(shares),
    }


def describe_settings(s: dict) -> str:
    fa = s["flash_attn"] if isinstance(s["flash_attn"], str) else ("on" if s["flash_attn"] else "off")
    k, v = s.get("kv_types") or [s["kv_type"]] * 2
    kv = k if k == v else f"{k}/{v}"
    pages = "" if s.get("huge_pages") is None else f", 2 MiB pages {'on' if s['huge_pages'] else 'off'}"
    return f"fa {fa}, repack {int(bool(s['repack']))}, b {s['n_batch']}, ub {s['n_ubatch']}, kv {kv}, t {s['threads']}{pages}"


def stock_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """The table: one row per settings mode and test (the settings themselves: ``notes``)."""
    columns = ["settings", "test", "engine", "llama-bench", "engine ÷ stock (speed)"]
    rows = []
    for row in result["rows"]:
        stock = result["stock"][row["settings"]]
        if row["test"] == "step":
            rows.append([row["settings"], f"step: pp{stock['prompt_tokens']} + tg{stock['gen_tokens']}",
                         f"{row['engine_ms']:.1f} ms", f"{row['stock_ms']:.1f} ms", f"{row['ratio']:.3f}"])
            continue
        depth = stock.get("prefill_depth", 0)
        test = (f"pp{stock['prompt_tokens']}" + (f" @ d{depth}" if depth else "") if row["test"] == "prefill"
                else f"tg{stock['gen_tokens']} @ d{stock['decode_depth']}")
        rows.append([row["settings"], test, f"{row['engine_tokens_per_s']:.1f} t/s",
                     f"{row['stock_tokens_per_s']:.1f} t/s", f"{row['ratio']:.3f}"])
    return columns, rows


def run_stock_bench(engine: dict, binary: Path, source: str, *, reps: int, progress=None) -> dict:
    """llama-bench in both modes on ``engine``'s model, sizes and threads; the comparison."""
    from edgeagent.llama import default_repack

    settings = engine_settings(engine)
    repack_crashes = not default_repack()
    stock: dict[str, Any] = {}
    for mode in MODES:
        records: list[dict] = []
        shares = []
        for args in llama_bench_args(Path(engine["model"]), threads=settings["threads"],
                                     prompt_tokens=engine["prompt_tokens"], gen_tokens=engine["gen_tokens"], reps=reps,
                                     settings=settings if mode == "same" else None, repack_crashes=repack_crashes,
                                     depth=engine.get("depth", 0)):
            if progress is not None:
                progress(f"llama-bench ({mode}): {' '.join(args[2:])}")
            got, share = run_llama_bench(binary, args)
            records += got
            shares.append(share)
        stock[mode] = stock_figures(records, min(shares))
    result = compare(engine, stock, binary=str(binary), source=source)
    result["defaults_repack_off"] = repack_crashes
    return result


def _mean_and_half_interval(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95 % interval (normal approximation)."""
    return statistics.mean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def run_paired_decode(model: Path, binary: Path, source: str, *, threads: int | None, prompt_tokens: int,
                      gen_tokens: int, depth: int, pairs: int, attention: str = "on", progress=None) -> dict:
    """Decode against llama-bench's defaults, in interleaved pairs.

    Each pair runs llama-bench once (``-p 0 -n N -d D+P -r 1``, its defaults otherwise) and the
    engine once at its defaults (N greedy tokens after the same D+P cached tokens, timed from the
    first token to the last, Python included), in alternating order. Blocks of repetitions, as in
    the table, carry whatever the machine did between the blocks into the ratio; a pair's two
    runs are seconds apart. The verdict compares the mean ratio with its 95 % interval.
    """
    from edgeagent.bench import bench_prompt, generate_after_prefix
    from edgeagent.engine import Engine
    from edgeagent.llama import ATTENTION_SETUPS, default_repack
    from edgeagent.metrics import per_second

    if pairs < 2:
        raise ValueError("need at least 2 pairs")
    context = depth + prompt_tokens
    engine = Engine(model, n_ctx=context + gen_tokens + 16, n_threads=threads, seed=0, **ATTENTION_SETUPS[attention])
    args = llama_bench_args(model, threads=engine.n_threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=1,
                            repack_crashes=not default_repack(), depth=depth)[1]
    rows = []
    try:
        prompt = bench_prompt(engine, context)
        engine.generate(prompt, max_tokens=2)  # the first decodes of a context allocate its graphs
        huge_pages = engine.info()["huge_pages"]
        for i in range(pairs):
            order = ("stock", "engine") if i % 2 == 0 else ("engine", "stock")
            row: dict[str, Any] = {"pair": i, "first": order[0]}
            for side in order:
                if side == "stock":
                    records, share = run_llama_bench(binary, args)
                    row["stock_tokens_per_s"], row["stock_cpu_utilization"] = records[0]["avg_ts"], share
                else:  # the last context token is the call's prompt: its logits give the first token
                    g = generate_after_prefix(engine, prompt, gen_tokens + 1, context - 1)
                    t = g.token_times_ms
                    row["engine_tokens_per_s"] = per_second(len(t) - 1, t[-1] - t[0])
                    # llama.cpp's own decode timer, and what the wall time adds per token beyond it:
                    # the timer starts after llama_decode has checked the batch against the cache, so
                    # most of this is llama.cpp's (a bare decode loop shows the same; the engine's
                    # Python, the logits view and the argmax, is ~5 us of it: runs/s18/three_arm.py)
                    row["engine_decode_timer_tokens_per_s"] = g.metrics.tokens_per_s
                    row["engine_outside_decode_us_per_token"] = (t[-1] - t[0] - g.metrics.decode_ms) / (len(t) - 1) * 1e3
            row["ratio"] = row["engine_tokens_per_s"] / row["stock_tokens_per_s"]
            row["decode_timer_ratio"] = row["engine_decode_timer_tokens_per_s"] / row["stock_tokens_per_s"]
            rows.append(row)
            if progress is not None:
                progress(f"pair {i + 1}/{pairs}: engine {row['engine_tokens_per_s']:.1f}, llama-bench "
                         f"{row['stock_tokens_per_s']:.1f} tokens/s, ratio {row['ratio']:.3f}")
    finally:
        engine.close()
    ratios = [r["ratio"] for r in rows]
    mean, half = _mean_and_half_interval(ratios)
    timer_mean, timer_half = _mean_and_half_interval([r["decode_timer_ratio"] for r in rows])
    if mean - half > 1:
        verdict = "the engine decodes faster"
    elif mean + half < 1:
        verdict = "the engine decodes slower"
    else:
        verdict = f"the same speed within the interval (+-{half:.3f})"
    return {"mode": "paired-decode", "measured": True, "model": str(model), "llama_bench": str(binary),
            "llama_bench_from": source, "llama_bench_args": args, "attention": attention, "threads": engine.n_threads,
            "engine_huge_pages": huge_pages,
            "gen_tokens": gen_tokens, "context_tokens": context, "pairs": rows,
            "ratio": "engine / llama-bench decode tokens/s (llama-bench at its defaults; engine at its defaults, wall "
                     "time from the first token to the last)",
            "median_ratio": statistics.median(ratios), "mean_ratio": mean, "ci95": [mean - half, mean + half],
            "min_ratio": min(ratios), "max_ratio": max(ratios), "verdict": verdict,
            "decode_timer_ratio": "the same pairs with the engine timed by llama.cpp's own decode timer (from after "
                                  "llama_decode has checked the batch until its logits are ready)",
            "median_decode_timer_ratio": statistics.median(r["decode_timer_ratio"] for r in rows),
            "mean_decode_timer_ratio": timer_mean, "decode_timer_ci95": [timer_mean - timer_half, timer_mean + timer_half],
            "median_outside_decode_us_per_token": statistics.median(r["engine_outside_decode_us_per_token"] for r in rows)}


def notes(result: dict) -> list[str]:
    """What the table does not say: which llama-bench, which llama.cpp, and the CPU share."""
    same = result["stock"]["same"]
    settable = {**result["engine_settings"], "huge_pages": None}  # llama-bench has no page-size setting
    lines = [f"same: engine and llama-bench {describe_settings(settable)}"
             + ("; only the engine's weights are on 2 MiB pages (edgeagent.hugepages; llama-bench's stay mapped from "
                "the file)" if result["engine_settings"].get("huge_pages") else ""),
             f"defaults: engine {describe_settings(result['engine_settings'])}; llama-bench "
             f"{describe_settings(result['stock']['defaults'])}"]
    lines += [f"llama-bench: {result['llama_bench']}, {result['llama_bench_from']}; it reports commit "
              f"{same['build_commit']}, backends {same['backends']}; the engine: llama-cpp-python {result['llama_cpp_python']}"]
    if result.get("defaults_repack_off"):
        lines.append("llama-bench's defaults ran with --repack 0: this CPU has Intel AMX, where llama.cpp's default "
                     "repacking segfaults on quantized models (ggml-org/llama.cpp#20824)")
    share = f"the least CPU share of a side's threads was {100 * result['cpu_utilization']:.0f} %"
    lines.append(f"CONTENDED: {share}: other work held the cores, so the ratios describe the load; re-run on an idle "
                 "machine" if result["contended"] else f"not contended: {share}")
    return lines
