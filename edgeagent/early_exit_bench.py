"""``edgeagent bench --early-exit``: what each exit depth costs and keeps, and what
self-speculative decoding buys, measured on this machine with the agent on emulated tasks.

Everything here is *measured*:

1. **Static exits.** Every exit depth k (the depth-k GGUF alone, ``edgeagent.export.exit_pack``) and
   the full model run the agent (``ModelPolicy`` through ``Engine``) on the same generated
   tasks: task success, decode tokens/s (wall, after the first token), TTFT (median per
   step), memory (RSS growth while that variant is loaded and running), and held-out
   perplexity on the action tokens of expert steps from other tasks (llama.cpp logits).
   The shallowest exit whose task success is within 5 points of the full model's is named.
   With trained heads (``converters.early_exit.train_exits``, which ``edgeagent bench
   --early-exit --train-exit-steps`` runs first on ``head_training_traces``) each depth is
   measured with the untrained shared exit and with the trained exit, side by side.
2. **Self-speculative decoding** (``edgeagent.speculative``): per draft depth, the full model
   through ``Engine`` and the speculative engine run the same tasks, alternating which goes
   first per task; every step's raw output is compared (``identical_outputs``) and the
   speed-up is the ratio of the summed generation wall time. The full model alone through
   the speculative code path with grammar-forced tokens batched (``n_draft=0``) is measured
   in the same loop, so the two gains are separable, and a profile says where the time goes.
3. Optionally the CALM confidence rule (not identical; task success reported).

Runtime only: no torch. Packing exits uses ``edgeagent.export.exit_pack`` (numpy +
safetensors); training heads is the converter's, so the command line does it and passes the
heads (and what training reported) down.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeagent.agent.episode import expert_examples
from edgeagent.agent.policy import engine_prompt_format
from edgeagent.agent.evaluate import evaluate_tasks, model_policy_factory
from edgeagent.atomic import write_text
from edgeagent.draft_vocab import agent_token_ids, trim_vocab
from edgeagent.engine import AGENT_N_CTX, Engine
from edgeagent.estimate import tokens_per_round
from edgeagent.metrics import PeakRSS, per_second, rss_mb
from edgeagent.quality import heldout_perplexity, text_examples
from edgeagent.llama import LlamaRunner
from edgeagent.speculative import SelfSpeculativeEngine

WITHIN_POINTS = 5.0


# ---------------------------------------------------------------------------------------
# running the agent


def _is_chat(prompt_format, path: Path) -> bool:
    return prompt_format is not None and prompt_format.kind == "chat"


def _run_agent_tasks(engine, tasks, *, max_steps: int, prompt_format=None) -> dict:
    """The agent (``ModelPolicy`` on ``engine``) on each task through ``evaluate_tasks``, as
    ``edgeagent demo`` runs it (a fresh phone per task, its app list narrowing ``open_app``);
    per-step outputs and timings."""
    result = evaluate_tasks(model_policy_factory(engine, prompt_format=prompt_format), tasks, max_steps=max_steps)
    episodes = [_episode_record(ep) for ep in result["episodes"]]
    return {"episodes": episodes, **_summarize(episodes), "task_success": result["success_rate"]}


def _episode_record(result, calls: list[tuple[list[int], list[int], str]] | None = None) -> dict:
    """An episode's per-step outputs and timings; with ``calls`` (``_record_calls``' log of
    the episode) each step also keeps its prompt and output token ids, for
    ``explain_difference``."""
    steps = [{"raw_output": s.raw_output, **_step_metrics(s.metrics)} for s in result.run.steps]
    if calls is not None:
        for step, (prompt, tokens) in zip(steps, _step_tokens(calls, [s["raw_output"] for s in steps])):
            step["prompt_ids"], step["output_ids"] = prompt, tokens
    return {"success": bool(result.success), "steps": steps}


def _record_calls(engine, log: list) -> None:
    """Make ``engine.generate`` append (prompt ids, output ids, text) of every call to ``log``
    (its signature kept: the policy asks it whether it returns log-probabilities)."""
    import functools

    inner = engine.generate

    @functools.wraps(inner)
    def generate(prompt, *args, **kwargs):
        gen = inner(prompt, *args, **kwargs)
        ids = engine.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        log.append((ids, list(gen.tokens), gen.text))
        return gen

    engine.generate = generate


def _step_tokens(calls, raw_outputs: list[str]) -> list[tuple[list[int], list[int]]]:
    """Per step, its prompt and the output it kept, from one episode's generate calls: a step
    makes consecutive calls with one prompt (rescoring decodes other action kinds), and
    keeps the one whose text is the step's output."""
    groups: list[list] = []
    for call in calls:
        if groups and groups[-1][0][0] == call[0]:
            groups[-1].append(call)
        else:
            groups.append([call])
    out = []
    for group, raw in zip(groups, raw_outputs):
        kept = next((c for c in group if c[2].strip() == raw), group[0])
        out.append((kept[0], kept[1]))
    return out


def _step_metrics(m: dict) -> dict:
    return {
        "total_ms": float(m.get("total_ms", 0.0)),
        "ttft_ms": float(m.get("ttft_ms", 0.0)),
        "generated_tokens": int(m.get("generated_tokens", 0)),
        # tokens after the TTFT one (the speculative engine does not count grammar-forced
        # tokens committed before the model's first choice)
        "decode_tokens": int(m.get("decode_tokens", max(0, int(m.get("generated_tokens", 0)) - 1))),
        "prompt_tokens": int(m.get("prompt_tokens", 0)),
        "evaluated_prompt_tokens": int(m.get("evaluated_prompt_tokens",
                                             int(m.get("prompt_tokens", 0)) - int(m.get("reused_prompt_tokens", 0)))),
    }


def _summarize(episodes: list[dict]) -> dict:
    """Steps, tokens and timings of episode records (task success is ``evaluate_tasks``')."""
    steps = [s for e in episodes for s in e["steps"]]
    decode_ms = sum(max(0.0, s["total_ms"] - s["ttft_ms"]) for s in steps)
    after_first = sum(s["decode_tokens"] for s in steps)
    return {
        "steps": len(steps),
        "generated_tokens": sum(s["generated_tokens"] for s in steps),
        "generate_ms": sum(s["total_ms"] for s in steps),
        "tokens_per_s": per_second(after_first, decode_ms),
        "ttft_ms": statistics.median([s["ttft_ms"] for s in steps]) if steps else 0.0,
        "step_ms": statistics.fmean([s["total_ms"] for s in steps]) if steps else 0.0,
        "evaluated_prompt_tokens_per_step": statistics.fmean([s["evaluated_prompt_tokens"] for s in steps]) if steps else 0.0,
    }


