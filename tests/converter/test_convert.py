"""The converter: data loading and masking, MHA -> GQA, the QLoRA loop (loss, resume, merge,
2 processes), the bundle (manifest, tamper and missing-file refusal) and `edgeagent convert`.

Tiny random models (hidden 256, 2 layers, vocab 512) from converters.tiny, expert traces from
the emulated phone, real bitsandbytes NF4, real llama.cpp. torch runs on one thread.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")
pytest.importorskip("llama_cpp")

from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from converters import data as data_mod  # noqa: E402
from edgeagent.export.bundle import make_manifest, write_manifest  # noqa: E402
from edgeagent.export.hf_to_gguf import export  # noqa: E402
from converters.finetune import FinetuneConfig, FinetuneError, finetune, merge_adapter  # noqa: E402
from converters.gqa import GQAError, convert_to_gqa, pool_kv_heads  # noqa: E402
from converters.tiny import TinyConfig, make_tiny_model  # noqa: E402
from edgeagent.bundle import BundleError, PromptFormat, load_bundle, sha256_file  # noqa: E402
from edgeagent.cli import app  # noqa: E402
from edgeagent.quality import heldout_perplexity, kv_cache_bytes_per_token  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)
# peft asks transformers 5 about gradient checkpointing under its deprecated name
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated and will be removed in v6:FutureWarning")

# Small and quick: a few examples, short sequences, few steps.
FT = dict(rank=8, alpha=16.0, lr=3e-3, batch_size=4, micro_batch_size=2, warmup_steps=1, max_seq_len=512)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def traces(root) -> Path:
    out = root / "traces.jsonl"
    result = CliRunner().invoke(app, ["traces", "--n", "6", "--seed", "4", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def llama_mha(root) -> Path:
    return make_tiny_model(root / "llama-mha", TinyConfig(arch="llama", num_heads=8, num_kv_heads=8, seed=3))


@pytest.fixture(scope="module")
def qwen_mha(root) -> Path:
    return make_tiny_model(root / "qwen-mha", TinyConfig(arch="qwen2", num_heads=8, num_kv_heads=8, seed=5))


@pytest.fixture(scope="module")
def plain_tokenizer(traces):
    """A tokenizer like the built-in model's: trained on the traces, no chat template."""
    from converters.recipes.train_builtin import train_tokenizer

    records = data_mod.read_records(traces).records
    return train_tokenizer([r.prompt + r.completion for r in records], 400)


