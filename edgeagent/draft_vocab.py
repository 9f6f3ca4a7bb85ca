"""A cheaper draft for self-speculative decoding: the exit variant with its vocabulary cut down.

A depth-k exit of a small model spends much of each draft token in its output head: on
SmolLM2-135M (49,152 x 576 tied head) the head is 28M of the 81M numbers a layer-15 draft reads
per token. The agent writes a small part of that vocabulary (JSON keys, element labels, the
words it copies), and a draft only proposes: the full model verifies every token, so a draft
that cannot propose a token costs acceptance, never correctness.

``trim_vocab`` writes the exit GGUF with only the tokens ``token_ids`` (in that order, sorted):
the tokenizer arrays, ``token_embd`` and ``output`` rows are cut to them (quantized rows are cut
as bytes, unchanged), the special-token ids are renumbered, and two keys record the map back:
``edgeagent.draft.token_ids`` (draft id i is full-vocabulary id ``token_ids[i]``) and
``edgeagent.draft.full_vocab_size``. llama.cpp loads it as an ordinary model of that vocabulary.

``TrimmedRunner`` is the ``LlamaRunner`` the speculative engine uses for such a file: it keeps
``tokens`` in full-vocabulary ids (so the KV transplant and the prefix bookkeeping are
unchanged), maps them to draft ids for each batch (a token outside the draft's vocabulary is
fed as ``oov_id``, counted in ``oov_fed``: it only weakens later drafts of that call), and
returns logits as full-vocabulary rows with -inf outside the draft's tokens. The logits of the
kept tokens are the untrimmed exit's to rounding (same hidden state, same rows; llama.cpp's
matrix product tiles by the row count, so the last bits move: 1e-4 relative on a test model).

``agent_token_ids`` picks the tokens: those of the actions in agent traces (what the model is
trained to write), the special tokens, and every single-byte token, so any text stays spellable
and a draft can follow the agent into words it never saw, byte by byte, where the tokenizer has
byte tokens.
"""

from __future__ import annotations

# gguf-py is imported where a draft's file is read or written, not with this module: the
# speculative engine imports it on every agent start, and gguf-py costs ~4.6 MB resident.
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from edgeagent.atomic import atomic_path
from edgeagent.llama import EngineError, LlamaRunner, LlamaSettings

TOKEN_IDS_KEY = "edgeagent.draft.token_ids"
FULL_VOCAB_KEY = "edgeagent.draft.full_vocab_size"
_SPECIAL_KEYS = ("bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "eot_token_id",
                 "eom_token_id", "sep_token_id", "mask_token_id")
_VOCAB_ROWS = ("token_embd.weight", "output.weight")  # tensors with one row per token


class DraftVocabError(Exception):
    """The token list does not fit the model; the message names what."""


def draft_token_ids(path: str | os.PathLike) -> np.ndarray | None:
    """The full-vocabulary ids of a trimmed draft's tokens, or None for an ordinary GGUF."""
    import gguf

    field = gguf.GGUFReader(path).fields.get(TOKEN_IDS_KEY)
    return None if field is None else np.asarray(field.contents(), dtype=np.int64)


