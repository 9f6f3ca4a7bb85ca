"""The GGUF exporter, checked against transformers with real llama.cpp.

Tiny random models (converters.tiny) with tokenizers trained in the test: the F32 export's
logits must match transformers' at every position, tokenization must match the HF tokenizer,
quantized exports must load, generate and stay close to F32, and bad input must fail with a
one-line reason and no output file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")

from converters.tiny import TinyConfig, make_tiny_model  # noqa: E402
from edgeagent.engine import Engine, load_llama  # noqa: E402
from edgeagent.export.hf_to_gguf import ExportError, export  # noqa: E402
from edgeagent.quantize import all_logits, compare_logits  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "llama-gqa": TinyConfig(arch="llama", num_heads=8, num_kv_heads=2, tokenizer="llama-bpe", rope_theta=500000.0),
    "llama-mha-tied-bf16": TinyConfig(
        arch="llama", num_heads=8, num_kv_heads=8, tie_embeddings=True, tokenizer="gpt-2", dtype="bfloat16", seed=1
    ),
    "llama3-rope-scaling": TinyConfig(
        arch="llama",
        rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tokenizer="llama-bpe",
        seed=2,
    ),
    "qwen2-bias-tied": TinyConfig(
        arch="qwen2", num_kv_heads=2, tie_embeddings=True, tokenizer="qwen2", rope_theta=1e6, rms_norm_eps=1e-6, seed=3
    ),
    "mistral-sentencepiece": TinyConfig(arch="mistral", num_kv_heads=2, tokenizer="sentencepiece", seed=4),
}


def _needs(case: str) -> list:
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        if CASES[case].tokenizer == "sentencepiece":
            return [pytest.mark.skip(reason="sentencepiece not installed (the convert extra has it)")]
    return []


CASE_PARAMS = [pytest.param(case, marks=_needs(case), id=case) for case in CASES]

TEXTS = [
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine; we've done it, haven't we? DON'T SHOUT'S",
    "Numbers: 3.14159, 1,000,000 and 0xFF; 1234567890 12 345 6789",
    "Punctuation!?... (brackets) [x] {y} <z> @#$%^&*_+=~`|\\/ -- — …",
    "今天天气很好，我们去公园散步吧。",
    "東京は日本の首都です。スマートフォン",
    "안녕하세요, 반갑습니다",
    "Emoji 😀👍🏽🎉 and ❤️ and 🇫🇷 🤖📱",
    "Tabs\tand  double  spaces   and\n\n\nnewlines  \n",
    "   leading spaces",
    "trailing spaces   ",
    "mixed: naïve café Ελληνικά русский العربية",
    "def f(x):\n    return x**2  # square\n",
    "\n",
    " ",
    "a",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (HF dir, F32 GGUF path, ExportResult), built on first use."""
    cache: dict[str, tuple[Path, Path, object]] = {}

    def get(case: str):
        if case not in cache:
            root = tmp_path_factory.mktemp(case)
            model_dir = make_tiny_model(root / "hf", CASES[case])
            out = root / "model-f32.gguf"
            cache[case] = (model_dir, out, export(model_dir, out, "f32"))
        return cache[case]

    return get


def hf_logits(model_dir: Path, tokens: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def gguf_fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}, [t.name for t in reader.tensors]


def llama_tokenize(path: Path, text: str) -> list[int]:
    llm = load_llama(path, vocab_only=True)
    try:
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    finally:
        llm.close()


# ---------------------------------------------------------------------------------------
# parity


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_f32_logits_match_transformers(exported, case):
    model_dir, path, _ = exported(case)
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in rng.integers(3, 480, size=48)]
    ref = hf_logits(model_dir, tokens)
    got = all_logits(path, tokens, threads=1)  # F32 KV cache, logits at every position
    # The random weights spread logits over several units, so a 1e-3 bound means something:
    # without the q/k permutation the difference is ~8.
    assert ref.std() > 0.5
    assert np.abs(ref - got).max() < 1e-3
    assert (ref.argmax(-1) == got.argmax(-1)).all()


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_tokenization_matches_hf(exported, case):
    model_dir, path, _ = exported(case)
    llm = load_llama(path, vocab_only=True)
    try:
        got = [llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in TEXTS]
    finally:
        llm.close()
    if CASES[case].tokenizer == "sentencepiece":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
        want = [[sp.bos_id()] + sp.encode(t) for t in TEXTS]
    else:
        hf = transformers.AutoTokenizer.from_pretrained(model_dir)
        want = [hf(t)["input_ids"] for t in TEXTS]
    mismatches = [(t, w, g) for t, w, g in zip(TEXTS, want, got) if w != g]
    assert not mismatches, f"{len(mismatches)} texts tokenize differently, first: {mismatches[0]}"


