"""What a GGUF variant is worth, measured in llama.cpp: held-out perplexity, task success on
the emulated phone, and the KV-cache bytes it needs per token.

- ``heldout_perplexity``: exp of the mean negative log-likelihood of the *target* tokens of
  held-out examples (token ids and labels as ``converters.data`` makes them; -100 = context),
  computed from llama.cpp's logits. Only the positions that predict a target ask llama.cpp
  for logits, so memory is (target tokens of one example) x vocab, not context x vocab.
  The project's one perplexity: prompt/completion texts go through ``text_examples`` first.
- ``task_success``: the agent loop with the model as policy on emulated tasks
  (``edgeagent.agent.evaluate.evaluate_tasks``), prompts in the bundle's prompt format.
- ``kv_cache_bytes_per_token``: read from llama.cpp, not from the formula. A sequence's
  saved state (``llama_state_seq_get_size``) grows per token by the K and V rows of every
  layer plus a few bytes of cell metadata; the metadata does not depend on the cache type,
  so the growth with an F32 cache minus the growth with an F16 cache is exactly the F16
  cache's bytes per token (2 bytes per element either way).

Runtime module: llama-cpp-python and numpy, no torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np

from edgeagent.gguf_meta import read_gguf_meta

IGNORE = -100


def _context(model_path, n_ctx: int, n_batch: int, threads: int | None, kv_type: str | None = None):
    """The model in llama.cpp with the shared context set-up (``edgeagent.llama.LlamaSettings``),
    without flash attention: with it llama.cpp converts an F32 cache to F16 before attending."""
    from edgeagent.llama import LlamaSettings, load_llama

    settings = LlamaSettings(n_ctx=n_ctx, n_batch=n_batch, n_threads=threads, kv_type=kv_type, flash_attn=False)
    return load_llama(model_path, **settings.llama_kwargs())


def _decode(ctx, batch, tokens: Sequence[int], start: int, want_logits: Sequence[bool]) -> None:
    from llama_cpp import llama_cpp as L

    batch.n_tokens = len(tokens)
    for i, token in enumerate(tokens):
        batch.token[i] = token
        batch.pos[i] = start + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if want_logits[i] else 0
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode failed (code {rc})")


def heldout_perplexity(model_path: str | os.PathLike, examples: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                       threads: int | None = None, n_batch: int = 512,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Perplexity of the target tokens of ``examples`` ((input_ids, labels) pairs, labels
    -100 where there is no target; position t's logits score labels[t+1])."""
    from llama_cpp import llama_cpp as L

    examples = [(list(ids), list(labels)) for ids, labels in examples if any(t != IGNORE for t in labels[1:])]
    if not examples:
        return {"perplexity": None, "heldout_nll": None, "heldout_tokens": 0, "examples": 0, "source": "measured"}
    longest = max(len(ids) for ids, _ in examples)
    llm = _context(model_path, n_ctx=longest + 8, n_batch=min(n_batch, longest), threads=threads)
    ctx = llm.ctx
    n_vocab = llm.n_vocab()
    batch = L.llama_batch_init(min(n_batch, longest), 0, 1)
    nll, count = 0.0, 0
    try:
        for done, (ids, labels) in enumerate(examples):
            if max(ids) >= n_vocab:
                raise ValueError(f"token id {max(ids)} is outside the model's vocabulary ({n_vocab})")
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            for start in range(0, len(ids), batch_size := min(n_batch, longest)):
                chunk = ids[start:start + batch_size]
                targets = [labels[t + 1] if t + 1 < len(labels) else IGNORE for t in range(start, start + len(chunk))]
                _decode(ctx, batch, chunk, start, [t != IGNORE for t in targets])
                for i, target in enumerate(targets):
                    if target == IGNORE:
                        continue
                    logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).astype(np.float64)
                    top = logits.max()
                    nll += float(top + math.log(np.exp(logits - top).sum()) - logits[target])
                    count += 1
            if progress:
                progress(done + 1, len(examples))
    finally:
        L.llama_batch_free(batch)
        llm.close()
    mean = nll / count
    return {"perplexity": math.exp(min(mean, 50.0)), "heldout_nll": mean, "heldout_tokens": count,
            "examples": len(examples), "source": "measured"}