def trim_vocab(src: str | os.PathLike, token_ids: Iterable[int], out: str | os.PathLike) -> dict:
    """Write ``src`` (an exit variant GGUF) with only ``token_ids`` at ``out`` (atomically).
    Returns what was written: the vocabulary sizes and the file sizes."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    tokens_field = reader.fields.get("tokenizer.ggml.tokens")
    if tokens_field is None:
        raise DraftVocabError(f"{src}: no tokenizer.ggml.tokens; only a model with its vocabulary can be trimmed")
    full_vocab = len(tokens_field.data)
    keep = np.unique(np.fromiter((int(t) for t in token_ids), dtype=np.int64))
    if len(keep) == 0 or keep[0] < 0 or keep[-1] >= full_vocab:
        raise DraftVocabError(f"token ids must lie in 0..{full_vocab - 1}; got {len(keep)} ids "
                              f"from {keep.min() if len(keep) else '-'} to {keep.max() if len(keep) else '-'}")
    position = {int(t): i for i, t in enumerate(keep)}
    overrides: dict[str, tuple] = {
        f"{arch}.vocab_size": (len(keep), gguf.GGUFValueType.UINT32),
        TOKEN_IDS_KEY: ([int(t) for t in keep], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32),
        FULL_VOCAB_KEY: (full_vocab, gguf.GGUFValueType.UINT32),
    }
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        field = reader.fields.get(key)
        if field is not None:
            values = field.contents()
            overrides[key] = ([values[int(t)] for t in keep], gguf.GGUFValueType.ARRAY, field.types[-1])
    for name in _SPECIAL_KEYS:
        key = f"tokenizer.ggml.{name}"
        field = reader.fields.get(key)
        if field is not None:
            full_id = int(field.contents())
            if full_id not in position:
                raise DraftVocabError(f"{key} = {full_id} is not among the kept tokens; keep the special tokens")
            overrides[key] = (position[full_id], field.types[0])
    with atomic_path(Path(out)) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        for field in reader.fields.values():
            name = field.name
            if name.startswith("GGUF.") or name == gguf.Keys.General.ARCHITECTURE or name in overrides:
                continue
            vtype = field.types[0]
            writer.add_key_value(name, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)
        for name, (value, vtype, *sub) in overrides.items():
            writer.add_key_value(name, value, vtype, sub_type=sub[0] if sub else None)
        for t in reader.tensors:
            data = t.data
            if t.name in _VOCAB_ROWS:
                if data.shape[0] != full_vocab:
                    raise DraftVocabError(f"{src}: {t.name} has {data.shape[0]} rows, the vocabulary {full_vocab}")
                data = np.ascontiguousarray(data[keep])
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"path": str(out), "full_vocab": full_vocab, "draft_vocab": len(keep),
            "source_bytes": os.path.getsize(src), "bytes": os.path.getsize(out)}


def agent_token_ids(full: LlamaRunner, texts: Iterable[str]) -> list[int]:
    """The draft's tokens, in full-vocabulary ids: every token of ``texts`` (the actions an
    agent writes) as ``full`` tokenizes them, the tokenizer's special tokens, and every
    single-byte token."""
    keep: set[int] = set()
    for text in texts:
        keep.update(full.tokenize(text, add_bos=False))
    import gguf

    fields = gguf.GGUFReader(full.path).fields
    keep.update(int(fields[f"tokenizer.ggml.{name}"].contents()) for name in _SPECIAL_KEYS
                if f"tokenizer.ggml.{name}" in fields)
    keep.update(t for t in range(full.n_vocab) if len(full.piece(t)) == 1)
    return sorted(t for t in keep if 0 <= t < full.n_vocab)


class TrimmedRunner(LlamaRunner):
    """A ``LlamaRunner`` on a trimmed draft: full-vocabulary ids in, full-vocabulary logits out."""

    def __init__(self, model_path: str | os.PathLike, settings: LlamaSettings | None = None, *,
                 token_ids: np.ndarray | None = None, **kwargs) -> None:
        ids = draft_token_ids(model_path) if token_ids is None else np.asarray(token_ids, dtype=np.int64)
        if ids is None:
            raise EngineError(f"{model_path}: not a trimmed draft (no {TOKEN_IDS_KEY})")
        import gguf

        field = gguf.GGUFReader(model_path).fields.get(FULL_VOCAB_KEY)
        full_vocab = int(field.contents()) if field is not None else -1
        # the file is untrusted: the map must be strictly increasing ids inside the full vocabulary
        if not (len(ids) and full_vocab >= len(ids) and ids[0] >= 0 and ids[-1] < full_vocab
                and (np.diff(ids) > 0).all()):
            raise EngineError(f"{model_path}: {TOKEN_IDS_KEY} / {FULL_VOCAB_KEY} are not a map into a vocabulary "
                              f"of {full_vocab} tokens")
        super().__init__(model_path, settings, **kwargs)
        if self.n_vocab != len(ids):
            raise EngineError(f"{model_path}: {self.n_vocab} tokens in its vocabulary, {len(ids)} in {TOKEN_IDS_KEY}")
        self.draft_vocab = self.n_vocab
        self.n_vocab = full_vocab  # what callers index: full-vocabulary rows
        self.token_ids = ids
        self._to_draft = np.full(full_vocab, -1, dtype=np.int64)
        self._to_draft[ids] = np.arange(len(ids))
        self.oov_id = 0  # the draft's first token stands in for a token it does not have
        self.oov_fed = 0
        self._row = np.full(full_vocab, -np.inf, dtype=np.float32)

    def _batch_ids(self, tokens: list[int]) -> np.ndarray:
        mapped = self._to_draft[np.asarray(tokens, dtype=np.int64)]
        missing = mapped < 0
        self.oov_fed += int(missing.sum())
        mapped[missing] = self.oov_id
        return mapped

    def logits(self, row: int) -> np.ndarray:
        """Full-vocabulary logits: the draft's at its tokens, -inf elsewhere. One array reused
        by every call (no copy per draft token), valid until the next call, like a view into
        llama.cpp's buffer."""
        self._row[self.token_ids] = self.logits_of(row, self.draft_vocab)
        return self._row

    def is_eog(self, token: int) -> bool:
        mapped = int(self._to_draft[token]) if 0 <= token < len(self._to_draft) else -1
        return mapped >= 0 and super().is_eog(mapped)

    def piece(self, token: int) -> bytes:
        mapped = int(self._to_draft[token]) if 0 <= token < len(self._to_draft) else -1
        return super().piece(mapped) if mapped >= 0 else b""


def open_draft(path: str | os.PathLike, settings: LlamaSettings, **kwargs) -> LlamaRunner:
    """The runner for a draft GGUF: ``TrimmedRunner`` for a trimmed one, else ``LlamaRunner``."""
    try:
        ids = draft_token_ids(path)
    except (OSError, ValueError, KeyError, IndexError) as e:  # gguf-py on a damaged or foreign file
        raise EngineError(f"{path}: not a readable GGUF ({e})") from None
    if ids is None:
        return LlamaRunner(path, settings, **kwargs)
    return TrimmedRunner(path, settings, token_ids=ids, **kwargs)