class FreshPromptEngine(Engine):
    """The plain baseline: every call evaluates its whole prompt (the KV cache is cleared
    first), as an agent does that rebuilds its prompt each step without prefix reuse."""

    def generate(self, *args, **kwargs):
        self.reset()
        return super().generate(*args, **kwargs)


def _static_row(path: Path, tasks, *, exit_layer: int, head: str, examples, n_threads, n_ctx, max_steps,
                prompt_format=None) -> dict:
    before = rss_mb()
    with PeakRSS() as peak:
        engine = Engine(path, n_ctx=n_ctx, n_threads=n_threads, track_peak_rss=False, seed=0)
        try:
            run = _run_agent_tasks(engine, tasks, max_steps=max_steps, prompt_format=prompt_format)
        finally:
            engine.close()
    ppl = (heldout_perplexity(path, text_examples(path, examples, chat=_is_chat(prompt_format, path)), threads=n_threads)
           if examples else {"perplexity": None})
    return {
        "exit_layer": exit_layer,
        "head": head,
        "gguf": str(path),
        "size_mb": path.stat().st_size / 2**20,
        "task_success": run["task_success"],
        "tokens_per_s": run["tokens_per_s"],
        "ttft_ms": run["ttft_ms"],
        "perplexity": ppl["perplexity"],
        "memory_mb": max(0.0, peak.peak_mb - before),
        "steps": run["steps"],
        "generated_tokens": run["generated_tokens"],
    }


def _speculative_side_by_side(full: Path, drafts: dict[int, Path], tasks, *, n_draft: int, n_threads, n_ctx,
                              max_steps: int, confidence: float | None, progress, prompt_format=None) -> dict:
    """Full model (Engine) vs speculative engines on the same tasks, alternating order (each
    task through ``evaluate_tasks`` per engine, so the runs of one task are side by side)."""
    engines: dict[str, Any] = {"full": Engine(full, n_ctx=n_ctx, n_threads=n_threads, track_peak_rss=False, seed=0)}
    engines["plain"] = FreshPromptEngine(full, n_ctx=n_ctx, n_threads=n_threads, track_peak_rss=False, seed=0)
    engines["full_forced_batching"] = SelfSpeculativeEngine(full, None, n_draft=0, n_ctx=n_ctx, n_threads=n_threads)
    for k, path in drafts.items():
        engines[f"draft{k}"] = SelfSpeculativeEngine(full, path, n_draft=n_draft, n_ctx=n_ctx, n_threads=n_threads)
        engines[f"draft{k}_no_forced"] = SelfSpeculativeEngine(full, path, n_draft=n_draft, n_ctx=n_ctx,
                                                               n_threads=n_threads, forced_batching=False)
        engines[f"draft{k}_no_shared_kv"] = SelfSpeculativeEngine(full, path, n_draft=n_draft, n_ctx=n_ctx,
                                                                  n_threads=n_threads, share_kv=False)
        if confidence is not None:
            engines[f"draft{k}_calm"] = SelfSpeculativeEngine(full, path, n_draft=n_draft, n_ctx=n_ctx,
                                                              n_threads=n_threads, confidence=confidence)
    # the variants are cut from one model: one prompt format (the bundle's, else the full GGUF's)
    fmt = prompt_format if prompt_format is not None else engine_prompt_format(engines["full"])
    calls: dict[str, list] = {name: [] for name in engines}
    for name, e in engines.items():
        _record_calls(e, calls[name])
    policies = {name: model_policy_factory(e, prompt_format=fmt) for name, e in engines.items()}
    episodes: dict[str, list[dict]] = {name: [] for name in engines}
    successes: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    try:
        for i, task in enumerate(tasks):
            order = names if i % 2 == 0 else names[::-1]  # drift (other jobs, heat) hits all alike
            for name in order:
                calls[name].clear()
                result = evaluate_tasks(policies[name], [task], max_steps=max_steps)
                episodes[name].extend(_episode_record(ep, calls[name]) for ep in result["episodes"])
                successes[name].append(result["success_rate"])
            if progress is not None:
                progress(i + 1, len(tasks))
        stats = {name: e.stats.to_dict() for name, e in engines.items() if isinstance(e, SelfSpeculativeEngine)}
        memory = {name: {"full_max_logit_rows": e.full.max_output_rows,
                         "draft_max_logit_rows": e.draft.max_output_rows if e.draft else 0,
                         # tokens fed to a trimmed draft that its vocabulary lacks
                         "draft_tokens_outside_vocab": getattr(e.draft, "oov_fed", None)}
                  for name, e in engines.items() if isinstance(e, SelfSpeculativeEngine)}
    finally:
        for e in engines.values():
            e.close()

    base = episodes["full"]
    base_ms = sum(s["total_ms"] for e in base for s in e["steps"])
    base_decode_ms = sum(max(0.0, s["total_ms"] - s["ttft_ms"]) for e in base for s in e["steps"])
    out = {"full": {**_summarize(base), "task_success": _mean(successes["full"])}, "configs": {}}
    for name in names[1:]:
        eps = episodes[name]
        agree = _agreement(base, eps)
        same = agree["identical_episodes"] == len(base)
        diffs = explain_differences(full, base, eps, n_threads=n_threads, n_ctx=n_ctx)
        ms = sum(s["total_ms"] for e in eps for s in e["steps"])
        decode_ms = sum(max(0.0, s["total_ms"] - s["ttft_ms"]) for e in eps for s in e["steps"])
        out["configs"][name] = {
            **_summarize(eps),
            "task_success": _mean(successes[name]),
            "identical_outputs": same,
            # how far from identical: episodes whose every step matched the full model's, and
            # steps matching up to each episode's first difference (after it the screens differ)
            "agreement": agree,
            # each difference judged by the full model under two batch layouts of its tokens
            "differences": diffs,
            "lossless": lossless(same, diffs),
            # the same against the full model through the speculative code path with no draft
            # (its prefill and forced-token batches are the drafts'): what differs because of
            # the draft itself rather than of batch boundaries
            "agreement_with_forced_batching": (_agreement(episodes["full_forced_batching"], eps)
                                               if name.startswith("draft") else None),
            "speedup": base_ms / ms if ms else 0.0,
            "decode_speedup": base_decode_ms / decode_ms if decode_ms else 0.0,
            "stats": stats.get(name),
            "memory": memory.get(name),
        }
    return out


