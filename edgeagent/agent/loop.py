"""The agent loop: observe, ask the policy, check, act; until done, a step limit or a loop.

A policy is anything with ``decide(instruction, screen, previous) -> Decision``: the
built-in model through llama.cpp (``ModelPolicy``), the emulator's expert, or a user's own.
A policy that keeps state across the steps of a task (a chat model's conversation) also has
``begin(instruction)``, which ``run_agent`` calls before the first step.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from android_bridge.actions import Action, ActionError
from android_bridge.device import Device, DeviceError, Screen
from edgeagent.agent.prompt import observation_text
from edgeagent.agent.safety import ConfirmationGate

LOOP_REPEATS = 3  # the same action on the same screen this many times is a loop
# The same action this many times in a row is a loop even when the screen changes each time
# ("Add" tapped 19 times, the cart count going up). Set above the longest honest run: ten taps
# on "Brightness up" take the screen brightness from 0 % to 100 %.
RUN_REPEATS = 11


@dataclass
class Decision:
    action: Action | None
    raw_output: str = ""
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # ttft_ms, tpot_ms, prompt_tokens, ...


class Policy(Protocol):
    def decide(self, instruction: str, screen: Screen, previous: Action | None) -> Decision: ...


@dataclass
class StepRecord:
    step: int
    app: str | None
    observation: str
    raw_output: str
    action: dict | None
    error: str | None
    sensitive: str | None
    allowed: bool
    metrics: dict[str, Any]
    seconds: float


@dataclass
class RunResult:
    instruction: str
    status: str  # complete | infeasible | step_limit | loop | denied | error
    answer: str | None
    steps: list[StepRecord]
    seconds: float

    @property
    def finished(self) -> bool:
        return self.status in ("complete", "infeasible")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_steps"] = len(self.steps)
        return d


class TraceSink(Protocol):
    def record(self, step: StepRecord, screen: Screen, action: Action | None) -> None: ...
    def close(self, result: RunResult) -> None: ...


def _screen_key(obs: str) -> str:
    return hashlib.sha1(obs.encode()).hexdigest()


def run_agent(
    device: Device,
    instruction: str,
    policy: Policy,
    *,
    max_steps: int = 20,
    gate: ConfirmationGate | None = None,
    trace: TraceSink | None = None,
) -> RunResult:
    gate = (gate or ConfirmationGate()).for_task(instruction)  # consent is scoped to this task
    t0 = time.perf_counter()
    steps: list[StepRecord] = []
    seen: Counter[tuple[str, str]] = Counter()
    run_of_same = 0
    previous: Action | None = None
    status, answer = "step_limit", None

    begin = getattr(policy, "begin", None)
    if callable(begin):
        begin(instruction)
    for i in range(max_steps):
        t_step = time.perf_counter()
        try:
            screen = device.screen()
        except DeviceError as exc:
            status = "error"
            steps.append(StepRecord(i, None, "", "", None, f"observe: {exc}", None, False, {}, 0.0))
            break
        obs = observation_text(screen.elements, screen.app)
        decision = policy.decide(instruction, screen, previous)
        action, error, sensitive, allowed = decision.action, decision.error, None, False
        if action is not None:
            allowed, sensitive = gate.check(action, screen)
            if allowed:
                try:
                    device.act(action)
                except (DeviceError, ActionError) as exc:
                    error = f"act: {exc}"
        rec = StepRecord(
            step=i, app=screen.app, observation=obs, raw_output=decision.raw_output,
            action=action.to_dict() if action else None, error=error, sensitive=sensitive,
            allowed=allowed, metrics=decision.metrics, seconds=time.perf_counter() - t_step,
        )
        steps.append(rec)
        if trace is not None:
            trace.record(rec, screen, action)

        if action is None:
            continue  # the policy could not produce an action; the step counts, try again
        if not allowed:
            status = "denied"
            break
        if action.is_terminal:
            status, answer = action.status or "complete", action.answer
            break
        key = (_screen_key(obs), action.to_json())
        seen[key] += 1
        run_of_same = run_of_same + 1 if previous is not None and previous.to_json() == action.to_json() else 1
        if seen[key] >= LOOP_REPEATS or run_of_same >= RUN_REPEATS:
            status = "loop"
            break
        previous = action

    result = RunResult(instruction, status, answer, steps, time.perf_counter() - t0)
    if trace is not None:
        trace.close(result)
    return result
