"""`edgeagent bench --ablation`: the nine cells, GQA cells from a converted sibling (or marked
missing with the reason), costs measured here beside estimates on the device, `best` under the
default constraints; and the estimate-only table for a published ~4B shape."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeagent import ablation as ab
from edgeagent.cli import app
from edgeagent.profiles import load_profile
from edgeagent.select import constraints_for

S8G2 = load_profile("snapdragon-8-gen-2")
NAMES = ["baseline", "8-bit", "4-bit", "early exit", "GQA", "4-bit + exit", "4-bit + GQA", "8-bit + exit", "all three"]
CONTRACT = ("quant", "exit_layer", "gqa", "task_success", "memory_mb", "ttft_ms", "tpot_ms", "joules_per_inference")


def test_shape_ablation_cells_for_a_4b_mha_model() -> None:
    out = ab.shape_ablation(S8G2, "phi-3-mini")
    cells = {c["cell"]: c for c in out["cells"]}
    assert [c["cell"] for c in out["cells"]] == NAMES
    assert out["measured"] is False and all(c["task_success"] is None and c["quality_relative"] is None
                                            for c in out["cells"])
    assert cells["baseline"]["quant"] == "f16" and cells["baseline"]["bits_per_weight"] == pytest.approx(16.0, rel=1e-3)
    assert (cells["GQA"]["n_head_kv"], cells["baseline"]["n_head_kv"]) == (8, 32)
    assert cells["early exit"]["exit_layer"] == 16 and cells["baseline"]["exit_layer"] == 32
    kv = {k: cells[k]["device"]["kv_cache_mb"] for k in ("4-bit", "4-bit + GQA", "all three")}
    assert kv["4-bit + GQA"] == pytest.approx(kv["4-bit"] / 4)  # 32 -> 8 KV heads
    assert kv["all three"] == pytest.approx(kv["4-bit"] / 8)  # and half the layers
    assert cells["all three"]["memory_mb"] < cells["4-bit + GQA"]["memory_mb"] < cells["4-bit"]["memory_mb"]
    # On the 8 Gen 2's CPU no cell prefills a 256-token step in 500 ms: best is None, and said why
    assert out["best"] is None and any("TTFT" in r for r in cells["all three"]["reasons"])
    assert any("no cell reaches TTFT" in n for n in out["notes"])
    assert all(0 < c["device"]["prompt_budget_tokens"] < 256 for c in out["cells"])


def test_shape_ablation_best_is_the_least_risky_cell_meeting_the_cost_bounds() -> None:
    c = constraints_for(S8G2, max_ttft_ms=1e9, min_tokens_per_s=1.0)  # memory alone decides
    out = ab.shape_ablation(S8G2, "phi-3-mini", constraints=c)
    fits = [x["cell"] for x in out["cells"] if x["fits"]]
    assert fits == ["4-bit + exit", "4-bit + GQA", "8-bit + exit", "all three"]
    assert out["best"]["cell"] == "4-bit + GQA" and "unverified" in out["best"]["basis"]


def test_cli_shape_ablation_contract() -> None:
    r = CliRunner().invoke(app, ["bench", "--ablation", "--shape", "qwen3-4b", "--profile", "snapdragon-8-gen-2",
                                 "--gqa-groups", "2", "--exits", "0.75", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert "best" in out and len(out["cells"]) == 9
    for cell in out["cells"]:
        assert all(k in cell for k in CONTRACT)
    assert {c["n_head_kv"] for c in out["cells"] if c["gqa"]} == {4}
    assert {c["exit_layer"] for c in out["cells"] if "exit" in c["cell"] or c["cell"] == "all three"} == {27}
    r = CliRunner().invoke(app, ["bench", "--ablation", "--shape", "qwen3-4b"])
    assert r.exit_code != 0 and "--profile" in r.stderr


@pytest.fixture(scope="module")
def mha_and_gqa(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from converters.gqa import convert_to_gqa
    from converters.tiny import TinyConfig, make_tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ablation")
    mha = make_tiny_model(root / "mha", TinyConfig(arch="llama", num_heads=8, num_kv_heads=8, num_layers=2, seed=5))
    gqa = convert_to_gqa(mha, 4, root / "gqa")
    return mha, root / "gqa", gqa


def test_measured_ablation_with_a_gqa_sibling_and_without(mha_and_gqa, tmp_path, monkeypatch) -> None:
    mha, gqa_dir, _ = mha_and_gqa
    monkeypatch.setenv("EDGEAGENT_CACHE", str(tmp_path / "cache"))
    out = ab.run_ablation(S8G2, mha, gqa_model=gqa_dir, tasks=1, threads=1)
    cells = {c["cell"]: c for c in out["cells"]}
    assert [c["cell"] for c in out["cells"]] == NAMES and out["measured"] is True
    for c in out["cells"]:
        assert all(k in c for k in CONTRACT) and not c.get("missing")
        assert c["memory_mb"] > 0 and c["ttft_ms"] > 0 and c["tpot_ms"] > 0 and c["joules_per_inference"] > 0
        assert c["sources"]["ttft_ms"] == "measured" and c["sources"]["joules_per_inference"].startswith("estimated")
        assert c["here"]["threads"] == 1 and c["device"]["source"] == "estimated"
        assert c["fits"] == (c["reasons"] == [])
    assert {c["n_head_kv"] for c in out["cells"] if c["gqa"]} == {2}
    assert {c["n_head_kv"] for c in out["cells"] if not c["gqa"]} == {8}
    assert cells["GQA"]["kv_cache_bytes_per_token"] * 4 == cells["baseline"]["kv_cache_bytes_per_token"]
    assert cells["early exit"]["exit_layer"] == 1 and cells["baseline"]["quality_relative"] == pytest.approx(1.0)
    if out["best"] is not None:
        assert cells[out["best"]["cell"]]["fits"]

    r = CliRunner().invoke(app, ["bench", "--ablation", "--model", str(mha), "--profile", "snapdragon-8-gen-2",
                                 "--tasks", "1", "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    missing = [c for c in json.loads(r.stdout)["cells"] if c.get("missing")]
    assert [c["cell"] for c in missing] == ["GQA", "4-bit + GQA", "all three"]
    assert all("--gqa-model" in c["reason"] and c["task_success"] is None for c in missing)