def test_builtin_model_tokenizes_agent_prompts_as_transformers_does(tmp_path):
    """The shipped model's tokenizer (merges trained with whitespace split off, encoded with
    the GPT-2 pre-tokenizer) in llama.cpp: prompts of every app, the held-out one included."""
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode
    from edgeagent.agent.prompt import build_prompt
    from edgeagent.builtin import builtin_model_dir

    texts = list(TEXTS)
    phone = EmulatedPhone()
    for task in generate_tasks(40, 4242):
        for step in run_episode(phone, task, expert_action).trace:
            prev = json.dumps(step.previous, separators=(",", ":")) if step.previous else None
            texts.append(build_prompt(task.instruction, step.observation, prev) + json.dumps(step.action))
    path = tmp_path / "builtin.gguf"
    export(builtin_model_dir(), path, "q8_0", threads=1)
    llm = load_llama(path, vocab_only=True)
    try:
        got = [llm.tokenize(t.encode("utf-8"), add_bos=True, special=False) for t in texts]
    finally:
        llm.close()
    hf = transformers.AutoTokenizer.from_pretrained(builtin_model_dir())
    mismatches = [t for t, g in zip(texts, got) if hf(t)["input_ids"] != g]
    assert len(texts) > 100 and not mismatches, mismatches[:1]


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_metadata_is_explicit(exported, case):
    model_dir, path, result = exported(case)
    cfg = CASES[case]
    fields, tensors = gguf_fields(path)
    arch = "qwen2" if cfg.arch == "qwen2" else "llama"
    assert fields["general.architecture"] == arch
    assert fields["general.file_type"] == 0
    assert fields[f"{arch}.block_count"] == cfg.num_layers
    assert fields[f"{arch}.embedding_length"] == cfg.hidden_size
    assert fields[f"{arch}.feed_forward_length"] == cfg.intermediate_size
    assert fields[f"{arch}.attention.head_count"] == cfg.num_heads
    assert fields[f"{arch}.attention.head_count_kv"] == cfg.num_kv_heads
    assert fields[f"{arch}.rope.freq_base"] == pytest.approx(cfg.rope_theta)
    assert fields[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps)
    assert fields[f"{arch}.context_length"] == cfg.max_position_embeddings
    assert fields[f"{arch}.vocab_size"] == len(fields["tokenizer.ggml.tokens"]) == 512
    assert ("output.weight" in tensors) == (not cfg.tie_embeddings)
    assert ("blk.0.attn_q.bias" in tensors) == (cfg.arch == "qwen2")
    assert ("rope_freqs.weight" in tensors) == (cfg.rope_scaling is not None)
    assert "tokenizer.chat_template" in fields
    assert fields["tokenizer.ggml.eos_token_id"] is not None
    if cfg.tokenizer == "sentencepiece":
        assert fields["tokenizer.ggml.model"] == "llama"
        assert fields["tokenizer.ggml.add_bos_token"] is True
    else:
        assert fields["tokenizer.ggml.model"] == "gpt2"
        assert fields["tokenizer.ggml.pre"] == cfg.tokenizer
        assert fields["tokenizer.ggml.add_bos_token"] is (cfg.arch != "qwen2")
        assert len(fields["tokenizer.ggml.merges"]) > 100
    assert result.warnings == []


def test_f16_export_is_close_to_f32(exported, tmp_path):
    model_dir, f32_path, _ = exported("llama-gqa")
    result = export(model_dir, tmp_path / "f16.gguf", "f16")
    assert result.file_type == 1 and result.tensor_types == {"F16": 16, "F32": 5}
    tokens = list(range(3, 40))
    err = compare_logits(all_logits(f32_path, tokens, 1), all_logits(tmp_path / "f16.gguf", tokens, 1))
    assert err["rel_rms"] < 0.05 and err["top1_agreement"] > 0.9


