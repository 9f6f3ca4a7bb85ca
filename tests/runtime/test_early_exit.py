"""Early exit end to end on tiny random models: the loss, EE-Tuning with resume, exit variants
packed as GGUF and checked against transformers, and self-speculative decoding in llama.cpp
giving the full model's greedy output token for token (with and without the agent's grammar)
while keeping logits memory to a few rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

from converters import early_exit as ee  # noqa: E402
from edgeagent.export.exit_pack import (  # noqa: E402
    HEADS_FILE, HEADS_META, EarlyExitError, pack_exits, parse_exits, sha256_file, write_exit_model,
)
from converters.tiny import TinyConfig, make_tiny_model  # noqa: E402
from edgeagent.engine import Engine  # noqa: E402
from edgeagent.quantize import all_logits  # noqa: E402
from edgeagent.speculative import LlamaRunner, SelfSpeculativeEngine, transplant_kv  # noqa: E402

torch.set_num_threads(1)  # a shared 2-core machine: see tests/runtime/test_engine.py

N_LAYERS = 4
PROMPTS = [
    "The agent opens the Settings app, scrolls down to Display, and taps Brightness.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256",
    "def tokens_per_second(n_tokens, seconds):",
]


def load_hf(model_dir: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("ee") / "hf", TinyConfig(num_layers=N_LAYERS, seed=7))


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    """Expert steps on a few emulated tasks, in `edgeagent traces` format."""
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode, trace_records

    phone = EmulatedPhone()
    lines = []
    for task in generate_tasks(6, seed=3):
        lines += [json.dumps(r) for r in trace_records(run_episode(phone, task, expert_action))]
    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def packed(model_dir, tmp_path_factory):
    """F32 GGUFs of the full model and its shared exits at 1 and 2."""
    out = tmp_path_factory.mktemp("packed")
    variants = pack_exits(model_dir, None, "1,2,4", ["f32"], out)
    return out, {v["exit_layer"]: out / v["path"] for v in variants}, variants


# --- exit depths ---------------------------------------------------------------------------


def test_parse_exits_counts_and_fractions():
    assert parse_exits("2,4,6", 6) == [2, 4, 6]
    assert parse_exits("0.33,0.66", 6) == [2, 4]
    assert parse_exits("4, 2,2", 6) == [2, 4]
    assert parse_exits([1, 0.5], 4) == [1, 2]
    for bad in ("0", "7", "1.5", "x", "", "2.5e0"):
        with pytest.raises(EarlyExitError):
            parse_exits(bad, 6)


# --- the loss --------------------------------------------------------------------------------


def _batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 16), generator=g)
    labels = ids.clone()
    labels[:, :9] = -100  # loss on the "action" tail only
    return ids, labels


def test_loss_shapes_weights_and_per_exit_terms(model_dir):
    model = load_hf(model_dir)
    heads = ee.ExitHeads(model, [1, 2, 3, 4], "dedicated")
    assert heads.exits == [1, 2, 3]  # 4 = L is the model's own head
    ids, labels = _batch(model.config.vocab_size)
    out = model(ids, output_hidden_states=True)
    loss, per_exit = ee.early_exit_loss(out.hidden_states, labels, model, heads, [1, 2, 3, 4],
                                        final_logits=out.logits, temperature=2.0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert sorted(per_exit) == [1, 2, 3]
    weights = [per_exit[k]["weight"] for k in (1, 2, 3)]
    assert weights == pytest.approx([1 / 10, 3 / 10, 6 / 10])  # LayerSkip's Σ_{i≤l} i, normalised
    expected = sum(v["weight"] * (v["ce"] + v["kd"]) for v in per_exit.values())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(EarlyExitError):
        ee.early_exit_loss(out.hidden_states, labels, model, heads, [1], final_logits=None, kd_weight=1.0)


def test_kd_is_zero_when_the_exit_equals_the_final_layer(model_dir):
    """Zero the residual updates of the last block: the exit after block L-1 then *is* the
    final layer, so distillation is 0 and its CE equals the model's own loss."""
    model = load_hf(model_dir)
    last = model.model.layers[-1]
    with torch.no_grad():
        last.self_attn.o_proj.weight.zero_()
        last.mlp.down_proj.weight.zero_()
    heads = ee.ExitHeads(model, [N_LAYERS - 1], "shared")
    ids, labels = _batch(model.config.vocab_size, seed=1)
    out = model(ids, labels=labels, output_hidden_states=True)
    _, per_exit = ee.early_exit_loss(out.hidden_states, labels, model, heads, [N_LAYERS - 1],
                                     final_logits=out.logits, temperature=3.0)
    assert per_exit[N_LAYERS - 1]["kd"] == pytest.approx(0.0, abs=1e-6)
    assert per_exit[N_LAYERS - 1]["ce"] == pytest.approx(float(out.loss.detach()), rel=1e-5)


