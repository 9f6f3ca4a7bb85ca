"""Variant selection: the best-quality variant that fits every constraint, the reason for every
rejected one, where each bound comes from (flag > profile > default), perplexity-derived
quality, and the CLI's contract (non-zero exit with reasons when nothing fits).

The bundle is hand-made: real GGUF files written with gguf.GGUFWriter (a 2-layer llama
shape at F32, Q8_0 and Q4_K, and a 1-layer exit), a real manifest, hand-set quality."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeagent.export.bundle import make_manifest, write_manifest
from edgeagent.bundle import PromptFormat, load_bundle, sha256_file
from edgeagent.cli import app
from edgeagent.profiles import load_profile
from edgeagent.select import (
    DEFAULT_MIN_QUALITY,
    NoVariantFits,
    constraints_for,
    estimate_variant,
    relative_quality,
    select_variant,
)

S8G2 = load_profile("snapdragon-8-gen-2")
D, FF, V, HEADS, KV_HEADS, HEAD_DIM = 256, 512, 256, 4, 2, 64


def write_gguf(path: Path, weight_type: str, n_layers: int) -> Path:
    """A llama-shaped GGUF whose 2-D weights are all ``weight_type`` (zero bytes laid out as
    ggml stores that type), norms F32; context 512."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("hand-made")
    w.add_block_count(n_layers)
    w.add_embedding_length(D)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_feed_forward_length(FF)
    w.add_context_length(512)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if weight_type == "F32" else gguf.LlamaFileType.MOSTLY_Q8_0)

    def matrix(name: str, ne0: int, ne1: int) -> None:
        if weight_type == "F32":
            w.add_tensor(name, np.zeros((ne1, ne0), dtype=np.float32))
        else:
            qt = gguf.GGMLQuantizationType[weight_type]
            block, size = gguf.GGML_QUANT_SIZES[qt]
            w.add_tensor(name, np.zeros((ne1, ne0 // block * size), dtype=np.uint8), raw_dtype=qt)

    matrix("token_embd.weight", D, V)
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(D, dtype=np.float32))
        matrix(f"blk.{i}.attn_q.weight", D, HEADS * HEAD_DIM)
        matrix(f"blk.{i}.attn_k.weight", D, KV_HEADS * HEAD_DIM)
        matrix(f"blk.{i}.attn_v.weight", D, KV_HEADS * HEAD_DIM)
        matrix(f"blk.{i}.attn_output.weight", HEADS * HEAD_DIM, D)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(D, dtype=np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", D, FF)
        matrix(f"blk.{i}.ffn_up.weight", D, FF)
        matrix(f"blk.{i}.ffn_down.weight", FF, D)
    w.add_tensor("output_norm.weight", np.ones(D, dtype=np.float32))
    matrix("output.weight", D, V)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# id, quant, ggml type, exit layer, quality
VARIANTS = [
    ("m-f32", "f32", "F32", 2, {"task_success": 0.8, "perplexity": 2.0}),
    ("m-q8_0", "q8_0", "Q8_0", 2, {"task_success": 0.78, "perplexity": 2.02}),
    ("m-q4_k_m", "q4_k_m", "Q4_K", 2, {"task_success": 0.6, "perplexity": 2.4}),
    ("m-exit1-f32", "f32", "F32", 1, {"task_success": 0.5, "perplexity": 3.0}),
]


def make_bundle(root: Path, variants=VARIANTS, measurements: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for vid, quant, ggml_type, exit_layer, quality in variants:
        path = write_gguf(root / f"{vid}.gguf", ggml_type, exit_layer)
        entries.append({"id": vid, "quant": quant, "exit_layer": exit_layer, "n_layers": 2, "path": path.name,
                        "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "quality": dict(quality)})
    manifest = make_manifest(entries, source_model={"name": "hand-made"}, prompt_format=PromptFormat(), tokenizer={},
                             measurements=measurements or {}, profile=None)
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("select") / "bundle")


def _cost(bundle_dir: Path, vid: str) -> dict:
    return estimate_variant(load_bundle(bundle_dir).variant(vid), S8G2, 256, 16)


def test_picks_the_best_quality_variant_that_fits_and_says_why_the_others_do_not(bundle_dir) -> None:
    f32, q8 = _cost(bundle_dir, "m-f32"), _cost(bundle_dir, "m-q8_0")
    assert q8["memory_mb"] < f32["memory_mb"]
    limit = (q8["memory_mb"] + f32["memory_mb"]) / 2  # f32 is too big, q8_0 is not
    c = constraints_for(S8G2, max_memory_mb=limit)
    result = select_variant(load_bundle(bundle_dir), S8G2, c)

    assert result["selected"]["id"] == "m-q8_0"
    rows = {r["id"]: r for r in result["variants"]}
    assert rows["m-f32"]["reasons"] == [f"memory {f32['memory_mb']:,.0f} MiB > {limit:,.0f} MiB"]
    assert rows["m-q8_0"]["fits"] and rows["m-q8_0"]["reasons"] == []
    assert rows["m-q8_0"]["quality"] == {"value": 0.78, "basis": "task_success", "relative": pytest.approx(0.975),
                                         "reference": 0.8}
    assert rows["m-q4_k_m"]["reasons"] == ["quality 75% of full precision (task_success) < 90%"]
    assert rows["m-exit1-f32"]["reasons"] == ["quality 62% of full precision (task_success) < 90%"]
    assert [r["selected"] for r in result["variants"]] == [False, True, False, False]
    assert result["reference"] == {"id": "m-f32", "quant": "f32", "shipped": True, "label": "full precision"}
    assert all(r["estimate"]["source"] == "estimated" for r in result["variants"])


def test_every_bound_names_itself_and_equal_quality_goes_to_the_least_energy(tmp_path) -> None:
    same = [(vid, q, t, k, {"task_success": 0.8}) for vid, q, t, k, _ in VARIANTS]
    b = load_bundle(make_bundle(tmp_path / "b", same))
    result = select_variant(b, S8G2)
    energies = {r["id"]: r["estimate"]["joules_per_inference"] for r in result["variants"]}
    assert result["selected"]["id"] == min(energies, key=energies.get)

    with pytest.raises(NoVariantFits) as info:
        select_variant(b, S8G2, constraints_for(S8G2, max_ttft_ms=1e-6, min_tokens_per_s=1e9, max_mah_per_100=1e-9))
    for row in info.value.result["variants"]:
        kinds = [r.split(" ")[0] for r in row["reasons"]]
        assert kinds == ["TTFT", "decode", "battery"], row["reasons"]
    assert info.value.result["selected"] is None
    assert "no variant of" in str(info.value) and "m-f32: TTFT" in str(info.value)


def test_perplexity_derived_quality_when_the_reference_never_succeeds(tmp_path) -> None:
    zero = [(vid, q, t, k, {"task_success": 0.0, "perplexity": p["perplexity"]}) for vid, q, t, k, p in VARIANTS]
    b = load_bundle(make_bundle(tmp_path / "b", zero))
    reference = {"id": "m-f32", "shipped": True, "quality": b.variant("m-f32").quality}
    q = relative_quality(b.variant("m-q4_k_m"), reference)
    assert q["basis"] == "perplexity" and q["relative"] == pytest.approx(2.0 / 2.4)
    result = select_variant(b, S8G2)
    # 2.0/2.02 = 99 % keeps q8_0 in; 2.0/2.4 = 83 % and 2.0/3.0 = 67 % are out
    assert {r["id"] for r in result["variants"] if r["fits"]} == {"m-f32", "m-q8_0"}
    assert result["selected"]["id"] == "m-f32"  # the highest quality wins, whatever it costs


def test_quality_within_one_point_is_a_tie_and_the_cheaper_variant_wins(tmp_path) -> None:
    ppl = {"m-f32": 2.0, "m-q8_0": 2.01, "m-q4_k_m": 2.05, "m-exit1-f32": 2.0}  # 100 %, 99.5 %, 97.6 %, 100 %
    variants = [(vid, q, t, k, {"perplexity": ppl[vid]}) for vid, q, t, k, _ in VARIANTS]
    b = load_bundle(make_bundle(tmp_path / "b", variants))
    result = select_variant(b, S8G2)
    rows = {r["id"]: r for r in result["variants"]}
    # f32, q8_0 and the exit all round to 100 points: the least energy of them wins (the 1-layer exit)
    assert rows["m-q8_0"]["quality"]["relative"] == pytest.approx(2.0 / 2.01)
    cheapest = min(("m-f32", "m-q8_0", "m-exit1-f32"), key=lambda v: rows[v]["estimate"]["joules_per_inference"])
    assert result["selected"]["id"] == cheapest == "m-exit1-f32"


def test_the_converters_f16_reference_is_the_yardstick_when_there_is_one(tmp_path) -> None:
    measurements = {"reference": {"quant": "f16", "quality": {"task_success": 1.0}}}
    b = load_bundle(make_bundle(tmp_path / "b", measurements=measurements))
    with pytest.raises(NoVariantFits) as info:  # every shipped variant is below 90 % of the F16 reference
        select_variant(b, S8G2)
    result = info.value.result
    assert result["reference"] == {"id": "reference-f16", "quant": "f16", "shipped": False, "label": "full precision"}
    rows = {r["id"]: r for r in result["variants"]}
    assert rows["m-f32"]["quality"]["relative"] == pytest.approx(0.8)
    assert rows["m-f32"]["reasons"] == ["quality 80% of full precision (task_success) < 90%"]


def test_flag_beats_profile_beats_default(tmp_path) -> None:
    text = (Path(__file__).resolve().parents[2] / "device_profiles" / "snapdragon-8-gen-2.toml").read_text()
    path = tmp_path / "p.toml"
    path.write_text(text + "\n[selection]\nmax_ttft_ms = 123.0\nmax_memory_fraction = 0.5\n")
    prof = load_profile(path)
    c = constraints_for(prof, min_tokens_per_s=7.0)
    usable_mb = prof.usable_memory_gb * 1024
    assert (c.max_ttft_ms, c.min_tokens_per_s, c.min_quality, c.max_mah_per_100) == (123.0, 7.0, DEFAULT_MIN_QUALITY, None)
    assert c.max_memory_mb == pytest.approx(0.5 * usable_mb, abs=0.05)
    assert c.origin["max_ttft_ms"] == f"profile {prof.name}"
    assert c.origin["min_tokens_per_s"] == "flag"
    assert c.origin["min_quality"] == "default"
    assert c.origin["max_memory_mb"].startswith(f"profile {prof.name} (50% of")
    d = constraints_for(S8G2)
    assert d.max_memory_mb == pytest.approx(0.8 * S8G2.usable_memory_gb * 1024, abs=0.05)
    assert (d.max_ttft_ms, d.min_tokens_per_s) == (500.0, 20.0)


def _cli(args: list[str]):
    return CliRunner().invoke(app, args)


def test_cli_select_json_and_a_clear_failure_when_nothing_fits(bundle_dir) -> None:
    ok = _cli(["select", "--bundle", str(bundle_dir), "--profile", "snapdragon-8-gen-2", "--json"])
    assert ok.exit_code == 0, ok.output
    out = json.loads(ok.stdout)
    assert out["selected"]["id"] == "m-f32" and out["error"] is None
    assert out["constraints"]["origin"]["max_ttft_ms"] == "default"

    bad = _cli(["select", "--bundle", str(bundle_dir), "--profile", "snapdragon-8-gen-2", "--max-memory-mb", "1",
                "--min-quality", "95", "--json"])
    assert bad.exit_code != 0
    out = json.loads(bad.stdout)
    assert out["selected"] is None
    assert out["constraints"]["min_quality"] == 0.95  # 95 means 95 %
    reasons = {r["id"]: r["reasons"] for r in out["variants"]}
    assert all(rs[0].startswith("memory ") and rs[0].endswith("> 1 MiB") for rs in reasons.values())
    assert len(reasons["m-q8_0"]) == 1  # 97.5 % of full precision passes 95 %
    assert reasons["m-q4_k_m"][-1] == "quality 75% of full precision (task_success) < 95%"
    assert "no variant of" in bad.stderr and "m-q4_k_m: memory" in bad.stderr


def test_cli_select_refuses_an_altered_bundle(tmp_path) -> None:
    root = make_bundle(tmp_path / "b")
    with open(root / "m-q8_0.gguf", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")
    r = _cli(["select", "--bundle", str(root), "--profile", "snapdragon-8-gen-2"])
    assert r.exit_code != 0 and "altered" in r.stderr and "m-q8_0" in r.stderr