def examples(model_dir: Path, traces: Path, n: int | None = None) -> list[data_mod.Example]:
    """One example per step (the step layout): many short examples, for tests of the loop."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = data_mod.prompt_format(tokenizer).with_layout("step")
    out, _ = data_mod.encode_records(tokenizer, data_mod.read_records(traces).records, max_seq_len=512, fmt=fmt)
    return out[:n] if n else out


def test_the_episode_layout_is_one_example_per_episode_with_the_loss_on_every_action(qwen_mha, traces) -> None:
    tokenizer = AutoTokenizer.from_pretrained(qwen_mha)
    records = data_mod.read_records(traces).records
    fmt = data_mod.prompt_format(tokenizer)
    assert fmt.is_episode
    episodes, counts = data_mod.encode_records(tokenizer, records, max_seq_len=8192, fmt=fmt)
    assert counts == {"too_long": 0, "no_target": 0}
    assert len(episodes) == len({r.group for r in records}) == 6
    steps, _ = data_mod.encode_records(tokenizer, records, max_seq_len=8192, fmt=fmt.with_layout("step"))
    assert sum(len(e.input_ids) for e in episodes) < sum(len(e.input_ids) for e in steps)
    for e in episodes:
        spans: list[list[int]] = []  # runs of labelled tokens: one per action
        for i, label in enumerate(e.labels):
            if label != data_mod.IGNORE:
                if not spans or e.labels[i - 1] == data_mod.IGNORE:
                    spans.append([])
                spans[-1].append(label)
        text = tokenizer.decode(e.input_ids)
        assert len(spans) == text.count("<|im_start|>assistant") >= 2
        for span in spans:  # an action, then the end of the turn: the model learns to stop
            answer = tokenizer.decode(span)
            assert answer.startswith('{"action":') and "<|im_end|>" in answer, answer


# --- data ------------------------------------------------------------------------------


def test_recipe_tokenizer_writes_a_word_the_same_after_a_space_and_after_a_quote(plain_tokenizer) -> None:
    """The built-in model copies names and text between the task (after a space), the
    screen and the JSON action (after a quote): no merge may join a space to what follows."""
    vocab = plain_tokenizer.get_vocab()
    assert not [t for t in vocab if len(t) > 1 and t.startswith("Ġ") and t.strip("Ġ")]
    for word in ["Liam Miller", "Settings", "23", "where are the keys?"]:
        after_space = plain_tokenizer.encode(f"Call {word}", add_special_tokens=False)
        after_quote = plain_tokenizer.encode(f'"{word}', add_special_tokens=False)
        assert after_space[-len(after_quote) + 1:] == after_quote[1:], word


def test_recipe_tokenizer_writes_every_digit_as_its_own_token(plain_tokenizer) -> None:
    """A number copied from the task or the screen ("12% of 180", a display showing "124.8")
    is copied token by token: the same digits must be the same tokens wherever they stand."""
    from edgeagent.export.tokenizer import match_pre_tokenizer

    assert not [t for t in plain_tokenizer.get_vocab() if len(t) > 1 and any(c.isdigit() for c in t)]
    ids = plain_tokenizer.encode("find 12% of 180", add_special_tokens=False)
    assert plain_tokenizer.convert_ids_to_tokens(ids)[-3:] == ["1", "8", "0"]
    saved = json.loads(plain_tokenizer.backend_tokenizer.to_str())
    assert match_pre_tokenizer(saved["pre_tokenizer"]) == "qwen2"  # llama.cpp splits the same way


def test_recipe_packs_examples_that_cannot_see_each_other() -> None:
    """A packed row computes each example exactly as it would alone (inference sees one)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from converters.recipes.train_builtin import make_batches, packed_inputs, packed_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rng = random.Random(0)
    encoded = []
    for n in (9, 14, 6):
        ids = [1] + [rng.randrange(3, 64) for _ in range(n)]
        encoded.append((ids, [-100] * (n - 2) + ids[-3:]))
    ids, lab, plab, seg = next(make_batches(encoded, 48, random.Random(0), seq_len=48))
    assert int(seg[0].max()) >= 2 and (seg[0] == 0).any()  # several examples and an unused tail
    mask, positions = packed_inputs(seg)
    with torch.no_grad():
        packed = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        for s in range(1, int(seg[0].max()) + 1):
            where = (seg[0] == s).nonzero().flatten()
            alone = model(input_ids=ids[0, where][None]).logits[0]
            assert torch.allclose(alone, packed[0, where], atol=1e-4), s
    # prompt targets are the prompt tokens after BOS, never the action tokens
    assert ((plab != -100) & (lab != -100)).sum() == 0
    assert (plab[seg == 0] == -100).all()
    with torch.no_grad():
        total, action = packed_loss(model, ids, lab, plab, seg, 0.3)
        assert float(total) > float(action) > 0
        assert float(packed_loss(model, ids, lab, plab, seg, 0.0)[0]) == pytest.approx(float(action))


def test_plain_format_is_exactly_the_builtin_recipes(traces, plain_tokenizer) -> None:
    from converters.recipes.train_builtin import encode

    records = data_mod.read_records(traces).records
    assert data_mod.prompt_format(plain_tokenizer).kind == "plain"
    encoded, counts = data_mod.encode_records(plain_tokenizer, records)
    assert counts == {"too_long": 0, "no_target": 0} and len(encoded) == len(records)
    for r, e in zip(records, encoded):
        assert (e.input_ids, e.labels) == encode(plain_tokenizer, {"prompt": r.prompt, "completion": r.completion})


