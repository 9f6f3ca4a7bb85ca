"""Read a Hugging Face tokenizer and describe it the way llama.cpp's vocab loader wants it.

Two kinds are supported, the two that llama.cpp runs for the llama/mistral/qwen2 families:

- byte-level BPE from ``tokenizer.json`` (``tokenizer.ggml.model = "gpt2"``): tokens, token
  types, merges, and the pre-tokenizer *name* llama.cpp knows. llama.cpp does not read the
  split regex from the file; it picks a built-in one by that name. So the name is found by
  matching the checkpoint's pre-tokenizer against the exact patterns below, never guessed:
  a pre-tokenizer we cannot match is an error.
- SentencePiece from ``tokenizer.model`` (``tokenizer.ggml.model = "llama"``): pieces, scores
  and types, read with the ``sentencepiece`` library.

Special tokens (bos/eos/unk/pad, add_bos/add_eos) come from ``tokenizer_config.json``, the
tokenizer's post-processor and ``config.json``; the chat template from ``chat_template.jinja``
or ``tokenizer_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

TokenType = gguf.TokenType


class TokenizerError(ValueError):
    """The checkpoint's tokenizer cannot be exported faithfully."""


# The split regexes of the tokenizers llama.cpp has a built-in pre-tokenizer for, as they
# appear in the checkpoints' tokenizer.json. Keys are llama.cpp's `tokenizer.ggml.pre` names
# (llama-vocab.cpp); each value is the pre-tokenizer pipeline, flattened (see _pipeline).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS: dict[str, tuple[tuple[Any, ...], ...]] = {
    # GPT-2: ByteLevel does the splitting itself with GPT-2's regex.
    "gpt-2": (("ByteLevel", False, True),),
    "llama-bpe": (("Split", LLAMA3_SPLIT, "Isolated", False), ("ByteLevel", False, False)),
    "qwen2": (("Split", QWEN2_SPLIT, "Isolated", False), ("ByteLevel", False, False)),
}

# llama.cpp turns on `ignore_merges` (a whole pre-token found in the vocab is taken as is)
# for some pre-tokenizers by name, whatever the file says (llama-vocab.cpp).
LLAMA_CPP_IGNORES_MERGES = {"gpt-2": False, "llama-bpe": True, "qwen2": False}

# Normalizers llama.cpp's BPE path can stand in for. Qwen2's NFC is a no-op on NFC text,
# which is what nearly all text is; llama.cpp does not normalize.
ACCEPTED_NORMALIZERS = {None, "NFC"}