def test_gradient_reaches_only_the_heads_when_the_body_is_frozen(model_dir):
    model = load_hf(model_dir)
    for p in model.parameters():
        p.requires_grad_(False)
    heads = ee.ExitHeads(model, [1, 2], "dedicated")
    ids, labels = _batch(model.config.vocab_size, seed=2)
    out = model(ids, output_hidden_states=True)
    loss, _ = ee.early_exit_loss(out.hidden_states, labels, model, heads, [1, 2], final_logits=out.logits)
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())
    # an untrained dedicated exit is exactly the shared one
    shared = ee.ExitHeads(model, [1], "shared")
    h = out.hidden_states[1]
    assert torch.allclose(heads.logits(model, 1, h), shared.logits(model, 1, h), atol=1e-5)


def test_shared_exit_trains_the_body_below_it_only(model_dir):
    model = load_hf(model_dir).train()
    heads = ee.ExitHeads(model, [1], "shared")
    ids, labels = _batch(model.config.vocab_size, seed=3)
    out = model(ids, output_hidden_states=True)
    loss, _ = ee.early_exit_loss(out.hidden_states, labels, model, heads, [1], final_logits=out.logits)
    loss.backward()
    assert model.model.layers[0].mlp.down_proj.weight.grad is not None
    assert model.model.layers[2].mlp.down_proj.weight.grad is None  # above the exit: no gradient
    assert model.lm_head.weight.grad is not None


def test_layer_dropout_skips_layers_in_training_only(model_dir):
    probs = ee.layer_dropout_probs(N_LAYERS, 0.5)
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.5) and probs == sorted(probs)
    model = load_hf(model_dir)
    ids, _ = _batch(model.config.vocab_size)
    with torch.no_grad():
        reference = model(ids).logits
    handle = ee.layer_dropout(model, p_max=0.9, seed=0)
    try:
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(ids).logits, reference)  # eval: never dropped
        model.train()
        dropped = set()
        for _ in range(10):
            model(ids)
            dropped |= set(handle.dropped)
        assert dropped and 0 not in dropped  # layer 0 has p = 0
    finally:
        handle.remove()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference)


# --- EE-Tuning: train the heads, checkpoint, resume ---------------------------------------------


def test_train_exits_resumes_where_an_uninterrupted_run_ends(model_dir, traces, tmp_path):
    cfg = ee.ExitTrainConfig(holdout_tasks=1, batch_tokens=1024, ckpt_every=1, warmup=1, eval_batches=1)
    whole = ee.train_exits(model_dir, traces, "1,2", "dedicated", tmp_path / "whole", steps=4, lr=3e-3,
                           config=cfg, log=None)
    assert whole["exits"] == [1, 2] and whole["steps"] == 4

    class Killed(Exception):
        pass

    def kill_at_2(step, _record):
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        ee.train_exits(model_dir, traces, "1,2", "dedicated", tmp_path / "cut", steps=4, lr=3e-3,
                       config=cfg, on_step=kill_at_2, log=None)
    assert not (tmp_path / "cut" / HEADS_FILE).exists()
    resumed = ee.train_exits(model_dir, traces, "1,2", "dedicated", tmp_path / "cut", steps=4, lr=3e-3,
                             config=cfg, resume=True, log=None)
    assert resumed["steps"] == 4
    from safetensors.numpy import load_file

    a, b = load_file(str(tmp_path / "whole" / HEADS_FILE)), load_file(str(tmp_path / "cut" / HEADS_FILE))
    assert sorted(a) == ["head.1.weight", "head.2.weight", "norm.1.weight", "norm.2.weight"]
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-6)
    meta = json.loads((tmp_path / "whole" / HEADS_META).read_text())
    assert meta["kind"] == "dedicated" and meta["exits"] == [1, 2]
    # the trained heads fit the data better than the untrained (shared) start
    assert meta["heldout_loss_after"]["1"] < meta["heldout_loss_before"]["1"]

    with pytest.raises(EarlyExitError, match="nothing to train"):
        ee.train_exits(model_dir, traces, "1", "shared", tmp_path / "shared", steps=1, log=None)


def test_lens_exits_learn_with_the_model_frozen(model_dir, traces, tmp_path):
    """EE-Tuning of lens exits: the held-out loss at each exit falls, and the full depth's own
    held-out loss is the same before and after (the model is frozen)."""
    cfg = ee.ExitTrainConfig(holdout_tasks=1, batch_tokens=1024, ckpt_every=10, warmup=1, eval_batches=1)
    meta = ee.train_exits(model_dir, traces, "1,2", "lens", tmp_path / "lens", steps=6, lr=3e-3, config=cfg, log=None)
    before, after = meta["heldout_loss_before"], meta["heldout_loss_after"]
    assert after["1"] < before["1"] and after["2"] < before["2"]
    assert after[str(N_LAYERS)] == pytest.approx(before[str(N_LAYERS)], rel=1e-6)
    saved = json.loads((tmp_path / "lens" / HEADS_META).read_text())
    assert saved["kind"] == "dedicated" and saved["head_form"] == "lens"


# --- packing: exit directory -> GGUF -> llama.cpp == transformers ---------------------------------


def _hf_exit_logits(model_dir: Path, heads: ee.ExitHeads | None, k: int, tokens: list[int]) -> np.ndarray:
    model = load_hf(model_dir)
    heads = heads or ee.ExitHeads(model, [k], "shared")
    with torch.no_grad():
        out = model(torch.tensor([tokens]), output_hidden_states=True)
        return heads.logits(model, k, out.hidden_states[k])[0].numpy()