def test_loss_only_on_the_action_tokens(traces, plain_tokenizer, qwen_mha) -> None:
    record = data_mod.read_records(traces).records[1]
    # plain: the action JSON, the newline and EOS carry loss; BOS and the prompt do not
    ids, labels = data_mod.encode_plain(plain_tokenizer, record.prompt, record.completion)
    target = [t for t in labels if t != data_mod.IGNORE]
    assert plain_tokenizer.decode(target) == record.completion + "\n" + plain_tokenizer.eos_token
    assert ids[-len(target):] == target and all(t == data_mod.IGNORE for t in labels[: len(ids) - len(target)])
    # chat template: the assistant turn with its end-of-turn marker, nothing of the user turn
    tokenizer = AutoTokenizer.from_pretrained(qwen_mha)
    fmt = data_mod.prompt_format(tokenizer)
    assert fmt.kind == "chat"
    ids, labels = data_mod.encode_chat(tokenizer, record.messages, fmt)
    target = [t for t in labels if t != data_mod.IGNORE]
    assert tokenizer.decode(target) == record.completion + "<|im_end|>\n"
    # the context tokens are exactly what the runtime sends (PromptFormat.wrap), so training
    # and inference see the same prompt
    prompt_ids = tokenizer.encode(fmt.wrap(record.prompt), add_special_tokens=False)
    assert ids[: len(prompt_ids)] == prompt_ids and labels[len(prompt_ids)] != data_mod.IGNORE


def test_every_assistant_turn_of_a_chat_is_a_target(tmp_path, qwen_mha) -> None:
    path = tmp_path / "chat.jsonl"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}]
    path.write_text(json.dumps({"messages": messages}) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(qwen_mha)
    (e,), _ = data_mod.encode_records(tokenizer, data_mod.read_records(path).records)
    spans, cur = [], []
    for t, y in zip(e.input_ids, e.labels):
        if y != data_mod.IGNORE:
            cur.append(t)
        elif cur:
            spans.append(tokenizer.decode(cur))
            cur = []
    spans += [tokenizer.decode(cur)] if cur else []
    assert spans == ["Hello!<|im_end|>\n", "Goodbye.<|im_end|>\n"]


def test_bad_lines_are_all_reported_with_file_and_line(tmp_path, traces) -> None:
    good = traces.read_text().splitlines()
    step = json.loads(good[0])
    bad_action = {**step, "action": {"action": "tap", "idx": 3}}
    no_obs = {k: v for k, v in step.items() if k != "observation"}
    lines = [good[0], "{not json", "", json.dumps(bad_action), "[1, 2]", json.dumps(no_obs),
             json.dumps({"messages": [{"role": "user", "content": "hi"}]}), json.dumps({"text": "x"}), good[1]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(data_mod.DataError) as info:
        data_mod.read_records(path)
    message = str(info.value)
    assert [b.line for b in info.value.bad] == [2, 4, 5, 6, 7, 8]
    for needle in (f"{path}:2: not valid JSON", f"{path}:4: trace step: action:", f"{path}:5: expected a JSON object",
                   f"{path}:6: trace step: missing key 'observation'", f"{path}:7: messages: no assistant turn",
                   f"{path}:8: neither an agent trace step"):
        assert needle in message, message
    assert "--skip-bad-lines" in message
    loaded = data_mod.read_records(path, skip_bad=True)
    assert len(loaded.records) == 2 and len(loaded.bad) == 6


def test_failed_episodes_are_left_out_and_chat_needs_a_template(tmp_path, traces, plain_tokenizer) -> None:
    lines = traces.read_text().splitlines()
    failed = [json.dumps({**json.loads(line), "success": False}) for line in lines[:3]]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(failed + lines[3:]) + "\n")
    loaded = data_mod.read_records(path)
    assert loaded.skipped_unsuccessful == 3 and len(loaded.records) == len(lines) - 3
    assert len(data_mod.read_records(path, successful_only=False).records) == len(lines)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}))
    with pytest.raises(data_mod.DataError, match=rf"{chat}:1: chat \('messages'\) data need a model with a chat template"):
        data_mod.encode_records(plain_tokenizer, data_mod.read_records(chat).records)


def test_heldout_split_keeps_whole_episodes_and_yields_tasks(traces) -> None:
    records = data_mod.read_records(traces).records
    train, held = data_mod.split_heldout(records, 0.34, seed=0)
    assert train and held and len(train) + len(held) == len(records)
    assert not {r.group for r in train} & {r.group for r in held}
    tasks = data_mod.emulator_tasks(held)
    assert len(tasks) == len({r.group for r in held})
    assert {t.instruction for t in tasks} == {r.task["instruction"] for r in held}


# --- GQA -------------------------------------------------------------------------------


