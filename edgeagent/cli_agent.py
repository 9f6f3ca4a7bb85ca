"""``edgeagent run``: the agent on one task, on the emulated phone or a real device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from edgeagent.cli_common import (AGENT_HELP, ATTENTION_HELP, SENSITIVE_HELP, VERBOSE_HELP, attention_or_fail,
                                  choose_model, open_device, open_engine, quiet_llama, sensitive_gate, sensitive_line,
                                  sensitive_report)
from edgeagent.output import console, emit_json, fail


# The agent's own word for how a run ended; "done" is what it claims, not a checked success.
STATUS_WORDS = {"complete": "done"}


def run_command(
    task: Optional[str] = typer.Option(None, "--task", help="What the agent should do, in words."),
    task_json: Optional[Path] = typer.Option(None, "--task-json", help="A task spec from `edgeagent tasks --json` (one object, or a list: the first)."),
    model: Optional[Path] = typer.Option(None, "--model", help="GGUF file (default: the shipped agent, see --agent)."),
    agent: Optional[str] = typer.Option(None, "--agent", help=AGENT_HELP),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="A bundle from `edgeagent convert`: its best variant runs (with --profile: the one `edgeagent select` picks)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile: run the bundle's variant selected for it (default bundle: the quantizations of --agent, or of the default agent, with their measured quality)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="A variant of --bundle by id (default: its best)."),
    quant: str = typer.Option("q8_0", "--quant", help="The shipped agent's quantization when --model is not given."),
    device: str = typer.Option("emulator", "--device", help="emulator | adb | adb:SERIAL"),
    max_steps: int = typer.Option(20, "--max-steps", min=1),
    sensitive: Optional[str] = typer.Option(None, "--sensitive", help=SENSITIVE_HELP),
    allow_sensitive: bool = typer.Option(False, "--allow-sensitive", help="The same as --sensitive allow."),
    trace_dir: Optional[Path] = typer.Option(None, "--trace", help="Write steps.jsonl, screenshots and index.html here."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    attention: str = typer.Option("on", "--attention", help=ATTENTION_HELP),
    raw_prompt: bool = typer.Option(False, "--raw-prompt", help="Send the plain step prompt, not the model's chat template."),
    speculative: bool = typer.Option(True, "--speculative/--no-speculative", help="Decode with the draft the "
                                     "bundle's manifest names (self-speculative, same outputs), if it names one."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Run the agent on one task and print what it did and what it cost."""
    from edgeagent.agent.evaluate import step_costs, summarize_costs
    from edgeagent.agent.policy import ModelPolicy, engine_prompt_format
    from edgeagent.agent.trace import TraceWriter

    if (task is None) == (task_json is None):
        fail("give exactly one of --task TEXT or --task-json FILE")
    attention_or_fail(attention)
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

    choice = choose_model(model=model, agent=agent, bundle=bundle, profile=profile, quant=quant, threads=threads,
                          variant=variant)
    model_path, bundle_format = choice.path, choice.prompt_format
    dev, phone = open_device(device)
    if spec is not None and phone is None:
        fail("--task-json sets up an emulated task; use --device emulator (or --task TEXT on a real device)")
    engine = open_engine(model_path, threads, verbose, draft=choice.draft if speculative else None,
                         n_draft=choice.n_draft, attention=attention)
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
        "task": task, "model": str(model_path), "agent": choice.name, "prompt_format": f"{fmt.kind}/{fmt.layout}" if fmt.kind == "chat" else "plain",
        "device": device, "attention": attention, "status": status, "verified": success is not None, "answer": run.answer,
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
            f"{choice.name}: {verdict}: status {status}, {len(run.steps)} steps, "
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