@pytest.mark.parametrize("kind", ["shared", "dedicated", "lens"])
def test_exit_gguf_matches_the_truncated_transformers_model(model_dir, tmp_path, kind):
    import gguf

    k = 2
    heads_dir = None
    heads = None
    if kind == "dedicated":
        model = load_hf(model_dir)
        heads = ee.ExitHeads(model, [k], "dedicated")
        with torch.no_grad():  # make it differ from the shared head
            heads.norms[str(k)].weight.mul_(1.3)
            heads.heads[str(k)].weight.add_(0.05 * torch.randn_like(heads.heads[str(k)].weight))
        heads_dir = tmp_path / "heads"
        ee.save_heads(heads, heads_dir, {})
    if kind == "lens":  # its own norm and a d x d map before the model's head, packed as E W
        model = load_hf(model_dir)
        heads = ee.ExitHeads(model, [k], "lens")
        assert sum(p.numel() for p in heads.parameters()) == model.config.hidden_size * (1 + model.config.hidden_size)
        with torch.no_grad():
            heads.norms[str(k)].weight.mul_(1.3)
            heads.lenses[str(k)].weight.add_(0.1 * torch.randn_like(heads.lenses[str(k)].weight))
        heads_dir = tmp_path / "heads"
        ee.save_heads(heads, heads_dir, {})
    exit_dir = write_exit_model(model_dir, heads_dir, k, tmp_path / "exit")
    config = json.loads((exit_dir / "config.json").read_text())
    assert config["num_hidden_layers"] == k
    assert config["edgeagent_exit"]["kind"] == ("shared" if kind == "shared" else "dedicated")

    from edgeagent.export.hf_to_gguf import export

    gguf_path = Path(export(exit_dir, tmp_path / "exit.gguf", "f32").path)
    reader = gguf.GGUFReader(gguf_path)
    assert int(reader.fields["llama.block_count"].contents()) == k
    assert not any(t.name.startswith(f"blk.{k}.") for t in reader.tensors)

    llm = LlamaRunner(gguf_path, n_ctx=256, n_threads=1)
    tokens = llm.tokenize(PROMPTS[0])
    llm.close()
    got = all_logits(gguf_path, tokens, threads=1)
    want = _hf_exit_logits(model_dir, heads, k, tokens)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-3


def test_pack_exits_variants_describe_their_files(packed):
    out, paths, variants = packed
    assert [v["exit_layer"] for v in variants] == [1, 2, 4]
    for v in variants:
        assert set(v) == {"id", "quant", "exit_layer", "n_layers", "path", "sha256", "size_bytes"}
        f = out / v["path"]
        assert v["n_layers"] == N_LAYERS and v["quant"] == "f32"
        assert v["sha256"] == sha256_file(f) and v["size_bytes"] == f.stat().st_size
    assert paths[1].stat().st_size < paths[2].stat().st_size < paths[4].stat().st_size
    assert not list(out.glob(".exit-dirs*"))  # scratch directories are cleaned up


# --- self-speculative decoding ----------------------------------------------------------------------


def _agent_grammar() -> tuple[str, str]:
    """The agent's real per-screen grammar and prompt, on the emulated phone's home screen."""
    from android_bridge.emulator.phone import EmulatedPhone
    from edgeagent.agent.grammar import action_grammar
    from edgeagent.agent.prompt import build_prompt, observation_text

    screen = EmulatedPhone(seed=1).screen()
    obs = observation_text(screen.elements, screen.app)
    return action_grammar(screen.elements, apps=None, allow_xy=False), build_prompt("Open the Clock app", obs, None)


@pytest.mark.parametrize("forced_batching", [True, False])
def test_self_speculative_output_is_the_full_models_greedy_output(packed, forced_batching):
    _, paths, _ = packed
    grammar, agent_prompt = _agent_grammar()
    with Engine(paths[4], n_ctx=1024, n_threads=1, track_peak_rss=False) as full, \
            SelfSpeculativeEngine(paths[4], paths[2], n_draft=3, n_ctx=1024, n_threads=1,
                                  forced_batching=forced_batching) as spec:
        cases = [(p, None) for p in PROMPTS] + [(agent_prompt, grammar), (PROMPTS[0], grammar)]
        for prompt, gram in cases:
            want = full.generate(prompt, max_tokens=40, temperature=0.0, grammar=gram)
            got = spec.generate(prompt, max_tokens=40, temperature=0.0, grammar=gram)
            assert got.tokens == want.tokens, (prompt[:30], gram is not None)
            assert got.text == want.text
            if gram is not None and want.metrics.stop_reason == "eos":
                json.loads(got.text)  # a complete action
        stats = spec.stats.to_dict()
    assert stats["kv_transplants"] > 0  # the draft never prefilled the prompts itself
    print(f"acceptance rate {stats['acceptance_rate']:.2f} ({stats['accepted']}/{stats['drafted']}), "
          f"{stats['tokens_per_round']:.2f} tokens per verification, forced {stats['forced_tokens']}")
    assert stats["drafted"] > 0 and 0.0 <= stats["acceptance_rate"] <= 1.0
    assert stats["rounds"] < stats["generated_tokens"] + stats["calls"]