def test_pooled_kv_heads_are_the_group_means(tmp_path, qwen_mha) -> None:
    result = convert_to_gqa(qwen_mha, 4, tmp_path / "g4")
    assert (result.kv_heads_before, result.kv_heads_after, result.head_dim) == (8, 2, 32)
    assert json.loads((tmp_path / "g4" / "config.json").read_text())["num_key_value_heads"] == 2
    before = load_file(str(qwen_mha / "model.safetensors"))
    after = load_file(str(tmp_path / "g4" / "model.safetensors"))
    for layer in range(2):
        for proj in ("k_proj", "v_proj"):
            for kind in ("weight", "bias"):  # qwen2 has K/V biases: pooled the same way
                name = f"model.layers.{layer}.self_attn.{proj}.{kind}"
                heads = before[name].reshape(8, 32, *before[name].shape[1:])
                for j in range(2):
                    expected = heads[4 * j: 4 * j + 4].double().mean(0).float()
                    assert torch.equal(after[name].reshape(2, 32, *after[name].shape[1:])[j], expected)
    same = [n for n in before if "k_proj" not in n and "v_proj" not in n]
    assert all(torch.equal(before[n], after[n]) for n in same)
    assert (tmp_path / "g4" / "tokenizer.json").is_file()


def test_gqa_grouping_matches_how_query_heads_share_kv_heads(tmp_path) -> None:
    """If every head of a group already has the same K and V, pooling changes nothing: the
    grouped model's logits equal the MHA model's (so the groups are the right heads)."""
    src = make_tiny_model(tmp_path / "mha", TinyConfig(arch="llama", num_heads=8, num_kv_heads=8, seed=7))
    state = load_file(str(src / "model.safetensors"))
    for name, t in state.items():
        if "k_proj" in name or "v_proj" in name:
            heads = t.reshape(8, 32, -1)
            state[name] = heads[::2].repeat_interleave(2, dim=0).reshape(t.shape).contiguous()
    from safetensors.torch import save_file

    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    convert_to_gqa(src, 2, tmp_path / "g2")
    ids = torch.randint(3, 500, (2, 24))
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)(ids).logits
        b = AutoModelForCausalLM.from_pretrained(tmp_path / "g2", dtype=torch.float32)(ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_gqa_with_one_head_per_group_changes_nothing_and_bad_g_is_refused(tmp_path, llama_mha) -> None:
    convert_to_gqa(llama_mha, 1, tmp_path / "g1")
    ids = torch.randint(3, 500, (1, 20))
    with torch.no_grad():
        a = AutoModelForCausalLM.from_pretrained(llama_mha, dtype=torch.float32)(ids).logits
        b = AutoModelForCausalLM.from_pretrained(tmp_path / "g1", dtype=torch.float32)(ids).logits
    assert torch.equal(a, b)
    with pytest.raises(GQAError, match="num_key_value_heads = 8 is not divisible by G = 3.*1, 2, 4, 8"):
        convert_to_gqa(llama_mha, 3, tmp_path / "g3")
    assert not (tmp_path / "g3").exists()
    with pytest.raises(GQAError):
        pool_kv_heads(torch.zeros(7, 4), 8, 2, 1)


def test_gqa_export_shrinks_llamacpp_kv_cache_by_g(tmp_path, llama_mha) -> None:
    import gguf

    convert_to_gqa(llama_mha, 4, tmp_path / "g4")
    mha = export(llama_mha, tmp_path / "mha.gguf", "f32")
    gqa = export(tmp_path / "g4", tmp_path / "gqa.gguf", "f32")
    field = gguf.GGUFReader(gqa.path).fields["llama.attention.head_count_kv"]
    assert int(field.parts[field.data[0]][0]) == 2
    kv_mha, kv_gqa = kv_cache_bytes_per_token(mha.path), kv_cache_bytes_per_token(gqa.path)
    # read from llama.cpp's own state sizes: 2 (K,V) x 2 layers x kv_heads x 32 dims x 2 bytes (F16)
    assert kv_mha["kv_cache_bytes_per_token"] == 2 * 2 * 8 * 32 * 2
    assert kv_mha["kv_cache_bytes_per_token"] == 4 * kv_gqa["kv_cache_bytes_per_token"]
    assert (kv_mha["n_head_kv"], kv_gqa["n_head_kv"]) == (8, 2)


def test_llamacpp_perplexity_matches_transformers(tmp_path, llama_mha, traces) -> None:
    from converters.finetune import heldout_loss

    held = examples(llama_mha, traces, 4)
    loss, _ = heldout_loss(AutoModelForCausalLM.from_pretrained(llama_mha, dtype=torch.float32), held)
    gguf_path = export(llama_mha, tmp_path / "f32.gguf", "f32").path
    measured = heldout_perplexity(gguf_path, [(e.input_ids, e.labels) for e in held], threads=1)
    assert measured["heldout_tokens"] == sum(e.n_target_tokens for e in held)
    assert measured["heldout_nll"] == pytest.approx(loss, rel=1e-3)


# --- QLoRA -----------------------------------------------------------------------------


def test_qlora_steps_lower_the_loss_with_a_4bit_base(tmp_path, qwen_mha, traces) -> None:
    import bitsandbytes as bnb

    train = examples(qwen_mha, traces, 8)
    cfg = FinetuneConfig(**FT, epochs=3, ckpt_every=100, exits=(1,))
    result = finetune(qwen_mha, train, tmp_path / "ft", cfg, heldout=train[:4], progress=False)
    assert result.steps == 6 and not result.interrupted
    assert result.loss_last < result.loss_first - 0.5, result.history
    assert result.heldout_loss_after < result.heldout_loss_before - 0.5
    assert set(result.exit_heldout_loss_after) == {"1"}
    adapter = tmp_path / "ft" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (tmp_path / "ft" / "exit_heads").is_dir()
    config = json.loads((adapter / "adapter_config.json").read_text())
    targets = config["target_modules"]  # "all-linear": every linear layer of the blocks, not lm_head
    assert len(targets) == 2 * 7 and {t.rsplit(".", 1)[-1] for t in targets} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    from converters.finetune import load_base

    model = load_base(qwen_mha, cfg, torch.device("cpu"))
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, qwen_mha, traces) -> None:
    train = examples(qwen_mha, traces, 12)
    cfg = FinetuneConfig(**FT, epochs=2, ckpt_every=2, dropout=0.1, exits=(1,))  # dropout: the RNG state matters
    whole = finetune(qwen_mha, train, tmp_path / "whole", cfg, progress=False)
    cut = finetune(qwen_mha, train, tmp_path / "cut", cfg, progress=False, stop_after=5)  # a "kill" after step 5
    assert cut.interrupted and cut.steps == 5 and not (tmp_path / "cut" / "adapter").exists()
    resumed = finetune(qwen_mha, train, tmp_path / "cut", cfg, progress=False, resume=True)
    assert resumed.resumed_from_step == 4 and resumed.steps == whole.steps == 6
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history], abs=1e-6)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ha = load_file(str(tmp_path / "whole" / "exit_heads" / "exit_heads.safetensors"))
    hb = load_file(str(tmp_path / "cut" / "exit_heads" / "exit_heads.safetensors"))
    assert all(torch.allclose(ha[k], hb[k], atol=1e-6) for k in ha)
    with pytest.raises(FinetuneError, match=r"other settings \(lr: 0.003 -> 0.001\)"):
        finetune(qwen_mha, train, tmp_path / "cut", FinetuneConfig(**{**FT, "lr": 1e-3}, epochs=2, ckpt_every=2,
                                                                   dropout=0.1, exits=(1,)), resume=True, progress=False)