def text_examples(model_path: str | os.PathLike, examples: Sequence[dict], *,
                  chat: bool = False) -> list[tuple[list[int], list[int]]]:
    """Prompt/completion dicts as (input_ids, labels) for ``heldout_perplexity``, tokenized by
    the GGUF's own tokenizer as the model is trained and run: the prompt with BOS (context),
    then the completion, a newline and EOS (the targets). ``chat``: the prompt is already in
    the chat template (BOS only where the vocabulary adds one) and the assistant's turn is the
    completion then the end-of-turn token, as ``converters.data.encode_chat`` trains it."""
    from edgeagent.engine import load_llama

    llm = load_llama(model_path, vocab_only=True)
    try:
        eos = llm.token_eos()
        pairs = []
        for ex in examples:
            prompt = llm.tokenize(ex["prompt"].encode("utf-8"), add_bos=True, special=True)
            answer = ex["completion"] if chat else ex["completion"] + "\n"
            target = llm.tokenize(answer.encode("utf-8"), add_bos=False, special=True) + [eos]
            pairs.append((prompt + target, [IGNORE] * len(prompt) + target))
        return pairs
    finally:
        llm.close()


def kv_cache_bytes_per_token(model_path: str | os.PathLike, *, n_tokens: int = 64, threads: int | None = 1) -> dict:
    """KV-cache bytes per token of context with llama.cpp's default F16 cache, measured (see
    the module docstring), and the raw state growth per token it was derived from."""
    from llama_cpp import llama_cpp as L

    growth = {}
    for name in ("f32", "f16"):
        llm = _context(model_path, n_ctx=2 * n_tokens + 16, n_batch=n_tokens, threads=threads, kv_type=name)
        batch = L.llama_batch_init(n_tokens, 0, 1)
        try:
            ctx = llm.ctx
            tokens = [i % llm.n_vocab() for i in range(1, n_tokens + 1)]
            want = [False] * (n_tokens - 1) + [True]
            _decode(ctx, batch, tokens, 0, want)
            first = L.llama_state_seq_get_size(ctx, 0)
            _decode(ctx, batch, tokens, n_tokens, want)
            second = L.llama_state_seq_get_size(ctx, 0)
            growth[name] = (second - first) / n_tokens
            n_layer = L.llama_model_n_layer(llm.model)
            n_head_kv = L.llama_model_n_head_kv(llm.model)
        finally:
            L.llama_batch_free(batch)
            llm.close()
    kv = growth["f32"] - growth["f16"]
    return {"kv_cache_bytes_per_token": int(round(kv)), "state_bytes_per_token_f16": growth["f16"],
            "state_bytes_per_token_f32": growth["f32"], "n_layer": int(n_layer), "n_head_kv": int(n_head_kv),
            "cache_type": "f16", "source": "measured"}


def trained_context(model_path: str | os.PathLike) -> int | None:
    """The context length the model was trained for (GGUF ``{arch}.context_length``), or None
    where the file does not say; ValueError naming the file if its header is corrupt."""
    fields = read_gguf_meta(model_path).fields
    arch = fields.get("general.architecture")
    value = fields.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return value if type(value) is int and value > 0 else None


def task_success(model_path: str | os.PathLike, tasks: Sequence[Any], *, prompt_format=None,
                 max_steps: int = 20, threads: int | None = None, n_ctx: int | None = None,
                 on_episode: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Success rate of the model as the agent on ``tasks`` (emulator TaskSpecs), greedy and
    grammar-constrained as the runtime runs it, prompts in ``prompt_format`` (default: what
    the GGUF implies)."""
    from edgeagent.agent.evaluate import evaluate_tasks, model_policy_factory
    from edgeagent.agent.policy import engine_prompt_format
    from edgeagent.engine import Engine

    n_ctx = n_ctx or min(4096, trained_context(model_path) or 2048)
    with Engine(model_path, n_ctx=n_ctx, n_threads=threads, track_peak_rss=False) as engine:
        fmt = engine_prompt_format(engine, bundle_format=prompt_format)
        make = model_policy_factory(engine, prompt_format=fmt)
        result = evaluate_tasks(make, list(tasks), max_steps=max_steps, on_episode=on_episode)
    episodes = result.pop("episodes", [])
    keep = ("tasks", "success_rate", "steps", "per_template", "ttft_ms", "tpot_ms", "tokens_per_s", "step_ms")
    out = {k: result[k] for k in keep if k in result}
    out["task_success"] = out.pop("success_rate")
    out["failed_tasks"] = [ep.task.instruction for ep in episodes if not ep.success][:10]
    out["source"] = "measured"
    return out
