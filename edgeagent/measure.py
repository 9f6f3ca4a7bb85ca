"""What one GGUF costs on this machine, measured in a fresh Python process.

A fresh process per model, because resident memory is the question: in a long-lived
process the pages of an earlier model, the allocator's caches and everything else imported
so far are all in the RSS. The child imports the engine, records its RSS (the runtime's own
baseline, what a profile's ``runtime.overhead_mb`` means), loads the model, runs a fixed
prompt and a fixed number of greedy tokens (EOS ignored) a few times, and reports:

- ``rss_peak_mb``: the kernel's high-water mark (VmHWM) of the child: load + inference;
- ``ttft_ms``: prompt in (KV cache emptied first) to first token sampled, wall clock;
- ``tpot_ms`` / ``tokens_per_s``: the median gap between consecutive tokens, wall clock;
- ``prefill_tokens_per_s``: llama.cpp's prompt-evaluation counter.

Medians over the repetitions (one warm-up dropped): on a shared machine one preempted
repetition should not move the figure. The child inherits this process's niceness; its
numpy/BLAS probes are held to ``threads`` through the usual environment variables.

``python -m edgeagent.measure '<json job>'`` is the child's entry point.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


class MeasureError(RuntimeError):
    """The measuring process failed; the message carries its last error lines."""


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run_job(job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # so a checkout works without an install
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    threads = job.get("threads")
    if threads:
        env.update({k: str(threads) for k in THREAD_ENV})
    try:
        proc = subprocess.run([sys.executable, "-m", "edgeagent.measure", json.dumps(job)], capture_output=True,
                              text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"measuring {job.get('path', job['job'])} took longer than {timeout_s:.0f} s") from None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise MeasureError(f"measuring {job.get('path', job['job'])} failed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if job["job"] == "gguf":
        result["llama_cpp_buffers_mb"] = llama_cpp_buffers(proc.stderr)
    return result


# What llama.cpp says it allocated, from its load log ("CPU KV buffer size = 1.50 MiB" ...).
_BUFFER_LINES = {
    "model": re.compile(r"model buffer size\s*=\s*([\d.]+) MiB"),
    "kv_cache": re.compile(r"KV buffer size\s*=\s*([\d.]+) MiB"),
    "compute": re.compile(r"compute buffer size\s*=\s*([\d.]+) MiB"),
    "output": re.compile(r"output buffer size\s*=\s*([\d.]+) MiB"),
}


def llama_cpp_buffers(log: str) -> dict[str, float | None]:
    """The buffers llama.cpp reports at load (the last report of each kind: the compute
    buffer is re-reserved as the graph is planned), MiB; None when the log does not say."""
    out: dict[str, float | None] = {}
    for name, pattern in _BUFFER_LINES.items():
        found = pattern.findall(log)
        out[name] = sum(float(x) for x in found) if name == "model" and found else (float(found[-1]) if found else None)
    return out


def measure_gguf(path: str | os.PathLike, *, prompt_tokens: int = 64, gen_tokens: int = 64, n_ctx: int = 1024,
                 threads: int | None = None, n_ubatch: int = 512, flash_attn: bool | None = None, repack: bool | None = None,
                 reps: int = 3, timeout_s: float = 300.0, cached_tokens: int = 0, exact: bool = False,
                 huge_pages: bool | None = None) -> dict[str, Any]:
    """Load ``path`` in a fresh process and measure memory, TTFT and decode speed.
    ``cached_tokens``: that many tokens are already in the KV cache before each measured
    prompt (evaluated untimed first), as in an agent step that reuses its episode's prefix:
    the prompt's ``prompt_tokens`` are evaluated on top of them and decode runs at that depth.
    ``huge_pages`` as ``Engine`` takes it (None: where the kernel gives them); the result's
    ``huge_pages`` says what the load got."""
    job = {"job": "gguf", "path": str(path), "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
           "n_ctx": n_ctx, "threads": threads or os.cpu_count() or 1, "n_ubatch": n_ubatch,
           "flash_attn": flash_attn, "repack": repack, "reps": reps, "cached_tokens": cached_tokens, "exact": exact,
           "huge_pages": huge_pages}
    return _run_job(job, timeout_s)


def measure_runtime_baseline(threads: int | None = None, timeout_s: float = 120.0) -> dict[str, Any]:
    """RSS of a fresh process that has imported the engine (llama.cpp loaded, no model)."""
    return _run_job({"job": "baseline", "threads": threads or os.cpu_count() or 1}, timeout_s)


def measure_vocab_load(path: str | os.PathLike, timeout_s: float = 120.0) -> dict[str, Any]:
    """The RSS a vocab-only llama.cpp load of ``path`` adds to a fresh process: what its
    vocabulary holds (``estimate.vocab_bytes`` models it), plus the load's fixed part."""
    return _run_job({"job": "vocab", "path": str(path)}, timeout_s)


def measure_numpy(threads: int | None = None, *, read_mib: int = 256, matmul_n: int = 1024, reps: int = 6,
                  timeout_s: float = 300.0) -> dict[str, Any]:
    """Streaming-read bandwidth (``threads`` threads summing disjoint slices of one array,
    best of ``reps``) and float32 matmul GFLOP/s (BLAS held to ``threads``, best of ``reps``)."""
    return _run_job({"job": "numpy", "threads": threads or os.cpu_count() or 1, "read_mib": read_mib,
                     "matmul_n": matmul_n, "reps": reps}, timeout_s)