def _first_difference(a: dict, b: dict) -> int | None:
    """The index of the first step whose output differs between episodes ``a`` and ``b``
    (None: every step both took matches)."""
    return next((k for k, (x, y) in enumerate(zip(a["steps"], b["steps"])) if x["raw_output"] != y["raw_output"]),
                None)


def _agreement(base: list[dict], eps: list[dict]) -> dict:
    """Episodes of ``eps`` identical to ``base``'s, step by step, and steps compared until each
    episode's first different output."""
    identical, matched, compared = 0, 0, 0
    for a, b in zip(base, eps):
        k = _first_difference(a, b)
        common = min(len(a["steps"]), len(b["steps"]))
        matched += common if k is None else k
        compared += common if k is None else k + 1
        identical += k is None and len(a["steps"]) == len(b["steps"])
    return {"identical_episodes": identical, "episodes": len(base), "matching_steps": matched,
            "compared_steps": compared}


# Two evaluations of the same tokens that differ only in batch boundaries: the context in one
# decode (n_batch chunks), and the same context with its last TAIL tokens decoded one at a time.
TAIL = 8


def _two_layouts(runner: LlamaRunner, ctx: list[int], n_outputs: int, tail: int = TAIL):
    """Logit rows for the last ``n_outputs`` positions of ``ctx``, (a) decoded in one batch and
    (b) with the last max(tail, n_outputs) tokens decoded one by one."""
    import numpy as np

    runner.reset()
    runner.feed(ctx, n_outputs)
    one = np.stack([runner.logits(r).copy() for r in range(n_outputs)])
    m = min(len(ctx) - 1, max(tail, n_outputs))
    runner.reset()
    runner.feed(ctx[:len(ctx) - m], 1)
    rows = []
    for end in range(len(ctx) - m + 1, len(ctx) + 1):
        runner.feed(ctx[:end], 1)
        if end > len(ctx) - n_outputs:
            rows.append(runner.logits(0).copy())
    return one, np.stack(rows)


def _log_softmax(rows):
    import numpy as np

    top = rows.max(axis=1, keepdims=True)
    return rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))


def _episode_layout(runner: LlamaRunner, history: Sequence[tuple[Sequence[int], Sequence[int]]],
                    prompt: list[int], prefix: list[int]):
    """The logit row after ``prompt + prefix`` with the KV cache built as an agent episode
    builds it: each earlier step's new prompt tokens in one batch and its output one token at a
    time (``history``: the earlier steps' prompt and output ids), then this prompt's new tokens
    in one batch and ``prefix`` one at a time."""
    runner.reset()
    for step_prompt, out in history:
        seq = list(step_prompt)
        runner.feed(seq, 1)
        for t in out:
            seq.append(int(t))
            runner.feed(seq, 1)
    seq = list(prompt)
    runner.feed(seq, 1)
    for t in prefix:
        seq.append(t)
        runner.feed(seq, 1)
    return runner.logits(0).copy()


def explain_difference(runner: LlamaRunner, prompt: Sequence[int], a: Sequence[int], b: Sequence[int],
                       history: Sequence[tuple[Sequence[int], Sequence[int]]] = ()) -> dict:
    """Why the full model's output ``a`` and another configuration's ``b`` to the same prompt
    differ, judged by the full model itself under two batch layouts of the same tokens
    (``_two_layouts``), and with ``history`` (the episode's earlier steps) a third: the KV
    cache built step by step as the agent built it (``_episode_layout``). Batch layout is all
    the configurations differ in; a KV cache built over several steps can move a logit by
    about one (measured on the SmolLM2 agent at Q8_0), far more than one batch against
    token-by-token decoding of a fresh prompt.

    - ``margin``: logit of a's token minus b's at the first different token, per layout;
    - ``noise``: the largest change of any logit at that position from the first layout;
    - ``logprob_gap``: log p(a) - log p(b) of the whole outputs, per layout (the policy's
      rescoring of grammar-forced steps compares these sums).

    ``verdict``: ``flips`` when the model's own preference changes sign between the layouts
    (the difference reproduced from batch boundaries alone), ``near_tie`` when the margin is
    within twice the measured noise (a flip that layout noise can cause), else ``unexplained``.
    """
    a, b, prompt = list(a), list(b), list(prompt)
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if k == len(a) or k == len(b):  # one stopped where the other went on: no token pair to weigh
        return {"first_difference": k, "verdict": "length"}
    one, seq = _two_layouts(runner, prompt + a[:k], 1)
    rows = [one[0], seq[0]]
    if history:  # a third layout: the KV cache built step by step, as the episode built it
        rows.append(_episode_layout(runner, history, prompt, a[:k]))
    margins = [float(r[a[k]] - r[b[k]]) for r in rows]
    noise = float(max(abs(r - rows[0]).max() for r in rows[1:]))
    gaps = [0.0, 0.0]  # per layout: log p(a) - log p(b)
    for sign, out in ((1.0, a), (-1.0, b)):
        for i, logits in enumerate(_two_layouts(runner, prompt + out[:-1], len(out))):
            gaps[i] += sign * float(_log_softmax(logits)[range(len(out)), out].sum())
    if len({m > 0 for m in margins}) > 1 or (gaps[0] > 0) != (gaps[1] > 0):
        verdict = "flips"
    elif abs(margins[0]) <= 2 * noise:
        verdict = "near_tie"
    else:
        verdict = "unexplained"
    return {"first_difference": k, "tokens": [a[k], b[k]], "margin": margins, "noise": noise,
            "logprob_gap": gaps, "verdict": verdict}


EXPLAINED = ("flips", "near_tie")


def lossless(identical: bool, differences: dict) -> bool:
    """Lossless, as this project defines it for llama.cpp (which has no batch-invariant
    kernels): every step's output is the full model's, or differs only where the full model
    itself is at a tie that batch boundaries decide (every difference ``flips`` or
    ``near_tie`` under ``explain_difference``)."""
    return identical or (differences["differences"] > 0
                         and all(v in EXPLAINED for v in differences["verdicts"]))


