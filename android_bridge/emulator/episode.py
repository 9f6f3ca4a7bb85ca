"""Running a policy on a task: the loop ``edgeagent demo``, ``edgeagent traces`` and the tests use.

The loop touches the phone only through the ``Device`` interface (screen, act), so it runs the
same on ``EmulatedPhone`` and on ``AdbDevice`` talking to the loopback adb server. Only the
task's setup and check need the ``EmulatedPhone`` behind the device; pass it as ``phone=``
when the device is not the phone itself.

A policy is any ``(task: TaskSpec, screen: Screen, history: list[Action]) -> Action``: the
expert today, the on-device model later.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from android_bridge.device import Device, DeviceError, Screen
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import TaskSpec
from edgeagent.agent.actions import Action
from edgeagent.agent.prompt import observation_text

Policy = Callable[[TaskSpec, Screen, Sequence[Action]], Action]
DEFAULT_MAX_STEPS = 30


@dataclass
class Step:
    """One step as the model sees it: the observation, the previous action, the action taken."""

    step: int
    observation: str
    previous: dict[str, Any] | None
    action: dict[str, Any]
    error: str | None = None  # why the device refused the action, if it did


@dataclass
class EpisodeResult:
    task: TaskSpec
    success: bool
    steps: int  # actions decided, the final ``done`` included
    final: Action | None  # the ``done`` action, or None when the step budget ran out
    trace: list[Step] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.trace if s.error]

    def summary(self) -> dict[str, Any]:
        return {
            **self.task.to_dict(),
            "success": self.success,
            "steps": self.steps,
            "status": self.final.status if self.final else None,
            "answer": self.final.answer if self.final else None,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 4),
        }


def run_episode(device: Device, task: TaskSpec, policy: Policy, max_steps: int = DEFAULT_MAX_STEPS, *,
                phone: EmulatedPhone | None = None,
                on_step: Callable[[Step, Screen], None] | None = None) -> EpisodeResult:
    """Set the task up on ``phone`` (default: ``device`` itself), let ``policy`` act on
    ``device`` until it says ``done`` or ``max_steps`` run out, then check the phone."""
    if phone is None:
        if not isinstance(device, EmulatedPhone):
            raise TypeError("run_episode needs the EmulatedPhone behind the device (phone=...) to set up and check the task")
        phone = device
    start = time.perf_counter()
    task.setup(phone)
    history: list[Action] = []
    trace: list[Step] = []
    final: Action | None = None
    for i in range(max_steps):
        screen = device.screen()
        action = policy(task, screen, history)
        step = Step(step=i, observation=observation_text(screen.elements, screen.app),
                    previous=history[-1].to_dict() if history else None, action=action.to_dict())
        trace.append(step)
        if action.is_terminal:
            final = action
            if on_step:
                on_step(step, screen)
            break
        try:
            device.act(action)
        except DeviceError as exc:  # a refused action is the policy's mistake, not a crash
            step.error = str(exc)
        if on_step:
            on_step(step, screen)
        history.append(action)
    success = task.succeeded(phone, final)
    return EpisodeResult(task=task, success=success, steps=len(trace), final=final, trace=trace,
                         wall_s=time.perf_counter() - start)


def run_tasks(tasks: Iterable[TaskSpec], policy: Policy, *, device: Device | None = None,
              phone: EmulatedPhone | None = None, max_steps: int = DEFAULT_MAX_STEPS,
              on_episode: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Run every task on one phone (a new EmulatedPhone unless given)."""
    phone = phone or (device if isinstance(device, EmulatedPhone) else EmulatedPhone())
    device = device or phone
    results = []
    for task in tasks:
        result = run_episode(device, task, policy, max_steps, phone=phone)
        results.append(result)
        if on_episode:
            on_episode(result)
    return results


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    n = len(results)
    return {
        "tasks": n,
        "success_rate": sum(r.success for r in results) / n if n else 0.0,
        "steps": sum(r.steps for r in results) / n if n else 0.0,
        "wall_s": round(sum(r.wall_s for r in results), 3),
    }


def trace_records(result: EpisodeResult) -> Iterator[dict[str, Any]]:
    """The JSONL lines of one episode for training: one per step."""
    spec = result.task.to_dict()
    for step in result.trace:
        yield {
            "task": spec,
            "step": step.step,
            "previous": step.previous,
            "observation": step.observation,
            "action": step.action,
            "success": result.success,
        }
