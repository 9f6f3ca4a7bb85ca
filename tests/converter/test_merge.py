"""The shipped-agent path: a LoRA delta merged into a base GGUF torch-free equals the export
of peft's own merge, at full depth and at an exit, and bad deltas are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from converters.delta import adapter_delta, save_delta  # noqa: E402
from edgeagent.export.hf_to_gguf import export  # noqa: E402
from converters.tiny import TinyConfig, make_tiny_model  # noqa: E402
from edgeagent.merge import MergeError, merge_to_f32  # noqa: E402
from edgeagent.quantize import all_logits, compare_logits  # noqa: E402

TOKENS = [5, 17, 42, 99, 3, 250, 7, 64, 12, 300, 8, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny GQA llama, a peft LoRA adapter on it with non-zero B, and the merged HF model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("merge")
    base = make_tiny_model(root / "base", TinyConfig(arch="llama", num_layers=3, num_heads=8, num_kv_heads=2, seed=7))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # peft starts B at zero: a real fine-tune has moved it
    lora.save_pretrained(root / "adapter")
    merged = lora.merge_and_unload()
    merged.save_pretrained(root / "merged")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (base / name).exists():
            (root / "merged" / name).write_bytes((base / name).read_bytes())
    return root, base


def test_the_merged_gguf_equals_the_export_of_peft_merge(tiny, tmp_path) -> None:
    root, base = tiny
    export(base, tmp_path / "base.gguf", quant="f32")
    export(root / "merged", tmp_path / "reference.gguf", quant="f32")
    config = json.loads((base / "config.json").read_text())
    delta = adapter_delta(root / "adapter", config)
    assert delta and all(k.endswith((".lora_a", ".lora_b")) for k in delta)
    save_delta(delta, tmp_path / "delta.safetensors")
    from safetensors.numpy import load_file

    merge_to_f32(tmp_path / "base.gguf", load_file(tmp_path / "delta.safetensors"), tmp_path / "merged.gguf")
    diff = compare_logits(all_logits(tmp_path / "reference.gguf", TOKENS), all_logits(tmp_path / "merged.gguf", TOKENS))
    assert diff["top1_agreement"] == 1.0 and diff["max_abs_diff"] < 2e-2, diff  # the delta is stored as float16
    unmerged = compare_logits(all_logits(tmp_path / "reference.gguf", TOKENS), all_logits(tmp_path / "base.gguf", TOKENS))
    assert unmerged["max_abs_diff"] > 10 * diff["max_abs_diff"]  # the delta did something


def test_an_exit_keeps_the_first_blocks_and_the_base_gguf_is_untouched(tiny, tmp_path) -> None:
    import gguf

    root, base = tiny
    export(base, tmp_path / "base.gguf", quant="f32")
    before = (tmp_path / "base.gguf").read_bytes()
    delta = adapter_delta(root / "adapter", json.loads((base / "config.json").read_text()))
    merge_to_f32(tmp_path / "base.gguf", delta, tmp_path / "exit2.gguf", exit_layer=2)
    reader = gguf.GGUFReader(tmp_path / "exit2.gguf")
    assert int(reader.fields["llama.block_count"].contents()) == 2
    assert not [t.name for t in reader.tensors if t.name.startswith("blk.2.")]
    assert all_logits(tmp_path / "exit2.gguf", TOKENS).shape[0] == len(TOKENS)  # llama.cpp loads and runs it
    assert (tmp_path / "base.gguf").read_bytes() == before


def test_a_delta_that_does_not_fit_is_refused_by_tensor_name(tiny, tmp_path) -> None:
    root, base = tiny
    export(base, tmp_path / "base.gguf", quant="f32")
    delta = adapter_delta(root / "adapter", json.loads((base / "config.json").read_text()))
    name = next(k for k in delta if k.endswith("attn_q.weight.lora_b"))
    bad = dict(delta, **{name: np.zeros((3, 4), np.float32)})
    with pytest.raises(MergeError, match=name.removesuffix(".lora_b")):
        merge_to_f32(tmp_path / "base.gguf", bad, tmp_path / "bad.gguf")
    with pytest.raises(MergeError, match="blk.99"):
        merge_to_f32(tmp_path / "base.gguf", {"blk.99.attn_q.weight.lora_a": np.zeros((1, 1), np.float32),
                                              "blk.99.attn_q.weight.lora_b": np.zeros((1, 1), np.float32)},
                     tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists() and not list(tmp_path.glob(".bad.gguf.*"))


def test_a_shipped_delta_starts_a_new_run_as_the_adapter_it_came_from(tiny, tmp_path) -> None:
    """``--init-adapter agent:NAME``: the delta (GGUF names, permuted Q/K rows, scale folded,
    float16) converted back gives the original peft adapter's outputs; a run of another rank
    is refused by tensor, not started from a partial state."""
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from converters.finetune import FinetuneConfig, FinetuneError, init_adapter_state

    root, base = tiny
    config = json.loads((base / "config.json").read_text())
    save_delta(adapter_delta(root / "adapter", config), tmp_path / "delta.safetensors")
    ids = torch.tensor([TOKENS])
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), root / "adapter")
    fresh = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    cfg = FinetuneConfig(rank=4, alpha=8.0)
    set_peft_model_state_dict(fresh, init_adapter_state(tmp_path / "delta.safetensors", base, fresh, cfg))
    with torch.no_grad():
        want, got = original(ids).logits, fresh(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids).logits
    assert (want - got).abs().max() < 1e-2 < (want - plain).abs().max()
    other = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    with pytest.raises(FinetuneError, match=r"lora_A\.weight is \(4, "):
        init_adapter_state(tmp_path / "delta.safetensors", base, other, FinetuneConfig(rank=2, alpha=4.0))


def test_a_shipped_agent_is_built_once_from_its_package_base_and_cached(tmp_path, monkeypatch) -> None:
    """The real base (SmolLM2-135M-Instruct from its package) with a small delta: the first call
    builds and says so, the second finds the file, a changed delta gets a file of its own."""
    import time

    from edgeagent.agents import ShippedAgent
    from edgeagent.sources import SOURCES, SourceError

    try:
        base = SOURCES["smollm2-135m-instruct"].gguf()
    except SourceError as e:
        pytest.skip(str(e))
    import gguf

    monkeypatch.setenv("EDGEAGENT_CACHE", str(tmp_path / "cache"))
    q = next(t for t in gguf.GGUFReader(base).tensors if t.name == "blk.0.attn_q.weight")
    rows, cols = int(q.shape[1]), int(q.shape[0])
    rng = np.random.default_rng(0)
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    save_delta({"blk.0.attn_q.weight.lora_a": rng.normal(0, 0.02, (4, cols)).astype(np.float32),
                "blk.0.attn_q.weight.lora_b": rng.normal(0, 0.02, (rows, 4)).astype(np.float32)},
               agent_dir / "delta.safetensors")
    (agent_dir / "agent.json").write_text(json.dumps({"base": "smollm2-135m-instruct", "prompt_format": {"kind": "plain"}}))
    agent = ShippedAgent("test", agent_dir, json.loads((agent_dir / "agent.json").read_text()))
    t0 = time.perf_counter()
    first = agent.gguf("q8_0", quiet=True)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert agent.gguf("q8_0", quiet=True) == first
    assert time.perf_counter() - t0 < built / 5  # the second run finds the cached file
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(first).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert all_logits(first, TOKENS).shape == (len(TOKENS), 49152)  # llama.cpp runs it
    save_delta({"blk.0.attn_q.weight.lora_a": rng.normal(0, 0.02, (4, cols)).astype(np.float32),
                "blk.0.attn_q.weight.lora_b": rng.normal(0, 0.02, (rows, 4)).astype(np.float32)},
               agent_dir / "delta.safetensors")
    assert agent.gguf("q8_0", quiet=True).parent != first.parent  # a new delta is never served a stale file


def test_a_lens_exit_in_the_delta_equals_the_packed_lens_exit(tiny, tmp_path) -> None:
    """A lens exit shipped as d x d numbers (``exit.<k>.lens.weight`` + its norm) merges into the
    same GGUF logits as the lens heads packed by the converter (head = E W)."""
    import converters.early_exit as ee
    from edgeagent.export.exit_pack import write_exit_model
    from transformers import AutoModelForCausalLM

    root, base = tiny
    k = 2
    model = AutoModelForCausalLM.from_pretrained(root / "merged", dtype=torch.float32)
    heads = ee.ExitHeads(model, [k], "lens")
    torch.manual_seed(1)
    with torch.no_grad():
        heads.norms[str(k)].weight.mul_(1.2)
        heads.lenses[str(k)].weight.add_(0.1 * torch.randn_like(heads.lenses[str(k)].weight))
    ee.save_heads(heads, tmp_path / "heads", {})
    exit_dir = write_exit_model(root / "merged", tmp_path / "heads", k, tmp_path / "exit-hf")
    export(exit_dir, tmp_path / "packed.gguf", quant="f32")

    export(base, tmp_path / "base.gguf", quant="f32")
    delta = adapter_delta(root / "adapter", json.loads((base / "config.json").read_text()))
    delta[f"exit.{k}.lens.weight"] = heads.lenses[str(k)].weight.detach().numpy()
    delta[f"exit.{k}.output_norm.weight"] = heads.norms[str(k)].weight.detach().numpy()
    save_delta(delta, tmp_path / "delta.safetensors")
    from safetensors.numpy import load_file

    merge_to_f32(tmp_path / "base.gguf", load_file(tmp_path / "delta.safetensors"), tmp_path / "lens.gguf", exit_layer=k)
    diff = compare_logits(all_logits(tmp_path / "packed.gguf", TOKENS), all_logits(tmp_path / "lens.gguf", TOKENS))
    assert diff["top1_agreement"] == 1.0 and diff["max_abs_diff"] < 5e-2, diff  # float16 delta
    plain = {key: v for key, v in load_file(tmp_path / "delta.safetensors").items() if not key.startswith("exit.")}
    merge_to_f32(tmp_path / "base.gguf", plain, tmp_path / "shared.gguf", exit_layer=k)
    without = compare_logits(all_logits(tmp_path / "packed.gguf", TOKENS), all_logits(tmp_path / "shared.gguf", TOKENS))
    assert without["max_abs_diff"] > 10 * diff["max_abs_diff"]  # the lens did something


def test_a_shipped_agent_with_a_lens_exit_runs_with_its_draft(tmp_path, monkeypatch) -> None:
    """A card naming a draft among its lens exits: resolving the agent brings the full GGUF and
    the exit GGUF built from the delta (the first blocks, the exit's own head); a card naming an
    exit it lacks is one clear error."""
    import gguf

    from edgeagent.sources import SOURCES, SourceError
    from edgeagent.variants import VariantError, resolve_variant

    try:
        SOURCES["smollm2-135m-instruct"].gguf()
    except SourceError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("EDGEAGENT_CACHE", str(tmp_path / "cache"))
    d = 576
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    rng = np.random.default_rng(0)
    save_delta({"exit.3.lens.weight": (np.eye(d) + rng.normal(0, 0.01, (d, d))).astype(np.float32),
                "exit.3.output_norm.weight": np.ones(d, np.float32)}, agent_dir / "delta.safetensors")
    card = {"base": "smollm2-135m-instruct", "prompt_format": {"kind": "plain"}, "exits": [3], "exit_kind": "lens",
            "speculative": {"draft_exit": 3, "n_draft": 2}}
    (agent_dir / "agent.json").write_text(json.dumps(card))
    choice = resolve_variant(agent=str(agent_dir), quant="q8_0")
    assert choice.n_draft == 2 and choice.draft is not None and "draft: exit 3" in choice.name
    reader = gguf.GGUFReader(choice.draft)
    assert int(reader.fields["llama.block_count"].contents()) == 3
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names and "blk.3.attn_q.weight" not in names  # its own head, no deeper block
    assert all_logits(choice.draft, TOKENS).shape == (len(TOKENS), 49152)

    (agent_dir / "agent.json").write_text(json.dumps(dict(card, speculative={"draft_exit": 9, "n_draft": 2})))
    with pytest.raises(VariantError, match="must name one of its exits"):
        resolve_variant(agent=str(agent_dir), quant="q8_0")