def explain_differences(full: Path, base: list[dict], eps: list[dict], *, n_threads=None, n_ctx: int = 2048) -> dict:
    """``explain_difference`` at every episode's first different step of ``eps`` against
    ``base`` (the full model's episodes), on the full GGUF; counts per verdict."""
    found = [(i, k) for i, (a, b) in enumerate(zip(base, eps)) if (k := _first_difference(a, b)) is not None
             and "prompt_ids" in a["steps"][k] and "prompt_ids" in b["steps"][k]]
    if not found:
        return {"differences": 0, "verdicts": {}, "episodes": []}
    runner = LlamaRunner(full, n_ctx=n_ctx, n_threads=n_threads)
    rows = []
    try:
        for i, k in found:
            x, y = base[i]["steps"][k], eps[i]["steps"][k]
            if x["prompt_ids"] != y["prompt_ids"]:
                rows.append({"episode": i, "verdict": "prompts_differ"})
                continue
            history = [(s["prompt_ids"], s["output_ids"]) for s in base[i]["steps"][:k]]
            rows.append({"episode": i, **explain_difference(runner, x["prompt_ids"], x["output_ids"], y["output_ids"],
                                                            history)})
    finally:
        runner.close()
    verdicts: dict[str, int] = {}
    for r in rows:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    return {"differences": len(rows), "verdicts": verdicts, "episodes": rows}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def decode_cost_ms(path: Path, batch_sizes: Sequence[int] = (1, 2, 3, 5, 8), *, n_threads=None, reps: int = 15) -> dict:
    """Median wall ms of one llama_decode of b tokens after a 256-token context, with logits
    for every one of them: what a draft step (b=1) and a verification (b=n+1) cost. Batch
    sizes take turns within each repetition, after a warm-up, so drift hits all alike."""
    runner = LlamaRunner(path, n_ctx=512, n_threads=n_threads)
    try:
        context = [t % runner.n_vocab for t in range(100, 356)]
        runner.feed(context, 1)
        times: dict[int, list[float]] = {b: [] for b in batch_sizes}
        for rep in range(reps + 2):
            for b in batch_sizes:
                t0 = time.perf_counter()
                runner.feed(context + [7] * b, b)
                if rep >= 2:
                    times[b].append((time.perf_counter() - t0) * 1000)
        return {str(b): statistics.median(v) for b, v in times.items()}
    finally:
        runner.close()


def per_token_acceptance(rate: float, n_draft: int) -> float:
    """The per-token acceptance probability alpha behind a measured acceptance ``rate``
    (accepted / drafted) with drafts of ``n_draft`` tokens: a round accepts the drafts up to
    the first miss, so E[accepted] = alpha (1 - alpha^n) / (1 - alpha), and rate is that / n.
    Solved by bisection (rate rises with alpha)."""
    if n_draft <= 1 or rate <= 0.0 or rate >= 1.0:
        return min(max(rate, 0.0), 1.0)
    lo, hi = 0.0, 1.0 - 1e-12
    for _ in range(60):
        mid = (lo + hi) / 2
        if mid * (1 - mid**n_draft) / ((1 - mid) * n_draft) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def predicted_decode_speedup(alpha: float, n_draft: int, full_ms: dict, draft_ms: dict) -> float | None:
    """Expected decode speed-up of drafting ``n_draft`` tokens per round (Leviathan et al. 2023,
    arXiv:2211.17192): a round yields (1 - alpha^(n+1)) / (1 - alpha) tokens and costs n draft
    decodes of one token plus one full-model verification of n+1; plain decoding costs one
    full decode of one token per token. Costs are ``decode_cost_ms`` tables (batch -> ms);
    None when the table lacks batch n+1."""
    verify = full_ms.get(str(n_draft + 1))
    if verify is None or not full_ms.get("1") or not draft_ms.get("1"):
        return None
    return tokens_per_round(alpha, n_draft) * full_ms["1"] / (n_draft * draft_ms["1"] + verify)


def choose_draft(result: dict) -> dict:
    """The draft depth and length to write into a bundle's manifest, from what ``result`` (a
    bundle's bench) measured: per draft depth with identical outputs, alpha from its measured
    acceptance, and the length with the best predicted decode speed-up from the measured
    decode costs. A draft is chosen only when its measured per-step speed-up and its predicted
    decode speed-up are both above 1; otherwise ``draft`` is None and ``why`` says so."""
    spec = result["speculative"]
    full_ms = result["profile"]["full_decode_cost_ms_by_batch"]
    candidates = []
    for name, c in spec["configs"].items():
        if not (name.startswith("draft") and name[len("draft"):].isdigit()):
            continue
        k = int(name[len("draft"):])
        draft_ms = result["profile"].get("draft_decode_cost_ms_by_depth", {}).get(str(k))
        if draft_ms is None:
            continue
        alpha = per_token_acceptance(c["stats"]["acceptance_rate"], spec["n_draft"])
        lengths = {n: predicted_decode_speedup(alpha, n, full_ms, draft_ms) for n in range(1, 16)}
        lengths = {n: v for n, v in lengths.items() if v is not None}
        if not lengths:
            continue
        n_best = max(lengths, key=lengths.get)
        candidates.append({"exit_layer": k, "n_draft": n_best, "alpha": alpha,
                           "predicted_decode_speedup": lengths[n_best], "measured_step_speedup": c["speedup"],
                           "measured_decode_speedup": c["decode_speedup"], "identical_outputs": c["identical_outputs"],
                           "lossless": c["lossless"], "measured_n_draft": spec["n_draft"]})
    ok = [c for c in candidates if c["lossless"] and c["measured_step_speedup"] > 1.0
          and c["predicted_decode_speedup"] > 1.0]
    if not ok:
        why = ("no draft measured" if not candidates else
               "no draft depth both kept the outputs lossless and made a step faster here: "
               + "; ".join(f"exit {c['exit_layer']}: lossless {c['lossless']}, step x"
                           f"{c['measured_step_speedup']:.2f}, predicted decode x{c['predicted_decode_speedup']:.2f}"
                           for c in candidates))
        return {"draft": None, "why": why, "candidates": candidates}
    best = max(ok, key=lambda c: c["measured_step_speedup"])
    return {"draft": best, "why": None, "candidates": candidates}


# ---------------------------------------------------------------------------------------
# the bench