# --- the child --------------------------------------------------------------------------


def _child_gguf(job: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp  # noqa: F401 - the library is part of the runtime's baseline

    from edgeagent.bench import _decode_rates, bench_prompt, generate_after_prefix
    from edgeagent.engine import Engine
    from edgeagent.metrics import rss_mb

    baseline = rss_mb()
    t0 = time.perf_counter()
    # verbose: llama.cpp's load log (stderr, read by the parent) says what it allocated
    engine = Engine(job["path"], n_ctx=job["n_ctx"], n_threads=job["threads"], n_ubatch=job["n_ubatch"],
                    flash_attn=job["flash_attn"], exact=job.get("exact", False), repack=job["repack"], seed=0,
                    huge_pages=job.get("huge_pages"), track_peak_rss=False, verbose=True)
    load_ms = (time.perf_counter() - t0) * 1e3
    cached = int(job.get("cached_tokens", 0))
    prompt = bench_prompt(engine, job["prompt_tokens"] + cached)
    runs = []
    for rep in range(job["reps"] + 1):
        g = generate_after_prefix(engine, prompt, job["gen_tokens"], cached)  # the reused prefix untimed
        rate, _ = _decode_rates(g.token_times_ms)
        if rep > 0:  # the first is a warm-up (page faults, first-use allocations)
            runs.append({"ttft_ms": g.metrics.ttft_ms, "tokens_per_s": rate,
                         "prefill_tokens_per_s": g.metrics.prefill_tokens_per_s,
                         "prefill_ms": g.metrics.prefill_ms, "generated_tokens": g.metrics.generated_tokens,
                         "evaluated_prompt_tokens": g.metrics.evaluated_prompt_tokens})
    rss_after = rss_mb()
    huge_pages = engine.info()["huge_pages"]
    engine.close()
    tps = statistics.median(r["tokens_per_s"] for r in runs)
    return {
        "path": job["path"], "prompt_tokens": len(prompt) - cached, "cached_tokens": cached,
        "evaluated_prompt_tokens": max(r["evaluated_prompt_tokens"] for r in runs),
        "gen_tokens": job["gen_tokens"], "n_ctx": job["n_ctx"],
        "threads": job["threads"], "repack": engine.repack, "huge_pages": huge_pages, "reps": job["reps"],
        "rss_baseline_mb": baseline, "rss_peak_mb": _vm_hwm_mb(), "rss_after_mb": rss_after,
        "load_ms": load_ms,
        "ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
        "prefill_ms": statistics.median(r["prefill_ms"] for r in runs),
        "prefill_tokens_per_s": statistics.median(r["prefill_tokens_per_s"] for r in runs),
        "tokens_per_s": tps, "tpot_ms": 1000.0 / tps if tps else None,
        "tokens_per_s_runs": [r["tokens_per_s"] for r in runs],
        "source": "measured",
    }


def _child_baseline(job: dict[str, Any]) -> dict[str, Any]:
    import llama_cpp  # noqa: F401 - loading the library is part of the baseline

    import edgeagent.engine  # noqa: F401
    from edgeagent.metrics import rss_mb

    return {"rss_baseline_mb": rss_mb(), "source": "measured"}


def _child_vocab(job: dict[str, Any]) -> dict[str, Any]:
    from edgeagent.llama import LLAMA_LOG, llama_lib
    from edgeagent.metrics import rss_mb

    lib = llama_lib()
    LLAMA_LOG.install(False)
    before = rss_mb()
    params = lib.llama_model_default_params()
    params.vocab_only = True
    model = lib.llama_model_load_from_file(job["path"].encode("utf-8"), params)
    if not model:
        raise SystemExit(f"{job['path']}: llama.cpp could not load its vocabulary")
    after = rss_mb()
    n_tokens = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
    lib.llama_model_free(model)
    return {"path": job["path"], "n_tokens": n_tokens, "rss_before_mb": before, "rss_after_mb": after,
            "vocab_load_mb": after - before, "source": "measured"}


def _child_numpy(job: dict[str, Any]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    threads = int(job["threads"])
    data = np.ones(job["read_mib"] * 2**20 // 8, dtype=np.float64)
    slices = np.array_split(data, threads)
    best_read = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(job["reps"]):
            t = time.perf_counter()
            list(pool.map(np.sum, slices))  # numpy's reductions release the GIL
            best_read = min(best_read, time.perf_counter() - t)
    n = job["matmul_n"]
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    best_mm = float("inf")
    for _ in range(job["reps"]):
        t = time.perf_counter()
        a @ b
        best_mm = min(best_mm, time.perf_counter() - t)
    return {
        "read_gbs": data.nbytes / best_read / 1e9, "read_mib": job["read_mib"], "threads": threads,
        "matmul_gflops_f32": 2 * n**3 / best_mm / 1e9, "matmul_n": n, "reps": job["reps"], "source": "measured",
    }


def main(argv: list[str] | None = None) -> None:
    job = json.loads((argv or sys.argv[1:])[0])
    handler = {"gguf": _child_gguf, "baseline": _child_baseline, "numpy": _child_numpy, "vocab": _child_vocab}[job["job"]]
    sys.stdout.write(json.dumps(handler(job)) + "\n")


if __name__ == "__main__":
    main()
