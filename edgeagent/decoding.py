"""What decoding on ``edgeagent.llama.LlamaRunner`` uses besides the model: the grammar and the
early layers' KV cache.

- ``transplant_kv``: give a depth-k exit model the full model's KV cache for its k layers
  instead of a prefill (LayerSkip section 5.2);
- ``GrammarState``: one llama.cpp grammar sampler (the engine's greedy decoding; cloned for
  drafting);
- ``TokenIndex``: the legal tokens at a position, one grammar check per first byte;
- ``greedy_token``: the first maximal logit among the legal tokens, as llama.cpp's greedy
  sampler picks after its grammar sampler.

Self-speculative decoding (``edgeagent.speculative``) is built from these.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from edgeagent.llama import EngineError, LlamaRunner, llama_lib


# ---------------------------------------------------------------------------------------
# sharing the early layers' KV cache (LayerSkip section 5.2)


def transplant_kv(full: LlamaRunner, draft: LlamaRunner) -> bool:
    """Give the draft the full model's KV cache for its layers instead of a prefill.

    The depth-k exit variant *is* the full model's first k blocks, so its K/V for every
    cached position equal the full model's layers 0..k-1 (LayerSkip, arXiv:2404.16710,
    section 5.2, reuses them the same way). llama.cpp has no call to share cache layers
    between two models, so the full model's sequence state (``llama_state_seq_get_data``) is
    cut down to its first k layers and loaded into the draft (``llama_state_seq_set_data``).

    The state layout is llama.cpp's (0.3.36's vendored copy): 8 header bytes, n_stream,
    cell_count, per cell (pos, n_seq_id, seq ids), then v_trans, n_layer, the K rows of
    every layer (type, row size, rows), then V (rows, or transposed: type, element size,
    n_embd, columns). Every field is checked against what the runners know; on any mismatch
    nothing is loaded and False is returned, and the caller prefills the draft instead (so
    a llama.cpp upgrade that moves the layout costs speed, never correctness, and the tests
    notice). The result is byte-identical to the draft's own prefill (tested).
    """
    lib = llama_lib()
    n_cells = len(full.tokens)
    if n_cells == 0 or draft.n_layer > full.n_layer:
        return False
    size = lib.llama_state_seq_get_size(full.ctx, 0)
    buf = (ctypes.c_uint8 * size)()
    if lib.llama_state_seq_get_data(full.ctx, buf, size, 0) != size:
        return False
    blob = memoryview(buf).cast("B")
    u32 = lambda off: int.from_bytes(blob[off:off + 4], "little")  # noqa: E731
    off = 8
    if u32(off) != 1 or u32(off + 4) != n_cells:  # one stream; one cell per cached token
        return False
    off += 8
    meta = np.frombuffer(blob, dtype="<u4", count=3 * n_cells, offset=off).reshape(n_cells, 3)
    if not (meta[:, 1] == 1).all() or not (meta[:, 2] == 0).all():  # every cell: sequence 0 only
        return False
    off += 12 * n_cells
    header_end = off
    v_trans, n_layer = u32(off), u32(off + 4)
    if v_trans not in (0, 1) or n_layer != full.n_layer:
        return False
    off += 8
    sections: list[list[tuple[int, int]]] = [[], []]  # K, V: (start, end) per layer
    for part in (0, 1):
        for _ in range(n_layer):
            if part == 0 or not v_trans:
                row = int.from_bytes(blob[off + 4:off + 12], "little")
                end = off + 12 + row * n_cells
            else:
                element, n_embd = u32(off + 4), u32(off + 8)
                end = off + 12 + element * n_embd * n_cells
            if end > size:
                return False
            sections[part].append((off, end))
            off = end
    if off != size:
        return False
    k = draft.n_layer
    pieces = [bytes(blob[:header_end]), v_trans.to_bytes(4, "little"), k.to_bytes(4, "little")]
    pieces += [bytes(blob[a:b]) for a, b in sections[0][:k]] + [bytes(blob[a:b]) for a, b in sections[1][:k]]
    cut = b"".join(pieces)
    src = (ctypes.c_uint8 * len(cut)).from_buffer_copy(cut)
    draft.reset()
    if lib.llama_state_seq_set_data(draft.ctx, src, len(cut), 0) != len(cut):
        draft.reset()
        return False
    draft.tokens = list(full.tokens)
    return True


# ---------------------------------------------------------------------------------------
# grammar state


def grammar_text(grammar: Any) -> tuple[str, str]:
    """(GBNF text, root rule) of ``grammar``: GBNF text itself, or a ``llama_cpp.LlamaGrammar``
    (which only holds them)."""
    text = grammar if isinstance(grammar, str) else getattr(grammar, "_grammar", None)
    if not isinstance(text, str):
        raise EngineError(f"grammar must be GBNF text or a llama_cpp.LlamaGrammar, got {type(grammar).__name__}")
    return text, getattr(grammar, "_root", "root")


class GrammarState:
    """One llama.cpp grammar sampler: where a (partial) output stands in the GBNF."""

    DTYPE = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data

    def __init__(self, ptr, scratch: np.ndarray):
        if not ptr:
            raise EngineError("llama.cpp could not parse the grammar (GBNF)")
        self.ptr = ptr
        self.scratch = scratch  # a DTYPE array of n_vocab entries, shared by clones

    @classmethod
    def parse(cls, vocab, text: str, root: str, scratch: np.ndarray) -> "GrammarState":
        """A fresh sampler for GBNF ``text`` from rule ``root``, on a model's ``vocab``."""
        return cls(llama_lib().llama_sampler_init_grammar(vocab, text.encode("utf-8"), root.encode("utf-8")), scratch)

    def clone(self) -> "GrammarState":
        return GrammarState(llama_lib().llama_sampler_clone(self.ptr), self.scratch)

    def accept(self, token: int) -> None:
        llama_lib().llama_sampler_accept(self.ptr, token)

    def filter(self, ids: np.ndarray) -> np.ndarray:
        """The tokens among ``ids`` the grammar allows next (order kept)."""
        lib = llama_lib()
        m = len(ids)
        if m == 0:
            return ids
        buf = self.scratch[:m]
        buf["id"] = ids
        buf["logit"] = 0.0
        arr = lib.llama_token_data_array(
            data=buf.ctypes.data_as(lib.llama_token_data_p), size=m, selected=-1, sorted=False
        )
        lib.llama_sampler_apply(self.ptr, ctypes.byref(arr))
        return ids[np.isfinite(buf["logit"])]

    def close(self) -> None:
        if self.ptr:
            llama_lib().llama_sampler_free(self.ptr)
            self.ptr = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class TokenIndex:
    """The vocabulary grouped by the first byte of each token's text, as llama.cpp's grammar
    sees it (special tokens rendered), so the set of legal next tokens costs one grammar
    check per first byte plus the tokens that start with an allowed byte, not n_vocab checks.

    A token can only be legal if the first byte of its text is; a token whose text is that
    single byte is legal exactly when the byte is. End-of-generation tokens are checked
    directly (the grammar allows them when it can end); other tokens with empty text never
    are. Tested against a whole-vocabulary check.
    """

    def __init__(self, runner: LlamaRunner):
        lib = llama_lib()
        buf = ctypes.create_string_buffer(256)
        groups: dict[int, list[int]] = {}
        reps: dict[int, int] = {}
        eog = []
        for t in range(runner.n_vocab):
            if runner.is_eog(t):
                eog.append(t)
                continue
            n = lib.llama_token_to_piece(runner.vocab, t, buf, len(buf), 0, True)
            if n <= 0:
                continue  # empty (or over-long) text: the grammar never allows it
            first = buf.raw[0]
            if n == 1 and first not in reps:
                reps[first] = t
            else:
                groups.setdefault(first, []).append(t)
        self.n_vocab = runner.n_vocab
        self.eog = np.array(eog, dtype=np.int32)
        self.rep_bytes = np.array(sorted(reps), dtype=np.int32)
        self.probe = np.concatenate([self.eog, np.array([reps[b] for b in sorted(reps)], dtype=np.int32)])
        self.rest = {b: np.array(ids, dtype=np.int32) for b, ids in groups.items() if b in reps}
        # bytes with no one-byte token: their tokens are always checked
        self.unprobed = np.array(sorted(t for b, ids in groups.items() if b not in reps for t in ids), dtype=np.int32)
        self._byte_of = {reps[b]: b for b in reps}

    def legal(self, state: GrammarState) -> np.ndarray:
        """Sorted ids of every token ``state`` allows next."""
        first = state.filter(self.probe)
        allowed = [self._byte_of[int(t)] for t in first if int(t) in self._byte_of]
        more = [self.rest[b] for b in allowed if b in self.rest]
        candidates = np.concatenate([*more, self.unprobed])
        return np.sort(np.concatenate([first, state.filter(candidates)]))


def greedy_token(logits: np.ndarray, legal: np.ndarray | None) -> int:
    """Greedy choice: the first maximal logit (llama.cpp's greedy sampler), among the legal
    tokens (sorted ids) when a grammar constrains the output."""
    if legal is None:
        return int(np.argmax(logits))
    if len(legal) == 0:
        raise EngineError("the grammar allows no token here (dead end)")
    return int(legal[int(np.argmax(logits[legal]))])