def test_pytorch_bin_checkpoint_exports_identically(exported, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    model_dir, f32_path, _ = exported("llama-gqa")
    bin_dir = tmp_path / "bin"
    shutil.copytree(model_dir, bin_dir)
    torch.save(load_file(bin_dir / "model.safetensors"), bin_dir / "pytorch_model.bin")
    (bin_dir / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="pytorch_model.bin: the exporter reads safetensors"):
        export(bin_dir, tmp_path / "refused.gguf", "f32")  # the torch-free runtime reads no pickles
    from converters.sources import resolve_source

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    converted = resolve_source(bin_dir)  # the converter's way in: a cached safetensors copy
    assert converted.is_relative_to(tmp_path / "cache") and resolve_source(bin_dir) == converted
    export(converted, tmp_path / "from-bin.gguf", "f32")
    a, b = gguf.GGUFReader(f32_path), gguf.GGUFReader(tmp_path / "from-bin.gguf")
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a.tensors, b.tensors))


# ---------------------------------------------------------------------------------------
# quantized exports

QUANT_MAIN_TYPE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}


def test_quantized_exports_load_generate_and_stay_close(tmp_path, capsys):
    # Weights at the usual init scale (std 0.02) rather than the parity models' sharper 0.1,
    # whose chaotic attention would exaggerate every rounding error.
    model_dir = make_tiny_model(tmp_path / "hf", TinyConfig(init_std=0.02, tokenizer="llama-bpe", seed=5))
    errors = {}
    for quant, main_type in QUANT_MAIN_TYPE.items():
        result = export(model_dir, tmp_path / f"{quant}.gguf", quant, measure_error=True, threads=1)
        assert result.fallbacks == [] and result.warnings == []
        assert result.tensor_types[main_type] >= 8  # most 2-D weights got the asked-for type
        with Engine(result.path, n_ctx=256, n_threads=1) as engine:
            gen = engine.generate("The agent opens the Settings app", max_tokens=8, ignore_eos=True)
        assert gen.metrics.generated_tokens == 8
        errors[quant] = {**result.quant_error, "size_kib": result.size_bytes / 1024}

    with capsys.disabled():
        print("\n\nquantized vs F32 logits (llama.cpp both sides, tiny random llama, init std 0.02, 96 positions)")
        print(f"{'quant':8} {'KiB':>7} {'max|d|':>8} {'mean|d|':>8} {'rel RMS':>8} {'top-1':>6} {'KL':>8}")
        for quant, e in errors.items():
            print(
                f"{quant:8} {e['size_kib']:7.0f} {e['max_abs_diff']:8.4f} {e['mean_abs_diff']:8.4f} "
                f"{e['rel_rms']:8.4f} {e['top1_agreement']:6.1%} {e['mean_kl']:8.5f}"
            )
    # More bits, less error: the ordering llama.cpp's types are designed to give.
    kl = {q: e["mean_kl"] for q, e in errors.items()}
    assert kl["q8_0"] < kl["q6_k"] < kl["q5_k_m"] < kl["q4_k_m"]
    assert errors["q8_0"]["rel_rms"] < 0.05 and errors["q8_0"]["top1_agreement"] > 0.9


def test_kquant_fallback_is_visible(tmp_path):
    # hidden 320: rows are not a multiple of 256, so Q4_K cannot apply to most weights.
    model_dir = make_tiny_model(tmp_path / "hf", TinyConfig(hidden_size=320, num_heads=8, num_kv_heads=2))
    with pytest.warns(UserWarning, match="not a multiple of 256") as caught:
        result = export(model_dir, tmp_path / "q4km.gguf", "q4_k_m")
    assert result.fallbacks, "fallbacks must be recorded in the result"
    assert all(fb["got"] not in ("Q4_K", "Q5_K", "Q6_K") for fb in result.fallbacks)
    assert any(fb["tensor"] == "blk.0.attn_q.weight" for fb in result.fallbacks)
    # one line for them all, counting each type llama.cpp chose
    lines = [w for w in result.warnings if "not a multiple of 256" in w]
    assert len(lines) == 1 and len([w for w in caught if "not a multiple" in str(w.message)]) == 1
    assert lines[0].startswith(f"{len(result.fallbacks)} tensors have rows of 320")
    assert sum(int(n) for n in re.findall(r"\((\d+)\)", lines[0])) == len(result.fallbacks)
    with Engine(result.path, n_ctx=128, n_threads=1) as engine:
        assert engine.generate("hello", max_tokens=4, ignore_eos=True).metrics.generated_tokens == 4


# ---------------------------------------------------------------------------------------
# bad input: via the CLI, as a user meets it


