"""What the agent commands (``run``, ``demo``) share: option help, the model choice, llama.cpp's
log, the engine, the device and the sensitive-step gate, each failing with one line (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgeagent.output import err_console, fail

if TYPE_CHECKING:
    from edgeagent.variants import ModelChoice


AGENT_HELP = ("Which shipped agent runs when no --model is given: smollm2 (SmolLM2-135M-Instruct fine-tuned "
              "for the phone; needs the agent extra) or builtin (the 5M model trained from scratch), or an agent "
              "directory. Default: the best by measurement (edgeagent.agents.DEFAULT_AGENT, now smollm2; the built-in model where its package is not installed).")


VERBOSE_HELP = "Print llama.cpp's own log (loading, warnings) to stderr; without it llama.cpp prints nothing."
SENSITIVE_HELP = ("What happens to a sensitive step (paying, sending, deleting, calling, installing): ask (put to you "
                  "at the terminal; where no one can answer, stdin not a terminal or --json, it is denied), deny, "
                  "allow (the kinds of deed the task's words ask for, e.g. a payment for 'buy milk'; any other "
                  "is denied) or allow-all. Default: ask.")


def choose_model(**choice) -> ModelChoice:
    """``edgeagent.variants.resolve_variant`` for a command: a choice that names nothing that
    can run is one line and exit code 2; a fallback from the default agent is a note on stderr."""
    from edgeagent.variants import VariantError, resolve_variant

    try:
        return resolve_variant(note=err_console.print, **choice)
    except VariantError as exc:
        fail(str(exc))
    raise AssertionError  # unreachable: fail() exits


def quiet_llama(verbose: bool) -> None:
    """llama.cpp's log off (its errors kept for the one-line message), or on with ``--verbose``;
    set before anything reaches llama.cpp (building the shipped agent quantizes with it)."""
    from edgeagent.llama import LLAMA_LOG

    LLAMA_LOG.install(verbose)


ATTENTION_HELP = ("llama.cpp's attention set-up: on (flash attention, the default, llama.cpp's own), off, or exact "
                  "(flash attention with Q8_0 keys and F16 values: the output depends on the tokens alone, so a run "
                  "gives the same bits whatever the KV cache held before; a little slower).")


def attention_or_fail(attention: str) -> str:
    from edgeagent.llama import ATTENTION_SETUPS

    if attention not in ATTENTION_SETUPS:
        fail(f"--attention {attention!r}: expected one of {', '.join(ATTENTION_SETUPS)}")
    return attention


def open_engine(model_path: Path, threads: Optional[int], verbose: bool = False, *, draft: Optional[Path] = None,
                n_draft: int = 0, attention: str = "on"):
    """llama.cpp on ``model_path``; a file it cannot load (corrupt, truncated, not a GGUF) is
    one line naming it and llama.cpp's reason, exit code 2, not a traceback. With ``draft`` (an
    exit GGUF of the same model), self-speculative decoding: the same outputs, the draft
    proposing ``n_draft`` tokens at a time. ``attention``: on, off or exact (``ATTENTION_HELP``)."""
    from edgeagent.engine import AGENT_N_CTX, Engine, EngineError
    from edgeagent.llama import ATTENTION_SETUPS
    from edgeagent.speculative import SelfSpeculativeEngine
    from edgeagent.quality import trained_context

    try:
        # never past what the model was trained for
        n_ctx = min(AGENT_N_CTX, trained_context(model_path) or AGENT_N_CTX)
    except ValueError:  # a corrupt header: llama.cpp names the fault below
        n_ctx = AGENT_N_CTX
    try:
        if draft is not None and n_draft > 0:
            return SelfSpeculativeEngine(model_path, draft, n_draft=n_draft, n_ctx=n_ctx, n_threads=threads,
                                         verbose=verbose, **ATTENTION_SETUPS[attention])
        return Engine(model_path, n_ctx=n_ctx, n_threads=threads, verbose=verbose, **ATTENTION_SETUPS[attention])
    except EngineError as exc:
        fail(str(exc))


def open_device(spec: str):
    """``emulator`` or ``adb[:SERIAL]`` -> (device, emulated phone or None)."""
    if spec == "emulator":
        from android_bridge.emulator.phone import EmulatedPhone

        phone = EmulatedPhone()
        return phone, phone
    if spec == "adb" or spec.startswith("adb:"):
        from android_bridge.adb import AdbDevice
        from android_bridge.device import DeviceError

        serial = spec.partition(":")[2] or None
        try:
            return AdbDevice(serial), None
        except DeviceError as exc:
            fail(str(exc))
    fail(f"--device {spec!r}: expected 'emulator', 'adb' or 'adb:SERIAL'")
    raise AssertionError


def _interactive_confirm(action, reason: str) -> bool:
    return typer.confirm(f"The agent wants to do a sensitive action ({reason}): {action.to_json()}. Allow?", default=False)


def sensitive_gate(policy: str, json_out: bool):
    """The confirmation gate of ``--sensitive POLICY`` (bad value: one line, exit 2). ``ask``
    asks at the terminal; with stdin not a terminal, or ``--json`` output for a machine, no
    one can answer and the gate denies."""
    from edgeagent.agent.safety import SENSITIVE_POLICIES, ConfirmationGate

    if policy not in SENSITIVE_POLICIES:
        fail(f"--sensitive {policy!r}: expected one of {', '.join(SENSITIVE_POLICIES)}", 2)
    can_ask = sys.stdin.isatty() and not json_out
    return ConfirmationGate.for_policy(policy, _interactive_confirm if can_ask else None)


def sensitive_report(policy: str, gate, runs) -> dict:
    """The ``sensitive`` entry of run's and demo's output: the policy given, what the gate did
    with it here (ask, deny or allow), the sensitive steps the agent met and had denied, and
    the tasks a denial ended (demo counts them as failed: the task was not done)."""
    runs = list(runs)
    steps = [s for run in runs for s in run.steps if s.sensitive]
    return {"policy": policy, "in_effect": gate.in_effect, "steps": len(steps),
            "denied": sum(1 for s in steps if not s.allowed),
            "tasks_ended_by_denial": sum(1 for run in runs if run.status == "denied")}


def sensitive_line(report: dict) -> str:
    how = report["policy"]
    if report["in_effect"] != how:
        how += f" (no terminal to ask at: {report['in_effect']})"
    line = f"sensitive steps: {how} · {report['steps']} met, {report['denied']} denied"
    ended = report.get("tasks_ended_by_denial", 0)
    if ended:
        line += (f"; the denials ended {ended} task{'' if ended == 1 else 's'} (--sensitive allow lets through "
                 "the steps a task's words ask for)")
    return line
