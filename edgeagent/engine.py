"""The runtime engine: one GGUF model in llama.cpp (through llama-cpp-python), generating
text under sampling settings and an optional grammar, and measuring every call.

It is a thin layer over ``llama_cpp.Llama``, which keeps the KV cache of the previous call so
only the new suffix of a prompt that shares a prefix with it is evaluated. Greedy decoding (the
agent, the benches) runs its own loop on llama.cpp's C API: one decode per token, the argmax of
the logits row in place, and, under a grammar, one grammar check of that token, with the whole
vocabulary checked only where the grammar rejects it (llama.cpp's own sampling does the same).
llama-cpp-python's sampler chain, which copies and checks all n_vocab candidates for every
token, costs 1-2 % of a decode unconstrained and about 15 % under the agent's grammar; sampling
at a temperature still goes through it. The engine adds stop strings, streaming and
measurements. ``edgeagent bench`` compares it with plain llama-cpp-python and stock llama-bench.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

# EngineError, default_repack and load_llama are part of the engine's API (imported from here).
from edgeagent.decoding import GrammarState, grammar_text, greedy_token
from edgeagent.hugepages import huge_pages_info
from edgeagent.llama import EngineError, LlamaSettings, default_repack, load_llama  # noqa: F401
from edgeagent.metrics import LlamaPerf, PeakRSS, per_second, percentile, rss_mb

if TYPE_CHECKING:
    from edgeagent.profiles import Profile

# The agent's context: a whole episode in the multi-turn layouts fits it (longer ones leave out
# their oldest screens, ``ModelPolicy``). ``run`` and the benches use the same, capped at what
# the model was trained for.
AGENT_N_CTX = 4096


@dataclass
class GenerationMetrics:
    """What one `generate` call cost. `*_ms` from llama.cpp's counters are compute time;
    `ttft_ms`, `total_ms` and `wall_tokens_per_s` are wall clock as the caller sees it."""

    prompt_tokens: int
    reused_prompt_tokens: int  # served from the KV cache of the previous call
    evaluated_prompt_tokens: int
    generated_tokens: int
    ttft_ms: float  # wall: call start -> first token sampled (tokenize + prefill + sample)
    prefill_ms: float  # llama.cpp: evaluating the prompt suffix
    prefill_tokens_per_s: float  # llama.cpp
    decode_ms: float  # llama.cpp: evaluating generated tokens
    tpot_ms: float  # llama.cpp: decode_ms per decoded token (time per output token)
    tokens_per_s: float  # llama.cpp: decode tokens per second
    total_ms: float  # wall: the whole call
    wall_tokens_per_s: float  # wall: tokens after the first / time after the first
    tpot_p50_ms: float  # wall: median time between consecutive tokens (robust to hiccups)
    tpot_p90_ms: float  # wall: 90th percentile of the same
    rss_mb: float  # process RSS after the call
    peak_rss_mb: float  # highest RSS sampled during the call
    stop_reason: str  # eos | stop | length | context

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    text: str  # without the stop string, if one ended generation
    tokens: list[int]  # sampled tokens, without the end-of-generation token
    metrics: GenerationMetrics
    token_times_ms: list[float] = field(default_factory=list, repr=False)  # wall, from call start
    # With ``generate(logprobs=True)``: each sampled token's log-probability under the model's
    # own (unconstrained) distribution, in nats. A grammar may force a token the model gave
    # little probability: that shows here, which ``ModelPolicy`` uses to rescore actions.
    logprobs: list[float] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "metrics": self.metrics.to_dict()}


class Engine:
    """A loaded GGUF model.

    The llama.cpp context is ``settings`` (``edgeagent.llama.LlamaSettings``) when given; else
    it is resolved by ``LlamaSettings.from_runtime``: the arguments here first, then the device
    profile's ``[runtime]`` when a profile is given (threads, flash_attn, kv_cache_type,
    n_ubatch; weight_repack for ``repack``, huge_pages for ``huge_pages``), then defaults:
    ``os.cpu_count()`` threads, repacking as `default_repack()` decides, weights on 2 MiB pages
    where the kernel gives them (``edgeagent.hugepages``), flash attention on and an F16 KV cache
    (llama.cpp's own defaults on a CPU). ``exact``: the set-up whose output depends on the tokens alone
    (``edgeagent.llama.EXACT_KV_TYPES``), so a reused prefix, a batch of forced tokens or a
    speculative verification gives the bits a fresh one-batch evaluation gives; without it those
    agree to llama.cpp's rounding (the batch size picks the kernel).
    `type_k`/`type_v` are ggml type ids (``llama_cpp.GGML_TYPE_F32`` ...) overriding the KV type.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_ubatch: int | None = None,
        seed: int = 0,
        repack: bool | None = None,
        huge_pages: bool | None = None,
        profile: Profile | None = None,
        type_k: int | None = None,
        type_v: int | None = None,
        flash_attn: bool | None = None,
        exact: bool = False,
        track_peak_rss: bool = True,
        verbose: bool = False,
        settings: LlamaSettings | None = None,
    ):
        import llama_cpp

        runtime = profile.runtime if profile is not None else None
        if settings is None:
            settings = LlamaSettings.from_runtime(runtime, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
                                                  n_threads=n_threads, flash_attn=flash_attn, exact=exact)
        if repack is None and runtime is not None:
            repack = runtime.weight_repack
        if huge_pages is None and runtime is not None:
            huge_pages = runtime.huge_pages
        kwargs = settings.llama_kwargs()
        if type_k is not None:
            kwargs["type_k"] = type_k
        if type_v is not None:
            kwargs["type_v"] = type_v
        self.settings = settings
        self.model_path = Path(model_path)
        self.n_threads = settings.threads
        self.repack = default_repack() if repack is None else bool(repack)
        self.seed = seed
        self.track_peak_rss = track_peak_rss
        self.llm = load_llama(self.model_path, repack=self.repack, huge_pages=huge_pages, verbose=verbose, seed=seed,
                              **kwargs)
        self.n_ctx = self.llm.n_ctx()
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._n_vocab = self.llm.n_vocab()
        self._eog: dict[int, bool] = {}  # token -> is end-of-generation, filled as seen
        # greedy decoding's own one-token batch (sequence 0, logits on) and grammar scratch
        self._one = llama_cpp.llama_batch_init(1, 0, 1)
        self._one.n_tokens = 1
        self._one.n_seq_id[0] = 1
        self._one.seq_id[0][0] = 0
        self._one.logits[0] = 1
        self._grammar_scratch = None  # GrammarState.DTYPE x n_vocab, on the first grammar

    # -- tokens -----------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Text -> token ids; special tokens written in the text (chat markup) are parsed."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        """A token's text as the vocabulary stores it (special tokens included: "<|im_end|>")."""
        import llama_cpp

        return llama_cpp.llama_vocab_get_text(self._vocab, int(token)).decode("utf-8", errors="replace")

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF's key/value metadata (values as llama.cpp prints them)."""
        return dict(self.llm.metadata)

    def reset(self) -> None:
        """Forget the KV cache: the next call evaluates its whole prompt."""
        self.llm.reset()

    # -- generation -------------------------------------------------------------------

    def grammar(self, gbnf: str | None = None, json_schema: dict | str | None = None):
        """A LlamaGrammar for a GBNF string or a JSON schema (schemas are converted once)."""
        from llama_cpp import LlamaGrammar

        if json_schema is None:
            return LlamaGrammar.from_string(gbnf, verbose=False)  # just holds the text
        schema = json_schema if isinstance(json_schema, str) else json.dumps(json_schema, sort_keys=True)
        return _schema_grammar(schema)

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int = 128,
        *,
        temperature: float = 0.0,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        grammar: Any = None,
        json_schema: dict | str | None = None,
        stream: Callable[[str], None] | None = None,
        ignore_eos: bool = False,
        logprobs: bool = False,
    ) -> Generation:
        """Generate up to `max_tokens` tokens after `prompt` (text, or token ids as given).

        temperature 0 is greedy decoding. `grammar` (GBNF text or a LlamaGrammar) or
        `json_schema` constrains every sampled token so the output parses. `stop` strings end
        generation and are not part of the text; `stream` receives text pieces as they become
        final (a piece that could begin a stop string is held back until it cannot).
        ``logprobs`` records each token's log-probability before any grammar or sampling
        filter (``Generation.logprobs``; one log-softmax over the vocabulary per token).
        """
        started = time.perf_counter()
        if grammar is not None and json_schema is not None:
            raise EngineError("pass either grammar or json_schema, not both")
        if isinstance(grammar, str):
            grammar = self.grammar(gbnf=grammar)
        elif json_schema is not None:
            grammar = self.grammar(json_schema=json_schema)
        prompt_tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not prompt_tokens:
            raise EngineError("empty prompt")
        room = self.n_ctx - len(prompt_tokens)
        if room <= 0:
            raise EngineError(f"prompt of {len(prompt_tokens)} tokens does not fit the context ({self.n_ctx})")
        limit = min(max_tokens, room)

        llm = self.llm
        ctx = llm.ctx
        llm.set_seed(self.seed if seed is None else seed)
        LlamaPerf.reset(ctx)
        stops = [s.encode("utf-8") for s in stop if s]
        watch_text = bool(stops) or stream is not None
        hold = max((len(s) for s in stops), default=1) - 1
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

        out_tokens: list[int] = []
        token_logprobs: list[float] | None = [] if logprobs else None
        times: list[float] = []  # perf_counter at each sampled token
        out_bytes = bytearray()
        emitted = 0  # bytes of out_bytes already streamed
        stop_reason = "length"
        perf_prefill = None
        peak = PeakRSS() if self.track_peak_rss else None
        with peak or contextlib.nullcontext():
            if temperature == 0.0 and repeat_penalty == 1.0:
                tokens_iter = self._greedy(prompt_tokens, grammar)
            else:
                tokens_iter = llm.generate(prompt_tokens, top_k=top_k, top_p=top_p, min_p=min_p, temp=temperature,
                                           repeat_penalty=repeat_penalty, grammar=grammar)
            for token in tokens_iter:
                times.append(time.perf_counter())
                if perf_prefill is None:
                    perf_prefill = LlamaPerf.read(ctx)
                if not ignore_eos and self._is_eog(token):
                    stop_reason = "eos"
                    break
                out_tokens.append(token)
                if token_logprobs is not None:  # one per returned token (a grammar forces the end)
                    token_logprobs.append(self._last_logprob(token))
                if watch_text:
                    n_before = len(out_bytes)
                    out_bytes += llm.detokenize([token])
                    if stops:  # a new match must end in this token's bytes
                        cut = _find_stop(out_bytes, stops, max(0, n_before - hold))
                        if cut is not None:
                            del out_bytes[cut:]
                            stop_reason = "stop"
                            break
                    if stream is not None and len(out_bytes) - hold > emitted:
                        piece = decoder.decode(bytes(out_bytes[emitted : len(out_bytes) - hold]))
                        emitted = len(out_bytes) - hold
                        if piece:
                            stream(piece)
                if len(out_tokens) >= limit:
                    stop_reason = "length" if limit == max_tokens else "context"
                    break
            tokens_iter.close()

        if not watch_text:
            out_bytes = bytearray(llm.detokenize(out_tokens))
        if stream is not None:  # always: the decoder may hold the start of a multibyte character
            piece = decoder.decode(bytes(out_bytes[emitted:]), final=True)
            if piece:
                stream(piece)
        ended = time.perf_counter()

        perf_total = LlamaPerf.read(ctx)
        prefill = perf_prefill or perf_total
        decode = perf_total - prefill
        t_first, t_last = (times[0], times[-1]) if times else (ended, ended)
        gaps = [(b - a) * 1000 for a, b in zip(times, times[1:])]
        metrics = GenerationMetrics(
            prompt_tokens=len(prompt_tokens),
            reused_prompt_tokens=len(prompt_tokens) - prefill.tokens,
            evaluated_prompt_tokens=prefill.tokens,
            generated_tokens=len(out_tokens),
            ttft_ms=(t_first - started) * 1000,
            prefill_ms=prefill.ms,
            prefill_tokens_per_s=per_second(prefill.tokens, prefill.ms),
            decode_ms=decode.ms,
            tpot_ms=decode.ms / decode.tokens if decode.tokens else 0.0,
            tokens_per_s=per_second(decode.tokens, decode.ms),
            total_ms=(ended - started) * 1000,
            wall_tokens_per_s=per_second(len(times) - 1, (t_last - t_first) * 1000),
            tpot_p50_ms=percentile(gaps, 0.5) if gaps else 0.0,
            tpot_p90_ms=percentile(gaps, 0.9) if gaps else 0.0,
            rss_mb=rss_mb(),
            peak_rss_mb=peak.peak_mb if peak is not None else 0.0,
            stop_reason=stop_reason,
        )
        text = bytes(out_bytes).decode("utf-8", errors="replace")
        token_times = [(t - started) * 1000 for t in times]
        return Generation(text=text, tokens=out_tokens, metrics=metrics, token_times_ms=token_times,
                          logprobs=token_logprobs)

    # -- greedy decoding on the C API --------------------------------------------------

    def _greedy(self, prompt: list[int], grammar: Any) -> Iterator[int]:
        """Greedy tokens after ``prompt``, as ``Llama.generate(temp=0)`` gives them.

        The argmax of the logits row is the answer unless a grammar rejects it; then the
        argmax over the tokens the grammar allows (``greedy_token``). Both are the first
        maximal logit, as llama.cpp's greedy sampler picks after its grammar sampler. Each
        token is decoded when the caller asks for the next, so the cache never holds the
        last token returned (as with ``Llama.generate``).
        """
        import numpy as np

        self._prefill(prompt)
        state = self._grammar_state(grammar) if grammar is not None else None
        one = np.zeros(1, dtype=np.int32)
        try:
            while True:
                row = self._logits_row()
                token = int(row.argmax())
                if state is not None:
                    one[0] = token
                    if not len(state.filter(one)):
                        token = greedy_token(row, state.filter(np.arange(self._n_vocab, dtype=np.int32)))
                    state.accept(token)
                yield token
                self._decode_one(token)
        finally:
            if state is not None:
                state.close()

    def _prefill(self, prompt: list[int]) -> None:
        """Make the KV cache hold ``prompt``, keeping the prefix it shares with what is cached
        (at least the last token is evaluated: its logits choose the first output)."""
        import llama_cpp
        import numpy as np

        llm = self.llm
        cached = min(llm.n_tokens, len(prompt) - 1)
        differ = np.flatnonzero(llm.input_ids[:cached] != np.asarray(prompt[:cached]))
        keep = int(differ[0]) if len(differ) else cached
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if keep and not llama_cpp.llama_memory_seq_rm(memory, -1, keep, -1):
            keep = 0  # the model's cache cannot drop a suffix: start again
        llm.n_tokens = keep
        llm.eval(prompt[keep:])  # batched; it clears the cache from ``keep`` on first

    def _decode_one(self, token: int) -> None:
        import llama_cpp

        llm = self.llm
        n = llm.n_tokens
        self._one.token[0] = token
        self._one.pos[0] = n
        rc = llama_cpp.llama_decode(llm.ctx, self._one)
        if rc != 0:
            raise EngineError(f"{self.model_path.name}: llama_decode failed with code {rc} (one token at {n})")
        llm.input_ids[n] = token
        llm.n_tokens = n + 1

    def _grammar_state(self, grammar: Any) -> GrammarState:
        import numpy as np

        if self._grammar_scratch is None:
            self._grammar_scratch = np.zeros(self._n_vocab, dtype=GrammarState.DTYPE)
        return GrammarState.parse(self._vocab, *grammar_text(grammar), self._grammar_scratch)

    def _logits_row(self):
        """The logits of the last decoded position: a view of llama.cpp's row (no copy),
        valid until the next decode."""
        import llama_cpp
        import numpy as np

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self._n_vocab,))

    def _last_logprob(self, token: int) -> float:
        """log p(token) under the logits of the last decoded position (the row the sampler
        just chose ``token`` from; llama.cpp's samplers work on a copy, so it is unfiltered)."""
        import numpy as np

        row = self._logits_row()  # float32 is precise enough for a 5 % threshold
        top = row.max()
        return float(row[token] - top - np.log(np.exp(row - top).sum()))

    def _is_eog(self, token: int) -> bool:
        # A dict hit is ~20x cheaper than the ctypes call; it runs once per generated token.
        eog = self._eog.get(token)
        if eog is None:
            import llama_cpp

            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return eog

    # -- lifetime ---------------------------------------------------------------------

    def info(self) -> dict:
        meta = self.llm.metadata
        return {
            "model": str(self.model_path),
            "arch": meta.get("general.architecture"),
            "file_type": meta.get("general.file_type"),
            "n_ctx": self.n_ctx,
            "threads": self.n_threads,
            "repack": self.repack,
            "huge_pages": huge_pages_info(self.llm.edgeagent_huge_pages),
            "machine": platform.machine(),
        }

    def close(self) -> None:
        import llama_cpp

        if self._one is not None:
            llama_cpp.llama_batch_free(self._one)
            self._one = None
        self.llm.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.lru_cache(maxsize=32)
def _schema_grammar(schema: str):
    # JSON schema -> GBNF runs in Python in llama-cpp-python; an agent reuses a few schemas.
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema, verbose=False)


def _find_stop(buf: bytearray, stops: list[bytes], start: int) -> int | None:
    """Earliest position in `buf` (searching from `start`) where a stop string begins."""
    hits = [i for i in (buf.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None