def _variants(model_dir: Path, exits: list[int], n_layers: int, quant: str, heads: Path | None, work_dir: Path,
              threads: int | None) -> tuple[Path, dict[int, Path], dict[int, Path]]:
    """(full GGUF, {k: shared exit GGUF}, {k: trained exit GGUF}) packed into ``work_dir``
    (reused when already there: the directory is keyed by the weights' hash)."""
    from edgeagent.export.exit_pack import pack_exits

    def pack(head_path, sub: str, ks: list[int]) -> dict[int, Path]:
        folder = work_dir / sub
        got = {}
        missing = []
        for k in ks:
            name = f"{model_dir.name}-{quant}.gguf" if k == n_layers else f"{model_dir.name}-exit{k}-{quant}.gguf"
            if (folder / name).is_file():
                got[k] = folder / name
            else:
                missing.append(k)
        if missing:
            for v in pack_exits(model_dir, head_path, missing, [quant], folder, threads=threads):
                got[v["exit_layer"]] = folder / v["path"]
        return got

    shared = pack(None, "shared", sorted(set(exits) | {n_layers}))
    full = shared.pop(n_layers)
    trained = pack(heads, "trained", exits) if heads is not None else {}
    return full, shared, trained


@dataclass(frozen=True)
class BenchModel:
    """The model an early-exit bench measures: its HF directory and depth, the exit depths
    asked for, the apps its tasks leave out and the work directory (keyed by the weights)."""

    model_dir: Path
    n_layers: int
    max_positions: int | None
    exit_layers: list[int]
    exclude_apps: Sequence[str] | None
    work: Path
    builtin: bool
    # A bundle's own variants ({exit depth: GGUF}, the full depth included) instead of packing
    # them from ``model_dir``, and the prompt format its manifest records (None: the GGUF's own).
    prepacked: dict[int, Path] | None = None
    prompt_format: Any = None
    exit_kind: str | None = None
    # Drafts from the bundle's exits at another quant ({depth: GGUF}, ``draft_quant``): the same
    # first layers and head in fewer bytes, verified by the full model at the bench's quant.
    draft_prepacked: dict[int, Path] | None = None
    draft_quant: str | None = None


def bench_model(model: str | Path | None = None, exits: str | Sequence[int | float] | None = None, *,
                exclude_apps: Sequence[str] | None = None, work_dir: str | Path | None = None) -> BenchModel:
    """``model``: an HF model directory (default: the built-in model, its tasks leaving out
    the apps it never saw unless ``exclude_apps`` says otherwise). ``exits``: depths ("2,4"
    or fractions; default every depth below L). The work directory is created."""
    from edgeagent.builtin import cache_dir, weights_digest
    from edgeagent.export.exit_pack import parse_exits

    builtin = model is None
    if builtin:
        from edgeagent.builtin import HELD_OUT_APPS, builtin_model_dir

        model_dir = builtin_model_dir()
        if exclude_apps is None:
            exclude_apps = HELD_OUT_APPS  # the built-in model never saw these apps
    else:
        model_dir = Path(model)
    config = json.loads((model_dir / "config.json").read_text())
    n_layers = int(config["num_hidden_layers"])
    exit_layers = [k for k in (parse_exits(exits, n_layers) if exits else range(1, n_layers)) if k < n_layers]
    if not exit_layers:
        raise ValueError(f"no exit below the model's {n_layers} layers in {exits!r}")
    work = Path(work_dir) if work_dir else cache_dir() / f"early-exit-{weights_digest(model_dir)}"
    work.mkdir(parents=True, exist_ok=True)
    return BenchModel(model_dir, n_layers, config.get("max_position_embeddings"), exit_layers, exclude_apps, work,
                      builtin)


def bench_bundle(bundle: str | Path, quant: str = "q8_0", exits: str | Sequence[int | float] | None = None, *,
                 exclude_apps: Sequence[str] | None = None, draft_quant: str | None = None) -> BenchModel:
    """A bundle ``edgeagent convert`` wrote, as an early-exit bench target: its variants at
    ``quant`` (the full depth and every exit, or the ``exits`` asked for), run with the prompt
    format its manifest records; with ``draft_quant``, the drafts are those exits at that quant.
    Raises ValueError naming the bundle when a depth is missing."""
    from edgeagent.bundle import BundleError, load_bundle
    from edgeagent.export.exit_pack import parse_exits

    try:
        b = load_bundle(bundle)
    except BundleError as e:
        raise ValueError(str(e)) from None
    n_layers = b.n_layers
    at_quant = {v.exit_layer: b.root / v.path for v in b.variants if v.quant.lower() == quant.lower()}
    if n_layers not in at_quant:
        quants = sorted({v.quant for v in b.variants if v.is_full_depth})
        raise ValueError(f"{b.root}: no full-depth {quant} variant (full depth: {', '.join(quants) or 'none'}); "
                         "choose --quant among them")
    wanted = [k for k in parse_exits(exits, n_layers) if k < n_layers] if exits else sorted(k for k in at_quant if k < n_layers)
    missing = [k for k in wanted if k not in at_quant]
    if missing or not wanted:
        have = sorted(k for k in at_quant if k < n_layers)
        raise ValueError(f"{b.root}: no {quant} exit at depth {', '.join(map(str, missing)) or '(none asked)'} "
                         f"(its {quant} exits: {', '.join(map(str, have)) or 'none'}; convert with --exits)")
    drafts = None
    if draft_quant is not None:
        at_draft = {v.exit_layer: b.root / v.path for v in b.variants if v.quant.lower() == draft_quant.lower()}
        lacking = [k for k in wanted if k not in at_draft]
        if lacking:
            have = sorted(k for k in at_draft if k < n_layers)
            raise ValueError(f"{b.root}: no {draft_quant} exit at depth {', '.join(map(str, lacking))} for "
                             f"--draft-quant (its {draft_quant} exits: {', '.join(map(str, have)) or 'none'})")
        drafts = {k: at_draft[k] for k in wanted}
    source = b.manifest.get("source_model") or {}
    heads = source.get("exit_heads") or {}
    work = b.root.parent / f".{b.root.name}.early-exit"
    work.mkdir(parents=True, exist_ok=True)
    return BenchModel(b.root, n_layers, None, wanted, exclude_apps, work, False,
                      prepacked={k: at_quant[k] for k in [*wanted, n_layers]}, prompt_format=b.prompt_format,
                      exit_kind=heads.get("kind") if isinstance(heads, dict) else None,
                      draft_prepacked=drafts, draft_quant=draft_quant if drafts else None)