def test_legal_token_sets_match_a_whole_vocabulary_check(packed):
    """The first-byte index gives exactly the tokens llama.cpp's grammar allows, at every
    position of random walks through the agent's grammar."""
    from edgeagent.speculative import TokenIndex

    _, paths, _ = packed
    grammar, _ = _agent_grammar()
    rng = np.random.default_rng(0)
    with SelfSpeculativeEngine(paths[4], None, n_draft=0, n_ctx=256, n_threads=1) as engine:
        index = TokenIndex(engine.full)
        everything = np.arange(engine.full.n_vocab, dtype=np.int32)
        checked = 0
        for _walk in range(6):
            state = engine._grammar(grammar)
            for _step in range(60):
                want = state.filter(everything)
                np.testing.assert_array_equal(index.legal(state), want)
                checked += 1
                choices = [t for t in want if not engine.full.is_eog(int(t))]
                if not choices:
                    break
                state.accept(int(rng.choice(choices)))
            state.close()
    assert checked > 100


def test_draft_kv_cache_taken_from_the_full_model_equals_its_own_prefill(packed):
    """LayerSkip's cache reuse: the exit variant's KV cache is the full model's first k
    layers; loaded from the full model's state, the draft continues exactly as after its own
    prefill."""
    _, paths, _ = packed
    full = LlamaRunner(paths[4], n_ctx=512, n_threads=1)
    own = LlamaRunner(paths[2], n_ctx=512, n_threads=1)
    shared = LlamaRunner(paths[2], n_ctx=512, n_threads=1)
    try:
        prompt = full.tokenize(PROMPTS[0] * 3)
        full.feed(prompt, 1)
        own.feed(prompt, 1)
        assert transplant_kv(full, shared)
        assert shared.tokens == prompt
        continuation = prompt + [11, 22, 33]
        own.feed(continuation, 3)
        shared.feed(continuation, 3)
        assert shared.decoded_tokens == 3  # no prefill
        for row in range(3):
            np.testing.assert_array_equal(own.logits(row), shared.logits(row))
    finally:
        for r in (full, own, shared):
            r.close()


def test_speculative_decoding_keeps_logits_to_a_few_rows(packed):
    """The memory rule: no context with logits for every position (llama_cpp.Llama's
    logits_all / draft_model path keeps n_ctx x n_vocab floats); each decode asks for at most
    n_draft + 1 rows."""
    _, paths, _ = packed
    n_draft = 4
    with SelfSpeculativeEngine(paths[4], paths[1], n_draft=n_draft, n_ctx=2048, n_threads=1) as spec:
        spec.generate(PROMPTS[0] * 4, max_tokens=48)
        for runner in (spec.full, spec.draft):
            assert isinstance(runner, LlamaRunner) and not isinstance(runner, llama_cpp.Llama)
            assert not hasattr(runner, "scores") and not getattr(runner, "_logits_all", False)
        assert spec.full.max_output_rows <= n_draft + 1
        assert spec.draft.max_output_rows == 1
        # every decode's logits are vocab-sized rows in llama.cpp's buffer, nothing else
        assert spec.full.logits(0).shape == (spec.full.n_vocab,)


def test_calm_rule_and_n_draft_zero(packed):
    _, paths, _ = packed
    grammar, prompt = _agent_grammar()
    with Engine(paths[4], n_ctx=1024, n_threads=1, track_peak_rss=False) as full, \
            SelfSpeculativeEngine(paths[4], None, n_draft=0, n_ctx=1024, n_threads=1) as alone, \
            SelfSpeculativeEngine(paths[4], paths[2], n_draft=4, n_ctx=1024, n_threads=1, confidence=0.01) as calm:
        want = full.generate(prompt, max_tokens=40, grammar=grammar)
        assert alone.generate(prompt, max_tokens=40, grammar=grammar).tokens == want.tokens
        got = calm.generate(prompt, max_tokens=40, grammar=grammar)
        assert got.metrics["confident"] > 0  # a threshold this low takes the exit's tokens
        if got.metrics["stop_reason"] == "eos":
            json.loads(got.text)  # still grammar-constrained


def test_model_policy_runs_on_the_speculative_engine(packed):
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.policy import ModelPolicy

    _, paths, _ = packed
    task = generate_tasks(1, seed=2)[0]
    phone = EmulatedPhone()
    task.setup(phone)
    screen = phone.screen()
    with Engine(paths[4], n_ctx=2048, n_threads=1, track_peak_rss=False) as full, \
            SelfSpeculativeEngine(paths[4], paths[2], n_draft=4, n_ctx=2048, n_threads=1) as spec:
        a = ModelPolicy(full, copy_text=True).decide(task.instruction, screen, None)
        b = ModelPolicy(spec, copy_text=True).decide(task.instruction, screen, None)
    assert a.raw_output == b.raw_output
    assert "acceptance_rate" in b.metrics and "ttft_ms" in b.metrics


