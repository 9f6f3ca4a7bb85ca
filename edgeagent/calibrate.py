"""``edgeagent calibrate``: measure this machine and write its device profile, so the roofline
estimator (``edgeagent.estimate``) can be checked against reality here
(``edgeagent estimate --validate``).

What is measured, each in a fresh process (``edgeagent.measure``) held to ``threads``:

1. memory bandwidth: ``threads`` threads summing disjoint slices of a 256 MiB array, best of
   N: the ceiling a streaming read reaches here. A VM hides the DIMM layout, so this stands
   in for the datasheet figure the phone profiles use (``bandwidth_theoretical_gbs``);
2. compute: a float32 BLAS matmul (reported), and what the estimator uses: llama.cpp's
   prefill on the largest probe model, its FLOPs (``estimate.prefill_flops``) over the
   measured prefill time -> ``compute_gflops_sustained``;
3. decode: llama.cpp tokens/s on probe GGUFs of three sizes -- the given model (the built-in
   one by default) and two random-weight models of the same architecture and tokenizer, one
   about 1.5x and one about 5x the last-level cache. A straight line through
   (bytes read per token, time per token) gives the per-token fixed cost (the intercept:
   ``runtime.decode_overhead_ms``) and the bandwidth actually reached (1 / slope), whose
   ratio to (1) is eta (``bandwidth_efficiency``). Before the line is fitted, attention over
   the cache is measured on the given model and on a probe with 64-wide heads (decode after a
   short and a long prompt: the extra time per cached position, over attention's FLOPs) and
   taken out of each probe's time. The profile's figures (``runtime.decode_attention_gflops``
   and ``decode_attention_gflops_by_head_dim``) are measured again with the flash-attention
   setting (4) chooses. The largest probe at Q4_K_M gives how much faster Q8_0 reads per byte
   (``runtime.wide_weight_rate``); eta then stands for 4-bit weights, as on the phones. The
   bandwidth ceiling is the faster of (1) and llama.cpp's own Q8_0 decode;
4. flash attention on one agent step, off / on / exact (``runtime.flash_attn``); then the weights
   on 2 MiB pages and without them on the same step (``runtime.huge_pages``; ``edgeagent.hugepages``),
   and weight repacking on and off on the Q4_K_M probe's step (``runtime.weight_repack``; not run
   where repacking crashes, ``edgeagent.llama.default_repack``);
5. the runtime's own resident memory (``runtime.overhead_mb``): before a model loads, plus what
   a run holds beyond llama.cpp's buffers (graph and scheduler structures, library code paged
   in), read on the largest probe after a full physical batch (``run_memory``).

Power cannot be measured inside a VM (no RAPL, no battery): those figures are written as
stated assumptions, and ``sources`` says so. The profile is validated (``parse_profile``)
before it is written, and written atomically.

Random-weight probes are written with numpy + safetensors and exported by
``edgeagent.export.hf_to_gguf`` (no torch), cached by shape next to the built-in model's GGUFs.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgeagent.estimate import (attention_flops, decode_attention_s, decode_bytes_per_token, kv_cache_bytes,
                                prefill_flops, vocab_bytes)
from edgeagent.llama import ATTENTION_SETUPS
from edgeagent.shapes import MiB, shape_from_gguf
from edgeagent.measure import measure_gguf, measure_numpy, measure_runtime_baseline
from edgeagent.metrics import cpu_model
from edgeagent.profiles import nearest_head_dim

# Probe decode after an agent step's prompt (select.STEP_PROMPT_TOKENS): for a small model
# the per-token cost that is neither bytes nor FLOPs (graph, mask, softmax over the cached
# positions, sampling) grows with the context, so the fixed overhead is fitted where agent
# steps run. Enough tokens for a stable median gap.
PROBE_PROMPT_TOKENS = 256
PROBE_GEN_TOKENS = 48
PREFILL_PROMPT_TOKENS = 128
PROBE_CONTEXT = 512
PROBE_N_KV = PROBE_PROMPT_TOKENS + PROBE_GEN_TOKENS // 2  # the KV read at the middle of the decode
PROBE_ROUNDS = 3
# Decode attention: the small model's decode speed after a short and a long prompt; the
# difference per cached position, less what its KV bytes explain, is attention's cost.
ATTENTION_PROMPTS = (32, 768)
ATTENTION_CONTEXT = 1024
# Random-weight probes: llama blocks of width 768 (3 x 256, so K-quants apply), 12 query
# heads of 64, 4 KV heads, FFN 2048: ~6.3 M parameters per block, ~6.7 MB at Q8_0.
PROBE_WIDTH, PROBE_HEADS, PROBE_KV_HEADS, PROBE_FFN = 768, 12, 4, 2048
PROBE_QUANT = "q8_0"
NARROW_PROBE_QUANT = "q4_k_m"  # the largest probe again, for the 4-bit read rate (width 768 = 3 x 256: K-quants apply)
# One agent step, as the flash-attention choice weighs it: the prompt tokens a step evaluates
# and the tokens of one action (the SmolLM2 agent: ~150 evaluated, ~13 generated).
STEP_PROMPT_TOKENS = 160
STEP_GEN_TOKENS = 16
# ... on top of the episode so far, which the step reuses from the KV cache (the agent: ~527
# prompt tokens per step, ~150 of them evaluated). The depth decides flash attention: on an
# Intel Xeon host at 2 threads llama-bench's tg32 was 7 % faster with it from an empty cache
# and 33 % slower at depth 600 (115.3 / 107.8 and 59.2 / 88.8 tokens/s on the agent's Q8_0).
STEP_CACHED_TOKENS = 380
# The runtime's memory beyond llama.cpp's buffers is read after a prompt of one full physical
# batch (llama.cpp's default n_ubatch), so the compute buffer counted in the buffers is all
# touched, as in `estimate --validate`'s 512-token prompt.
MEMORY_PROMPT_TOKENS = 512
STEP_CONTEXT = 1024
# The decode, attention and prefill fits run without flash attention, whatever the engine's
# default: there attention is matrix products whose time follows their FLOPs across probe
# shapes. llama.cpp's flash-attention decode kernel walks the cache cell by cell per head,
# so its time follows heads x cells instead, and a fit across the probes' shapes failed
# (0.60 us per cached position on a 2-layer, 256-wide model made the fitted slope negative).
FIT_FLASH_ATTN = False
FLASH_ATTN_MARGIN = 0.02  # flash attention goes off only when that makes a step this much faster
WATTS_PER_BUSY_CORE = 3.75  # EPYC 9654: 360 W TDP / 96 cores; an assumption, see sources


class CalibrationError(RuntimeError):
    """Calibration cannot go on; says what is missing."""


def last_level_cache_bytes() -> int:
    """The largest CPU cache (sysfs), or 32 MiB when the system does not say."""
    best = 0
    for size_file in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = size_file.read_text().strip().upper()
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            best = max(best, int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return best or 32 * 2**20


def write_probe_model(out_dir: Path, tokenizer_dir: Path, n_layers: int, seed: int = 0) -> Path:
    """A llama checkpoint of random float16 weights (numpy + safetensors) with the tokenizer
    files of ``tokenizer_dir``: the size of the weights is all a speed probe needs."""
    import numpy as np
    from safetensors.numpy import save_file

    source = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
    vocab = int(source["vocab_size"])
    d, hd = PROBE_WIDTH, PROBE_WIDTH // PROBE_HEADS
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    tensors = {"model.embed_tokens.weight": w(vocab, d), "model.norm.weight": np.ones(d, np.float16),
               "lm_head.weight": w(vocab, d)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(d, np.float16),
            p + "post_attention_layernorm.weight": np.ones(d, np.float16),
            p + "self_attn.q_proj.weight": w(PROBE_HEADS * hd, d),
            p + "self_attn.k_proj.weight": w(PROBE_KV_HEADS * hd, d),
            p + "self_attn.v_proj.weight": w(PROBE_KV_HEADS * hd, d),
            p + "self_attn.o_proj.weight": w(d, PROBE_HEADS * hd),
            p + "mlp.gate_proj.weight": w(PROBE_FFN, d),
            p + "mlp.up_proj.weight": w(PROBE_FFN, d),
            p + "mlp.down_proj.weight": w(d, PROBE_FFN),
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d,
        "intermediate_size": PROBE_FFN, "num_hidden_layers": n_layers, "num_attention_heads": PROBE_HEADS,
        "num_key_value_heads": PROBE_KV_HEADS, "head_dim": hd, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": vocab, "tie_word_embeddings": False,
        "bos_token_id": source.get("bos_token_id"), "eos_token_id": source.get("eos_token_id"),
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out_dir / name)
    return out_dir


def probe_gguf(tokenizer_dir: Path, n_layers: int, cache: Path, threads: int | None, quant: str = PROBE_QUANT) -> Path:
    """The GGUF (Q8_0 unless ``quant`` says) of an ``n_layers`` random probe, exported once and cached."""
    from edgeagent.builtin import weights_digest
    from edgeagent.export.hf_to_gguf import export

    out = cache / f"probe-{weights_digest(tokenizer_dir)}-w{PROBE_WIDTH}-l{n_layers}-{quant}.gguf"
    if not out.is_file():
        scratch = cache / f".probe-l{n_layers}-{os.getpid()}"
        try:
            write_probe_model(scratch, tokenizer_dir, n_layers)
            export(scratch, out, quant, threads=threads)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def probe_layers_for(target_bytes: float) -> int:
    per_block = 34 / 32 * (2 * PROBE_WIDTH**2 + 2 * PROBE_WIDTH * PROBE_KV_HEADS * 64 + 3 * PROBE_WIDTH * PROBE_FFN)
    return max(1, round(target_bytes / per_block))


def fit_decode(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``seconds_per_token = overhead_s + bytes / bandwidth`` -> (overhead_s,
    bandwidth bytes/s). Needs two or more distinct sizes."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if n < 2 or sxx == 0:
        raise CalibrationError("the decode fit needs probes of at least two different sizes")
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    if slope <= 0:
        raise CalibrationError("decode time did not grow with model size (a noisy machine?); re-run calibrate")
    return my - slope * mx, 1.0 / slope


def measure_attention(path: Path, threads: int, bandwidth_bps: float, rounds: int = PROBE_ROUNDS,
                      flash_attn: bool = FIT_FLASH_ATTN) -> dict[str, Any]:
    """Decode-time attention throughput: tokens/s of ``path`` after a short and a long
    prompt (best of ``rounds``, interleaved), the extra time per cached position, less the
    KV bytes read at ``bandwidth_bps``, over attention's FLOPs per position; with llama.cpp's
    flash attention as ``flash_attn`` says."""
    short, long_ = ATTENTION_PROMPTS
    runs: dict[int, list[dict]] = {short: [], long_: []}
    for _ in range(rounds):
        for n in (short, long_):
            runs[n].append(measure_gguf(path, prompt_tokens=n, gen_tokens=PROBE_GEN_TOKENS, n_ctx=ATTENTION_CONTEXT,
                                        threads=threads, flash_attn=flash_attn))
    tpot = {n: min(m["tpot_ms"] for m in runs[n]) / 1e3 for n in runs}
    shape = shape_from_gguf(path)
    mid = PROBE_GEN_TOKENS // 2
    positions = long_ - short
    kv_s = (decode_bytes_per_token(shape, long_ + mid) - decode_bytes_per_token(shape, short + mid)) / bandwidth_bps
    per_position_s = (tpot[long_] - tpot[short] - kv_s) / positions
    if per_position_s <= 0:
        raise CalibrationError(f"decode did not slow down from {short} to {long_} cached positions on {path.name} "
                               "(a noisy machine?); re-run calibrate")
    return {"model": path.name, "flash_attn": flash_attn, "prompt_tokens": [short, long_],
            "tpot_ms": [tpot[short] * 1e3, tpot[long_] * 1e3],
            "us_per_cached_position": per_position_s * 1e6,
            "attention_gflops": attention_flops(shape, 1) / per_position_s / 1e9}


def narrow_read(path: Path, threads: int, overhead_s: float, wide_bps: float, attention_table: dict[str, float],
                rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """The decode of a Q4_K_M probe, measured as the Q8_0 probes are, read against their fit:
    its time per token less the fitted per-token cost, attention and its wide bytes (KV cache,
    norms, any Q8_0 tensor) at the Q8_0 rate leaves its 4-bit bytes' time. ``wide_weight_rate``
    is the Q8_0 rate over that one (1.0 where 4-bit reads as fast or faster: the profile's
    field cannot say a wide byte is slower)."""
    (point,) = _probe_points([path], threads, rounds, attention_table=attention_table)
    shape = shape_from_gguf(path)
    wide, narrow = shape.decode_weight_bytes
    wide += kv_cache_bytes(shape, PROBE_N_KV)
    narrow_s = (point["tpot_ms"] - point["attention_ms"]) / 1e3 - overhead_s - wide / wide_bps
    reached = narrow / narrow_s if narrow_s > 0 else float("inf")
    return {"model": path.name, "tokens_per_s": point["tokens_per_s"], "tpot_ms": point["tpot_ms"],
            "narrow_bytes": narrow, "wide_bytes": wide, "reached_gbs": reached / 1e9,
            "wide_weight_rate": max(1.0, wide_bps / reached)}


def attention_by_head_dim(probes: Sequence[Path], threads: int, bandwidth_bps: float, flash_attn: bool,
                          say: Callable[[str], None], first: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``measure_attention`` on the given model (``probes[0]``; ``first`` if already measured)
    and on the first random probe when its head dimension differs (``PROBE_WIDTH`` /
    ``PROBE_HEADS`` = 64, the head size of most real models), keyed by head dimension.
    Attention's small per-head ops run at very different rates on different head sizes (on an
    AMD EPYC at 1 thread, flash attention off: the built-in model's head_dim 32 at ~7 GFLOP/s,
    head_dim 64 at ~39), so each model takes the nearest (``Runtime.attention_gflops``)."""
    table = {str(shape_from_gguf(probes[0]).head_dim): first or measure_attention(probes[0], threads, bandwidth_bps,
                                                                                 flash_attn=flash_attn)}
    if len(probes) > 1 and str(shape_from_gguf(probes[1]).head_dim) not in table:
        measured = measure_attention(probes[1], threads, bandwidth_bps, flash_attn=flash_attn)
        table[str(shape_from_gguf(probes[1]).head_dim)] = measured
        say(f"      {probes[1].name}: {measured['us_per_cached_position']:.2f} us per cached position, attention at "
            f"{measured['attention_gflops']:.2f} GFLOP/s (flash attention {'on' if flash_attn else 'off'})")
    return table