@pytest.mark.parametrize("into", ["full", "nf4"])
def test_merged_model_computes_what_base_plus_adapter_computes(tmp_path, qwen_mha, traces, into) -> None:
    from peft import PeftModel

    from converters.finetune import _keep_4bit_trainable, bnb_config

    train = examples(qwen_mha, traces, 4)
    finetune(qwen_mha, train, tmp_path / "ft", FinetuneConfig(**FT, epochs=2, ckpt_every=100), progress=False)
    adapter = tmp_path / "ft" / "adapter"
    merged_dir = merge_adapter(qwen_mha, adapter, tmp_path / "merged", into=into)
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    if into == "full":  # the adapter on the original full-precision weights
        base = AutoModelForCausalLM.from_pretrained(qwen_mha, dtype=torch.float32)
    else:  # the adapter on the NF4 weights it was trained against
        base = AutoModelForCausalLM.from_pretrained(qwen_mha, quantization_config=bnb_config(torch.float32),
                                                    dtype=torch.float32, device_map={"": "cpu"})
        _keep_4bit_trainable(base)
    reference = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    ids = torch.tensor([train[0].input_ids[:64]])
    with torch.no_grad():
        want, got = reference(ids).logits, merged(ids).logits
        untouched = AutoModelForCausalLM.from_pretrained(qwen_mha, dtype=torch.float32)(ids).logits
    assert (want - untouched).abs().max() > 0.1  # the adapter does change the model
    assert torch.allclose(got, want, atol=1e-3), (got - want).abs().max()