def _chat_bundle(packed, tmp_path):
    """A bundle of the packed f32 variants (full depth, exits 1 and 2) with a chat prompt format."""
    import shutil

    from edgeagent.agent.prompt import PromptFormat
    from edgeagent.export.bundle import make_manifest, write_manifest

    out, _paths, variants = packed
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for v in variants:
        shutil.copy(out / v["path"], bundle / v["path"])
    fmt = PromptFormat(kind="chat", layout="episode", system="You drive the phone.", add_bos=False,
                       chat_template="{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                                     "{% if add_generation_prompt %}<assistant>{% endif %}")
    variants = [{**v, "quality": {}} for v in variants]
    write_manifest(bundle, make_manifest(variants, source_model={"name": "tiny", "exit_heads": {"kind": "shared"}},
                                         prompt_format=fmt, tokenizer={}, measurements={}, profile=None))
    return bundle, fmt, variants


def test_early_exit_bench_runs_on_a_bundle_with_its_prompt_format(packed, tmp_path, monkeypatch):
    """`bench early-exit --bundle`: the bundle's own exit variants (nothing packed again), its
    manifest's prompt format in every agent run and in the held-out perplexity examples, the
    lossless speculative configurations identical to the full model; a quant or depth the
    bundle lacks is one error naming the bundle and what it has."""
    import edgeagent.early_exit_bench as eeb

    bundle, fmt, variants = _chat_bundle(packed, tmp_path)

    formats = []
    real_factory = eeb.model_policy_factory
    monkeypatch.setattr(eeb, "model_policy_factory",
                        lambda engine, **kw: formats.append(kw.get("prompt_format")) or real_factory(engine, **kw))
    prompts = []
    real_examples = eeb.expert_examples
    monkeypatch.setattr(eeb, "expert_examples",
                        lambda *a, **kw: prompts.extend(e["prompt"] for e in real_examples(*a, **kw)) or
                        real_examples(*a, **kw))
    target = eeb.bench_bundle(bundle, "f32", exclude_apps=["Notes"])
    assert target.exit_layers == [1, 2] and target.prepacked[N_LAYERS] == bundle.resolve() / variants[-1]["path"]
    result = eeb.run_early_exit_bench(target, "f32", tasks=2, seed=5, n_draft=2, confidence=None, heldout_tasks=1,
                                      max_steps=2, threads=1, draft_exits=[1])
    assert result["bundle"] and [r["exit_layer"] for r in result["exits"]] == [1, 2, N_LAYERS]
    assert {r["head"] for r in result["exits"] if r["exit_layer"] < N_LAYERS} == {"bundle (shared, fine-tuned)"}
    assert all(Path(r["gguf"]).parent == bundle.resolve() for r in result["exits"])
    assert formats and all(f == fmt for f in formats)
    assert prompts and all(p.startswith("<system>You drive the phone.\n<user>Task: ") for p in prompts)
    assert result["identical_outputs"] is True and result["lossless"] is True and result["exclude_apps"] == ["Notes"]
    assert result["speculative"]["configs"]["draft1"]["differences"]["differences"] == 0
    # the plain baseline evaluates every step's whole prompt; with every technique on, a later
    # step of an episode evaluates only its new turn
    tokens = result["all_techniques"]["evaluated_prompt_tokens_per_step"]
    assert tokens["plain"] > tokens["all_techniques"] > 0 and tokens["ratio"] > 1
    assert result["step_speedup_all_techniques"] > 0
    assert set(result["all_techniques"]["task_success"]) == {"plain", "all_techniques"}
    agree = result["speculative"]["configs"]["draft1"]["agreement"]
    assert agree["identical_episodes"] == agree["episodes"] == 2 and agree["matching_steps"] == agree["compared_steps"]
    choice = result["draft_choice"]
    assert [c["exit_layer"] for c in choice["candidates"]] == [1]
    assert (choice["draft"] is None) == bool(choice["why"])
    assert not list(tmp_path.glob("**/*exit1-f32.gguf.*"))  # nothing packed beside the bundle

    with pytest.raises(ValueError, match="no full-depth q4_k_m variant"):
        eeb.bench_bundle(bundle, "q4_k_m")
    with pytest.raises(ValueError, match=r"no f32 exit at depth 3 \(its f32 exits: 1, 2"):
        eeb.bench_bundle(bundle, "f32", "3")


@pytest.mark.parametrize("n_draft,forced_batching", [(2, True), (2, False), (0, True)])
def test_speculative_log_probabilities_are_the_full_models(packed, n_draft, forced_batching):
    """generate(logprobs=True) gives each returned token's log-probability under the full model,
    as Engine does (the agent's rescoring reads them: without them a policy acted differently
    on the speculative engine, and identical_outputs was false on chat prompts)."""
    _, paths, _ = packed
    grammar, prompt = _agent_grammar()
    # exact attention on both: verification in a batch then gives a one-token decode's bits
    engine = Engine(paths[N_LAYERS], n_ctx=1024, n_threads=1, seed=0, track_peak_rss=False, exact=True)
    spec = SelfSpeculativeEngine(paths[N_LAYERS], paths[1] if n_draft else None, n_draft=n_draft, n_ctx=1024,
                                 n_threads=1, forced_batching=forced_batching, exact=True)
    try:
        ids = engine.tokenize(prompt)
        want = engine.generate(ids, max_tokens=48, grammar=grammar, logprobs=True)
        got = spec.generate(ids, max_tokens=48, grammar=grammar, logprobs=True)
        assert got.tokens == want.tokens and len(got.logprobs) == len(want.logprobs) == len(want.tokens)
        assert np.allclose(got.logprobs, want.logprobs, atol=1e-3)
        assert spec.generate(ids, max_tokens=48, grammar=grammar).logprobs is None
    finally:
        spec.close()
        engine.close()


def test_draft_length_follows_measured_acceptance_and_costs():
    """alpha recovered from a measured acceptance rate; the predicted speed-up of a draft length
    is Leviathan et al.'s; a bad draft (alpha 0) or a costly one predicts a slow-down."""
    from edgeagent.early_exit_bench import per_token_acceptance, predicted_decode_speedup

    for alpha, n in ((0.3, 4), (0.7, 4), (0.9, 6)):
        rate = alpha * (1 - alpha**n) / ((1 - alpha) * n)  # accepted / drafted over rounds of n drafts
        assert per_token_acceptance(rate, n) == pytest.approx(alpha, abs=1e-6)
    full = {str(b): 10.0 + 0.5 * (b - 1) for b in range(1, 17)}  # verification of b tokens: nearly one decode
    cheap = {"1": 3.0}
    speed = {n: predicted_decode_speedup(0.8, n, full, cheap) for n in range(1, 16)}
    best = max(speed, key=speed.get)
    assert speed[best] > 1.3 and 1 < best < 15  # neither the shortest nor the longest draft
    assert predicted_decode_speedup(0.0, 4, full, cheap) < 1.0
    assert predicted_decode_speedup(0.8, 4, full, {"1": 10.0}) < speed[4]
    assert predicted_decode_speedup(0.8, 20, full, cheap) is None  # no measured cost for a batch of 21


def test_a_bundle_manifest_names_the_draft_that_run_and_demo_decode_with(packed, tmp_path):
    """`bench early-exit --save` writes the chosen draft into the manifest; resolving the bundle's
    full-depth variant then brings the draft, the demo decodes with it (same results as
    without: speculation is lossless), --no-speculative turns it off; a manifest naming a
    full-depth variant as the draft is refused, naming the key."""
    from typer.testing import CliRunner

    from edgeagent.bundle import BundleError, load_bundle
    from edgeagent.cli import app
    from edgeagent.early_exit_bench import save_draft_choice
    from edgeagent.variants import resolve_variant

    bundle, _fmt, variants = _chat_bundle(packed, tmp_path)
    chosen = {"exit_layer": 2, "n_draft": 3, "alpha": 0.8, "predicted_decode_speedup": 1.6,
              "measured_step_speedup": 1.2, "measured_n_draft": 4}
    result = {"draft_choice": {"draft": chosen}, "threads": 1, "tasks": 2, "seed": 5}
    entry = save_draft_choice(bundle, "f32", result)
    exit2 = next(v for v in variants if v["exit_layer"] == 2)
    assert entry["draft_variant"] == exit2["id"] and entry["n_draft"] == 3
    full = next(v for v in variants if v["exit_layer"] == N_LAYERS)
    choice = resolve_variant(bundle=bundle, variant=full["id"])
    assert choice.draft == bundle.resolve() / exit2["path"] and choice.n_draft == 3
    assert resolve_variant(bundle=bundle, variant=exit2["id"]).draft is None  # an exit runs alone

    outputs = {}
    for flag in ("--speculative", "--no-speculative"):
        run = CliRunner().invoke(app, ["demo", "--bundle", str(bundle), "--variant", full["id"], "--n", "2",
                                       "--seed", "3", "--max-steps", "3", "--threads", "1", "--sensitive", "allow",
                                       flag, "--json"])
        assert run.exit_code == 0, run.output
        outputs[flag] = json.loads(run.stdout)
    assert outputs["--speculative"]["speculative"] == {"draft": str(bundle.resolve() / exit2["path"]), "n_draft": 3}
    assert outputs["--no-speculative"]["speculative"] is None
    assert outputs["--speculative"]["success_rate"] == outputs["--no-speculative"]["success_rate"]

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["speculative"]["draft_variant"] = full["id"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="speculative.draft_variant"):
        load_bundle(bundle)


def test_drafts_at_fewer_bits_are_verified_by_the_full_model_and_saved_for_run(packed, model_dir, tmp_path):
    """`bench early-exit --bundle B --draft-quant Q`: the drafts are the bundle's exits at Q (the
    same layers in fewer bytes) under the full model at the bench's quant; the output stays the
    full model's, and --save names the Q8_0 draft for the F32 model, which run then decodes with.
    A draft quant the bundle lacks is one error naming what it has."""
    import shutil

    import edgeagent.early_exit_bench as eeb
    from edgeagent.bundle import load_bundle
    from edgeagent.export.bundle import write_manifest
    from edgeagent.variants import resolve_variant

    bundle, _fmt, variants = _chat_bundle(packed, tmp_path)
    low = pack_exits(model_dir, None, "1,2", ["q8_0"], tmp_path / "q8")
    for v in low:
        shutil.copy(tmp_path / "q8" / v["path"], bundle / v["path"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["variants"] += [{**v, "quality": {}} for v in low if v["exit_layer"] < N_LAYERS]
    write_manifest(bundle, manifest)

    target = eeb.bench_bundle(bundle, "f32", "1,2", exclude_apps=["Notes"], draft_quant="q8_0")
    assert target.draft_prepacked[1].name.endswith("exit1-q8_0.gguf") and target.prepacked[1].name.endswith("f32.gguf")
    result = eeb.run_early_exit_bench(target, "f32", tasks=2, seed=5, n_draft=2, confidence=None, heldout_tasks=0,
                                      max_steps=2, threads=1, draft_exits=[1])
    assert result["draft_quant"] == "q8_0" and result["quant"] == "f32" and result["lossless"]
    assert result["profile"]["draft_decode_cost_ms_by_depth"]["1"]
    assert "drafts at q8_0 under f32" in eeb.early_exit_summary(result)[0]
    chosen = {"exit_layer": 1, "n_draft": 2, "alpha": 0.8, "predicted_decode_speedup": 1.6,
              "measured_step_speedup": 1.2, "measured_n_draft": 2}
    entry = eeb.save_draft_choice(bundle, "f32", {**result, "draft_choice": {"draft": chosen}})
    exit1_q8 = next(v for v in low if v["exit_layer"] == 1)
    assert entry["quant"] == "f32" and entry["draft_variant"] == exit1_q8["id"]
    load_bundle(bundle)  # a manifest with a draft of another quant loads
    full = next(v for v in variants if v["exit_layer"] == N_LAYERS)
    assert resolve_variant(bundle=bundle, variant=full["id"]).draft == bundle.resolve() / exit1_q8["path"]
    with pytest.raises(ValueError, match=r"no q4_0 exit at depth 1, 2 for --draft-quant"):
        eeb.bench_bundle(bundle, "f32", "1,2", draft_quant="q4_0")
    from typer.testing import CliRunner

    from edgeagent.cli import app

    r = CliRunner().invoke(app, ["bench", "early-exit", "--draft-quant", "q8_0"])
    assert r.exit_code == 2 and r.output.strip() == "error: --draft-quant takes a bundle's exits at that quant: give --bundle"


def test_a_difference_is_judged_by_the_full_models_own_margins(packed):
    """`explain_difference`: at the first different token the margin is the full model's own
    logit gap (so the greedy token's is >= 0 and a worse token's is not a near tie), the two
    batch layouts of the same tokens differ by a measured, small noise, and equal outputs or one
    stopping early give no token pair. `lossless` accepts identical outputs or only explained
    differences."""
    from edgeagent.early_exit_bench import explain_difference, lossless
    from edgeagent.llama import LlamaRunner

    _, paths, _ = packed
    full = paths[N_LAYERS]
    runner = LlamaRunner(full, n_ctx=256, n_threads=1)
    try:
        prompt = runner.tokenize("Task: open the Clock app\nScreen: Clock, Alarm 7:30\nAction:")
        greedy = []
        for _ in range(6):  # the full model's greedy continuation, one token at a time
            runner.feed(prompt + greedy, 1)
            greedy.append(int(np.argmax(runner.logits(0))))
        runner.feed(prompt + greedy[:2], 1)
        row = runner.logits(0).copy()
        worst = int(np.argmin(row))
        other = greedy[:2] + [worst] + greedy[3:]
        got = explain_difference(runner, prompt, greedy, other)
        assert got["first_difference"] == 2 and got["tokens"] == [greedy[2], worst]
        assert got["margin"][0] == pytest.approx(float(row[greedy[2]] - row[worst]), abs=1e-3)
        assert min(got["margin"]) > 0 and 0 <= got["noise"] < 0.1 * got["margin"][0]
        assert min(got["logprob_gap"]) > 0 and got["verdict"] == "unexplained"
        assert explain_difference(runner, prompt, greedy, greedy[:4])["verdict"] == "length"
        # with the episode's earlier step, a third layout: the KV cache built step by step
        first = runner.tokenize("Task: open the Clock app\nScreen: Home\nAction:")
        later = explain_difference(runner, prompt, greedy, other, history=[(first, greedy[:3])])
        assert len(later["margin"]) == 3 and later["first_difference"] == 2 and later["noise"] >= got["noise"] - 1e-6
        assert all(abs(m - got["margin"][0]) < 0.1 * got["margin"][0] for m in later["margin"])
    finally:
        runner.close()
    assert lossless(True, {"differences": 0, "verdicts": {}})
    assert lossless(False, {"differences": 2, "verdicts": {"flips": 1, "near_tie": 1}})
    assert not lossless(False, {"differences": 2, "verdicts": {"flips": 1, "unexplained": 1}})
    assert not lossless(False, {"differences": 0, "verdicts": {}})  # not identical, nothing explained


def test_a_trimmed_draft_keeps_its_kept_logits_exact_and_the_output_the_full_models(packed, tmp_path):
    """``trim_vocab`` cuts an exit's vocabulary to the tokens an agent writes: the draft reads a
    smaller head, its logits at the kept tokens are the untrimmed exit's (to rounding: llama.cpp's
    matrix product tiles by the row count) with the same greedy choice, and the
    speculative output stays the full model's (a token the draft lacks costs acceptance only)."""
    from edgeagent.draft_vocab import TrimmedRunner, agent_token_ids, draft_token_ids, trim_vocab

    _, paths, _ = packed
    grammar, agent_prompt = _agent_grammar()
    actions = ['{"action": "open_app", "app": "Clock"}', '{"action": "tap", "element": "Add alarm", "index": 7}',
               '{"action": "done", "status": "complete"}', PROMPTS[0]]
    full = LlamaRunner(paths[4], n_ctx=256, n_threads=1)
    try:
        ids = agent_token_ids(full, actions)
        text_ids = full.tokenize(PROMPTS[0], add_bos=False)
    finally:
        full.close()
    trimmed_path = tmp_path / "exit2-trimmed.gguf"
    info = trim_vocab(paths[2], ids, trimmed_path)
    assert info["draft_vocab"] == len(ids) < info["full_vocab"] and info["bytes"] < info["source_bytes"]
    assert list(draft_token_ids(trimmed_path)) == ids and draft_token_ids(paths[2]) is None

    own = LlamaRunner(paths[2], n_ctx=256, n_threads=1)
    trimmed = TrimmedRunner(trimmed_path, n_ctx=256, n_threads=1)
    try:
        assert trimmed.n_vocab == own.n_vocab and trimmed.draft_vocab == len(ids)
        own.feed(text_ids, 3)
        trimmed.feed(text_ids, 3)
        assert trimmed.oov_fed == 0 and trimmed.tokens == own.tokens  # full-vocabulary ids kept
        for row in range(3):
            mine = trimmed.logits(row)
            np.testing.assert_allclose(mine[ids], own.logits(row)[ids], rtol=1e-3, atol=1e-4)
            assert np.argmax(mine) == ids[int(np.argmax(own.logits(row)[ids]))]
            assert np.isneginf(np.delete(mine, ids)).all()
        trimmed.feed(own.tokens + [int(np.setdiff1d(np.arange(own.n_vocab), ids)[0])], 1)  # a token it lacks
        assert trimmed.oov_fed == 1
    finally:
        own.close()
        trimmed.close()

    from edgeagent.llama import EngineError

    for bad in ([5, 3], [-1, 2], [0, info["full_vocab"]]):  # a bundle's map is untrusted
        with pytest.raises(EngineError, match="not a map into a vocabulary"):
            TrimmedRunner(trimmed_path, n_ctx=64, n_threads=1, token_ids=np.array(bad))

    with Engine(paths[4], n_ctx=1024, n_threads=1, track_peak_rss=False) as engine, \
            SelfSpeculativeEngine(paths[4], trimmed_path, n_draft=3, n_ctx=1024, n_threads=1) as spec:
        assert isinstance(spec.draft, TrimmedRunner)
        for prompt, gram in [(p, None) for p in PROMPTS] + [(agent_prompt, grammar)]:
            want = engine.generate(prompt, max_tokens=40, temperature=0.0, grammar=gram)
            got = spec.generate(prompt, max_tokens=40, temperature=0.0, grammar=gram)
            assert got.tokens == want.tokens, (prompt[:30], gram is not None)
        assert spec.stats.drafted > 0


def test_early_exit_bench_with_drafts_cut_to_the_agents_vocabulary(packed, tmp_path):
    """`bench early-exit --draft-vocab`: each draft is cut to the tokens of the expert's actions
    on tasks other than the bench's, and the speculative output stays the full model's."""
    import edgeagent.early_exit_bench as eeb
    from typer.testing import CliRunner

    from edgeagent.cli import app

    bundle, _, _ = _chat_bundle(packed, tmp_path)
    target = eeb.bench_bundle(bundle, "f32", exclude_apps=["Notes"])
    result = eeb.run_early_exit_bench(target, "f32", tasks=1, seed=5, n_draft=2, confidence=None, heldout_tasks=0,
                                      max_steps=2, threads=1, draft_exits=[1], draft_vocab=True, vocab_tasks=20)
    vocab = result["draft_vocab"]
    assert 0 < vocab["tokens"] < vocab["full_vocab"] and "seed 7" in vocab["from"]
    trimmed = vocab["drafts"]["1"]
    assert trimmed["draft_vocab"] == vocab["tokens"] and trimmed["bytes"] < trimmed["source_bytes"]
    config = result["speculative"]["configs"]["draft1"]
    assert config["lossless"] and isinstance(config["memory"]["draft_tokens_outside_vocab"], int)
    r = CliRunner().invoke(app, ["bench", "early-exit", "--bundle", str(bundle), "--save", "--draft-vocab"])
    assert r.exit_code == 2 and r.output.strip().startswith("error: --draft-vocab") and len(r.output.strip().splitlines()) == 1