@dataclass
class Vocab:
    """Everything the GGUF `tokenizer.*` keys hold, one field per key."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None  # llama.cpp pre-tokenizer name (BPE only)
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None  # SentencePiece only
    merges: list[str] = field(default_factory=list)  # BPE only, "left right"
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None  # SentencePiece only
    chat_template: str | list[dict[str, str]] | None = None
    notes: list[str] = field(default_factory=list)  # things a user should know (mismatch risks)


def load_vocab(model_dir: Path, n_vocab: int) -> Vocab:
    """Read the tokenizer in `model_dir`, padded to `n_vocab` tokens (the embedding's rows)."""
    model_dir = Path(model_dir)
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json", required=False) or {}
    if (model_dir / "tokenizer.model").is_file():
        vocab = _load_sentencepiece(model_dir / "tokenizer.model", n_vocab, tokenizer_config)
    elif (model_dir / "tokenizer.json").is_file():
        vocab = _load_bpe(model_dir / "tokenizer.json", n_vocab, tokenizer_config)
    else:
        raise TokenizerError(f"{model_dir}: no tokenizer.json or tokenizer.model")
    _read_special_tokens(vocab, model_dir, tokenizer_config)
    vocab.chat_template = _read_chat_template(model_dir, tokenizer_config)
    return vocab


def write_vocab(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """Write the `tokenizer.ggml.*` keys, every one explicitly."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.add_space_prefix is not None:
        writer.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)


# ---------------------------------------------------------------------------------------
# byte-level BPE (tokenizer.json)


def _load_bpe(path: Path, n_vocab: int, tokenizer_config: dict) -> Vocab:
    tj = _read_json(path, required=True)
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"{path}: model type {model.get('type')!r} is not supported (only byte-level BPE)")
    if model.get("byte_fallback"):
        raise TokenizerError(f"{path}: BPE with byte_fallback is SentencePiece-style; tokenizer.model is needed")

    pre = match_pre_tokenizer(tj.get("pre_tokenizer"), path)
    normalizer = (tj.get("normalizer") or {}).get("type")
    if normalizer not in ACCEPTED_NORMALIZERS:
        raise TokenizerError(f"{path}: normalizer {normalizer!r} has no llama.cpp equivalent")

    notes = []
    if bool(model.get("ignore_merges")) != LLAMA_CPP_IGNORES_MERGES[pre]:
        notes.append(
            f"tokenizer.json has ignore_merges={bool(model.get('ignore_merges'))} but llama.cpp's "
            f"'{pre}' pre-tokenizer uses {LLAMA_CPP_IGNORES_MERGES[pre]}: rare words may tokenize differently"
        )

    ids: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    special_ids: set[int] = set()
    added_ids: set[int] = set()
    for added in tj.get("added_tokens", []):
        ids[added["id"]] = added["content"]
        added_ids.add(added["id"])
        if added.get("special"):
            special_ids.add(added["id"])
    if max(ids) >= n_vocab:
        raise TokenizerError(f"{path}: token id {max(ids)} does not fit the model's vocab_size {n_vocab}")

    tokens, types = [], []
    for i in range(n_vocab):
        if i not in ids:
            # Rows of the embedding no token uses (vocab padded to a round size).
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in special_ids:
            tokens.append(ids[i])
            types.append(TokenType.CONTROL)
        elif i in added_ids:
            tokens.append(ids[i])
            types.append(TokenType.USER_DEFINED)
        else:
            tokens.append(ids[i])
            types.append(TokenType.NORMAL)

    # Older files store merges as "a b", newer ones as ["a", "b"].
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    vocab = Vocab(model="gpt2", pre=pre, tokens=tokens, token_types=[int(t) for t in types], merges=merges, notes=notes)
    vocab.add_bos, vocab.add_eos = _post_processor_adds(tj.get("post_processor"))
    return vocab


def match_pre_tokenizer(pre_tokenizer: dict | None, path: Path | str = "tokenizer.json") -> str:
    """The llama.cpp pre-tokenizer name for a tokenizer.json `pre_tokenizer`, or an error."""
    pipeline = _pipeline(pre_tokenizer)
    for name, known in PRE_TOKENIZERS.items():
        if pipeline == known:
            return name
    raise TokenizerError(
        f"{path}: pre-tokenizer {json.dumps(pre_tokenizer)[:200]} matches none llama.cpp has "
        f"built in that this exporter knows ({', '.join(PRE_TOKENIZERS)})"
    )


def _pipeline(pre_tokenizer: dict | None) -> tuple[tuple[Any, ...], ...]:
    """Flatten a pre-tokenizer to the fields that change how text is split."""
    if pre_tokenizer is None:
        return ()
    if pre_tokenizer.get("type") == "Sequence":
        return tuple(step for p in pre_tokenizer.get("pretokenizers", []) for step in _pipeline(p))
    kind = pre_tokenizer.get("type")
    if kind == "ByteLevel":
        return ((kind, bool(pre_tokenizer.get("add_prefix_space")), bool(pre_tokenizer.get("use_regex", True))),)
    if kind == "Split":
        pattern = pre_tokenizer.get("pattern") or {}
        regex = pattern.get("Regex", pattern.get("String"))
        return ((kind, regex, pre_tokenizer.get("behavior"), bool(pre_tokenizer.get("invert"))),)
    return ((kind, json.dumps(pre_tokenizer, sort_keys=True)),)


def _post_processor_adds(post: dict | None) -> tuple[bool, bool]:
    """Whether the post-processor puts a special token before / after a single sequence."""
    if post is None:
        return False, False
    if post.get("type") == "Sequence":
        flags = [_post_processor_adds(p) for p in post.get("processors", [])]
        return any(f[0] for f in flags), any(f[1] for f in flags)
    if post.get("type") != "TemplateProcessing":
        return False, False
    single = post.get("single") or []
    return bool(single and "SpecialToken" in single[0]), bool(single and "SpecialToken" in single[-1])


# ---------------------------------------------------------------------------------------
# SentencePiece (tokenizer.model)


def _load_sentencepiece(path: Path, n_vocab: int, tokenizer_config: dict) -> Vocab:
    try:
        import sentencepiece
    except ImportError:
        raise TokenizerError(f"{path}: reading a SentencePiece tokenizer needs `pip install sentencepiece`") from None
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except Exception as e:  # sentencepiece raises OSError/RuntimeError with a C++ message
        raise TokenizerError(f"{path}: not a readable SentencePiece model ({str(e).strip()[:120]})") from None
    if sp.get_piece_size() > n_vocab:
        raise TokenizerError(f"{path}: {sp.get_piece_size()} pieces do not fit the model's vocab_size {n_vocab}")

    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(TokenType.CONTROL)
        elif sp.is_unused(i):
            types.append(TokenType.UNUSED)
        elif sp.is_byte(i):
            types.append(TokenType.BYTE)
        else:
            types.append(TokenType.NORMAL)

    # Tokens added on top of the SentencePiece model (added_tokens.json or tokenizer.json).
    added = _added_tokens(path.parent)
    for i in range(sp.get_piece_size(), n_vocab):
        if i in added:
            content, special = added[i]
            tokens.append(content)
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        scores.append(-1000.0)

    # The normalizer spec needs protobuf to read; its effects are observable instead: with
    # add_dummy_prefix the first piece of "a" carries the "▁" word-boundary marker, and
    # llama.cpp neither NFKC-normalizes nor collapses whitespace, as Llama 2 / Mistral's
    # identity normalizer does not.
    first_piece = (sp.encode("a", out_type=str) or [""])[0]
    add_space_prefix = first_piece.startswith("\u2581")
    probe = "a  b \ufb01"  # double space, and the "fi" ligature NFKC would split
    notes = []
    if sp.normalize(probe) != ("\u2581" if add_space_prefix else "") + probe.replace(" ", "\u2581"):
        notes.append(
            f"{path.name} normalizes text (NFKC or whitespace collapsing), which llama.cpp does not: "
            "text with repeated spaces or compatibility characters tokenizes differently"
        )
    vocab = Vocab(
        model="llama",
        pre=None,
        tokens=tokens,
        token_types=[int(t) for t in types],
        scores=scores,
        bos_id=sp.bos_id() if sp.bos_id() >= 0 else None,
        eos_id=sp.eos_id() if sp.eos_id() >= 0 else None,
        unk_id=sp.unk_id() if sp.unk_id() >= 0 else None,
        pad_id=sp.pad_id() if sp.pad_id() >= 0 else None,
        add_bos=True,  # SentencePiece llama tokenizers add BOS unless the config says not to
        add_space_prefix=add_space_prefix,
        notes=notes,
    )
    return vocab


def _added_tokens(model_dir: Path) -> dict[int, tuple[str, bool]]:
    out: dict[int, tuple[str, bool]] = {}
    tj = _read_json(model_dir / "tokenizer.json", required=False)
    for added in (tj or {}).get("added_tokens", []):
        out[added["id"]] = (added["content"], bool(added.get("special")))
    extra = _read_json(model_dir / "added_tokens.json", required=False) or {}
    for content, i in extra.items():
        out.setdefault(int(i), (content, False))
    return out


# ---------------------------------------------------------------------------------------
# special tokens and chat template


def _read_special_tokens(vocab: Vocab, model_dir: Path, tokenizer_config: dict) -> None:
    """bos/eos/unk/pad ids: tokenizer_config.json names them (as text); config.json's
    bos/eos_token_id fill in what neither it nor the tokenizer model defined."""
    index = {t: i for i, t in enumerate(vocab.tokens)}
    config = _read_json(model_dir / "config.json", required=False) or {}
    for role in ("bos", "eos", "unk", "pad"):
        content = tokenizer_config.get(f"{role}_token")
        if isinstance(content, dict):  # older files: {"content": "<s>", "lstrip": false, ...}
            content = content.get("content")
        if content is not None:
            if content not in index:
                raise TokenizerError(f"{model_dir / 'tokenizer_config.json'}: {role}_token {content!r} is not in the vocab")
            setattr(vocab, f"{role}_id", index[content])
        elif getattr(vocab, f"{role}_id") is None and config.get(f"{role}_token_id") is not None:
            token_id = config[f"{role}_token_id"]
            setattr(vocab, f"{role}_id", int(token_id[0] if isinstance(token_id, list) else token_id))
    # An explicit flag in tokenizer_config.json wins over what the post-processor does,
    # as in transformers' Llama tokenizers.
    if "add_bos_token" in tokenizer_config:
        vocab.add_bos = bool(tokenizer_config["add_bos_token"])
    if "add_eos_token" in tokenizer_config:
        vocab.add_eos = bool(tokenizer_config["add_eos_token"])
    if vocab.add_bos and vocab.bos_id is None:
        raise TokenizerError(f"{model_dir}: the tokenizer adds a BOS token but none is defined")


def _read_chat_template(model_dir: Path, tokenizer_config: dict) -> str | list[dict[str, str]] | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return tokenizer_config.get("chat_template")


def _read_json(path: Path, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise TokenizerError(f"{path}: file is missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None