def _bad_inputs(root: Path, good: Path) -> dict[str, Path]:
    from safetensors.numpy import load_file, save_file

    def copy(name: str) -> Path:
        d = root / name
        shutil.copytree(good, d)
        return d

    cases = {"missing-dir": root / "does-not-exist"}

    d = copy("no-config")
    (d / "config.json").unlink()
    cases["no-config"] = d

    d = copy("unsupported-arch")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "gpt2", ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    cases["unsupported-arch"] = d

    d = copy("no-weights")
    (d / "model.safetensors").unlink()
    cases["no-weights"] = d

    d = copy("corrupt-safetensors")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases["corrupt-safetensors"] = d

    d = copy("garbage-safetensors")
    (d / "model.safetensors").write_bytes(b"\xff" * 4096)
    cases["garbage-safetensors"] = d

    d = copy("unknown-tensor")
    tensors = load_file(d / "model.safetensors")
    tensors["model.layers.0.mlp.extra_proj.weight"] = np.zeros((4, 4), np.float32)
    save_file(tensors, d / "model.safetensors")
    cases["unknown-tensor"] = d

    d = copy("nan-weights")  # fails while tensors are being written: the temp file must go
    tensors = load_file(d / "model.safetensors")
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = np.nan
    save_file(tensors, d / "model.safetensors")
    cases["nan-weights"] = d

    d = copy("unknown-pre-tokenizer")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}|\s+|."
    (d / "tokenizer.json").write_text(json.dumps(tj))
    cases["unknown-pre-tokenizer"] = d

    d = copy("bad-config-json")
    (d / "config.json").write_text("{ not json")
    cases["bad-config-json"] = d
    return cases


EXPECTED_REASON = {
    "missing-dir": "not a directory",
    "no-config": "config.json: missing",
    "unsupported-arch": "model_type 'gpt2' is not supported",
    "no-weights": "no model.safetensors",
    "corrupt-safetensors": "corrupt or unreadable safetensors",
    "garbage-safetensors": "corrupt or unreadable safetensors",
    "unknown-tensor": "'model.layers.0.mlp.extra_proj.weight' is not in the llama name table",
    "nan-weights": "NaN or Inf",
    "unknown-pre-tokenizer": "pre-tokenizer",
    "bad-config-json": "not valid JSON",
}


@pytest.fixture(scope="module")
def bad_input_runs(exported, tmp_path_factory):
    """Run `edgeagent export` on every bad input at once (they are independent processes)."""
    model_dir, _, _ = exported("llama-gqa")
    root = tmp_path_factory.mktemp("bad")
    out_dir = root / "out"
    out_dir.mkdir()
    procs = {}
    for name, d in _bad_inputs(root, model_dir).items():
        out = out_dir / f"{name}.gguf"
        procs[name] = (
            out,
            subprocess.Popen(
                [sys.executable, "-m", "edgeagent.cli", "export", str(d), "-o", str(out), "--quant", "q4_k_m"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
        )
    results = {name: (out, p.wait(timeout=120), p.stderr.read()) for name, (out, p) in procs.items()}
    return out_dir, results


@pytest.mark.parametrize("case", list(EXPECTED_REASON))
def test_bad_input_fails_with_one_line_and_no_file(bad_input_runs, case):
    out_dir, results = bad_input_runs
    out, returncode, stderr = results[case]
    assert returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert EXPECTED_REASON[case] in lines[0]
    assert not out.exists()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(f".{out.name}")], "temp file left behind"


def test_failed_export_leaves_existing_file_untouched(exported, tmp_path):
    model_dir, _, _ = exported("llama-gqa")
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    (bad / "tokenizer.json").unlink()
    out = tmp_path / "model.gguf"
    out.write_bytes(b"previous export")
    with pytest.raises(ExportError, match="no tokenizer.json or tokenizer.model"):
        export(bad, out, "q8_0")
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "model.gguf"]


def test_export_cli_json(exported, tmp_path):
    model_dir, _, _ = exported("qwen2-bias-tied")
    out = tmp_path / "q.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", "export", str(model_dir), "-o", str(out), "-q", "q5_k_m", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["path"] == str(out) and out.is_file()
    assert result["arch"] == "qwen2" and result["tokenizer"] == "gpt2/qwen2"
    assert result["quant_error"]["top1_agreement"] > 0.3
    assert result["fallbacks"] == []