def _launch_finetune(model: Path, data: Path, out: Path, *extra: str, processes: int = 1) -> subprocess.Popen:
    args = ["--model", str(model), "--data", str(data), "--out", str(out), "--holdout", "0", "--rank", "8",
            "--alpha", "16", "--lr", "0.003", "--batch-size", "4", "--micro-batch-size", "2", "--warmup-steps", "1",
            "--max-seq-len", "512", "--layout", "step", "--threads", "1", "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if processes > 1:
        # --multi_gpu picks accelerate's torchrun launcher, which starts N processes; with no GPU
        # the Accelerator runs them on the CPU over gloo. (`--cpu` alone starts one process.)
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "converters.finetune", *args]
    else:
        cmd = [sys.executable, "-m", "converters.finetune", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _subset(traces: Path, out: Path, n: int) -> Path:
    out.write_text("".join(traces.read_text().splitlines(keepends=True)[:n]))
    return out


def test_two_process_accelerate_run_matches_one_process(tmp_path, llama_mha, traces) -> None:
    data = _subset(traces, tmp_path / "d.jsonl", 8)
    # no LoRA dropout: each process draws its own masks, so only then are the runs comparable
    one = _launch_finetune(llama_mha, data, tmp_path / "one", "--epochs", "1", "--dropout", "0")
    out, err = one.communicate(timeout=300)
    assert one.returncode == 0, err[-3000:]
    two = _launch_finetune(llama_mha, data, tmp_path / "two", "--epochs", "1", "--dropout", "0", processes=2)
    out2, err2 = two.communicate(timeout=600)
    assert two.returncode == 0, err2[-3000:]
    r1, r2 = json.loads(out), json.loads(out2)
    assert r2["world_size"] == 2 and r1["world_size"] == 1 and r2["steps"] == r1["steps"] == 2
    # the same global batches, gradients all-reduced: the same optimisation up to float order
    assert r2["loss_last"] == pytest.approx(r1["loss_last"], rel=1e-4)
    a = load_file(str(tmp_path / "one" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "adapter" / "adapter_model.safetensors"))
    # Adam divides by sqrt(v): where a gradient is ~0, float-order noise between the
    # all-reduced and the single-process gradient can move a weight by up to ~lr per step,
    # so weights are compared at that scale (unsynchronised processes differ far more).
    lr_times_steps = 0.003 * 2
    assert all(torch.allclose(a[k], b[k], atol=lr_times_steps) for k in a)


@pytest.mark.slow
def test_kill_minus_nine_then_resume(tmp_path, llama_mha, traces) -> None:
    data = _subset(traces, tmp_path / "d.jsonl", 16)
    whole = _launch_finetune(llama_mha, data, tmp_path / "whole", "--epochs", "3", "--ckpt-every", "2")
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    victim = _launch_finetune(llama_mha, data, tmp_path / "cut", "--epochs", "3", "--ckpt-every", "2")
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step < 12
    resumed = _launch_finetune(llama_mha, data, tmp_path / "cut", "--epochs", "3", "--ckpt-every", "2", "--resume")
    out2, err2 = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err2[-3000:]
    assert json.loads(out2)["resumed_from_step"] == step
    assert json.loads(out2)["loss_last"] == pytest.approx(json.loads(out)["loss_last"], abs=1e-6)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


# --- the bundle ------------------------------------------------------------------------


def _fake_bundle(path: Path) -> Path:
    path.mkdir()
    variants = []
    for vid, size in (("m-q8_0", 300), ("m-exit1-q8_0", 200)):
        f = path / f"{vid}.gguf"
        f.write_bytes(os.urandom(size))
        variants.append({"id": vid, "quant": "q8_0", "exit_layer": 2 if "exit" not in vid else 1, "n_layers": 2,
                         "path": f.name, "sha256": sha256_file(f), "size_bytes": size, "quality": {"perplexity": 3.0}})
    manifest = make_manifest(variants, source_model={"name": "m"}, prompt_format=PromptFormat(), tokenizer={},
                             measurements={}, profile="snapdragon-8-gen-2")
    write_manifest(path, manifest)
    return path


def test_bundle_loads_whole_and_refuses_missing_or_altered_files(tmp_path) -> None:
    bundle = load_bundle(_fake_bundle(tmp_path / "b"))
    assert [v.id for v in bundle.variants] == ["m-q8_0", "m-exit1-q8_0"]
    assert bundle.manifest["action_schema_version"] == 1 and bundle.best_quality().id == "m-q8_0"

    altered = tmp_path / "b" / "m-exit1-q8_0.gguf"
    data = bytearray(altered.read_bytes())
    data[100] ^= 1  # one bit, same size
    altered.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{altered}: altered \(variant m-exit1-q8_0: sha256"):
        load_bundle(tmp_path / "b")

    missing = tmp_path / "b" / "m-q8_0.gguf"
    missing.unlink()
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "b")
    assert f"{missing}: missing (variant m-q8_0)" in str(info.value)
    assert f"{altered}: altered" in str(info.value)  # every bad file, in one message

    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json: missing"):
        load_bundle(tmp_path / "b")


def test_manifest_may_not_point_outside_the_bundle(tmp_path) -> None:
    path = _fake_bundle(tmp_path / "b")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["variants"][0]["path"] = "../outside.gguf"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"variants\[0\]\.path: '../outside.gguf' must be a relative path"):
        load_bundle(path)
    del manifest["variants"][0]["sha256"]
    manifest["variants"][0]["path"] = "m-q8_0.gguf"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"variants\[0\]\.sha256: field required"):
        load_bundle(path)