def head_training_traces(target: BenchModel, seed: int, n_tasks: int = 300) -> Path:
    """Expert traces of ``n_tasks`` tasks to train dedicated exit heads on (task seed
    ``seed + 7919``, apart from the bench's ``seed``), written once into the work directory."""
    traces = target.work / f"train-traces-{seed + 7919}-{n_tasks}.jsonl"
    if not traces.is_file():
        _write_expert_traces(traces, n_tasks, seed + 7919, target.exclude_apps)
    return traces


def run_early_exit_bench(
    target: BenchModel,
    quant: str = "q8_0",
    tasks: int = 20,
    seed: int = 1000,
    *,
    heads: str | Path | None = None,
    training: dict | None = None,
    draft_exits: Sequence[int] | None = None,
    n_draft: int = 4,
    confidence: float | None = 0.9,
    draft_vocab: bool = False,
    vocab_tasks: int = 300,
    heldout_tasks: int = 10,
    max_steps: int = 15,
    threads: int | None = None,
    n_ctx: int = AGENT_N_CTX,  # the context ``run`` gives the agent
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The early-exit bench (see module docstring) of ``target`` (``bench_model``).
    ``heads``: trained exit heads (``exit_heads.json`` dir), ``training`` what training them
    reported (kept in the result). ``draft_exits``: depths tried as speculative drafts
    (default: the exits in the first half). ``draft_vocab``: the drafts cut to the agent's
    vocabulary (``trimmed_drafts``). Returns the JSON-ready result dict."""
    from android_bridge.emulator.tasks import generate_tasks

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    model_dir, n_layers, exit_layers = target.model_dir, target.n_layers, target.exit_layers
    exclude_apps = target.exclude_apps
    n_ctx = min(n_ctx, int(target.max_positions or n_ctx))  # no context past training
    heads_path = Path(heads) if heads is not None else None

    if target.prepacked is not None:  # a bundle: its own variants, exits trained in the fine-tune
        say(f"bundle {model_dir}: exits {exit_layers} at {quant}")
        full = target.prepacked[n_layers]
        shared = {k: target.prepacked[k] for k in exit_layers}
        trained: dict[int, Path] = {}
        exit_head = f"bundle ({target.exit_kind or 'shared'}, fine-tuned)"
    else:
        say(f"packing exits {exit_layers} of {model_dir} at {quant}")
        full, shared, trained = _variants(model_dir, exit_layers, n_layers, quant, heads_path, target.work, threads)
        exit_head = "shared"
    task_list = generate_tasks(tasks, seed, exclude_apps=exclude_apps)

    # Warm-up (not recorded): the first agent run in a process allocates the emulator's and
    # Python's own memory, which would otherwise be charged to whichever variant runs first.
    warm = Engine(shared[exit_layers[0]], n_ctx=n_ctx, n_threads=threads, track_peak_rss=False, seed=0)
    try:
        fmt = target.prompt_format if target.prompt_format is not None else engine_prompt_format(warm)
        _run_agent_tasks(warm, task_list[:1], max_steps=2, prompt_format=fmt)
    finally:
        warm.close()
    examples = expert_examples(heldout_tasks, seed + 1, exclude_apps, prompt_format=fmt) if heldout_tasks else []

    rows = []
    say(f"full model: {tasks} tasks")
    full_row = _static_row(full, task_list, exit_layer=n_layers, head="final", examples=examples,
                           n_threads=threads, n_ctx=n_ctx, max_steps=max_steps, prompt_format=fmt)
    rows.append(full_row)
    comparison = []
    for k in exit_layers:
        say(f"exit {k}: {tasks} tasks")
        untrained = _static_row(shared[k], task_list, exit_layer=k, head=exit_head, examples=examples,
                                n_threads=threads, n_ctx=n_ctx, max_steps=max_steps, prompt_format=fmt)
        row = untrained
        if k in trained:
            row = _static_row(trained[k], task_list, exit_layer=k, head="dedicated (trained)", examples=examples,
                              n_threads=threads, n_ctx=n_ctx, max_steps=max_steps, prompt_format=fmt)
            comparison.append({
                "exit_layer": k,
                "untrained_shared_task_success": untrained["task_success"],
                "trained_task_success": row["task_success"],
                "untrained_shared_perplexity": untrained["perplexity"],
                "trained_perplexity": row["perplexity"],
                "trained_beats_untrained": row["task_success"] > untrained["task_success"],
            })
        row["untrained_shared"] = {key: untrained[key] for key in ("task_success", "perplexity", "tokens_per_s")}
        rows.append(row)
    rows.sort(key=lambda r: r["exit_layer"])

    full_success = full_row["task_success"]
    within = [r["exit_layer"] for r in rows
              if r["exit_layer"] < n_layers and round(100 * (full_success - r["task_success"]), 6) <= WITHIN_POINTS]
    shallowest = min(within) if within else None

    # LayerSkip drafts from the first half of the model; a deeper draft costs nearly a full pass
    draft_layers = [k for k in (draft_exits or [k for k in exit_layers if 2 * k <= n_layers] or exit_layers[:1])
                    if k in shared]
    own_quant = target.draft_prepacked or {}
    draft_paths = {k: own_quant.get(k) or trained.get(k, shared[k]) for k in draft_layers}
    vocab_info = None
    if draft_vocab:
        say(f"drafts with the agent's vocabulary: {vocab_tasks} expert tasks (seed {seed + 2})")
        draft_paths, vocab_info = trimmed_drafts(full, draft_paths, target.work, seed=seed + 2,
                                                 exclude_apps=exclude_apps, n_tasks=vocab_tasks)
    say(f"self-speculative decoding: drafts at {draft_layers}, n_draft={n_draft}, {tasks} tasks side by side")
    spec = _speculative_side_by_side(full, draft_paths, task_list, n_draft=n_draft, n_threads=threads, n_ctx=n_ctx,
                                     max_steps=max_steps, confidence=confidence,
                                     progress=lambda d, t: say(f"  speculative: task {d}/{t}"), prompt_format=fmt)
    exact = {name: c for name, c in spec["configs"].items() if name.startswith("draft") and not name.endswith("_calm")}
    default = {name: c for name, c in exact.items() if name[len("draft"):].isdigit()}  # every speed-up on
    best_name = max(default, key=lambda n: default[n]["speedup"]) if default else None
    best = default.get(best_name, {})
    profile = {
        "best_config": best_name,
        "where_the_time_goes_ms": {key: best.get("stats", {}).get(key) for key in
                                   ("full_ms", "full_prefill_ms", "draft_ms", "draft_prefill_ms", "kv_transplant_ms",
                                    "grammar_ms", "other_ms", "total_ms")},
        "full_engine_generate_ms": spec["full"]["generate_ms"],
        # Speculation only shortens decoding; the prompt prefill (a new screen every step) is
        # untouched, which bounds the end-to-end speed-up (Amdahl).
        "prefill_share_of_generate": (best.get("stats", {}).get("full_prefill_ms") or 0.0)
        / (best.get("stats", {}).get("total_ms") or 1.0),
        "rounds": best.get("stats", {}).get("rounds"),
        "tokens_per_round": best.get("stats", {}).get("tokens_per_round"),
        "full_decode_calls": best.get("stats", {}).get("full_decode_calls"),
        "draft_decode_calls": best.get("stats", {}).get("draft_decode_calls"),
        "forced_tokens": best.get("stats", {}).get("forced_tokens"),
        "full_decode_cost_ms_by_batch": decode_cost_ms(full, tuple(range(1, 17)), n_threads=threads),
    }
    profile["draft_decode_cost_ms_by_depth"] = {str(k): decode_cost_ms(path, n_threads=threads)
                                                for k, path in draft_paths.items()}
    if best_name:
        profile["draft_decode_cost_ms_by_batch"] = profile["draft_decode_cost_ms_by_depth"][best_name[len("draft"):]]

    plain = spec["configs"]["plain"]
    all_on = best or spec["configs"]["full_forced_batching"]
    all_techniques = {
        "config": best_name or "full_forced_batching",
        "plain": "the full model, every step's whole prompt evaluated (no prefix reuse), no speculation, "
                 "no forced-token batching",
        "step_ms": {"plain": plain["step_ms"], "all_techniques": all_on["step_ms"]},
        "evaluated_prompt_tokens_per_step": {
            "plain": plain["evaluated_prompt_tokens_per_step"],
            "all_techniques": all_on["evaluated_prompt_tokens_per_step"],
            "ratio": (plain["evaluated_prompt_tokens_per_step"] / all_on["evaluated_prompt_tokens_per_step"]
                      if all_on["evaluated_prompt_tokens_per_step"] else None),
        },
        "task_success": {"plain": plain["task_success"], "all_techniques": all_on["task_success"]},
        "identical_outputs": all_on["identical_outputs"] and plain["identical_outputs"],
    }
    out = {
        "mode": "early_exit",
        "measured": True,
        "model": str(model_dir),
        "bundle": target.prepacked is not None,
        "builtin": target.builtin,
        "quant": quant,
        "draft_quant": target.draft_quant or quant,
        "n_layers": n_layers,
        "tasks": tasks,
        "seed": seed,
        "exclude_apps": list(exclude_apps or []),
        "threads": threads,
        "exits": rows,
        "shallowest_within_5_points": shallowest,
        "identical_outputs": bool(exact) and all(c["identical_outputs"] for c in exact.values()),
        # identical, or different only at the full model's own batch-layout ties (``lossless``)
        "lossless": bool(exact) and all(c["lossless"] for c in exact.values()),
        "acceptance_rate": best.get("stats", {}).get("acceptance_rate"),
        "speculative_speedup": best.get("speedup"),  # whole generate() calls, prefill included
        "speculative_decode_speedup": best.get("decode_speedup"),  # after the first token
        # per agent step, every technique on (prefix reuse, speculation, forced batching) vs plain
        "step_speedup_all_techniques": (plain["step_ms"] / all_on["step_ms"]) if all_on["step_ms"] else None,
        "all_techniques": all_techniques,
        "speculative": {
            "n_draft": n_draft,
            "best": best_name,
            "full": spec["full"],
            "configs": spec["configs"],
            "grammar_forced_batching_speedup": spec["configs"]["full_forced_batching"]["speedup"],
        },
        "calm": {name: {key: c[key] for key in ("task_success", "identical_outputs", "speedup", "tokens_per_s")}
                 | {"threshold": confidence, "confident_tokens": c["stats"]["confident"]}
                 for name, c in spec["configs"].items() if name.endswith("_calm")},
        "trained_vs_untrained": comparison,
        "draft_vocab": vocab_info,
        "heads": str(heads_path) if heads_path else None,
        "training": training,
        "profile": profile,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out["draft_choice"] = choose_draft(out)
    return out


def trimmed_drafts(full: Path, drafts: dict[int, Path], work: Path, *, seed: int, exclude_apps,
                   n_tasks: int = 300) -> tuple[dict[int, Path], dict]:
    """Each draft cut to the agent's vocabulary (``edgeagent.draft_vocab``): the tokens of the
    expert's actions on ``n_tasks`` generated tasks (``seed``, not the bench's tasks), the
    special tokens and the single-byte ones. Returns ({depth: trimmed GGUF}, what was kept)."""
    texts = [e["completion"] for e in expert_examples(n_tasks, seed, exclude_apps)]
    runner = LlamaRunner(full, n_ctx=64, n_threads=1)
    try:
        ids = agent_token_ids(runner, texts)
    finally:
        runner.close()
    paths, files = {}, {}
    for k, path in drafts.items():
        paths[k] = Path(work) / f"{path.stem}-agent-vocab-{len(ids)}.gguf"
        files[str(k)] = trim_vocab(path, ids, paths[k])
    return paths, {"tokens": len(ids), "full_vocab": next(iter(files.values()))["full_vocab"] if files else None,
                   "from": f"the expert's actions on {n_tasks} tasks, seed {seed}; special and single-byte tokens",
                   "drafts": files}


def save_draft_choice(bundle: str | Path, quant: str, result: dict) -> dict | None:
    """Write the bench's ``draft_choice`` into the bundle's manifest (``speculative``), so
    ``run`` and ``demo`` decode with it; with no draft chosen, remove any earlier entry. Returns
    the entry written (None when removed). The manifest is rewritten atomically; the variant
    files are untouched."""
    from edgeagent.bundle import load_bundle
    from edgeagent.export.bundle import write_manifest

    loaded = load_bundle(bundle)
    manifest = dict(loaded.manifest)
    chosen = result["draft_choice"]["draft"]
    entry = None
    if chosen is not None:
        draft_quant = (result.get("draft_quant") or quant).lower()
        by_depth = {v.exit_layer: v for v in loaded.variants if v.quant.lower() == draft_quant}
        draft = by_depth[chosen["exit_layer"]]
        entry = {"quant": quant, "draft_variant": draft.id, "n_draft": chosen["n_draft"],
                 "exit_layer": chosen["exit_layer"], "alpha": chosen["alpha"],
                 "predicted_decode_speedup": chosen["predicted_decode_speedup"],
                 "measured_step_speedup": chosen["measured_step_speedup"],
                 "measured": {"by": "edgeagent bench early-exit --save", "unix": int(time.time()),
                              "threads": result["threads"], "tasks": result["tasks"], "seed": result["seed"],
                              "n_draft_run": chosen["measured_n_draft"]}}
        manifest["speculative"] = entry
    else:
        manifest.pop("speculative", None)
    write_manifest(loaded.root, manifest)
    return entry


def _write_expert_traces(path: Path, n_tasks: int, seed: int, exclude_apps) -> None:
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import run_episode, trace_records

    phone = EmulatedPhone()
    lines = []
    for task in generate_tasks(n_tasks, seed, exclude_apps=exclude_apps):
        lines += [json.dumps(r, ensure_ascii=False) for r in trace_records(run_episode(phone, task, expert_action))]
    write_text(path, "\n".join(lines) + "\n")


def early_exit_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """One row per depth for the terminal table (measured)."""
    columns = ["exit layer", "head", "task success", "tokens/s", "TTFT ms", "perplexity", "memory MB", "untrained shared"]
    rows = []
    for r in result["exits"]:
        un = r.get("untrained_shared")
        rows.append([
            f"{r['exit_layer']}/{result['n_layers']}", r["head"], f"{100 * r['task_success']:.0f} %",
            f"{r['tokens_per_s']:.1f}", f"{r['ttft_ms']:.2f}",
            "-" if r["perplexity"] is None else f"{r['perplexity']:.3f}", f"{r['memory_mb']:.1f}",
            f"{100 * un['task_success']:.0f} %" if un and r["head"] != "shared" else "",
        ])
    return columns, rows


def early_exit_summary(result: dict) -> list[str]:
    """The lines under the table: speculation, all techniques, the draft chosen (or why none)."""
    def x(v) -> str:
        return "-" if v is None else f"x{v:.2f}"

    at = result["all_techniques"]
    tokens = at["evaluated_prompt_tokens_per_step"]
    lines = [
        f"self-speculative ({result['speculative']['best'] or 'no draft'}"
        + (f", drafts at {result['draft_quant']} under {result['quant']}"
           if result.get("draft_quant", result["quant"]) != result["quant"] else "") + "): identical outputs "
        f"{result['identical_outputs']}, lossless {result.get('lossless')}, acceptance {result['acceptance_rate'] or 0:.2f}, decode "
        f"{x(result['speculative_decode_speedup'])}, per call {x(result['speculative_speedup'])}",
        f"all techniques vs plain, per agent step: {x(result['step_speedup_all_techniques'])}; evaluated prompt "
        f"tokens per step {tokens['plain']:.0f} -> {tokens['all_techniques']:.0f}; task success "
        f"{100 * at['task_success']['plain']:.0f} % -> {100 * at['task_success']['all_techniques']:.0f} %",
    ]
    for name, c in result["speculative"]["configs"].items():
        d, agree = c.get("differences") or {}, c.get("agreement") or {}
        if d.get("differences"):
            lines.append(f"{name}: {agree.get('identical_episodes')}/{agree.get('episodes')} episodes identical to the "
                         f"full model; the full model's verdict on each other episode's first difference: "
                         + ", ".join(f"{n} {v}" for v, n in sorted(d["verdicts"].items())))
    choice = result.get("draft_choice") or {}
    if choice.get("draft"):
        d = choice["draft"]
        lines.append(f"draft chosen: exit {d['exit_layer']}, {d['n_draft']} tokens (alpha {d['alpha']:.2f}, predicted "
                     f"decode {x(d['predicted_decode_speedup'])})"
                     + ("; written into the manifest" if result.get("saved") else ""))
    elif choice:
        lines.append(f"no draft chosen: {choice['why']}" + ("; the manifest names none" if "saved" in result else ""))
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m edgeagent.early_exit_bench`` (what ``edgeagent bench --early-exit`` runs,
    with its other settings; training exit heads is ``edgeagent bench --early-exit
    --train-exit-steps N``, the converter's)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="HF model directory (default: the built-in model)")
    p.add_argument("--exits", default=None, help="exit depths, e.g. 1,2,3 or 0.33,0.5 (default: every depth below L)")
    p.add_argument("--quant", default="q8_0")
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--heads", type=Path, default=None, help="trained exit heads (exit_heads.json directory)")
    p.add_argument("--draft-exits", default=None, help="depths tried as drafts (default: exits in the first half)")
    p.add_argument("--n-draft", type=int, default=4)
    p.add_argument("--confidence", type=float, default=0.9, help="CALM threshold (0 to skip)")
    p.add_argument("--heldout-tasks", type=int, default=10)
    p.add_argument("--exclude-app", action="append", default=None,
                   help="apps held out of the tasks (default for the built-in model: its held-out apps)")
    p.add_argument("--max-steps", type=int, default=15)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = run_early_exit_bench(
        bench_model(a.model, a.exits, exclude_apps=a.exclude_app, work_dir=a.work_dir), a.quant, a.tasks, a.seed,
        heads=a.heads, draft_exits=[int(k) for k in a.draft_exits.split(",")] if a.draft_exits else None,
        n_draft=a.n_draft, confidence=a.confidence or None, heldout_tasks=a.heldout_tasks, max_steps=a.max_steps,
        threads=a.threads, progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    if a.json:
        print(json.dumps(result, indent=2))
        return
    columns, rows = early_exit_rows(result)
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(row))
    print(f"shallowest exit within {WITHIN_POINTS:.0f} points of the full model: {result['shallowest_within_5_points']}")
    print(f"self-speculative ({result['speculative']['best']}): identical outputs {result['identical_outputs']}, "
          f"acceptance {result['acceptance_rate']:.2f}, speed-up {result['speculative_speedup']:.2f}x "
          f"(decode {result['speculative_decode_speedup']:.2f}x), grammar-forced batching alone "
          f"{result['speculative']['grammar_forced_batching_speedup']:.2f}x")


if __name__ == "__main__":
    main()
