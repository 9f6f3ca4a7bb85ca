"""``edgeagent run``: the agent on one task, on the emulated phone or a real device."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from edgeagent.output import console, emit_json, err_console, fail


# The agent's own word for how a run ended; "done" is what it claims, not a checked success.
STATUS_WORDS = {"complete": "done"}


AGENT_HELP = ("Which shipped agent runs when no --model is given: smollm2 (SmolLM2-135M-Instruct fine-tuned "
              "for the phone; needs the agent extra) or builtin (the 5M model trained from scratch), or an agent "
              "directory. Default: the best by measurement (edgeagent.agents.DEFAULT_AGENT, now builtin).")


@dataclass
class ModelChoice:
    path: Path
    name: str  # what runs, for people: "smollm2 q8_0", "builtin q8_0", or the file
    prompt_format: Any = None  # None: what the GGUF's metadata implies


def resolve_model(model: Optional[Path], quant: str = "q8_0", agent: Optional[str] = None) -> ModelChoice:
    """The GGUF to run: ``--model`` as given, else the shipped agent (``--agent``, default the
    best one installed) at ``quant``."""
    if model is not None:
        if agent is not None:
            fail("give --model or --agent, not both")
        if not model.exists():
            fail(f"{model}: no such model file")
        return ModelChoice(model, str(model))
    if agent not in (None, "builtin"):
        from edgeagent.agents import AgentUnavailable, shipped_agent

        try:
            chosen = shipped_agent(agent)
            return ModelChoice(chosen.gguf(quant), f"{agent} {quant}", chosen.prompt_format)
        except AgentUnavailable as exc:
            fail(str(exc))
    if agent is None:
        from edgeagent.agents import DEFAULT_AGENT, AgentUnavailable, shipped_agent

        agent = DEFAULT_AGENT
    if agent != "builtin":
        try:
            chosen = shipped_agent(DEFAULT_AGENT)
            return ModelChoice(chosen.gguf(quant), f"{DEFAULT_AGENT} {quant}", chosen.prompt_format)
        except AgentUnavailable as exc:
            err_console.print(f"note: {exc}; running the built-in 5M model instead")
    from edgeagent.builtin import BuiltinModelMissing, builtin_gguf

    try:
        return ModelChoice(builtin_gguf(quant), f"builtin {quant}")
    except BuiltinModelMissing as exc:
        fail(str(exc))
    raise AssertionError  # unreachable: fail() exits


VERBOSE_HELP = "Print llama.cpp's own log (loading, warnings) to stderr; without it llama.cpp prints nothing."
SENSITIVE_HELP = ("What happens to a sensitive step (paying, sending, deleting, calling, installing): ask (put to you "
                  "at the terminal; where no one can answer, stdin not a terminal or --json, it is denied), deny, "
                  "allow (the kinds of deed the task's words ask for, e.g. a payment for 'buy milk'; any other "
                  "is denied) or allow-all. Default: ask.")


def quiet_llama(verbose: bool) -> None:
    """llama.cpp's log off (its errors kept for the one-line message), or on with ``--verbose``;
    set before anything reaches llama.cpp (building the shipped agent quantizes with it)."""
    from edgeagent.llama import LLAMA_LOG

    LLAMA_LOG.install(verbose)


def open_engine(model_path: Path, threads: Optional[int], verbose: bool = False):
    """llama.cpp on ``model_path``; a file it cannot load (corrupt, truncated, not a GGUF) is
    one line naming it and llama.cpp's reason, exit code 2, not a traceback."""
    from edgeagent.engine import Engine, EngineError
    from edgeagent.quality import trained_context

    try:
        # a whole episode in the chat layout fits 4096 tokens; never past what the model was trained for
        n_ctx = min(4096, trained_context(model_path) or 4096)
    except Exception:  # noqa: BLE001  gguf-py fails on a bad header in many ways; llama.cpp names the fault below
        n_ctx = 4096
    try:
        return Engine(model_path, n_ctx=n_ctx, n_threads=threads, verbose=verbose)
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
    with it here (ask, deny or allow), and the sensitive steps the agent met and had denied."""
    steps = [s for run in runs for s in run.steps if s.sensitive]
    return {"policy": policy, "in_effect": gate.in_effect, "steps": len(steps),
            "denied": sum(1 for s in steps if not s.allowed)}


def sensitive_line(report: dict) -> str:
    how = report["policy"]
    if report["in_effect"] != how:
        how += f" (no terminal to ask at: {report['in_effect']})"
    return f"sensitive steps: {how} · {report['steps']} met, {report['denied']} denied"


def run_command(
    task: Optional[str] = typer.Option(None, "--task", help="What the agent should do, in words."),
    task_json: Optional[Path] = typer.Option(None, "--task-json", help="A task spec from `edgeagent tasks --json` (one object, or a list: the first)."),
    model: Optional[Path] = typer.Option(None, "--model", help="GGUF file (default: the shipped agent, see --agent)."),
    agent: Optional[str] = typer.Option(None, "--agent", help=AGENT_HELP),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="A bundle from `edgeagent convert`: its best variant runs (with --profile: the one `edgeagent select` picks)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile: run the bundle's variant selected for it (default bundle: the built-in model's)."),
    quant: str = typer.Option("q8_0", "--quant", help="The shipped agent's quantization when --model is not given."),
    device: str = typer.Option("emulator", "--device", help="emulator | adb | adb:SERIAL"),
    max_steps: int = typer.Option(20, "--max-steps", min=1),
    sensitive: Optional[str] = typer.Option(None, "--sensitive", help=SENSITIVE_HELP),
    allow_sensitive: bool = typer.Option(False, "--allow-sensitive", help="The same as --sensitive allow."),
    trace_dir: Optional[Path] = typer.Option(None, "--trace", help="Write steps.jsonl, screenshots and index.html here."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    raw_prompt: bool = typer.Option(False, "--raw-prompt", help="Send the plain step prompt, not the model's chat template."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Run the agent on one task and print what it did and what it cost."""
    from edgeagent.agent.evaluate import step_costs, summarize_costs
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format
    from edgeagent.agent.trace import TraceWriter

    if (task is None) == (task_json is None):
        fail("give exactly one of --task TEXT or --task-json FILE")
    if allow_sensitive and sensitive not in (None, "allow"):
        fail(f"--allow-sensitive is --sensitive allow; it contradicts --sensitive {sensitive}", 2)
    sensitive = "allow" if allow_sensitive else sensitive or "ask"
    gate = sensitive_gate(sensitive, json_out)
    quiet_llama(verbose)
    spec = None
    if task_json is not None:
        from android_bridge.emulator.tasks import TaskSpec

        try:
            data = json.loads(task_json.read_text())
            if isinstance(data, list):
                data = data[0]
            spec = TaskSpec.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            fail(f"{task_json}: not a task spec ({exc})")
        except RecursionError:
            fail(f"{task_json}: not a task spec (JSON nested too deeply)")
        task = spec.instruction

    if bundle is not None and model is not None:
        fail("give --model or --bundle, not both")
    if profile is not None and model is not None:
        fail("--profile selects a variant of a bundle; drop --model (or use --bundle)")
    bundle_format = None
    if bundle is not None or profile is not None:
        from edgeagent.bundle import BundleError, load_bundle

        try:
            if bundle is None:  # --profile alone: the built-in model's bundle
                from edgeagent.builtin import BuiltinModelMissing, builtin_bundle

                try:
                    bundle = builtin_bundle(threads=threads)
                except BuiltinModelMissing as exc:
                    fail(str(exc))
            loaded = load_bundle(bundle)  # every file's sha256 is checked first
            bundle_format = loaded.prompt_format
            if profile is None:
                model_path = loaded.best_quality().path
            else:
                from edgeagent.profiles import ProfileError, load_profile
                from edgeagent.select import NoVariantFits, select_variant

                try:
                    model_path = Path(select_variant(loaded, load_profile(profile))["selected"]["path"])
                except (ProfileError, NoVariantFits) as exc:
                    fail(str(exc))
        except BundleError as exc:
            fail(str(exc))
    else:
        choice = resolve_model(model, quant, agent)
        model_path, bundle_format = choice.path, choice.prompt_format
    dev, phone = open_device(device)
    if spec is not None and phone is None:
        fail("--task-json sets up an emulated task; use --device emulator (or --task TEXT on a real device)")
    engine = open_engine(model_path, threads, verbose)
    apps = phone.app_names() if phone is not None else None
    fmt = engine_prompt_format(engine, bundle_format=bundle_format, raw=raw_prompt)
    policy = ModelPolicy(engine, apps=apps, copy_text=True, prompt_format=fmt)
    writer = TraceWriter(trace_dir, task, spec.to_dict() if spec else None) if trace_dir else None

    from edgeagent.engine import EngineError

    try:
        if spec is not None:
            from edgeagent.agent.episode import run_episode

            ep = run_episode(dev, spec, policy, max_steps, phone=phone, gate=gate, trace=writer)
            run, success = ep.run, ep.success
        else:
            from edgeagent.agent.loop import run_agent

            if phone is not None:
                phone.go_home()
            run = run_agent(dev, task, policy, max_steps=max_steps, gate=gate, trace=writer)
            success = None  # no goal checker: the agent's own "done" is not a success
    except EngineError as exc:  # llama.cpp refused a step (a prompt past the context): one line
        fail(f"{model_path}: {exc}", 2)

    costs = summarize_costs(step_costs([run]))
    status = STATUS_WORDS.get(run.status, run.status)
    result = {
        "task": task, "model": str(model_path), "prompt_format": f"{fmt.kind}/{fmt.layout}" if fmt.kind == "chat" else "plain",
        "device": device, "status": status, "verified": success is not None, "answer": run.answer,
        "success_rate": None if success is None else 1.0 if success else 0.0, "steps": len(run.steps),
        "actions": [s.action for s in run.steps], "seconds": round(run.seconds, 3),
        **costs, "trace": str(trace_dir) if trace_dir else None,
        "sensitive": sensitive_report(sensitive, gate, [run]),
    }
    if json_out:
        emit_json(result)
    else:
        for s in run.steps:
            flag = f" [{s.sensitive}: {'allowed' if s.allowed else 'DENIED'}]" if s.sensitive else ""
            err = f" ({s.error})" if s.error else ""
            console.print(f"step {s.step}: {json.dumps(s.action, ensure_ascii=False)}{flag}{err}", highlight=False, markup=False)
        verdict = ("success" if success else "failed") if success is not None else "not verified (no goal checker)"
        console.print(
            f"{verdict}: status {status}, {len(run.steps)} steps, "
            f"{run.seconds:.2f} s · median TTFT {costs.get('ttft_ms')} ms · TPOT {costs.get('tpot_ms')} ms · "
            f"{costs.get('tokens_per_s')} tok/s · RSS peak {costs.get('rss_peak_mb')} MB (measured here)"
        )
        console.print(sensitive_line(result["sensitive"]), highlight=False)
        if trace_dir:
            console.print(f"trace: {trace_dir / 'index.html'}")
    if run.status == "error":  # the device failed; a task the agent failed is reported, not an error
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
