"""Roofline estimates: what a llama.cpp model costs on a device, before it gets there.

Read top to bottom: a model shape (``edgeagent.shapes``: from a GGUF file, or from a published
config plus llama.cpp's quantization recipe), then memory, latency and energy as plain functions of
that shape and a device profile (``edgeagent.profiles``). Every figure is an *estimate*
and says so (``"source": "estimated"``, with the profile's name).

The model, in four lines (docs/DESIGN.md "Measuring"):

    memory  = weights + KV cache + compute buffers + vocabulary + runtime overhead
    prefill = max(FLOPs / sustained compute, weight bytes / effective bandwidth)   (compute-bound,
              each weight type's FLOPs at its own rate: runtime.prefill_type_rates)
    decode  = max(bytes read per token / effective bandwidth, FLOPs / compute)     (memory-bound)
    energy  = power per phase x time;  mAh = J / (3.6 x V_nominal)

plus one empirical term for runs whose threads reach in-order little cores (``little_core_s``):
each step then lasts at least as long as a little core takes for a 1/n share of the work, and
the phase power of a thread count that is not the profile's own (``phase_power_w``): the
busy cores' share of it, by each core type's published power where the profile has it.

Units: bytes, seconds, FLOPs; results in MiB (2^20, as llama.cpp and RSS tools print) and
ms. This module runs on phones: it imports the standard library, and gguf only to read a
GGUF file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgeagent.profiles import Profile

# The model-shape half (read a shape, then estimate it) lives in edgeagent.shapes; its names
# are importable from here too, as callers use them together.
from edgeagent.shapes import (  # noqa: F401
    F32, GGML_BLOCK, PUBLISHED_SHAPES, QUANTS, REPACKED_TYPES, WIDE_TYPES, MiB, ModelShape, TensorInfo, check_gguf_header,
    llama_cpp_tensor_type, shape_from_config, shape_from_gguf,
)

# The K/V cache element size for llama.cpp's --cache-type-k/-v.
KV_CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}


# --- memory -------------------------------------------------------------------------------


def kv_cache_bytes(shape: ModelShape, n_ctx: int, cache_type: str = "f16") -> int:
    """K and V for every layer and position: 2 * layers * kv_heads * head_dim * bytes * context.

    GQA-aware: only the ``n_head_kv`` key/value heads are cached (Ainslie et al. 2023), so a
    model with 8 KV heads for 32 query heads needs a quarter of the MHA cache. llama.cpp
    allocates the whole context up front, so this is the resident size from the start.
    """
    return int(2 * shape.n_layers * shape.n_head_kv * shape.head_dim * KV_CACHE_BYTES[cache_type] * n_ctx)


# What llama.cpp's vocabulary holds once loaded, per token and per BPE merge: the token table,
# the text-to-id map and the token-to-piece cache per token, the merge-rank map per merge.
# Measured as the RSS a vocab-only load adds in a fresh process (``measure.measure_vocab_load``)
# on this project's x86-64 host (llama-cpp-python 0.3.36, libstdc++): SmolLM2's vocabulary
# (49,152 tokens, 48,900 merges; the file without its tensors) 16.9 MiB, the same with one merge
# 10.2 MiB, the built-in model's (1,266 tokens, 1,007 merges) 3.3 MiB, of which ~3.0 MiB is the
# load itself whatever the vocabulary (in the runtime's calibrated overhead).
# test_the_vocabulary_costs_what_a_vocab_only_load_holds re-measures it. Android's libc++ has
# smaller strings (24 bytes against 32), so a phone holds somewhat less.
VOCAB_BYTES_PER_TOKEN = 154
VOCAB_BYTES_PER_MERGE = 143


def vocab_bytes(shape: ModelShape) -> int:
    """llama.cpp's vocabulary in memory: ``VOCAB_BYTES_PER_TOKEN`` a token and
    ``VOCAB_BYTES_PER_MERGE`` a BPE merge (one a token where the shape does not say: most
    byte-level BPE vocabularies have about as many merges as tokens)."""
    merges = shape.n_vocab if shape.n_merges is None else shape.n_merges
    return VOCAB_BYTES_PER_TOKEN * shape.n_vocab + VOCAB_BYTES_PER_MERGE * merges


def compute_buffer_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
    """llama.cpp's compute buffer: the peak of live activations in the worst-case graph.

    llama.cpp reserves the graph for a full physical batch (``n_ubatch`` tokens, all of them
    producing logits, the KV cache full) and ggml-alloc reuses memory between ops, so the
    buffer is the largest of three moments, in F32:
      output:    logits for every batch row (n_ubatch x n_vocab) + two hidden states;
      ffn:       gate, up and their product (3 x n_ff) + the residual stream, its norm, the
                 block output and the residual sum (4 x n_embd);
      attention: Q, K, V and the same 4 x n_embd, plus (without flash attention) the KQ
                 scores over the whole context for every head (n_ctx x n_head; the softmax
                 runs in place).
    The attention mask (n_ctx x n_ubatch; F16 with flash attention, else F32) is live through
    the blocks, so it adds to the last two. Fitted to llama.cpp's own report ("CPU compute
    buffer size", read by ``test_compute_buffer_matches_llama_cpp``): exact to 0.01 MiB on
    the built-in model (11.76 / 38.76 MiB at n_ctx 512 / 2048 without flash attention, 7.01 /
    8.51 MiB with it) and on an 8k-vocabulary shape; up to ~20% high on shapes where
    ggml-alloc reuses an FFN buffer in place (n_ff = 2 x n_embd), which this does not model.
    """
    return _compute_peak(shape, n_ctx, n_ubatch, flash_attn, output_rows=min(n_ubatch, n_ctx))


def compute_resident_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int = 512, flash_attn: bool = False) -> int:
    """The part of llama.cpp's compute buffer a run touches when each batch asks for one row of
    logits, as the agent's steps do: the buffer is reserved for logits at every batch row
    (``compute_buffer_bytes``'s output moment), but the graph of a batch with one output keeps
    one row past the last layer's output selection (``inp_out_ids``), and the reserved pages no
    graph writes are never made resident. So the same moments with one output row. For a large
    vocabulary the difference is most of the buffer: the SmolLM2 agent at n_ubatch 512 reserves
    98.3 MiB, and its peak RSS grew by 13.9 MiB from an 8-token prompt to a 512-token one (this
    model: 14.3 MiB between the two; measured here, ``tests/runtime/test_estimate.py``). Where the output
    moment is not the largest (the built-in model's 1,266 tokens) the two are the same."""
    return _compute_peak(shape, n_ctx, n_ubatch, flash_attn, output_rows=1)


def _compute_peak(shape: ModelShape, n_ctx: int, n_ubatch: int, flash_attn: bool, output_rows: int) -> int:
    """The largest of the three moments ``compute_buffer_bytes`` names, with logits (and the two
    hidden states beside them) for ``output_rows`` batch rows, plus the one-row logits buffer."""
    ub = min(n_ubatch, n_ctx)
    mask = ub * n_ctx * (2 if flash_attn else F32)
    output = F32 * output_rows * (shape.n_vocab + 2 * shape.n_embd)
    ffn = F32 * ub * (3 * shape.n_ff + 4 * shape.n_embd) + mask
    attention = ub * (4 * shape.n_embd + (shape.n_head + 2 * shape.n_head_kv) * shape.head_dim)
    if not flash_attn:
        attention += ub * n_ctx * shape.n_head
    attention = F32 * attention + mask
    return max(output, ffn, attention) + F32 * shape.n_vocab  # + the one-row logits buffer


def memory_estimate(shape: ModelShape, profile: Profile, n_ctx: int,
                    repacked_types: dict[str, int] | None = None) -> dict[str, Any]:
    """Resident memory of the process: weights (exact bytes) + KV cache + the compute buffer as
    a run with one output row a batch touches it (``compute_resident_bytes``) + the vocabulary
    llama.cpp builds (``vocab_bytes``) + the runtime's own baseline (``runtime.overhead_mb``:
    interpreter, libraries, threads, what a run holds whatever the model). What llama.cpp
    allocates, as its load log reports it (the whole reserved compute buffer), is
    ``llama_cpp_buffers_mb``: published load-log figures are compared with that.

    Weights are counted once, except a tied output head that ``weight_repack`` repacks: llama.cpp
    then holds that table twice (``ModelShape.repacked_head_copy_bytes``; PocketPal's load logs
    show it as the CPU_REPACK and CPU buffers summing to the file plus the table). The repacked
    types are the vendored llama.cpp's for the profile's architecture (``shapes.REPACKED_TYPES``:
    x86_64 for the host profile, AArch64 for every phone and board) unless ``repacked_types``
    names an older build's. With mmap on, llama.cpp copies the repacked tensors out of the
    mapped file and the file's pages stay mapped, so the process holds them twice; the engine
    therefore loads such a file without mmap (``llama.use_mmap``) and holds what this counts.
    llama.cpp's own programs map by default (``llama-cli``, ``llama-bench``): their RSS can
    exceed this by up to the repacked bytes (``ModelShape.repacked_bytes``).
    """
    rt = profile.runtime
    if repacked_types is None:
        repacked_types = REPACKED_TYPES["x86_64" if profile.kind == "host" else "aarch64"]
    head_copy = shape.repacked_head_copy_bytes(repacked_types) if rt.weight_repack else 0
    weights = shape.weights_bytes + head_copy
    kv = kv_cache_bytes(shape, n_ctx, rt.kv_cache_type)
    compute = compute_buffer_bytes(shape, n_ctx, rt.n_ubatch, rt.flash_attn)
    resident = compute_resident_bytes(shape, n_ctx, rt.n_ubatch, rt.flash_attn)
    vocab = vocab_bytes(shape)
    overhead = int(rt.overhead_mb * MiB)
    total = weights + kv + resident + vocab + overhead
    return {
        "weights_bytes": weights,
        "repacked_head_copy_bytes": head_copy,
        "kv_cache_bytes": kv,
        "compute_buffer_bytes": compute,
        "compute_resident_bytes": resident,
        "vocab_bytes": vocab,
        "overhead_bytes": overhead,
        "total_bytes": total,
        "weights_mb": weights / MiB,
        "kv_cache_mb": kv / MiB,
        "compute_buffer_mb": compute / MiB,
        "compute_resident_mb": resident / MiB,
        "vocab_mb": vocab / MiB,
        "overhead_mb": overhead / MiB,
        "llama_cpp_buffers_mb": (weights + kv + compute) / MiB,
        "memory_mb": total / MiB,
        "usable_mb": profile.usable_memory_bytes / MiB,
        "fraction_of_usable": total / profile.usable_memory_bytes,
        "context": n_ctx,
        "kv_cache_type": rt.kv_cache_type,
    }


# --- latency ------------------------------------------------------------------------------


def attention_flops(shape: ModelShape, n_kv: int) -> float:
    """One query token attending to ``n_kv`` positions, all layers. Kaplan et al. 2020
    (Table 1) count 2 * n_layer * n_ctx * d_attn for the QK^T logits; the weighted sum of V
    costs the same again. d_attn = n_head * head_dim: under GQA the query heads still do the
    work, only the cache is shared."""
    return 2 * 2 * shape.n_layers * shape.n_head * shape.head_dim * n_kv


# The cache types a decode step reads as wide (``shapes.WIDE_TYPES`` for the weights).
WIDE_KV_TYPES = frozenset({"f32", "f16", "q8_0"})


def decode_bytes_per_token(shape: ModelShape, n_kv: int, cache_type: str = "f16") -> float:
    """Bytes one decode step reads: the weights (``ModelShape.decode_weight_bytes``) and K and V
    for the ``n_kv`` positions (``kv_cache_bytes``)."""
    return sum(shape.decode_weight_bytes) + kv_cache_bytes(shape, n_kv, cache_type)


def decode_read_bytes(shape: ModelShape, n_kv: int, cache_type: str = "f16", wide_rate: float = 1.0) -> float:
    """``decode_bytes_per_token`` in the units of the profile's bandwidth efficiency, which
    stands for 4-bit-class weights: a byte of a ``WIDE_TYPES`` tensor, or of a ``WIDE_KV_TYPES``
    cache, counts ``1 / wide_rate``, as those kernels read ``wide_rate`` times faster."""
    wide, other = shape.decode_weight_bytes
    kv = kv_cache_bytes(shape, n_kv, cache_type)
    if cache_type in WIDE_KV_TYPES:
        wide += kv
    else:
        other += kv
    return other + wide / wide_rate


def decode_flops_per_token(shape: ModelShape, n_kv: int) -> float:
    return 2 * (shape.block_matmul_params + shape.head.n_elements) + attention_flops(shape, n_kv)


def decode_attention_s(shape: ModelShape, n_kv: int, attention_gflops: float) -> float:
    """Seconds one decode step spends attending to ``n_kv`` cached positions, at a
    calibrated attention throughput (``runtime.attention_gflops(shape.head_dim)``)."""
    return attention_flops(shape, n_kv) / (attention_gflops * 1e9)


def prefill_flops(shape: ModelShape, prompt_tokens: int) -> float:
    """2 FLOPs per weight per token through the blocks (Kaplan et al. 2020: forward pass
    C ~ 2N), the output head for the last token only (llama.cpp computes logits just for the
    positions that ask for them), and causal attention, token t attending to t positions.
    Without flash attention llama.cpp computes the masked full square, up to 2x this term."""
    return prefill_work(shape, prompt_tokens)


def prefill_work(shape: ModelShape, prompt_tokens: int, type_rates: dict[str, float] | None = None) -> float:
    """``prefill_flops`` in the FLOPs of the type a profile's compute stands for (Q4_K): each
    weight's matmul FLOPs divided by its type's prefill rate (``runtime.prefill_type_rates``; a
    type not listed, and attention, at 1). Without rates it is ``prefill_flops``."""
    rates = type_rates or {}
    T = prompt_tokens
    head = shape.head.n_elements / rates.get(shape.head.ggml_type, 1.0)
    causal_positions = T * (T + 1) / 2
    return block_work_per_token(shape, rates) * T + 2 * head + attention_flops(shape, 1) * causal_positions


def block_work_per_token(shape: ModelShape, type_rates: dict[str, float] | None = None) -> float:
    """The block matmuls' FLOPs for one prompt token (2 per weight), each type's at its prefill
    rate (``prefill_work``'s per-token part, without the head and attention)."""
    rates = type_rates or {}
    return 2 * sum(n / rates.get(kind, 1.0) for kind, n in shape.block_matmul_params_by_type.items())


# --- threads on little cores -----------------------------------------------------------------

# What one in-order little core (Cortex-A53/A55/A510/A520) gets through per clock cycle in
# llama.cpp's quantized matmuls, each fitted on ONE published run: Geerling's Radxa Dragon Q6A
# (QCS6490: 4 Cortex-A78 + 4 Cortex-A55 @ 1.9 GHz), TinyLlama-1.1B Q4_K_M, llama-bench with 8
# threads, tg128 15.23 tok/s and pp512 25.25 tok/s (edgeagent/anchors.py, the row marked
# in-sample; ``anchors.fit_little_cores`` recomputes both from it, and a test holds these to it).
# Every other published row stays held out. Both are fitted rather than derived from the
# core's SDOT pipes as the profiles' big-core compute is; for scale, the prefill figure is about
# a seventh of the 0.35 x 64 int8 ops per cycle the profiles assume for a Cortex-A78.
LITTLE_CORE_BYTES_PER_CYCLE = 0.644  # decode: weight and KV bytes consumed per cycle per little core
LITTLE_CORE_INT8_OPS_PER_CYCLE = 3.30  # prefill: matmul FLOPs (int8 multiply-add = 2) per cycle per little core

# A little core type's own decode pace where a published pair measures it, in the same form; every
# other in-order core decodes at LITTLE_CORE_BYTES_PER_CYCLE. Cortex-A510: the same GGUF on the
# Snapdragon 8 Gen 2 at 5 threads pinned to the big cores (llama.cpp issue #26957) and at 6
# unpinned threads (PocketPal's Galaxy S23), ``anchors.fit_core_decode_pace``; a test holds the
# figure to it. It is 2.3x the A55 figure while the A520 rows (Huang's Meizu 21) read well at the
# A55 pace, so the difference likely follows the build and its kernels (a 2026 llama.cpp with
# repacked i8mm matmuls against older generic ones) more than the core.
CORE_DECODE_BYTES_PER_CYCLE = {"Cortex-A510": 1.511}

# And its own prefill pace, in Q4_K's FLOPs (``prefill_work``) per cycle: the same S23 cell's
# prompt speed at 6 threads, its work per token from the file's block bytes (a Q4_K_M file's
# blocks cost 3.61 Q4_K-FLOPs a byte, whatever its Q4_K/Q6_K split), ``anchors.fit_core_prefill_pace``;
# a test holds the figure to it. Every other little core prefills at LITTLE_CORE_INT8_OPS_PER_CYCLE.
CORE_PREFILL_OPS_PER_CYCLE = {"Cortex-A510": 20.76}


def _core_kind(core: str | None) -> str:
    """A profile's cluster name for a core type, e.g. "Cortex-A55 (Kryo 670 Silver)": its first word."""
    return core.split()[0] if core else ""


def little_decode_pace(core: str | None) -> float:
    """Decode bytes per cycle of one in-order little core of type ``core``: its own measured pace,
    else the fitted one for every little core."""
    return CORE_DECODE_BYTES_PER_CYCLE.get(_core_kind(core), LITTLE_CORE_BYTES_PER_CYCLE)


def little_prefill_pace(core: str | None) -> float:
    """Prefill FLOPs (in Q4_K's) per cycle of one in-order little core of type ``core``: its own
    measured pace, else the fitted one for every little core."""
    return CORE_PREFILL_OPS_PER_CYCLE.get(_core_kind(core), LITTLE_CORE_INT8_OPS_PER_CYCLE)


def little_core_s(work: float, threads: int, ghz: float, per_cycle: float) -> float:
    """Seconds one llama.cpp step takes, by the little-core term, when its threads include an
    in-order little core: 1/``threads`` of ``work`` at ``per_cycle`` x the little clock.

    The form is what an even split of each op over n threads, with a barrier after it, would
    give: the step lasts as long as the slowest thread's share, and the big cores spin. It is
    empirical, fitted on one run (``anchors.fit_little_cores``), and its mechanism is not
    established. llama.cpp's matmuls no longer split evenly: the generic one hands out 64-row
    chunks to whichever thread is free when there are at least 4 per thread (PR #6915, 2024),
    repacked ones 4 chunks per thread (PR #16833, Oct 2025), so a slow core can do as little
    as one chunk. On that scheduler a little core would have to be several times slower than
    this fit for its one chunk to pace the runs it describes, which are slower at 8 threads
    than bandwidth explains (docs/device_specs.md, "Threads on little cores").
    """
    return work / threads / (per_cycle * ghz * 1e9)


def phase_power_w(profile: Profile, threads: int | None = None) -> tuple[float, float]:
    """(prefill W, decode W) above idle with ``threads`` busy llama.cpp threads.

    The profile's ``power.prefill_w`` and ``power.decode_w`` are for its default thread count
    (``runtime.threads``; its ``sources`` say where they come from). Another count changes
    which cores are busy: threads land on the cores fastest first (``Profile.placement``, the
    order the little-core pacing uses), and each busy core draws what a core of its type draws.
    Threads waiting at llama.cpp's barriers spin rather than sleep (ggml_barrier polls;
    llama.cpp PR #8672 made polling the default), so a big core that finishes its share of a
    step early still counts as busy.

    With per-core power (``power_w`` on every ``[[cpu_clusters]]`` entry: a published
    single-core figure for that core type at that clock), each core of the default placement
    gets the share of the profile's phase power its ``power_w`` is of their sum, and a thread
    count's power is the sum over the cores it uses:

        P(n) = P(runtime.threads) x sum of power_w over the n cores / sum over the default cores

    On the Snapdragon 8 Gen 3 (6.27, 2.05 and 0.46 W, the last two derived) an X4 counts for
    about three A720s and an A520 for 0.22 of one, where one figure per thread charged them all
    the same. The published watts set the split between core types, not the level: they are
    measured with one core busy, the shared cache, interconnect and DRAM ramping up for it
    alone, so several busy cores draw less than their sum (AnandTech, Kirin 960: one
    Cortex-A73 1.81 W, four 5.31 W).
    Both phases scale by the same ratio: a core type has one published figure, with nothing
    to split its compute-bound (prefill) draw from its memory-bound (decode) draw, so each
    phase keeps the level the profile gives it.

    Without per-core power, every core weighs the same: the profile's W per busy thread
    (phase W / ``runtime.threads``) x ``threads``, the same figure for big and little cores.
    """
    n = profile.runtime.threads if threads is None else threads
    if profile.per_core_power:
        def busy_w(count: int) -> float:
            return sum(cluster.power_w * used for cluster, used in profile.placement(count))

        scale = busy_w(n) / busy_w(profile.runtime.threads)
    else:
        scale = n / profile.runtime.threads
    return profile.power.prefill_w * scale, profile.power.decode_w * scale


def decode_step_s(shape: ModelShape, profile: Profile, n_kv: int, batch: int = 1, threads: int | None = None,
                  little_bytes_per_cycle: float | None = None) -> tuple[float, str]:
    """One llama_decode of ``batch`` tokens after ``n_kv`` cached positions, and what paces it
    (memory, compute or little-core). The weights are read once for the whole batch while
    compute and attention grow with it: on a bandwidth-bound phone a batch of a few tokens
    (a speculative verification) costs little more than one."""
    rt = profile.runtime
    n_threads = rt.threads if threads is None else threads
    little = profile.little_cluster_reached(n_threads)
    bandwidth = profile.bandwidth_theoretical_gbs * 1e9 * profile.bandwidth_efficiency
    compute = profile.compute_gflops_sustained * 1e9
    step_bytes = decode_bytes_per_token(shape, n_kv, rt.kv_cache_type)
    memory_s = decode_read_bytes(shape, n_kv, rt.kv_cache_type, rt.wide_weight_rate) / bandwidth
    attention_gflops = rt.attention_gflops(shape.head_dim)
    if attention_gflops:
        compute_s = batch * decode_flops_per_token(shape, 0) / compute
        attention_s = batch * decode_attention_s(shape, n_kv, attention_gflops)
    else:
        compute_s, attention_s = batch * decode_flops_per_token(shape, n_kv) / compute, 0.0
    little_s = 0.0
    if little:
        per_cycle = little_bytes_per_cycle or little_decode_pace(little.core)
        little_s = little_core_s(step_bytes, n_threads, little.ghz, per_cycle)
    paced = max(memory_s, compute_s, little_s)
    bound = "little-core" if paced == little_s else "memory" if memory_s >= compute_s else "compute"
    return paced + attention_s + rt.decode_overhead_ms / 1e3, bound


def tokens_per_round(alpha: float, n_draft: int) -> float:
    """Expected tokens one round of self-speculation yields: the drafts the full model keeps,
    up to its first rejection, plus its own next token, when each draft token is kept with
    probability ``alpha`` (Leviathan et al. 2023, arXiv:2211.17192)."""
    return float(n_draft + 1) if alpha >= 1.0 else (1 - alpha ** (n_draft + 1)) / (1 - alpha)


def speculative_estimate(full: ModelShape, draft: ModelShape, profile: Profile, prompt_tokens: int,
                         acceptance: float, n_draft: int, threads: int | None = None) -> dict[str, Any]:
    """Decode time per token with self-speculation: the draft (an exit variant) proposes
    ``n_draft`` tokens one at a time, the full model verifies them in one batch of n+1.
    ``acceptance`` is the per-token probability alpha that the full model keeps a draft token
    (``early_exit_bench.per_token_acceptance`` turns a bench's measured rate into it); a round
    then yields ``tokens_per_round``. Costs from ``decode_step_s`` after the prompt and one
    round of drafts; the draft's KV is taken from the full model's, so no extra prefill."""
    if not 0.0 <= acceptance <= 1.0 or not math.isfinite(acceptance):
        raise ValueError(f"acceptance must be between 0 and 1, not {acceptance}")
    if not 1 <= n_draft <= 16:
        raise ValueError(f"n_draft must be between 1 and 16, not {n_draft}")
    n_kv = prompt_tokens + n_draft
    full_s, _ = decode_step_s(full, profile, n_kv, threads=threads)
    draft_s, _ = decode_step_s(draft, profile, n_kv, threads=threads)
    verify_s, verify_bound = decode_step_s(full, profile, n_kv, batch=n_draft + 1, threads=threads)
    per_round = tokens_per_round(acceptance, n_draft)
    tpot_s = (n_draft * draft_s + verify_s) / per_round
    return {
        "acceptance": acceptance, "n_draft": n_draft, "tokens_per_round": per_round,
        "full_tpot_ms": full_s * 1e3, "draft_token_ms": draft_s * 1e3, "verify_ms": verify_s * 1e3,
        "verify_bound": verify_bound, "tpot_ms": tpot_s * 1e3, "decode_speedup": full_s / tpot_s,
    }


def latency_estimate(shape: ModelShape, profile: Profile, prompt_tokens: int, gen_tokens: int,
                     threads: int | None = None, little_bytes_per_cycle: float | None = None,
                     little_int8_ops_per_cycle: float | None = None) -> dict[str, Any]:
    """TTFT and TPOT on the profile's CPU, roofline style.

    Prefill is compute-bound: the prompt's FLOPs at the sustained compute (which stands for
    Q4_K; each other weight type's FLOPs at its ``runtime.prefill_type_rates`` rate,
    ``prefill_work``), unless reading the weights once per physical batch takes longer. TTFT
    is the prefill (it yields the first token's logits). Each later token is one decode step, bandwidth-bound:
    tokens/s = eta * bandwidth / bytes read per token, with the KV read growing as the
    context fills; ``runtime.decode_overhead_ms`` adds a fixed per-step cost (calibrated).

    Attention over the cache: without flash attention llama.cpp runs it per head as small
    ops (KQ, mask, softmax, KQV) that reach a fraction of peak compute and overlap nothing.
    Where the profile has a calibrated attention throughput (``runtime.attention_gflops``:
    the entry for the model's head dimension, else ``decode_attention_gflops``) it is added to
    each step at that throughput (on this machine it is what makes decode slow down as the
    context fills: 1.28 us per cached position for the built-in model, against 0.05 ns its
    KV bytes explain; device_profiles/host.toml); otherwise it is counted inside the roofline at peak compute.

    ``threads``: llama.cpp's thread count (default ``runtime.threads``). The profile's
    bandwidth and compute stand for its own thread count and are not rescaled; what the
    count changes is where the threads run. Once they reach an in-order little cluster
    (``Profile.little_cluster_reached``) every step is at least ``little_core_s`` of its
    work: bytes read per token in decode, FLOPs in prefill, at the core's decode pace
    (``little_decode_pace``: its own where measured, else ``LITTLE_CORE_BYTES_PER_CYCLE``) and
    ``little_prefill_pace`` (else ``LITTLE_CORE_INT8_OPS_PER_CYCLE``), unless given (the fit in ``anchors`` passes its own).
    """
    rt = profile.runtime
    n_threads = rt.threads if threads is None else threads
    little = profile.little_cluster_reached(n_threads)
    bandwidth = profile.bandwidth_theoretical_gbs * 1e9 * profile.bandwidth_efficiency  # bytes/s
    compute = profile.compute_gflops_sustained * 1e9  # FLOP/s

    ops_per_cycle = little_int8_ops_per_cycle or (little_prefill_pace(little.core) if little else None)
    # the little core's decode pace, resolved once for every step below
    bytes_per_cycle = little_bytes_per_cycle or (little_decode_pace(little.core) if little else None)

    def on_little(work: float, per_cycle: float) -> float:
        return little_core_s(work, n_threads, little.ghz, per_cycle) if little else 0.0

    n_batches = max(1, math.ceil(prompt_tokens / rt.n_ubatch))
    work = prefill_work(shape, prompt_tokens, rt.prefill_type_rates)  # FLOPs, in Q4_K's
    prefill_compute_s = work / compute
    prefill_memory_s = n_batches * shape.weights_bytes / bandwidth
    prefill_little_s = on_little(work, ops_per_cycle)
    prefill_s = max(prefill_compute_s, prefill_memory_s, prefill_little_s)

    steps = max(gen_tokens - 1, 0)
    step_times, bounds = [], {"memory": 0, "compute": 0, "little-core": 0}
    for i in range(max(steps, 1)):  # at least one step, so TPOT exists even for gen_tokens=1
        step_s, bound = decode_step_s(shape, profile, prompt_tokens + 1 + i, threads=n_threads,
                                      little_bytes_per_cycle=bytes_per_cycle)
        bounds[bound] += 1
        step_times.append(step_s)
    tpot_s = sum(step_times) / len(step_times)
    decode_s = tpot_s * steps
    if prefill_little_s >= max(prefill_compute_s, prefill_memory_s) and little:
        prefill_bound = "little-core"
    else:
        prefill_bound = "compute" if prefill_compute_s >= prefill_memory_s else "memory"
    return {
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "ttft_ms": prefill_s * 1e3,
        "tpot_ms": tpot_s * 1e3,
        "tokens_per_s": 1 / tpot_s,
        "prefill_tokens_per_s": prompt_tokens / prefill_s if prompt_tokens else None,
        "prefill_ms": prefill_s * 1e3,
        "decode_ms": decode_s * 1e3,
        "total_ms": (prefill_s + decode_s) * 1e3,
        "prefill_bound": prefill_bound,
        "decode_bound": max(bounds, key=bounds.get),
        "bandwidth_effective_gbs": bandwidth / 1e9,
        "compute_gflops_sustained": profile.compute_gflops_sustained,
        "threads": n_threads,
        "little_core": ({"core": little.core, "ghz": little.ghz, "cluster": little.name} if little else None),
    }


def model_load_s(shape: ModelShape, profile: Profile) -> float | None:
    """Cold model load, as a lower bound: the weight bytes at the storage's sequential read
    speed (repacking, page faults and tokenizer setup come on top)."""
    if profile.storage_read_gbs is None:
        return None
    return shape.weights_bytes / (profile.storage_read_gbs * 1e9)


# --- energy -------------------------------------------------------------------------------


def mah_from_joules(joules: float, nominal_v: float) -> float:
    """Charge drawn from a battery at its nominal voltage: J / V = A*s; / 3600 * 1000 = mAh."""
    return joules / (3.6 * nominal_v)


def energy_estimate(latency: dict[str, Any], profile: Profile, wait_s: float = 0.0, load_s: float | None = None) -> dict[str, Any]:
    """Joules per inference = power per phase x time (the profile's powers are above the
    idle baseline, as a baseline-subtracted battery measurement sees them), plus the idle
    power for any time the inference makes the phone wait awake (``wait_s``), plus a model
    load when ``load_s`` is given (at decode power: the CPU is busy faulting pages in).
    The phase powers are for the latency's thread count (``phase_power_w``)."""
    p = profile.power
    prefill_w, decode_w = phase_power_w(profile, latency.get("threads"))
    prefill_j = prefill_w * latency["prefill_ms"] / 1e3
    decode_j = decode_w * latency["decode_ms"] / 1e3
    wait_j = p.idle_w * wait_s
    load_j = decode_w * load_s if load_s else 0.0
    joules = prefill_j + decode_j + wait_j + load_j
    busy_s = latency["total_ms"] / 1e3 + (load_s or 0.0)
    v = profile.battery.nominal_v
    mah = mah_from_joules(joules, v)
    out = {
        "joules_per_inference": joules,
        "prefill_j": prefill_j,
        "decode_j": decode_j,
        "wait_j": wait_j,
        "load_j": load_j,
        "average_power_w": joules / (busy_s + wait_s) if busy_s + wait_s > 0 else 0.0,
        "joules_including_idle": joules + p.idle_w * busy_s,
        "prefill_w": prefill_w,
        "decode_w": decode_w,
        "mah_per_inference": mah,
        "mah_per_100_inferences": 100 * mah,
        "nominal_v": v,
    }
    if profile.battery.capacity_mah:
        out["inferences_per_charge"] = profile.battery.capacity_mah / mah if mah else None
    return out


# --- all together -------------------------------------------------------------------------


@dataclass
class Figure:
    value: float | None
    unit: str
    source: str
    profile: str


def estimate(
    shape: ModelShape,
    profile: Profile,
    prompt_tokens: int = 512,
    gen_tokens: int = 64,
    n_ctx: int = 2048,
    wait_s: float = 0.0,
    include_load: bool = False,
    threads: int | None = None,
    repacked_types: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Memory, latency and energy of one inference (a prompt, then ``gen_tokens`` tokens),
    with ``threads`` llama.cpp threads (default: the profile's ``runtime.threads``);
    ``repacked_types``: see ``memory_estimate``."""
    if prompt_tokens < 0 or gen_tokens < 1:
        raise ValueError("need prompt_tokens >= 0 and gen_tokens >= 1")
    if threads is not None and not 1 <= threads <= profile.cores:
        raise ValueError(f"threads must be between 1 and the profile's {profile.cores} cores, not {threads}")
    if prompt_tokens + gen_tokens > n_ctx:
        raise ValueError(f"prompt ({prompt_tokens}) + output ({gen_tokens}) tokens exceed the context ({n_ctx})")
    memory = memory_estimate(shape, profile, n_ctx, repacked_types)
    latency = latency_estimate(shape, profile, prompt_tokens, gen_tokens, threads)
    load_s = model_load_s(shape, profile) if include_load else None
    energy = energy_estimate(latency, profile, wait_s=wait_s, load_s=load_s)

    def fig(value: float | None, unit: str) -> dict[str, Any]:
        return asdict(Figure(value, unit, "estimated", profile.name))

    return {
        "source": "estimated",
        "profile": profile.name,
        "model": shape.summary(),
        "figures": {
            "memory_mb": fig(memory["memory_mb"], "MiB"),
            "ttft_ms": fig(latency["ttft_ms"], "ms"),
            "tpot_ms": fig(latency["tpot_ms"], "ms"),
            "tokens_per_s": fig(latency["tokens_per_s"], "tokens/s"),
            "joules_per_inference": fig(energy["joules_per_inference"], "J"),
            "mah_per_100_inferences": fig(energy["mah_per_100_inferences"], "mAh"),
        },
        "memory": memory,
        "latency": latency,
        "energy": {**energy, "model_load_s": load_s},
    }
