"""Self-speculative decoding on llama.cpp: an early-exit GGUF drafts, the full model verifies.

LayerSkip's idea (Elhoushi et al. 2024, arXiv:2404.16710, section 5) on a runtime without
layer skipping: the depth-k exit variant (the first k blocks + that exit's head, packed by
``edgeagent.export.exit_pack.pack_exits``) proposes up to ``n_draft`` tokens greedily, then the full
model evaluates the last committed token and all drafts in ONE ``llama_decode`` batch. The
longest prefix of drafts equal to the full model's own greedy choices is accepted, plus the
full model's token at the first mismatch (or after the last draft), so every round commits at
least one token and the output is the full model's greedy output token for token (Leviathan
et al. 2023, arXiv:2211.17192, with greedy acceptance). Both KV caches are rolled back past
the accepted tokens with ``llama_memory_seq_rm`` (0.3.36 has it; ``llama_kv_self_seq_rm`` is
gone). "Token for token" holds up to llama.cpp's batch-dependent rounding, see
``SelfSpeculativeEngine`` (kv_type).

The draft may be cut to the agent's vocabulary (``edgeagent.draft_vocab``: a smaller head,
the same ids in and logits out through ``TrimmedRunner``).

The draft never prefills the prompt: after the full model's prefill its first k layers' KV
cache is copied into the draft (``transplant_kv``; LayerSkip section 5.2 reuses the early
layers' cache the same way), since the exit variant *is* those k layers.

Grammar-constrained decoding stays identical: one llama.cpp grammar sampler
(``llama_sampler_init_grammar``) holds the committed state. Drafting runs on a clone of it;
verification advances the committed one only through tokens it has checked. At each
position the set of legal tokens is computed once per call (``TokenIndex``: one grammar check
per first byte, then only the tokens starting with an allowed byte) and shared by draft and
verification; both pick the first maximal logit among legal tokens, as llama.cpp's greedy
sampler does after its grammar sampler. An illegal token is never accepted into the sampler
(which llama.cpp would abort on).

Where the grammar leaves exactly one legal token (the index after a named element, the
closing brace) no model has to choose it: with ``forced_batching`` it is committed at once and
rides along in the next batch, and when only end-of-generation is legal the call ends without
another decode. Greedy output is unchanged (greedy under a grammar must pick the only legal
token).

Memory: the models are loaded through llama.cpp's C API (not ``llama_cpp.Llama``, whose
``draft_model`` hook turns on ``logits_all`` and a numpy buffer of n_ctx × n_vocab floats).
Each decode asks for logits only at the positions that are compared (at most n_draft + 1
rows), so besides the two models' weights and KV caches the runtime holds a few vocab-sized
rows (plus one n_vocab scratch array for the grammar).

``confidence`` switches on a CALM-style rule (Schuster et al. 2022, arXiv:2207.07061): a draft
token whose probability at the exit (among the legal tokens) is at least the threshold is
taken without comparing it to the full model's choice. No longer identical; reported
separately.

The runner is ``edgeagent.llama.LlamaRunner`` (the context set-up every llama.cpp path
shares); the grammar state, the legal-token index and the KV transplant are in
``edgeagent.decoding``.

``SelfSpeculativeEngine.generate`` has ``Engine.generate``'s calling convention for what the
agent uses (prompt, max_tokens, temperature=0, grammar), so ``ModelPolicy`` runs on it.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from edgeagent.decoding import GrammarState, TokenIndex, grammar_text, greedy_token, transplant_kv
from edgeagent.draft_vocab import open_draft
from edgeagent.llama import EngineError, LlamaRunner, LlamaSettings
from edgeagent.metrics import PeakRSS, per_second, rss_mb

_EOG_ONLY = -1  # _forced(): only end-of-generation tokens are legal


# ---------------------------------------------------------------------------------------
# the decoder


@dataclass
class SpeculativeStats:
    """Counters over one or more calls."""

    calls: int = 0
    generated_tokens: int = 0
    rounds: int = 0  # verification batches of the full model
    drafted: int = 0  # tokens the exit model proposed (forced tokens not counted)
    accepted: int = 0  # of those, equal to the full model's choice (or confident, with CALM)
    confident: int = 0  # CALM: taken without comparison
    forced_tokens: int = 0  # committed because the grammar allowed nothing else
    eog_forced: int = 0  # calls ended because only end-of-generation was legal
    full_decode_calls: int = 0
    draft_decode_calls: int = 0
    full_ms: float = 0.0
    draft_ms: float = 0.0
    grammar_ms: float = 0.0
    total_ms: float = 0.0
    full_prefill_ms: float = 0.0  # the full model's prompt evaluation (part of full_ms)
    draft_prefill_ms: float = 0.0  # the draft's prompt evaluation, when not transplanted (part of draft_ms)
    kv_transplants: int = 0  # draft KV cache taken from the full model instead of a prefill
    kv_transplant_ms: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def add(self, other: "SpeculativeStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["acceptance_rate"] = self.acceptance_rate
        d["tokens_per_round"] = self.generated_tokens / self.rounds if self.rounds else 0.0
        d["other_ms"] = max(0.0, self.total_ms - self.full_ms - self.draft_ms - self.grammar_ms - self.kv_transplant_ms)
        return d


def _logprob(logits: np.ndarray, token: int) -> float:
    """log softmax(logits)[token], in float64."""
    row = logits.astype(np.float64)
    top = row.max()
    return float(row[token] - top - np.log(np.exp(row - top).sum()))


@dataclass
class SpeculativeGeneration:
    text: str
    tokens: list[int]
    metrics: dict[str, Any]
    stats: SpeculativeStats = field(repr=False, default_factory=SpeculativeStats)
    logprobs: list[float] | None = None  # with generate(logprobs=True): as Engine's, one per token

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "metrics": self.metrics}


class SelfSpeculativeEngine:
    """Greedy decoding of ``full_path`` drafted by ``draft_path`` (the depth-k exit variant).

    ``n_draft`` tokens per round (0: the full model alone, through the same code path).
    ``forced_batching``: commit grammar-forced tokens without a model choice (exact).
    ``share_kv``: after the full model's prefill, give the draft those layers' KV cache
    (``transplant_kv``) instead of a prefill of its own.
    ``kv_type``: KV cache type of both models ("f16", llama.cpp's and ``Engine``'s default;
    "f32"; "q8_0"). ``flash_attn``: llama.cpp's flash attention (on, as ``Engine``'s default).
    ``exact``: ``Engine``'s exact attention (``LlamaSettings.exact``) instead of both.
    Compare outputs against an ``Engine`` with the same set-up.

    How exact "identical" is: the algorithm commits only the full model's own greedy
    choices, but llama.cpp's kernels are not batch-invariant, so a position's logits from
    the batched verification can differ in the last bits from a one-token decode, and a
    near-tie can then flip. Measured on a tiny random (chaotic, init std 0.1) 4-layer model
    over 260 positions, max |Δlogit| single vs batched: Q8_0 weights 0.098 with an F16 cache,
    0.005 with F32; Q4_0 0.094 / 2e-6; Q4_K_M 0.18 / 0.18; F32 weights 2e-3 / 1e-5.
    """

    def __init__(
        self,
        full_path: str | os.PathLike,
        draft_path: str | os.PathLike | None,
        *,
        n_draft: int = 4,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        repack: bool | None = None,
        huge_pages: bool | None = None,
        forced_batching: bool = True,
        share_kv: bool = True,
        kv_type: str | None = None,
        flash_attn: bool = True,
        exact: bool = False,
        confidence: float | None = None,
        track_peak_rss: bool = False,
        verbose: bool = False,
    ):
        if n_draft < 0:
            raise EngineError(f"n_draft must be >= 0, got {n_draft}")
        if n_draft > 0 and draft_path is None:
            raise EngineError("n_draft > 0 needs a draft model (the early-exit GGUF)")
        if confidence is not None and not 0.0 < confidence <= 1.0:
            raise EngineError(f"confidence threshold must be in (0, 1], got {confidence}")
        self.n_draft = n_draft
        self.forced_batching = forced_batching
        self.share_kv = share_kv
        self.confidence = confidence
        self.track_peak_rss = track_peak_rss
        settings = LlamaSettings(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, kv_type=kv_type,
                                 flash_attn=flash_attn, exact=exact)
        self.full = LlamaRunner(full_path, settings, repack=repack, huge_pages=huge_pages, verbose=verbose)
        self.draft = None
        if n_draft > 0:
            # one thread pool for both: they compute in turn
            self.draft = open_draft(draft_path, settings, repack=self.full.repack, huge_pages=huge_pages, verbose=verbose,
                                    share_pool=self.full)
            if self.draft.n_vocab != self.full.n_vocab:
                raise EngineError(
                    f"{draft_path}: vocabulary of {self.draft.n_vocab} tokens, the full model has {self.full.n_vocab}; "
                    "the draft must be an exit variant of the same model"
                )
        self.n_ctx = self.full.n_ctx
        self.n_threads = self.full.n_threads
        self.model_path = self.full.path
        self._scratch = np.zeros(self.full.n_vocab, dtype=GrammarState.DTYPE)
        self._index: TokenIndex | None = None  # built on the first grammar-constrained call
        self._legal_cache: dict[tuple, np.ndarray] = {}
        self._draft_fed = False  # per call: has the draft decoded anything yet
        self._grammars: OrderedDict[tuple[str, str], GrammarState] = OrderedDict()
        self.stats = SpeculativeStats()

    # -- Engine-compatible surface -----------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.full.tokenize(text, add_bos)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.full.detokenize(tokens).decode("utf-8", errors="replace")

    def reset(self) -> None:
        self.full.reset()
        if self.draft is not None:
            self.draft.reset()

    def close(self) -> None:
        for g in self._grammars.values():
            g.close()
        self._grammars.clear()
        if self.draft is not None:  # first: it computes with the full model's thread pool
            self.draft.close()
        self.full.close()

    def __enter__(self) -> "SelfSpeculativeEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _grammar(self, grammar: Any) -> GrammarState | None:
        if grammar is None:
            return None
        key = grammar_text(grammar)
        base = self._grammars.get(key)
        if base is None:
            base = GrammarState.parse(self.full.vocab, *key, self._scratch)
            self._grammars[key] = base
            while len(self._grammars) > 32:
                self._grammars.popitem(last=False)[1].close()
        self._grammars.move_to_end(key)
        return base.clone()

    def _legal(self, path: tuple, state: GrammarState | None) -> np.ndarray | None:
        """The tokens the grammar allows after output ``path`` (cached for the call: the
        draft and the verification ask about the same positions)."""
        if state is None:
            return None
        legal = self._legal_cache.get(path)
        if legal is None:
            if self._index is None:
                self._index = TokenIndex(self.full)
            legal = self._legal_cache[path] = self._index.legal(state)
        return legal

    def _forced(self, legal: np.ndarray | None) -> int | None:
        """The only token the grammar allows, ``_EOG_ONLY`` when only end-of-generation
        tokens are allowed, else None."""
        if legal is None or not self.forced_batching:
            return None
        if len(legal) == 1 and not self.full.is_eog(int(legal[0])):
            return int(legal[0])
        if len(legal) and all(self.full.is_eog(int(t)) for t in legal):
            return _EOG_ONLY
        return None

    # -- generation --------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        *,
        temperature: float = 0.0,
        grammar: Any = None,
        stop: Sequence[str] = (),
        ignore_eos: bool = False,
        logprobs: bool = False,
        **_sampling: Any,
    ) -> SpeculativeGeneration:
        """Greedy generation, identical to the full model's (without ``confidence``).

        Sampling settings other than temperature (top_k, top_p, ...) do not change a greedy
        choice and are accepted and ignored, as in ``Engine.generate`` at temperature 0.
        ``logprobs``: each returned token's log-probability under the full model before the
        grammar, as ``Engine.generate(logprobs=True)`` gives (the agent's rescoring reads them,
        so without them a policy would act differently on this engine). Each verification
        asks llama.cpp for logits also at the positions of tokens committed since the last one
        (grammar-forced ones included); tokens forced after the last verification get theirs
        from one more batch at the end.
        """
        if temperature != 0.0:
            raise EngineError("self-speculative decoding here is greedy only (temperature=0)")
        if stop:
            raise EngineError("stop strings are not supported by the speculative engine; use a grammar")
        started = time.perf_counter()
        stats = SpeculativeStats(calls=1)
        full, draft = self.full, self.draft
        full_s0, full_calls0 = full.decode_s, full.decode_calls
        draft_s0 = draft.decode_s if draft else 0.0
        draft_calls0 = draft.decode_calls if draft else 0
        prompt_tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_tokens:
            raise EngineError("empty prompt")
        room = self.n_ctx - len(prompt_tokens) - self.n_draft - 1
        if room <= 0:
            raise EngineError(f"prompt of {len(prompt_tokens)} tokens does not fit the context ({self.n_ctx})")
        limit = min(max_tokens, room)
        reused = _common_prefix(full.tokens, prompt_tokens[:-1])
        peak = PeakRSS() if self.track_peak_rss else None
        if peak is not None:
            peak.__enter__()

        state = self._grammar(grammar)
        self._legal_cache.clear()
        legal_at = self._legal
        grammar_s = 0.0
        out: list[int] = []
        t_first = None
        stop_reason = "length"

        n_at_first = 0
        self._draft_fed = False
        token_logprobs: list[float] = []  # for out[:len(token_logprobs)]

        def commit(token: int) -> None:
            # TTFT is taken at the first token the full model chose (after its prefill): tokens
            # the grammar forces before that come for free and would flatter it.
            nonlocal t_first, n_at_first
            out.append(token)
            if state is not None:
                state.accept(token)
            if t_first is None and stats.rounds > 0:
                t_first = time.perf_counter()
                n_at_first = len(out)

        try:
            while len(out) < limit:
                tg = time.perf_counter()
                forced = self._forced(legal_at(tuple(out), state))
                grammar_s += time.perf_counter() - tg
                if forced == _EOG_ONLY and not ignore_eos:
                    stats.eog_forced += 1
                    stop_reason = "eos"
                    break
                if forced is not None and forced != _EOG_ONLY:
                    stats.forced_tokens += 1
                    commit(forced)
                    continue

                seq = prompt_tokens + out
                drafts: list[int] = []
                kinds: list[str] = []  # per draft: "model", "forced" or "confident"
                n = min(self.n_draft, limit - len(out) - 1)
                if n > 0 and stats.rounds > 0:  # first the full model's prefill alone (TTFT), then the draft gets its KV
                    drafts, kinds, g_s = self._draft(seq, out, n, state, stats)
                    grammar_s += g_s
                # Verification: the full model sees the last committed token and the drafts
                # in one batch; logits only where a choice is compared (with CALM, only after
                # the last draft: every draft is taken).
                calm = self.confidence is not None
                n_rows = 1 if calm else len(drafts) + 1
                first_row = 0  # the row of seq[-1]'s logits (rows before it: committed tokens' logprobs)
                if logprobs and not calm:
                    # rows from the position that predicts the first token still without a logprob
                    n_rows = len(seq) + len(drafts) - (len(prompt_tokens) + len(token_logprobs) - 1)
                    first_row = n_rows - len(drafts) - 1
                full.feed(seq + drafts, n_rows)
                stats.rounds += 1
                if stats.rounds == 1:
                    stats.full_prefill_ms = (full.decode_s - full_s0) * 1000
                    if draft is not None and self.share_kv and \
                            len(full.tokens) - _common_prefix(draft.tokens, full.tokens) > self.n_draft:
                        tk = time.perf_counter()
                        stats.kv_transplants += transplant_kv(full, draft)
                        stats.kv_transplant_ms += (time.perf_counter() - tk) * 1000
                tg = time.perf_counter()
                ended = False
                accepted = 0
                for i, (token, kind) in enumerate(zip(drafts, kinds)):
                    # a forced token is the greedy choice by definition; a confident one is
                    # taken on the exit's word (CALM)
                    if kind == "model" and greedy_token(full.logits(first_row + i), legal_at(tuple(out), state)) != token:
                        break
                    accepted += 1
                    stats.accepted += kind != "forced"
                    stats.forced_tokens += kind == "forced"
                    if full.is_eog(token) and not ignore_eos:
                        ended = True
                        break
                    commit(token)
                if not ended:
                    if calm and accepted < len(drafts):
                        raise AssertionError("with CALM every draft is taken")
                    correction = greedy_token(full.logits(0 if calm else first_row + accepted), legal_at(tuple(out), state))
                    if full.is_eog(correction) and not ignore_eos:
                        ended = True
                    else:
                        commit(correction)
                if logprobs and not calm:
                    first_pos = len(seq) + len(drafts) - n_rows  # the position of row 0's logits
                    while len(token_logprobs) < len(out):  # out[j] is predicted at position len(prompt) + j - 1
                        j = len(token_logprobs)
                        token_logprobs.append(_logprob(full.logits(len(prompt_tokens) + j - 1 - first_pos), out[j]))
                grammar_s += time.perf_counter() - tg
                if ended:
                    stop_reason = "eos"
                    break
                # Roll both caches back to the committed tokens: the full model keeps all but
                # the last (evaluated with the next round's drafts), the draft what it shares.
                full.truncate(len(prompt_tokens) + len(out) - 1)
                if draft is not None:
                    draft.truncate(_common_prefix(draft.tokens, prompt_tokens + out))
            if stop_reason == "length" and len(out) >= limit and limit < max_tokens:
                stop_reason = "context"
            if logprobs and len(token_logprobs) < len(out):  # forced after the last verification (or CALM)
                have = len(token_logprobs)
                full.feed(prompt_tokens + out[:-1], len(out) - have)
                token_logprobs += [_logprob(full.logits(r), out[have + r]) for r in range(len(out) - have)]
        finally:
            if peak is not None:
                peak.__exit__(None, None, None)
        ended_at = time.perf_counter()
        stats.generated_tokens = len(out)
        stats.full_ms = (full.decode_s - full_s0) * 1000
        stats.full_decode_calls = full.decode_calls - full_calls0
        if draft is not None:
            stats.draft_ms = (draft.decode_s - draft_s0) * 1000
            stats.draft_decode_calls = draft.decode_calls - draft_calls0
        stats.grammar_ms = grammar_s * 1000
        stats.total_ms = (ended_at - started) * 1000
        self.stats.add(stats)
        if state is not None:
            state.close()

        t_first = t_first or ended_at
        text = full.detokenize(out).decode("utf-8", errors="replace")
        after_first = len(out) - n_at_first
        metrics = {
            "prompt_tokens": len(prompt_tokens),
            "reused_prompt_tokens": reused,
            "evaluated_prompt_tokens": len(prompt_tokens) - reused,
            "generated_tokens": len(out),
            "ttft_ms": (t_first - started) * 1000,
            "total_ms": stats.total_ms,
            "tokens_per_s": per_second(after_first, (ended_at - t_first) * 1000) if after_first > 0 else 0.0,
            "tpot_ms": (ended_at - t_first) * 1000 / after_first if after_first > 0 else 0.0,
            "decode_tokens": after_first,  # committed after the TTFT token
            "rss_mb": rss_mb(),
            "peak_rss_mb": peak.peak_mb if peak is not None else 0.0,
            "stop_reason": stop_reason,
            **{k: v for k, v in stats.to_dict().items() if k not in ("calls", "generated_tokens", "total_ms")},
        }
        return SpeculativeGeneration(text=text, tokens=out, metrics=metrics, stats=stats,
                                     logprobs=token_logprobs if logprobs else None)

    def _draft(self, seq: list[int], out: list[int], n: int, state: GrammarState | None, stats: SpeculativeStats):
        """Up to ``n`` greedy draft tokens from the exit model after ``seq``, under a clone of
        the grammar state. Returns (drafts, their kinds, seconds spent on the grammar); a kind
        is "model" (to verify), "forced" (the grammar's only legal token) or "confident"
        (CALM: taken without verification)."""
        draft = self.draft
        g = state.clone() if state is not None else None
        grammar_s = 0.0
        drafts: list[int] = []
        kinds: list[str] = []
        try:
            while len(drafts) < n:
                tg = time.perf_counter()
                legal = self._legal(tuple(out + drafts), g)
                forced = self._forced(legal)
                grammar_s += time.perf_counter() - tg
                if forced == _EOG_ONLY:
                    break
                if forced is not None:
                    drafts.append(forced)
                    kinds.append("forced")
                    g.accept(forced)
                    continue
                before = draft.decode_s
                draft.feed(seq + drafts, 1)
                if not self._draft_fed:  # the call's first draft step holds any prefill
                    self._draft_fed = True
                    stats.draft_prefill_ms += (draft.decode_s - before) * 1000
                logits = draft.logits(0)
                tg = time.perf_counter()
                token = greedy_token(logits, legal)
                grammar_s += time.perf_counter() - tg
                if not np.isfinite(logits[token]):  # a trimmed draft has none of the legal tokens
                    break
                kind = "model"
                if self.confidence is not None:
                    tg = time.perf_counter()
                    confident = _confidence(logits, token, legal) >= self.confidence
                    grammar_s += time.perf_counter() - tg
                    if not confident:
                        break  # the full model decides this position
                    kind = "confident"
                    stats.confident += 1
                drafts.append(token)
                kinds.append(kind)
                stats.drafted += 1
                if draft.is_eog(token):
                    break
                if g is not None:
                    g.accept(token)
        finally:
            if g is not None:
                g.close()
        return drafts, kinds, grammar_s


def _confidence(logits: np.ndarray, token: int, legal: np.ndarray | None) -> float:
    """CALM's confidence at the exit: the chosen token's softmax probability among the tokens
    the grammar allows (all tokens without a grammar)."""
    z = logits if legal is None else logits[legal]
    top = float(np.max(z))
    return float(np.exp(logits[token] - top) / np.exp(z - top).sum())


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
