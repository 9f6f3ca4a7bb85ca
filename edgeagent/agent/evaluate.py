"""Task success and per-step cost of a model policy on emulated tasks.

One function used by ``edgeagent demo``, ``run --task-json``, the bench modes and the
converter's bundle evaluation, so every success rate the project prints is computed the
same way: fresh ``EmulatedPhone``, task set up from its seed, the agent loop, the task's own
goal check.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeagent.agent.loop import Policy
from edgeagent.metrics import percentile


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _p90(values: Sequence[float]) -> float | None:
    return round(percentile(values, 0.9), 3) if values else None


@dataclass
class StepCost:
    """What one model call cost, from the engine's metrics."""

    prompt_tokens: int
    reused_prompt_tokens: int
    generated_tokens: int
    ttft_ms: float
    tpot_ms: float
    tokens_per_s: float
    total_ms: float
    peak_rss_mb: float
    alternatives: int = 0  # extra decodes of other action kinds (ModelPolicy's rescoring)


def step_costs(runs: Sequence[Any]) -> list[StepCost]:
    """Per model call costs of agent runs (``edgeagent.agent.loop.RunResult``)."""
    costs = []
    for run in runs:
        for rec in run.steps:
            m = rec.metrics
            if not m or "ttft_ms" not in m:
                continue
            costs.append(StepCost(
                prompt_tokens=int(m.get("prompt_tokens", 0)),
                reused_prompt_tokens=int(m.get("reused_prompt_tokens", 0)),
                generated_tokens=int(m.get("generated_tokens", 0)),
                ttft_ms=float(m["ttft_ms"]), tpot_ms=float(m.get("tpot_ms", 0.0)),
                tokens_per_s=float(m.get("tokens_per_s", 0.0)), total_ms=float(m.get("total_ms", 0.0)),
                peak_rss_mb=float(m.get("peak_rss_mb", m.get("rss_mb", 0.0))),
                alternatives=int(m.get("alternatives", 0)),
            ))
    return costs


def summarize_costs(costs: Sequence[StepCost]) -> dict[str, Any]:
    """Median (and p90) per-step figures; all measured on this machine."""
    if not costs:
        return {}
    return {
        "ttft_ms": _median([c.ttft_ms for c in costs]),
        "ttft_ms_p90": _p90([c.ttft_ms for c in costs]),
        "tpot_ms": _median([c.tpot_ms for c in costs if c.generated_tokens > 1]),
        "tokens_per_s": _median([c.tokens_per_s for c in costs if c.tokens_per_s > 0]),
        "step_ms": _median([c.total_ms for c in costs]),
        "step_ms_p90": _p90([c.total_ms for c in costs]),
        "prompt_tokens_per_step": round(statistics.mean(c.prompt_tokens for c in costs), 1),
        "evaluated_prompt_tokens_per_step": round(
            statistics.mean(c.prompt_tokens - c.reused_prompt_tokens for c in costs), 1),
        "generated_tokens_per_step": round(statistics.mean(c.generated_tokens for c in costs), 1),
        "rss_peak_mb": round(max(c.peak_rss_mb for c in costs), 1),
        "model_calls": len(costs),
        "rescored_steps": sum(1 for c in costs if c.alternatives),  # steps that decoded other kinds too
        "source": "measured",
    }


def evaluate_tasks(
    policy_factory: Callable[[Any], Policy],
    tasks: Sequence[Any],
    *,
    max_steps: int = 20,
    on_episode: Callable[[Any], None] | None = None,
    gate=None,
) -> dict[str, Any]:
    """Run ``tasks`` on a fresh emulated phone each; ``policy_factory(phone)`` makes the policy,
    ``gate`` (a ConfirmationGate) judges its sensitive steps (default: ``run_episode``'s).

    Returns success rate, mean steps, the per-step cost summary and the episodes.
    """
    from android_bridge.emulator.phone import EmulatedPhone
    from edgeagent.agent.episode import run_episode

    episodes = []
    for task in tasks:
        phone = EmulatedPhone()
        ep = run_episode(phone, task, policy_factory(phone), max_steps, gate=gate)
        episodes.append(ep)
        if on_episode:
            on_episode(ep)
    n = len(episodes)
    unrequested = [u for ep in episodes for u in unrequested_sensitive(ep)]
    by_template: dict[str, list[bool]] = {}
    for ep in episodes:
        by_template.setdefault(ep.task.template, []).append(ep.success)
    return {
        "tasks": n,
        "success_rate": sum(e.success for e in episodes) / n if n else 0.0,
        "steps": round(sum(e.steps for e in episodes) / n, 2) if n else 0.0,
        **summarize_costs(step_costs([e.run for e in episodes if e.run is not None])),
        "per_template": {t: round(sum(v) / len(v), 3) for t, v in sorted(by_template.items())},
        # Sensitive steps (pay, send, delete, call, install) the task did not ask for, and how
        # many of them the gate let through (the demo's gate allows what a generated task asks).
        "unrequested_sensitive": len(unrequested),
        "unrequested_sensitive_allowed": sum(1 for u in unrequested if u["allowed"]),
        "unrequested_sensitive_steps": unrequested,
        "episodes": episodes,
    }


def requested_kinds(task) -> set[str]:
    """The kinds of sensitive step a task asks for: those its expert solution takes."""
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from edgeagent.agent.episode import run_episode

    expert = run_episode(EmulatedPhone(), task, expert_action, 40)
    return {s.sensitive for s in (expert.run.steps if expert.run else []) if s.sensitive}


def unrequested_sensitive(ep) -> list[dict[str, Any]]:
    """The episode's sensitive steps of a kind its task did not ask for."""
    if ep.run is None:
        return []
    steps = [s for s in ep.run.steps if s.sensitive]
    if not steps:
        return []
    asked = requested_kinds(ep.task)
    return [{"template": ep.task.template, "instruction": ep.task.instruction, "step": s.step, "kind": s.sensitive,
             "action": s.action, "allowed": s.allowed} for s in steps if s.sensitive not in asked]


def model_policy_factory(engine, *, copy_text: bool = True, reuse_prefix: bool = True,
                         prompt_format=None, rescore: bool = True) -> Callable[[Any], Policy]:
    """Policies for the emulated phone: its app names narrow ``open_app`` in the grammar;
    ``prompt_format`` (default: what the engine's GGUF implies) lays the prompt out."""
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format

    fmt = prompt_format if prompt_format is not None else engine_prompt_format(engine)

    def make(phone) -> Policy:
        return ModelPolicy(engine, apps=phone.app_names(), copy_text=copy_text, reuse_prefix=reuse_prefix,
                           prompt_format=fmt, rescore=rescore)

    return make