def test_convert_end_to_end_on_a_tiny_mha_model(tmp_path, llama_mha, traces) -> None:
    """`edgeagent convert` with GQA, exits and two quants; no baseline/reference to stay fast."""
    out = tmp_path / "bundle"
    args = ["convert", str(llama_mha), "--data", str(traces), "-o", str(out), "--gqa-groups", "4",
            "--exits", "1", "--quants", "q8_0,q4_k_m", "--epochs", "1", "--batch-size", "4", "--rank", "8",
            "--lr", "0.003", "--max-seq-len", "512", "--layout", "step", "--holdout", "0.34", "--eval-tasks", "1",
            "--eval-max-steps", "2", "--eval-examples", "4", "--no-baseline", "--no-reference", "--threads", "1",
            "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    bundle = load_bundle(out)
    assert manifest == bundle.manifest
    assert sorted((v.quant, v.exit_layer) for v in bundle.variants) == [
        ("q4_k_m", 1), ("q4_k_m", 2), ("q8_0", 1), ("q8_0", 2)]
    for v in manifest["variants"]:
        assert {"id", "quant", "exit_layer", "n_layers", "path", "sha256", "size_bytes", "quality"} <= set(v)
        assert v["quality"]["perplexity"] > 1 and v["quality"]["tasks"] == 1
        assert v["kv_cache_bytes_per_token"] == (2 if v["exit_layer"] == 2 else 1) * 2 * 2 * 32 * 2
    assert manifest["source_model"]["num_key_value_heads"] == 2
    assert manifest["source_model"]["source_num_key_value_heads"] == 8
    assert manifest["prompt_format"]["kind"] == "chat" and manifest["action_schema_version"] == 1
    m = manifest["measurements"]
    assert m["gqa"]["kv_cache_bytes_per_token"]["ratio"] == 4.0  # measured on the source export too
    assert m["finetune"]["loss_last"] < m["finetune"]["loss_first"]
    assert m["heldout_loss"]["finetuned"] < m["heldout_loss"]["gqa_pooled"]
    # dedicated exits default to EE-Tuning after the fine-tune: the fine-tune itself had no exit loss
    assert m["exit_training"]["method"] == "ee-tuning" and m["exit_training"]["exits"] == [1]
    assert m["finetune"]["exit_heldout_loss_after"] is None
    assert (tmp_path / "bundle.work" / "exit_heads" / "exit_heads.safetensors").is_file()
    assert (tmp_path / "bundle.work" / "finetune" / "checkpoint.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no staging left behind


def test_convert_reports_bad_data_and_missing_builtin(tmp_path, llama_mha, monkeypatch) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": {}}\nnot json\n')
    result = CliRunner().invoke(app, ["convert", str(llama_mha), "--data", str(bad), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert f"{bad}:1: trace step: missing key 'observation'" in result.output
    assert f"{bad}:2: not valid JSON" in result.output
    assert not (tmp_path / "b").exists()

    import edgeagent.builtin as builtin

    monkeypatch.setattr(builtin, "PACKAGE_DIR", tmp_path / "nowhere")
    result = CliRunner().invoke(app, ["convert", "builtin", "--data", str(bad), "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "built-in model is not in this checkout" in result.output


def test_builtin_recipe_trains_on_several_trace_files_and_resumes(tmp_path) -> None:
    """The recipe's whole loop on two `edgeagent traces` files (base mix + oversampled
    templates): tokenizer, packed steps, held-out evaluation, best-model save, checkpoint,
    a resume that continues from the checkpoint's step, and the kept evaluated models."""
    from converters.recipes.train_builtin import main as recipe_main
    from edgeagent.cli import app

    base, weak = tmp_path / "base.jsonl", tmp_path / "weak.jsonl"
    runner = CliRunner()
    for out, extra in ((base, []), (weak, ["--templates", "calc_binary"])):
        result = runner.invoke(app, ["traces", "--n", "6", "--seed", "7", "-o", str(out), "--json", *extra])
        assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    common = ["--data", str(base), str(weak), "--out", str(out), "--layers", "1", "--vocab-size", "400",
              "--batch-tokens", "1024", "--holdout-tasks", "2", "--eval-every", "2", "--ckpt-every", "2",
              "--warmup", "1", "--no-bf16"]
    recipe_main([*common, "--steps", "2"])
    card = json.loads((out / "model" / "training.json").read_text())
    assert card["data"] == [str(base), str(weak)] and card["step"] == 2 and card["init"] is None
    assert card["shape"]["num_hidden_layers"] == 1 and card["shape"]["num_key_value_heads"] == 2
    assert 0.0 <= card["step_exact_match"] <= 1.0 and card["heldout_loss"] > 0
    recipe_main([*common, "--steps", "4", "--resume", "--keep-evals"])
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    # --keep-evals keeps each evaluated model beside the best one, for choosing by task success
    assert [d.name for d in (out / "evals").iterdir()] == ["step-4"]
    assert json.loads((out / "evals" / "step-4" / "training.json").read_text())["step"] == 4
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(SystemExit, match="missing.jsonl: no such traces file"):
        recipe_main(["--data", str(base), str(missing), "--out", str(out)])


def test_convert_trains_an_episode_per_forward_pass_without_recomputation(tmp_path, monkeypatch) -> None:
    """The command's defaults follow the recipe's measured levers (train_agent levers): episodes
    differ in length, so the episode layout takes one per forward pass (no padding), and
    gradient checkpointing is off unless asked for; the step layout keeps the batch whole."""
    import converters.convert as convert_mod

    seen = []

    def capture(cfg, **_):
        seen.append(cfg.finetune)
        raise convert_mod.ConvertError("captured")

    monkeypatch.setattr(convert_mod, "convert", capture)
    data = tmp_path / "d.jsonl"
    data.write_text("")
    for extra in ([], ["--layout", "step"], ["--grad-checkpointing", "--micro-batch-size", "2"], ["--layout", "delta"]):
        result = CliRunner().invoke(app, ["convert", "builtin", "--data", str(data), "-o", str(tmp_path / "b"), *extra])
        assert result.exit_code == 2 and "captured" in result.output
    episode, step, asked, delta = seen
    assert (episode.micro_batch_size, episode.gradient_checkpointing) == (1, False)
    assert (step.micro_batch_size, step.batch_size) == (8, 8)
    assert (asked.micro_batch_size, asked.gradient_checkpointing) == (2, True)
    assert delta.micro_batch_size == 1
    result = CliRunner().invoke(app, ["convert", "builtin", "--data", str(data), "-o", str(tmp_path / "b"), "--layout", "zigzag"])
    assert result.exit_code == 2 and "--layout 'zigzag'" in result.output and len(seen) == 4


def test_a_shipped_agent_is_converted_in_the_layout_it_was_trained_in() -> None:
    from converters.convert import ConvertError, resolve_model, source_layout
    from edgeagent.agents import shipped_agent

    assert source_layout("agent:smollm2") == shipped_agent("smollm2").prompt_format.layout
    assert source_layout("smollm2-135m-instruct") == "episode"
    for call in (source_layout, resolve_model):
        with pytest.raises(ConvertError, match="nosuch"):
            call("agent:nosuch")
