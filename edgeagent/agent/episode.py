"""Running a policy on an emulated task: the loop ``edgeagent demo``, ``edgeagent traces`` and
the tests use (the agent loop on a device, with the task's setup and check on the emulated phone).

The loop touches the phone only through the ``Device`` interface (screen, act), so it runs the
same on ``EmulatedPhone`` and on ``AdbDevice`` talking to the loopback adb server. Only the
task's setup and check need the ``EmulatedPhone`` behind the device; pass it as ``phone=``
when the device is not the phone itself.

A policy is any ``(task: TaskSpec, screen: Screen, history: list[Action]) -> Action``: the
expert today, the on-device model later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from android_bridge.actions import Action
from android_bridge.device import Device, Screen
from android_bridge.emulator.expert import expert_action
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.emulator.tasks import TaskSpec, generate_tasks
from edgeagent.agent.loop import Decision, RunResult, StepRecord, TraceSink, run_agent
from edgeagent.agent.loop import Policy as AgentPolicy
from edgeagent.agent.prompt import training_example
from edgeagent.agent.safety import ConfirmationGate

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
    run: RunResult | None = None  # the agent loop's own record: status, timings, gate decisions

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
            "loop_status": self.run.status if self.run else None,
            "wall_s": round(self.wall_s, 4),
        }


class _CallablePolicy:
    """Adapts a ``(task, screen, history) -> Action`` function to the agent loop's Policy."""

    def __init__(self, task: TaskSpec, policy: Policy):
        self.task, self.policy, self.history = task, policy, []

    def decide(self, instruction: str, screen: Screen, previous: Action | None) -> Decision:
        if previous is not None:
            self.history.append(previous)
        return Decision(self.policy(self.task, screen, list(self.history)))


def run_episode(device: Device, task: TaskSpec, policy: Policy | AgentPolicy, max_steps: int = DEFAULT_MAX_STEPS, *,
                phone: EmulatedPhone | None = None,
                on_step: Callable[[Step, Screen], None] | None = None,
                gate: ConfirmationGate | None = None,
                trace: TraceSink | None = None) -> EpisodeResult:
    """Set the task up on ``phone`` (default: ``device`` itself), run the agent loop
    (``edgeagent.agent.loop.run_agent``) with ``policy`` on ``device``, then check the phone.

    ``policy`` is a ``(task, screen, history) -> Action`` function (the expert) or an agent
    Policy (the model). The gate is ``gate`` (``edgeagent demo --sensitive`` passes its own),
    else one that allows the task's sensitive steps: a generated task is the user's own
    request, and the expert's traces need their payments.
    """
    if phone is None:
        if not isinstance(device, EmulatedPhone):
            raise TypeError("run_episode needs the EmulatedPhone behind the device (phone=...) to set up and check the task")
        phone = device
    task.setup(phone)
    agent_policy = policy if hasattr(policy, "decide") else _CallablePolicy(task, policy)

    class _Sink:
        def record(self, rec: StepRecord, screen: Screen, action: Action | None) -> None:
            if trace is not None:
                trace.record(rec, screen, action)
            if on_step is not None and rec.action is not None:
                on_step(_step(rec, previous[0]), screen)
            previous[0] = rec.action

        def close(self, result: RunResult) -> None:
            if trace is not None:
                trace.close(result)

    previous: list[dict | None] = [None]
    run = run_agent(device, task.instruction, agent_policy, max_steps=max_steps,
                    gate=gate or ConfirmationGate(allow_sensitive=True),
                    trace=_Sink())
    steps, prev = [], None
    for rec in run.steps:
        if rec.action is not None:
            steps.append(_step(rec, prev))
            prev = rec.action
    final = Action.from_dict(run.steps[-1].action) if run.finished else None
    return EpisodeResult(task=task, success=task.succeeded(phone, final), steps=len(run.steps), final=final,
                         trace=steps, wall_s=run.seconds, run=run)


def _step(rec: StepRecord, previous: dict | None) -> Step:
    return Step(step=rec.step, observation=rec.observation, previous=previous, action=rec.action or {}, error=rec.error)


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


def expert_examples(n_tasks: int, seed: int, exclude_apps: Sequence[str] | None = None, *,
                    prompt_format=None) -> list[dict[str, str]]:
    """Prompt/completion dicts of the expert's steps on ``n_tasks`` generated tasks, in the
    text every trainer uses (``training_example``): held-out data for perplexity. With a
    ``prompt_format`` in the episode layout, each step's prompt is the conversation so far in
    that format (``PromptFormat.episode_prompt``), as the converter trains and the agent runs."""
    phone = EmulatedPhone()
    episode = prompt_format is not None and prompt_format.is_episode
    examples = []
    for task in generate_tasks(n_tasks, seed, exclude_apps=exclude_apps):
        screens: list[str] = []
        actions: list[str] = []
        for step in run_episode(phone, task, expert_action).trace:
            prompt, completion = training_example(task.instruction, step.observation, step.previous, step.action)
            if episode:
                screens.append(step.observation)
                prompt = prompt_format.episode_prompt(task.instruction, screens, actions)
                actions.append(completion)
            examples.append({"prompt": prompt, "completion": completion})
    return examples
