"""Tiny random Hugging Face checkpoints, with a tokenizer trained on the spot.

For tests and experiments that need a real checkpoint directory (config.json,
model.safetensors, tokenizer files) without downloading one:

    from converters.tiny import TinyConfig, make_tiny_model
    model_dir = make_tiny_model(tmp_path / "m", TinyConfig(arch="qwen2", num_kv_heads=2))

Weights are random. The defaults (hidden 256, 2 layers, vocab 512) keep a model at about
1.5 M parameters, build it in about a second, and let K-quants apply (they need rows of a
multiple of 256). Needs the converter extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path

# The pre-tokenizers of real checkpoints, as their tokenizer.json files spell them. These
# are written out here on purpose rather than imported from edgeagent.export.tokenizer: the tiny
# models stand in for real checkpoints, so they must not share the exporter's assumptions.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
TOKENIZERS = ("gpt-2", "llama-bpe", "qwen2", "sentencepiece")
DEFAULT_TOKENIZER = {"llama": "llama-bpe", "mistral": "gpt-2", "qwen2": "qwen2"}

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Varied enough that byte-level BPE learns ~250 merges over English, code, digits, CJK and emoji.
CORPUS = """\
The agent opens the Settings app, scrolls down to Display, and taps Brightness.
It reads the screen again: a slider at 40%, a switch labelled "Adaptive brightness".
When the task is done, the agent answers {"action": "done", "status": "complete"}.
Phones have 4, 6, 8 or 12 GB of RAM; a 1.5B model at 4 bits needs about 1,100 MB.
Decode is memory-bound: tokens/s ~ bandwidth / bytes per token. Prefill is compute-bound.
def tokens_per_second(n_tokens, seconds):\n    return n_tokens / seconds  # higher is better
for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
I'm sure they'll say it's fine, but we've seen what you'd do. Don't won't can't.
今天天气很好，我们去公园散步吧。手机的电池电量还有百分之四十一。
東京は日本の首都です。スマートフォンでアプリを開きます。
안녕하세요, 반갑습니다. 설정 앱을 엽니다.
Emoji: 😀 😂 👍 🎉 🚀 ❤️ 🤖 📱 🔋 ✅ — and symbols: © ® ™ € £ ¥ § ¶ • … ≈ ≠ ≤ ≥ ± × ÷ → ←
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2048 3.14159 2.71828 1e-5 0xFF 1,000,000
Tabs\tand  double  spaces,   triple spaces,\n\nblank lines, and trailing spaces   
Éléphant, naïve café, façade, über, señor, smørrebrød, Ångström, Straße.
"""


@dataclass
class TinyConfig:
    arch: str = "llama"  # llama | mistral | qwen2
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 8
    num_kv_heads: int = 2  # = num_heads for multi-head attention
    vocab_size: int = 512  # embedding rows; the tokenizer gets a few less, so padding is exercised
    tie_embeddings: bool = False
    tokenizer: str | None = None  # one of TOKENIZERS; default per arch
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # e.g. {"rope_type": "llama3", "factor": 8.0, ...}
    rms_norm_eps: float = 1e-5
    max_position_embeddings: int = 1024
    # Larger than a trained model's init (0.02) so attention is sharp and logits spread out:
    # a wrong q/k layout or a swapped tensor then shows up clearly in the logits.
    init_std: float = 0.1
    seed: int = 0
    dtype: str = "float32"  # or "bfloat16", "float16"
    extra_config: dict = field(default_factory=dict)


def make_tiny_model(out_dir: str | Path, config: TinyConfig | None = None, **overrides) -> Path:
    """Write a random tiny model + trained tokenizer to `out_dir`; return the directory."""
    cfg = replace(config or TinyConfig(), **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = cfg.tokenizer or DEFAULT_TOKENIZER[cfg.arch]

    tokenizer_size, special_ids = save_tokenizer(out_dir, kind, cfg.vocab_size - 8)
    model = _build_model(cfg, max(cfg.vocab_size, tokenizer_size), special_ids)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _build_model(cfg: TinyConfig, vocab_size: int, special_ids: dict):
    import torch
    import transformers

    config_cls = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config"}[cfg.arch]
    model_cls = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}[cfg.arch]
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})},
        bos_token_id=special_ids.get("bos"),
        eos_token_id=special_ids.get("eos"),
        pad_token_id=special_ids.get("pad"),
        **cfg.extra_config,
    )
    if cfg.arch == "mistral":
        kwargs["sliding_window"] = None
    config = getattr(transformers, config_cls)(**kwargs)
    config._attn_implementation = "eager"

    torch.manual_seed(cfg.seed)
    model = getattr(transformers, model_cls)(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))  # not all ones: a misplaced norm shows
            else:
                p.normal_(0.0, cfg.init_std)
    return model.to(getattr(torch, cfg.dtype)).eval()


# ---------------------------------------------------------------------------------------
# tokenizers


def save_tokenizer(out_dir: Path, kind: str, vocab_size: int) -> tuple[int, dict]:
    """Train a tokenizer of `kind` on CORPUS and save it the way HF checkpoints ship it.
    Returns (number of token ids, {"bos"/"eos"/"pad": id})."""
    if kind == "sentencepiece":
        return _save_sentencepiece(out_dir, vocab_size)
    if kind not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r} (choose from {', '.join(TOKENIZERS)})")

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "qwen2":
        specials = {"pad": "<|endoftext|>", "eos": "<|im_end|>"}
        special_tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        specials = {"bos": "<s>", "eos": "</s>"}
        special_tokens = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]

    tok = Tokenizer(models.BPE(ignore_merges=kind == "llama-bpe"))  # as Llama 3's file has it
    if kind == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        regex = LLAMA3_REGEX if kind == "llama-bpe" else QWEN2_REGEX
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer)
    ids = {role: tok.token_to_id(content) for role, content in specials.items()}
    if "bos" in specials:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", ids["bos"])]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=specials.get("bos"),
        eos_token=specials["eos"],
        pad_token=specials.get("pad"),
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    return tok.get_vocab_size(), ids


def _save_sentencepiece(out_dir: Path, vocab_size: int) -> tuple[int, dict]:
    import json

    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,  # as Llama 2 / Mistral: unknown characters become byte tokens
        character_coverage=1.0,
        hard_vocab_limit=False,
        split_digits=True,
        normalization_rule_name="identity",  # as Llama 2 / Mistral: no NFKC,
        remove_extra_whitespaces=False,  # and whitespace runs kept
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    return sp.get_piece_size(), {"bos": 1, "eos": 2}


def _corpus_lines() -> list[str]:
    lines = CORPUS.splitlines(keepends=True)
    # Repeat with variations so pair counts differ and merges are not all ties.
    return [line.replace("agent", word) for word in ("agent", "model", "phone", "user") for line in lines] * 3