def measure_flash_attn(path: Path, threads: int, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """One agent step's time (prefill of ``STEP_PROMPT_TOKENS`` on top of
    ``STEP_CACHED_TOKENS`` already cached, then ``STEP_GEN_TOKENS`` decoded at that depth) in
    each of ``ATTENTION_SETUPS``, in ``rounds`` interleaved rounds, the best round of each kept,
    and whether each is exact here (``exactness``); the choice is ``choose_flash_attn``'s."""
    sides = _step_sides(path, threads, ATTENTION_SETUPS, rounds)
    return {"model": path.name, "prompt_tokens": STEP_PROMPT_TOKENS, "cached_tokens": STEP_CACHED_TOKENS,
            "gen_tokens": STEP_GEN_TOKENS, "rounds": rounds, **sides, "exact_here": exactness(path, threads),
            "flash_attn": choose_flash_attn(sides["off"]["step_ms"], sides["on"]["step_ms"])}


def _step_sides(path: Path, threads: int, setups: dict[str, dict[str, Any]], rounds: int) -> dict[str, dict]:
    """One agent step (``STEP_PROMPT_TOKENS`` on ``STEP_CACHED_TOKENS`` cached, then
    ``STEP_GEN_TOKENS`` decoded) in each set-up (``measure_gguf`` keyword arguments), in
    ``rounds`` interleaved rounds, the best round of each kept."""
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, setup in setups.items():
            runs[name].append(measure_gguf(path, prompt_tokens=STEP_PROMPT_TOKENS, gen_tokens=STEP_GEN_TOKENS,
                                           n_ctx=STEP_CONTEXT, threads=threads, cached_tokens=STEP_CACHED_TOKENS,
                                           **setup))
    sides = {}
    for name, ms in runs.items():
        prefill_ms, tpot_ms = min(m["prefill_ms"] for m in ms), min(m["tpot_ms"] for m in ms)
        sides[name] = {"prefill_ms": prefill_ms, "tpot_ms": tpot_ms, "step_ms": step_ms(prefill_ms, tpot_ms),
                       "prefill_tokens_per_s": max(m["prefill_tokens_per_s"] for m in ms),
                       "tokens_per_s": max(m["tokens_per_s"] for m in ms),
                       "huge_mb": max((m.get("huge_pages") or {}).get("huge_mb", 0.0) for m in ms)}
    return sides


def measure_huge_pages(path: Path, threads: int, flash_attn: bool, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """One agent step (with the chosen flash attention) with the weights on 2 MiB pages and
    loaded as without them (memory-mapped, or read on 4 KiB pages where llama.cpp repacks); the
    choice is ``choose_huge_pages``'s. Where the kernel gives no transparent huge pages there is
    nothing to measure (``huge_pages`` None)."""
    from edgeagent.hugepages import available, thp_mode

    if not available():
        return {"model": path.name, "thp": thp_mode(), "huge_pages": None}
    sides = _step_sides(path, threads, {"on": {"flash_attn": flash_attn, "huge_pages": True},
                                        "off": {"flash_attn": flash_attn, "huge_pages": False}}, rounds)
    return {"model": path.name, "thp": thp_mode(), "rounds": rounds, **sides,
            "huge_pages": choose_huge_pages(sides["off"]["step_ms"], sides["on"]["step_ms"])}


def measure_repack(path: Path, threads: int, flash_attn: bool, rounds: int = PROBE_ROUNDS) -> dict[str, Any]:
    """One agent step on ``path`` (a model whose weights llama.cpp repacks here: the Q4_K_M
    probe) with weight repacking on and off; the choice is ``choose_repack``'s. Where repacking
    is off by default (an x86 CPU with Intel AMX, whose repack buffer segfaults on quantized
    models: ``edgeagent.llama.default_repack``) it is not run, and stays off."""
    from edgeagent.llama import default_repack
    from edgeagent.shapes import REPACKED_TYPES, repack_arch

    arch = repack_arch(platform.machine())
    repacked = shape_from_gguf(path).repacked_bytes(REPACKED_TYPES[arch]) if arch else 0
    if not default_repack():
        return {"model": path.name, "weight_repack": False, "measured": False,
                "why": "off by default on this CPU (Intel AMX: llama.cpp's repack buffer crashes), not run"}
    if not repacked:
        return {"model": path.name, "weight_repack": True, "measured": False,
                "why": f"llama.cpp repacks none of {path.name}'s weights on this CPU: nothing to measure, on"}
    sides = _step_sides(path, threads, {"on": {"flash_attn": flash_attn, "repack": True},
                                        "off": {"flash_attn": flash_attn, "repack": False}}, rounds)
    return {"model": path.name, "rounds": rounds, "measured": True, "repacked_mb": repacked / 2**20, **sides,
            "weight_repack": choose_repack(sides["off"]["step_ms"], sides["on"]["step_ms"])}


def choose_repack(off_step_ms: float, on_step_ms: float, *, margin: float = FLASH_ATTN_MARGIN) -> bool:
    """Repacking off only when a step is at least ``margin`` faster without it (llama.cpp's
    default, on, stays within the noise)."""
    return not off_step_ms < on_step_ms * (1.0 - margin)


def choose_huge_pages(off_step_ms: float, on_step_ms: float, *, margin: float = FLASH_ATTN_MARGIN) -> bool:
    """Huge pages off only when the load without them makes a step at least ``margin`` faster
    (the engine's default, on where the kernel gives them, stays within the noise)."""
    return not off_step_ms < on_step_ms * (1.0 - margin)


def exactness(path: Path, threads: int) -> dict[str, bool]:
    """Whether llama.cpp's output here depends only on the tokens, not on how they reached the
    KV cache, in each of ``ATTENTION_SETUPS``: sampled tokens of a fresh context, of the same
    context again (the prompt's prefix reused, its last token re-evaluated alone), of a context
    that holds the prompt's first half already (the rest evaluated on top of it, as an agent
    step extends its episode) and of a second fresh context must agree. The engine's prefix
    reuse, forced-token batching and speculative verification give a fresh evaluation's bits
    only where they do; elsewhere they agree to llama.cpp's rounding. On 0.3.36's CPU kernels
    flash attention on is not exact, off is not exact on the shipped SmolLM2 agent (one token
    evaluated alone takes another KQ kernel), and the exact set-up is
    (``edgeagent.llama.EXACT_KV_TYPES``); this checks it on the machine and model at hand."""
    from edgeagent.engine import Engine

    sample = dict(max_tokens=STEP_GEN_TOKENS, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    out = {}
    for name, setup in ATTENTION_SETUPS.items():
        kw = dict(n_ctx=STEP_CONTEXT, n_threads=threads, track_peak_rss=False, **setup)
        runs = []
        with Engine(path, **kw) as engine:
            n_vocab = engine.llm.n_vocab()
            prompt = [(7919 * i) % (n_vocab - 3) + 3 for i in range(STEP_PROMPT_TOKENS)]  # spread over the vocabulary
            runs += [engine.generate(prompt, **sample).tokens, engine.generate(prompt, **sample).tokens]
        with Engine(path, **kw) as engine:
            engine.generate(prompt[:len(prompt) // 2], **{**sample, "max_tokens": 1})
            runs.append(engine.generate(prompt, **sample).tokens)
        with Engine(path, **kw) as engine:
            runs.append(engine.generate(prompt, **sample).tokens)
        out[name] = all(r == runs[0] for r in runs)
    return out


def step_ms(prefill_ms: float, tpot_ms: float) -> float:
    """An agent step's model time: the prompt's prefill, then every action token but the first
    at the decode rate (the first comes out of the prefill)."""
    return prefill_ms + (STEP_GEN_TOKENS - 1) * tpot_ms


def choose_flash_attn(off_step_ms: float, on_step_ms: float, *, margin: float = FLASH_ATTN_MARGIN) -> bool:
    """Flash attention off only when that makes a step at least ``margin`` faster: within the
    noise of a shared machine the engine's default (on, llama.cpp's) stays. Exactness does not
    decide it: neither side is exact on the shipped agent, and a run that needs exactness asks
    for the exact set-up (``LlamaSettings.exact``)."""
    return not off_step_ms < on_step_ms * (1.0 - margin)


def _probe_points(paths: Sequence[Path], threads: int, rounds: int = PROBE_ROUNDS,
                  attention_table: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Decode speed of every probe, measured in ``rounds`` interleaved rounds (probe 1, 2, 3,
    then again), best round kept: on a shared machine another job's memory traffic comes and
    goes, and interleaving spreads it over all probes instead of landing on one, which would
    tilt the fitted line; the best round is the machine's capability, like the bandwidth's
    best of N."""
    runs: dict[Path, list[dict]] = {p: [] for p in paths}
    for _ in range(rounds):
        for p in paths:
            runs[p].append(measure_gguf(p, prompt_tokens=PROBE_PROMPT_TOKENS, gen_tokens=PROBE_GEN_TOKENS,
                                        n_ctx=PROBE_CONTEXT, threads=threads, flash_attn=FIT_FLASH_ATTN))
    points = []
    for p in paths:
        shape = shape_from_gguf(p)
        best = max(runs[p], key=lambda m: m["tokens_per_s"])
        attention_ms = (decode_attention_s(shape, PROBE_N_KV, nearest_head_dim(attention_table, shape.head_dim)) * 1e3
                        if attention_table else 0.0)
        points.append({"model": p.name, "weights_mb": shape.weights_bytes / 2**20,
                       "bytes_per_token": decode_bytes_per_token(shape, PROBE_N_KV), "tpot_ms": best["tpot_ms"],
                       "attention_ms": attention_ms,
                       "tokens_per_s": best["tokens_per_s"], "rss_peak_mb": best["rss_peak_mb"],
                       "tokens_per_s_rounds": [m["tokens_per_s"] for m in runs[p]]})
    return points


def calibrate(model_dir: Path | None = None, *, threads: int | None = None, cache: Path | None = None,
              probe_bytes: Sequence[float] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure this machine; returns the profile (as TOML-ready data) and the measurements.
    ``probe_bytes``: weight sizes of the random probes (default 1.5x and 5x the last-level
    cache, so decode streams from memory as it does for real models on phones)."""
    from edgeagent.builtin import builtin_gguf, builtin_model_dir, cache_dir

    say = log or (lambda m: None)
    threads = threads or os.cpu_count() or 1
    given = model_dir is not None
    model_dir = Path(model_dir) if given else builtin_model_dir()
    cache = cache or cache_dir() / "calibrate"
    cache.mkdir(parents=True, exist_ok=True)

    say(f"[1/5] memory bandwidth and BLAS ({threads} thread(s))")
    numpy_m = measure_numpy(threads)
    bandwidth_gbs = numpy_m["read_gbs"]
    say(f"      streaming read {bandwidth_gbs:.1f} GB/s, f32 matmul {numpy_m['matmul_gflops_f32']:.0f} GFLOP/s")

    say("[2/5] probe models")
    if not given:
        small = builtin_gguf(PROBE_QUANT)
    else:
        from edgeagent.builtin import weights_digest
        from edgeagent.export.hf_to_gguf import export

        small = cache / f"model-{weights_digest(model_dir)}-{PROBE_QUANT}.gguf"
        if not small.is_file():
            export(model_dir, small, PROBE_QUANT, threads=threads)
    llc = last_level_cache_bytes()
    sizes = list(probe_bytes) if probe_bytes else [1.5 * llc, 5.0 * llc]
    layers: list[int] = []
    for b in sorted(sizes):  # distinct sizes, or the fit has nothing to fit
        layers.append(max(probe_layers_for(b), layers[-1] + 1 if layers else 1))
    probes = [small] + [probe_gguf(model_dir, n, cache, threads) for n in layers]

    say("[3/5] llama.cpp decode and prefill")
    attention = measure_attention(small, threads, bandwidth_gbs * 1e9)
    say(f"      {small.name}: decode {attention['tpot_ms'][0]:.3f} / {attention['tpot_ms'][1]:.3f} ms per token after "
        f"{ATTENTION_PROMPTS[0]} / {ATTENTION_PROMPTS[1]} prompt tokens -> {attention['us_per_cached_position']:.2f} us "
        f"per cached position, attention at {attention['attention_gflops']:.2f} GFLOP/s")
    # Attention's small per-head ops run at very different rates on different head sizes, so a
    # model of real geometry is measured too (attention_by_head_dim).
    fit_attention = attention_by_head_dim(probes, threads, bandwidth_gbs * 1e9, FIT_FLASH_ATTN, say, attention)
    small_dim = str(shape_from_gguf(small).head_dim)
    points = _probe_points(probes, threads,
                           attention_table={dim: a["attention_gflops"] for dim, a in fit_attention.items()})
    for pt in points:
        rounds = ", ".join(f"{x:.0f}" for x in pt["tokens_per_s_rounds"])
        say(f"      {pt['model']}: {pt['weights_mb']:.1f} MiB, {pt['tokens_per_s']:.1f} tokens/s (rounds: {rounds})")
    # the line is fitted to what is left once attention (measured above) is taken out
    overhead_s, reached_bps = fit_decode([(pt["bytes_per_token"], (pt["tpot_ms"] - pt["attention_ms"]) / 1e3)
                                          for pt in points])
    # The same largest probe at Q4_K_M: how much slower per byte llama.cpp reads 4-bit weights
    # than Q8_0 (its kernels unpack every block), the profile's runtime.wide_weight_rate, as the
    # phone profiles have it from published runs.
    narrow_probe = probe_gguf(model_dir, layers[-1], cache, threads, quant=NARROW_PROBE_QUANT)
    narrow = narrow_read(narrow_probe, threads, overhead_s, reached_bps,
                         {dim: a["attention_gflops"] for dim, a in fit_attention.items()})
    wide_rate = narrow["wide_weight_rate"]
    say(f"      {narrow['model']}: {narrow['tokens_per_s']:.1f} tokens/s -> 4-bit weights read at "
        f"{narrow['reached_gbs']:.1f} GB/s, Q8_0 {wide_rate:.2f}x as fast per byte")
    eta_raw = reached_bps / (bandwidth_gbs * 1e9)
    # The ceiling stands for the datasheet figure a VM hides: the fastest stream measured here,
    # numpy's or llama.cpp's own decode (its AVX loads can outrun numpy's one-thread sum), so
    # eta is llama.cpp's share of it and never exceeds 1.
    ceiling_gbs = max(bandwidth_gbs, reached_bps / 1e9)
    eta = reached_bps / wide_rate / (ceiling_gbs * 1e9)  # eta stands for 4-bit weights, as on the phones
    overhead_ms = max(0.0, overhead_s * 1e3)
    for pt in points:  # what the fitted line says for each probe
        pt["fitted_tpot_ms"] = (overhead_s + pt["bytes_per_token"] / reached_bps) * 1e3 + pt["attention_ms"]

    big = probes[-1]
    prefill = max((measure_gguf(big, prompt_tokens=PREFILL_PROMPT_TOKENS, gen_tokens=2, n_ctx=PROBE_CONTEXT,
                                threads=threads, flash_attn=FIT_FLASH_ATTN) for _ in range(PROBE_ROUNDS)),
                  key=lambda m: m["prefill_tokens_per_s"])
    flops = prefill_flops(shape_from_gguf(big), prefill["prompt_tokens"])
    compute_gflops = flops / (prefill["prefill_ms"] / 1e3) / 1e9
    say(f"      prefill {prefill['prefill_tokens_per_s']:.0f} tokens/s on {big.name} -> {compute_gflops:.1f} GFLOP/s; "
        f"decode fit: {overhead_ms:.3f} ms + bytes / {reached_bps / 1e9:.1f} GB/s (eta {eta_raw:.2f})")

    say(f"[4/5] flash attention, huge pages and repacking on one agent step ({STEP_PROMPT_TOKENS} prompt tokens on {STEP_CACHED_TOKENS} cached + {STEP_GEN_TOKENS} generated)")
    flash = measure_flash_attn(big, threads)
    say(f"      {big.name}: step " + ", ".join(f"{flash[k]['step_ms']:.1f} ms {k}" for k in ATTENTION_SETUPS)
        + "; a reused prefix gives a fresh context's tokens: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flash["exact_here"].items())
        + f" -> flash_attn {'on' if flash['flash_attn'] else 'off'}")

    huge = measure_huge_pages(big, threads, flash["flash_attn"])
    if huge["huge_pages"] is None:
        say(f"      weights on 2 MiB pages: not measured, the kernel gives none (THP {huge['thp'] or 'absent'})")
    else:
        say(f"      {big.name}: step {huge['on']['step_ms']:.1f} ms with the weights on 2 MiB pages "
            f"({huge['on']['huge_mb']:.0f} MiB), {huge['off']['step_ms']:.1f} ms on 4 KiB pages "
            f"-> huge_pages {'on' if huge['huge_pages'] else 'off'}")

    repack = measure_repack(narrow_probe, threads, flash["flash_attn"])
    if repack["measured"]:
        say(f"      {repack['model']} ({repack['repacked_mb']:.1f} MiB repacked here): step {repack['on']['step_ms']:.1f} ms "
            f"with weight repacking, {repack['off']['step_ms']:.1f} ms without -> weight_repack "
            f"{'on' if repack['weight_repack'] else 'off'}")
    else:
        say(f"      weight repacking: {repack['why']}")

    if flash["flash_attn"] == FIT_FLASH_ATTN:
        profile_attention = fit_attention
    else:  # the profile's decode runs with the chosen setting: its attention is measured so too
        say(f"      decode attention with flash attention {'on' if flash['flash_attn'] else 'off'}, as the profile runs:")
        profile_attention = attention_by_head_dim(probes, threads, bandwidth_gbs * 1e9, flash["flash_attn"], say)
        first = profile_attention[small_dim]
        say(f"      {small.name}: {first['us_per_cached_position']:.2f} us per cached position, attention at "
            f"{first['attention_gflops']:.2f} GFLOP/s")

    say("[5/5] runtime memory")
    baseline_mb = measure_runtime_baseline(threads)["rss_baseline_mb"]
    memory = run_memory(big, threads, flash["flash_attn"])
    overhead_mb = baseline_mb + (memory["extra_mb"] or 0.0)
    say(f"      {baseline_mb:.1f} MiB before a model loads; {big.name} after a {MEMORY_PROMPT_TOKENS}-token prompt: "
        + (f"peak {memory['rss_peak_mb']:.1f} = that process's {memory['rss_baseline_mb']:.1f} + llama.cpp's buffers "
           f"{memory['buffers_mb']:.1f} + its vocabulary {memory['vocab_mb']:.1f} + {memory['extra_mb']:.1f} more"
           if memory["extra_mb"] is not None
           else "llama.cpp's load log did not give its buffers, so only the baseline counts"))

    return {
        "profile": host_profile_data(bandwidth_gbs=ceiling_gbs, numpy_gbs=bandwidth_gbs, eta=eta,
                                     compute_gflops=compute_gflops,
                                     threads=threads, overhead_mb=overhead_mb, baseline_mb=baseline_mb,
                                     memory=memory, decode_overhead_ms=overhead_ms,
                                     numpy_m=numpy_m, points=points, eta_raw=eta_raw, llc=llc,
                                     prefill=prefill, big=big.name,
                                     attention=profile_attention[small_dim],
                                     attention_by_head_dim=profile_attention, flash=flash, narrow=narrow,
                                     huge=huge, repack=repack),
        "measurements": {
            "numpy": numpy_m, "decode_probes": points, "decode_attention": attention,
            "decode_attention_by_head_dim": {"fit": fit_attention, "profile": profile_attention},
            "decode_fit": {"overhead_ms": overhead_ms, "bandwidth_reached_gbs": reached_bps / 1e9,
                           "eta": eta, "eta_of_numpy_read": eta_raw, "ceiling_gbs": ceiling_gbs},
            "narrow_read": narrow,
            "prefill": {"model": big.name, "prompt_tokens": prefill["prompt_tokens"], "prefill_ms": prefill["prefill_ms"],
                        "prefill_tokens_per_s": prefill["prefill_tokens_per_s"], "gflops_effective": compute_gflops},
            "flash_attn": flash, "huge_pages": huge, "weight_repack": repack,
            "runtime_baseline_mb": baseline_mb, "run_memory": memory, "last_level_cache_bytes": llc, "threads": threads,
            "source": "measured",
        },
    }


def _cpu_ghz() -> float:
    try:
        import psutil

        freq = psutil.cpu_freq()
        if freq and freq.current:
            return round(freq.current / 1000, 2)
    except Exception:  # noqa: BLE001 - psutil may not know on a VM
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return round(float(line.split(":")[1]) / 1000, 2)
    except (OSError, ValueError):
        pass
    return 1.0


def run_memory(path: Path, threads: int, flash_attn: bool) -> dict[str, Any]:
    """What a process holds beyond the runtime's baseline, llama.cpp's buffers and the model's
    vocabulary (``estimate.vocab_bytes``, counted per model) once a model has run a full
    physical batch (``MEMORY_PROMPT_TOKENS``, so its compute buffer is all touched): llama.cpp's
    graph and scheduler structures, the library code a run pages in, the Python side's arrays.
    ``extra_mb`` is None when the load log does not give the buffers."""
    m = measure_gguf(path, prompt_tokens=MEMORY_PROMPT_TOKENS, gen_tokens=8, n_ctx=ATTENTION_CONTEXT,
                     threads=threads, flash_attn=flash_attn)
    buffers = m["llama_cpp_buffers_mb"]
    known = None if any(buffers.get(k) is None for k in ("model", "kv_cache", "compute")) else \
        sum(v or 0.0 for v in buffers.values())
    vocab_mb = vocab_bytes(shape_from_gguf(path)) / MiB  # the estimator counts it per model
    extra = None if known is None else max(0.0, m["rss_peak_mb"] - m["rss_baseline_mb"] - known - vocab_mb)
    return {"model": path.name, "prompt_tokens": MEMORY_PROMPT_TOKENS, "flash_attn": flash_attn,
            "rss_baseline_mb": m["rss_baseline_mb"], "rss_peak_mb": m["rss_peak_mb"], "buffers_mb": known,
            "vocab_mb": vocab_mb, "llama_cpp_buffers_mb": buffers, "extra_mb": extra}


def host_profile_data(*, bandwidth_gbs: float, eta: float, compute_gflops: float, threads: int, overhead_mb: float,
                      numpy_gbs: float | None = None,
                      baseline_mb: float | None = None, memory: dict[str, Any] | None = None,
                      decode_overhead_ms: float, numpy_m: dict, points: list[dict], eta_raw: float, llc: int,
                      prefill: dict, big: str, attention: dict, flash: dict,
                      attention_by_head_dim: dict[str, dict] | None = None,
                      narrow: dict[str, Any] | None = None, huge: dict[str, Any] | None = None,
                      repack: dict[str, Any] | None = None) -> dict[str, Any]:
    """The host profile as data (the TOML's tables), every number with its source."""
    import psutil

    from edgeagent.engine import default_repack

    cpu = cpu_model()
    today = _dt.date.today().isoformat()
    stamp = f"measured by edgeagent calibrate on {today}, {cpu} ({platform.machine()})"
    ram_gib = psutil.virtual_memory().total / 2**30
    cores = os.cpu_count() or 1
    probes = "; ".join(f"{p['model']} {p['weights_mb']:.1f} MiB: {p['tokens_per_s']:.1f} tokens/s" for p in points)
    return {
        "name": "host",
        "soc": f"{cpu} ({platform.machine()})",
        "kind": "host",
        "example_device": f"this machine: {cores} CPU(s), {ram_gib:.1f} GiB",
        "ram_gb": round(ram_gib, 2),
        "usable_memory_gb": round(0.5 * ram_gib, 2),
        "memory_type": "unknown (a VM hides it): bandwidth measured instead",
        "bandwidth_theoretical_gbs": round(bandwidth_gbs, 2),
        "bandwidth_efficiency": round(eta, 4),
        "compute_gflops_sustained": round(compute_gflops, 2),
        "cpu_clusters": [{"name": "cpu", "cores": cores, "ghz": _cpu_ghz(), "core": cpu}],
        "power": {"prefill_w": WATTS_PER_BUSY_CORE * threads, "decode_w": WATTS_PER_BUSY_CORE * threads, "idle_w": 0.0},
        "battery": {"nominal_v": 3.87},
        "runtime": {"threads": threads, "weight_repack": repack["weight_repack"] if repack else default_repack(),
                    "flash_attn": flash["flash_attn"],
                    **({} if not huge or huge["huge_pages"] is None else {"huge_pages": huge["huge_pages"]}),
                    "overhead_mb": round(overhead_mb, 1),
                    "decode_overhead_ms": round(decode_overhead_ms, 4),
                    "wide_weight_rate": round(narrow["wide_weight_rate"], 3) if narrow else 1.0,
                    "decode_attention_gflops": round(attention["attention_gflops"], 3),
                    "decode_attention_gflops_by_head_dim": {dim: round(a["attention_gflops"], 3)
                                                            for dim, a in (attention_by_head_dim or {}).items()}},
        "sources": [
            {"what": f"bandwidth_theoretical_gbs = {bandwidth_gbs:.2f}: the fastest stream measured here (a VM hides the "
                     "DIMM layout, so the measured ceiling stands in for the datasheet figure): a streaming read, "
                     f"{numpy_m['threads']} thread(s) summing a {numpy_m['read_mib']} MiB float64 array, best of "
                     f"{numpy_m['reps']}: {numpy_gbs if numpy_gbs is not None else bandwidth_gbs:.2f} GB/s; llama.cpp's "
                     f"decode of the Q8_0 probes below: "
                     f"{bandwidth_gbs * eta * (narrow['wide_weight_rate'] if narrow else 1.0):.2f} GB/s", "citation": stamp},
            {"what": "runtime.wide_weight_rate = " + (f"{narrow['wide_weight_rate']:.3f}: {narrow['model']} decoded at "
                     f"{narrow['tokens_per_s']:.1f} tokens/s, measured as the Q8_0 probes below; less their fitted per-token "
                     f"cost, its attention and its {narrow['wide_bytes'] / 2**20:.1f} MiB of wide reads (KV cache, Q8_0 and F32 "
                     f"tensors) at the Q8_0 rate, its {narrow['narrow_bytes'] / 2**20:.1f} MiB of 4-bit weights read at "
                     f"{narrow['reached_gbs']:.2f} GB/s; bandwidth_efficiency stands for those, as on the phone profiles "
                     "(calibrate.narrow_read)" if narrow else "1.0: not measured"), "citation": stamp},
            {"what": f"bandwidth_efficiency = {eta:.4f} (of 4-bit weights: the Q8_0 fit's rate over wide_weight_rate; "
                     f"{eta_raw:.4f} of the numpy read at Q8_0) and runtime.decode_overhead_ms = "
                     f"{decode_overhead_ms:.4f}: least-squares line through llama.cpp decode time per token vs bytes "
                     f"read per token on {len(points)} Q8_0 probes, best of {PROBE_ROUNDS} interleaved rounds ({probes}); last-level cache {llc / 2**20:.0f} MiB",
             "citation": stamp},
            {"what": f"runtime.decode_attention_gflops = {attention['attention_gflops']:.3f}: llama.cpp decode of "
                     f"{attention['model']} after {ATTENTION_PROMPTS[0]} and {ATTENTION_PROMPTS[1]} prompt tokens "
                     f"({attention['tpot_ms'][0]:.3f} / {attention['tpot_ms'][1]:.3f} ms per token, best of {PROBE_ROUNDS}): "
                     f"{attention['us_per_cached_position']:.3f} us per cached position beyond its KV bytes, over "
                     "attention's FLOPs per position (estimate.attention_flops), with flash attention "
                     f"{'on' if attention.get('flash_attn') else 'off'} as runtime.flash_attn runs it (the decode fit "
                     "above takes attention out of each probe at its rate with flash attention off, as the probes ran)",
             "citation": stamp},
            {"what": "runtime.decode_attention_gflops_by_head_dim = "
                     + ", ".join(f"{dim}: {a['attention_gflops']:.3f} ({a['model']}, {a['us_per_cached_position']:.3f} us "
                                 "per cached position)" for dim, a in (attention_by_head_dim or {}).items())
                     + ": the same measurement on a model of each head dimension; a model takes the nearest "
                     "(Runtime.attention_gflops), as small heads run attention's per-head ops far below larger ones' rate",
             "citation": stamp},
            {"what": f"compute_gflops_sustained = {compute_gflops:.2f}: llama.cpp prefill of {prefill['prompt_tokens']} "
                     f"tokens on {big} (best of {PROBE_ROUNDS}) ({prefill['prefill_tokens_per_s']:.0f} tokens/s), FLOPs by "
                     f"estimate.prefill_flops; f32 BLAS matmul for reference: {numpy_m['matmul_gflops_f32']:.1f} GFLOP/s",
             "citation": stamp},
            {"what": f"runtime.flash_attn = {str(flash['flash_attn']).lower()}: one agent step ({flash['prompt_tokens']} "
                     f"prompt tokens on {flash['cached_tokens']} cached, {flash['gen_tokens']} generated) on {flash['model']}, best of {flash['rounds']} "
                     f"interleaved rounds: {flash['off']['step_ms']:.1f} ms with llama.cpp's flash attention off, "
                     f"{flash['on']['step_ms']:.1f} ms on (prefill {flash['off']['prefill_tokens_per_s']:.0f} / "
                     f"{flash['on']['prefill_tokens_per_s']:.0f} tokens/s, decode {flash['off']['tokens_per_s']:.1f} / "
                     f"{flash['on']['tokens_per_s']:.1f}); off only when at least {FLASH_ATTN_MARGIN:.0%} faster. "
                     f"The exact set-up (flash attention, Q8_0 keys, F16 values): {flash['exact']['step_ms']:.1f} ms. "
                     "A reused prefix gave the tokens of a fresh context (calibrate.exactness): "
                     + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flash["exact_here"].items()),
             "citation": stamp},
            *([{"what": f"runtime.weight_repack = {str(repack['weight_repack']).lower()}: "
                         + (f"one agent step on {repack['model']} ({repack['repacked_mb']:.1f} MiB of its weights repacked "
                            f"here), best of {repack['rounds']} interleaved rounds: {repack['on']['step_ms']:.1f} ms with "
                            f"llama.cpp's weight repacking, {repack['off']['step_ms']:.1f} ms without (decode "
                            f"{repack['on']['tokens_per_s']:.1f} / {repack['off']['tokens_per_s']:.1f} tokens/s); off only "
                            f"when at least {FLASH_ATTN_MARGIN:.0%} faster" if repack["measured"] else repack["why"]),
                 "citation": stamp}] if repack else []),
            *([{"what": f"runtime.huge_pages = {str(huge['huge_pages']).lower()}: the same step on {huge['model']}, best of "
                         f"{huge['rounds']} interleaved rounds: {huge['on']['step_ms']:.1f} ms with the weights on 2 MiB pages "
                         f"({huge['on']['huge_mb']:.0f} MiB; decode {huge['on']['tokens_per_s']:.1f} tokens/s), "
                         f"{huge['off']['step_ms']:.1f} ms on 4 KiB pages, loaded as without them ({huge['off']['tokens_per_s']:.1f}); off "
                         f"only when at least {FLASH_ATTN_MARGIN:.0%} faster (kernel THP setting {huge['thp']!r})",
                 "citation": stamp}] if huge and huge["huge_pages"] is not None else []),
            {"what": f"runtime.overhead_mb = {overhead_mb:.1f}: RSS of a fresh Python process with llama.cpp loaded "
                     f"and no model ({baseline_mb if baseline_mb is not None else overhead_mb:.1f})"
                     + (f", plus what a run holds beyond llama.cpp's buffers and the model's vocabulary "
                        f"({memory['extra_mb']:.1f}: {memory['model']} after a {memory['prompt_tokens']}-token prompt "
                        f"peaked at {memory['rss_peak_mb']:.1f} MiB, its process's {memory['rss_baseline_mb']:.1f} "
                        f"before the load plus the buffers' {memory['buffers_mb']:.1f} plus its vocabulary's "
                        f"{memory['vocab_mb']:.1f} (estimate.vocab_bytes); calibrate.run_memory)" if memory and memory.get("extra_mb") is not None
                        else "")
                     + f"; runtime.threads = {threads} (the threads calibrated with)", "citation": stamp},
            {"what": f"ram_gb from the OS ({ram_gib:.2f} GiB); usable_memory_gb = 0.5 x RAM: the machine is shared "
                     "(assumption)", "citation": stamp},
            {"what": f"power {WATTS_PER_BUSY_CORE} W per busy core (EPYC 9654: 360 W TDP / 96 cores), idle 0 W, "
                     "battery.nominal_v = 3.87 V (a phone cell, so host mAh compare with phones): assumptions -- "
                     "no RAPL counters or battery here, so host energy is estimated, never measured",
             "citation": "assumption"},
        ],
    }


# --- TOML --------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table; the keys are bare keys
        for key in value:
            if not (isinstance(key, str) and key and all(c.isalnum() or c in "_-" for c in key)):
                raise ValueError(f"cannot write {key!r} as a TOML bare key")
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    raise TypeError(f"no TOML form for {type(value).__name__}")


def to_toml(data: dict[str, Any], header: str = "") -> str:
    """Scalars first, then tables, then arrays of tables: the profile's shape, no library."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    scalars = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in data.items() if isinstance(v, list)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    for name, items in arrays.items():
        for item in items:
            lines += ["", f"[[{name}]]"] + [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(lines) + "\n"


def write_profile(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Validate (the same check ``load_profile`` does), then write atomically."""
    from edgeagent.profiles import parse_profile
    from edgeagent.atomic import write_text

    path = Path(path)
    parse_profile(data, str(path))  # ProfileError names the key if calibrate produced a bad one
    header = ("This machine, measured by `edgeagent calibrate` (re-run it to refresh).\n"
              "Every number's origin is in `sources`; power figures are assumptions.")
    return write_text(path, to_toml(data, header))


# --- estimate vs measured ----------------------------------------------------------------


def validate_estimates(variants: Sequence[Any], profile: Any, *, prompt_tokens: int = 64, gen_tokens: int = 64,
                       n_ctx: int | None = None, reps: int = 3,
                       log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every variant estimated on ``profile`` and measured here (a fresh process each, the
    profile's runtime settings), with estimated/measured ratios. Targets: memory within
    10 %, decode tokens/s within 25 %; the ratios are reported as they come out."""
    from edgeagent.estimate import estimate
    from edgeagent.select import variant_context

    say = log or (lambda m: None)
    rt = profile.runtime
    rows = []
    for v in variants:
        ctx = min(n_ctx, variant_context(v)) if n_ctx else variant_context(v)
        est = estimate(shape_from_gguf(v.path), profile, prompt_tokens, gen_tokens, n_ctx=ctx)
        m = measure_gguf(v.path, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, n_ctx=ctx, threads=rt.threads,
                         n_ubatch=rt.n_ubatch, flash_attn=rt.flash_attn, repack=rt.weight_repack, reps=reps)
        f = est["figures"]

        def cmp(estimated: float, measured: float, target: float | None) -> dict[str, Any]:
            ratio = estimated / measured if measured else None
            return {"estimated": estimated, "measured": measured, "ratio": ratio, "target": target,
                    "within_target": None if target is None or ratio is None else abs(ratio - 1) <= target}

        row = {
            "id": v.id, "quant": v.quant, "exit_layer": v.exit_layer, "weights_mb": est["memory"]["weights_mb"],
            "context": ctx,
            "memory_mb": cmp(f["memory_mb"]["value"], m["rss_peak_mb"], 0.10),
            "tokens_per_s": cmp(f["tokens_per_s"]["value"], m["tokens_per_s"], 0.25),
            "ttft_ms": cmp(f["ttft_ms"]["value"], m["ttft_ms"], None),
            # where a memory gap comes from: each term beside what llama.cpp says it allocated
            "memory_terms_mb": {
                "weights": {"estimated": est["memory"]["weights_mb"], "llama_cpp": m["llama_cpp_buffers_mb"]["model"]},
                "kv_cache": {"estimated": est["memory"]["kv_cache_mb"], "llama_cpp": m["llama_cpp_buffers_mb"]["kv_cache"]},
                "compute_buffer": {"estimated": est["memory"]["compute_buffer_mb"],
                                   "llama_cpp": m["llama_cpp_buffers_mb"]["compute"]},
                "runtime": {"estimated": est["memory"]["overhead_mb"], "measured": m["rss_baseline_mb"]},
            },
            "measured": m,
        }
        rows.append(row)
        say(f"{v.id}: memory {row['memory_mb']['ratio']:.2f}x, tokens/s {row['tokens_per_s']['ratio']:.2f}x "
            f"(estimated / measured)")
    return {
        "profile": profile.name,
        "workload": {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "threads": rt.threads},
        "targets": {"memory_mb": "within 10 %", "tokens_per_s": "within 25 %", "ttft_ms": "reported, no target"},
        "rows": rows,
        "all_within_target": all(r["memory_mb"]["within_target"] and r["tokens_per_s"]["within_target"] for r in rows),
        "source": "estimated vs measured on this machine",
    }


def validate_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = ["variant", "MiB est", "MiB meas", "ratio", "compute buf est/llama.cpp", "tok/s est", "tok/s meas",
               "ratio", "TTFT est", "TTFT meas", "ratio"]
    rows = []
    for r in result["rows"]:
        m, t, f = r["memory_mb"], r["tokens_per_s"], r["ttft_ms"]

        def mark(c):
            ok = c["within_target"]
            return f"{c['ratio']:.2f}" + ("" if ok is None else (" ok" if ok else " MISS"))

        cb = r["memory_terms_mb"]["compute_buffer"]
        cb_text = f"{cb['estimated']:.1f} / " + ("-" if cb["llama_cpp"] is None else f"{cb['llama_cpp']:.1f}")
        rows.append([r["id"], f"{m['estimated']:.1f}", f"{m['measured']:.1f}", mark(m), cb_text, f"{t['estimated']:,.0f}",
                     f"{t['measured']:,.0f}", mark(t), f"{f['estimated']:.1f}", f"{f['measured']:.1f}", mark(f)])
    return columns, rows
