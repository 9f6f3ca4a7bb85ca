"""Commands for the emulated phone: task lists, expert traces, screenshots, the demo.

Heavy imports happen inside the commands, so ``edgeagent --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from edgeagent.cli_common import ATTENTION_HELP, SENSITIVE_HELP, VERBOSE_HELP
from edgeagent.output import console, emit_json, err_console, fail, table

# The phone a demo's cost is estimated on when none is named: the README's target phone.
DEFAULT_TARGET = "snapdragon-8-gen-2"

APPS_HELP = "Only tasks of these apps (repeat, or comma-separate: --apps Settings,Clock)."
EXCLUDE_HELP = "Hold this app's tasks out (repeatable), e.g. to test generalisation to an unseen app."
TEMPLATES_HELP = ("Only tasks of these templates or groups (repeat, or comma-separate): a template name, "
                  "'impossible' (requests the phone cannot carry out), 'default' (the usual mix) or 'all'.")
PHRASING_HELP = ("How the instructions are worded: template (the template's own), train (the wordings and "
                 "styles training may use), broad (train plus more wordings and styles), val (training wordings in validation styles), paraphrase (wordings "
                 "never trained, for choosing checkpoints), heldout (never used in training: the test's).")


def _tasks_or_fail(n: int, seed: int, apps: Optional[list[str]], exclude_app: Optional[list[str]],
                   templates: Optional[list[str]] = None, phrasing: str = "template"):
    from android_bridge.emulator.tasks import generate_tasks

    try:
        return generate_tasks(n, seed, apps=apps, exclude_apps=exclude_app, templates=templates, phrasing=phrasing)
    except ValueError as exc:
        fail(str(exc))


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same directory and rename it into place, so a reader
    never sees half a file and an interrupted run leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def tasks_command(
    n: int = typer.Option(20, "--n", min=0, help="How many tasks."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same tasks."),
    apps: Optional[list[str]] = typer.Option(None, "--apps", help=APPS_HELP),
    exclude_app: Optional[list[str]] = typer.Option(None, "--exclude-app", help=EXCLUDE_HELP),
    templates: Optional[list[str]] = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    phrasing: str = typer.Option("template", "--phrasing", help=PHRASING_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of task specs."),
) -> None:
    """List generated tasks for the emulated phone."""
    specs = [t.to_dict() for t in _tasks_or_fail(n, seed, apps, exclude_app, templates, phrasing)]
    if json_out:
        emit_json(specs)
        return
    table(f"{len(specs)} tasks (seed {seed})", ["#", "app", "template", "instruction"],
          [[i, s["app"], s["template"], s["instruction"]] for i, s in enumerate(specs)])


def traces_command(
    output: Path = typer.Option(..., "-o", "--output", help="JSONL file to write (one line per step)."),
    n: int = typer.Option(200, "--n", min=1, help="How many tasks (episodes)."),
    seed: int = typer.Option(0, "--seed", help="Task seed."),
    apps: Optional[list[str]] = typer.Option(None, "--apps", help=APPS_HELP),
    exclude_app: Optional[list[str]] = typer.Option(None, "--exclude-app", help=EXCLUDE_HELP),
    templates: Optional[list[str]] = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    phrasing: str = typer.Option("template", "--phrasing", help=PHRASING_HELP),
    max_steps: int = typer.Option(30, "--max-steps", min=1, help="Step budget per episode."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write expert trajectories on the emulated phone: the model's training data."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from edgeagent.agent.episode import run_episode, summarize, trace_records

    tasks = _tasks_or_fail(n, seed, apps, exclude_app, templates, phrasing)
    phone = EmulatedPhone()
    results = []
    lines: list[bytes] = []
    start = time.perf_counter()
    with Progress(TextColumn("expert traces"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=json_out) as progress:
        job = progress.add_task("episodes", total=len(tasks))
        for task in tasks:
            result = run_episode(phone, task, expert_action, max_steps)
            results.append(result)
            lines.extend(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in trace_records(result))
            progress.advance(job)
    _atomic_write(output, lambda fh: fh.writelines(lines))
    summary = {**summarize(results), "lines": len(lines), "output": str(output),
               "wall_s": round(time.perf_counter() - start, 3)}
    if json_out:
        emit_json(summary)
    else:
        console.print(f"wrote {len(lines)} steps of {len(results)} episodes to {output} "
                      f"(expert success {summary['success_rate']:.0%}, {summary['steps']:.1f} steps/episode)")


def screenshot_command(
    output: Path = typer.Option(..., "-o", "--output", help="PNG file to write."),
    task_seed: int = typer.Option(0, "--task-seed", help="Seed of the task (as in `edgeagent tasks --seed`)."),
    steps: int = typer.Option(0, "--steps", min=0, help="Expert steps to take before the screenshot."),
    template: Optional[str] = typer.Option(None, "--template", help="Task template (default: the seed's first task)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was saved as JSON."),
) -> None:
    """Save the emulated screen with the expert's next action drawn on it."""
    from android_bridge.emulator.expert import expert_action
    from android_bridge.emulator.phone import EmulatedPhone
    from android_bridge.emulator.render import draw_action
    from android_bridge.emulator.tasks import generate_tasks, make_task

    try:
        task = make_task(template, task_seed) if template else generate_tasks(1, task_seed)[0]
    except ValueError as exc:
        fail(str(exc))
    phone = EmulatedPhone()
    task.setup(phone)
    history = []
    for _ in range(steps):
        screen = phone.screen()
        action = expert_action(task, screen, history)
        if action.is_terminal:
            break
        phone.act(action)
        history.append(action)
    screen = phone.screen()
    action = expert_action(task, screen, history)
    image = draw_action(screen.image, action, screen)
    if output.suffix.lower() != ".png":
        fail(f"{output}: the screenshot is written as PNG; give a file name ending in .png")
    _atomic_write(output, lambda fh: image.save(fh, format="PNG"))
    info = {"output": str(output), "task": task.to_dict(), "step": len(history), "action": action.to_dict(),
            "size": list(image.size)}
    if json_out:
        emit_json(info)
    else:
        console.print(f"saved {output}: step {len(history)} of {task.instruction!r}, next {action.to_json()}")


def demo_command(
    n: int = typer.Option(30, "--n", min=1, help="How many tasks."),
    seed: int = typer.Option(0, "--seed", help="Task seed (training used seed 1: these tasks are fresh)."),
    policy: str = typer.Option("model", "--policy", help="model (the shipped agent or --model through llama.cpp) or expert."),
    model: Optional[Path] = typer.Option(None, "--model", help="GGUF to run instead of the shipped agent."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Which shipped agent runs without --model: smollm2 (the default, the best by measurement; needs the agent extra, else builtin runs) or builtin, or an agent directory."),
    quant: str = typer.Option("q8_0", "--quant", help="The shipped agent's quantization."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="A bundle from `edgeagent convert`: its best variant "
                                          "runs with the bundle's prompt format (see --variant, --profile)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="A variant of --bundle by id (default: its best)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Run the variant `edgeagent select` picks for this device profile: of --bundle, else of the agent's quantizations (--agent, or the default agent)."),
    apps: Optional[list[str]] = typer.Option(None, "--apps", help=APPS_HELP),
    exclude_app: Optional[list[str]] = typer.Option(
        None, "--exclude-app",
        help=EXCLUDE_HELP + " Default: the built-in model's held-out apps when it runs, none with --model or --bundle."),
    templates: Optional[list[str]] = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    phrasing: str = typer.Option("template", "--phrasing", help=PHRASING_HELP),
    raw_prompt: bool = typer.Option(False, "--raw-prompt", help="Send the plain step prompt, not the model's chat template."),
    speculative: bool = typer.Option(True, "--speculative/--no-speculative", help="Decode with the draft the "
                                     "bundle's manifest names (self-speculative, same outputs), if it names one."),
    layout: Optional[str] = typer.Option(None, "--layout", help="A chat model's prompt layout: episode (multi-turn), "
                                         "delta (multi-turn, screens as their changes), or step (one self-contained prompt "
                                         "per step; to compare costs). Default: the one the model was trained on."),
    max_steps: int = typer.Option(20, "--max-steps", min=1, help="Step budget per episode."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1),
    attention: str = typer.Option("on", "--attention", help=ATTENTION_HELP),
    prefix_reuse: bool = typer.Option(True, "--prefix-reuse/--no-prefix-reuse",
                                      help="Keep the KV cache of the prompt prefix shared with the previous step."),
    rescore: bool = typer.Option(True, "--rescore/--no-rescore",
                                 help="When the grammar forced a token the model found unlikely, also decode the best "
                                      "action of another kind and keep the likelier (--no-rescore: plain greedy)."),
    sensitive: str = typer.Option("ask", "--sensitive", help=SENSITIVE_HELP),
    failures: Optional[Path] = typer.Option(None, "--failures", help="Write every failed episode, with each step's "
                                            "screen and action, to this JSONL file (to see why the agent fails)."),
    target: Optional[str] = typer.Option(None, "--target", help="Device profile (a shipped name or a TOML file) a "
                                         "step's cost is estimated on: latency, memory, mAh per 100 steps with its "
                                         f"range (default: --profile's, else {DEFAULT_TARGET})."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "--verbose", help=VERBOSE_HELP),
) -> None:
    """Run the agent on the emulated phone over generated tasks; print success and cost."""
    from android_bridge.emulator.expert import expert_action
    from edgeagent.agent.evaluate import evaluate_tasks, model_policy_factory
    from edgeagent.builtin import HELD_OUT_APPS
    from edgeagent.cli_common import attention_or_fail, quiet_llama, sensitive_gate, sensitive_line, sensitive_report
    from edgeagent.engine import EngineError

    if policy not in ("model", "expert"):
        fail(f"--policy {policy!r}: expected 'model' or 'expert'")
    attention_or_fail(attention)
    gate = sensitive_gate(sensitive, json_out)
    target_profile = None
    if policy == "model":
        target_profile = (_target_or_fail(target) if target else _target_or_fail(profile, "--profile") if profile
                          else _target_or_fail(DEFAULT_TARGET))
    # The built-in model never saw these apps; the demo shows what it was trained for. A GGUF
    # of one of its checkpoints (--model) is validated the same way with --exclude-app Notes.
    # Apps named with --apps are asked for, held out or not.
    held_out = policy == "model" and model is None and bundle is None and not apps
    exclude = exclude_app or (list(HELD_OUT_APPS) if held_out else None)
    tasks = _tasks_or_fail(n, seed, apps, exclude, templates, phrasing)
    start = time.perf_counter()
    info: dict = {"policy": policy, "device": "emulated", "phrasing": phrasing}
    if policy == "expert":
        factory = lambda phone: expert_action  # noqa: E731
    else:
        from edgeagent.agent.policy import engine_prompt_format
        from edgeagent.cli_common import choose_model, open_engine

        quiet_llama(verbose)
        choice = choose_model(model=model, agent=agent, quant=quant, bundle=bundle, variant=variant, profile=profile,
                              threads=threads)
        model_path = choice.path
        engine = open_engine(model_path, threads, verbose, draft=choice.draft if speculative else None,
                             n_draft=choice.n_draft, attention=attention)
        fmt = engine_prompt_format(engine, bundle_format=choice.prompt_format, raw=raw_prompt)
        if layout is not None:
            from edgeagent.agent.prompt import LAYOUTS

            if layout not in LAYOUTS:
                fail(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
            if fmt.kind == "chat":
                fmt = fmt.with_layout(layout)
        info.update(model=str(model_path), agent=choice.name, quant=quant if model is None and bundle is None and profile is None else None,
                    threads=engine.n_threads, attention=attention,
                    prefix_reuse=prefix_reuse, rescore=rescore,
                    speculative={"draft": str(choice.draft), "n_draft": choice.n_draft}
                    if speculative and choice.draft is not None else None,
                    prompt_format=f"{fmt.kind}/{fmt.layout}" if fmt.kind == "chat" else "plain")
        factory = model_policy_factory(engine, reuse_prefix=prefix_reuse, prompt_format=fmt, rescore=rescore)
    if not json_out:
        err_console.print(f"running {n} emulated tasks with the {policy} policy ...")
    try:
        summary = evaluate_tasks(factory, tasks, max_steps=max_steps, gate=gate)
    except EngineError as exc:  # llama.cpp refused a step (a prompt past the context): one line
        fail(f"{info.get('model')}: {exc}", 2)
    episodes = summary.pop("episodes")
    if failures is not None:
        _write_failures(failures, [e for e in episodes if not e.success])
    summary = {**info, **summary, "wall_s": round(time.perf_counter() - start, 3),
               "sensitive": sensitive_report(sensitive, gate, [e.run for e in episodes if e.run is not None])}
    if target_profile is not None and summary.get("evaluated_prompt_tokens_per_step") is not None:
        summary["estimated_on_target"] = step_on_target(model_path, target_profile, summary, engine.n_ctx)
    summary["episodes"] = [e.summary() for e in episodes]
    if json_out:
        emit_json(summary)
        return
    table(f"demo: {policy} policy on the emulated phone (seed {seed})", ["#", "app", "instruction", "steps", "result"],
          [[i, e.task.app, e.task.instruction, e.steps, _result(e)] for i, e in enumerate(episodes)])
    ended = summary["sensitive"]["tasks_ended_by_denial"]
    line = (f"tasks {summary['tasks']} · success_rate {summary['success_rate']:.0%}"
            f"{f' ({ended} ended at a denied sensitive step)' if ended else ''} · "
            f"mean steps {summary['steps']:.1f} · wall time {summary['wall_s']:.2f} s · "
            f"sensitive steps not asked for: {summary['unrequested_sensitive']} "
            f"({summary['unrequested_sensitive_allowed']} let through)")
    if policy == "model":
        line = f"{info.get('agent')} ({info.get('prompt_format')} prompt, {phrasing} phrasing): " + line
        threads = summary.get("threads")
        line += (f"\nper step (median, measured here, {threads} thread{'' if threads == 1 else 's'}, attention "
                 f"{summary.get('attention')}): TTFT {summary.get('ttft_ms')} ms · "
                 f"TPOT {summary.get('tpot_ms')} ms · {summary.get('tokens_per_s')} tok/s · "
                 f"{summary.get('prompt_tokens_per_step')} prompt tokens ({summary.get('evaluated_prompt_tokens_per_step')} evaluated) · "
                 f"RSS peak {summary.get('rss_peak_mb')} MB")
        est = summary.get("estimated_on_target")
        if est is not None:
            mah = est["mah_per_100_steps"]
            line += (f"\nper step (estimated on {est['profile']}, {est['prompt_tokens']} + {est['gen_tokens']} tokens): "
                     f"{est['step_ms']:.0f} ms (TTFT {est['ttft_ms']:.0f} ms · TPOT {est['tpot_ms']:.2f} ms) · "
                     f"{est['memory_mb']:.0f} MiB · {mah['value']:.2f} mAh per 100 steps "
                     f"({mah['low']:.2f}–{mah['high']:.2f}, from the estimator's held-out error)")
            if mah.get("caveat"):
                line += f"\n  caveat: {mah['caveat']}"
    console.print(line)
    console.print(sensitive_line(summary["sensitive"]), highlight=False)


def _result(episode) -> str:
    """A demo row's result: ok, FAILED, or denied (a sensitive step the gate refused ended it)."""
    if episode.success:
        return "ok"
    return "denied" if episode.run is not None and episode.run.status == "denied" else "FAILED"


def _target_or_fail(name: str, flag: str = "--target"):
    from edgeagent.profiles import ProfileError, load_profile

    try:
        return load_profile(name)
    except ProfileError as exc:
        fail(f"{flag}: {exc}")


def step_on_target(model_path: Path, profile, summary: dict, n_ctx: int) -> dict:
    """One agent step of this run (its mean evaluated prompt and generated tokens) estimated on
    ``profile`` (``select.estimate_gguf``), the battery per 100 steps with the range the
    estimator's held-out error allows (``anchors.energy_ratio_range``)."""
    from edgeagent.anchors import compare_published, decode_misses, energy_ratio_range, with_range
    from edgeagent.select import estimate_gguf

    prompt_tokens = max(1, round(summary["evaluated_prompt_tokens_per_step"]))
    gen_tokens = max(1, round(summary.get("generated_tokens_per_step") or 1))
    est = estimate_gguf(model_path, profile, prompt_tokens, gen_tokens, max(n_ctx, prompt_tokens + gen_tokens))
    cmp = compare_published()
    mah = with_range(est["mah_per_100_inferences"], energy_ratio_range(cmp))
    caveat = decode_misses(profile.name, cmp)
    if caveat:
        mah["caveat"] = caveat
    return {**est, "profile": profile.name, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
            "mah_per_100_steps": mah}


def _write_failures(path: Path, episodes) -> None:
    """One JSON line per failed episode: the task, how it ended, and every step's screen (as
    the model read it), action and device error."""
    def write(fh) -> None:
        for ep in episodes:
            record = {**ep.summary(), "trace": [{"step": s.step, "screen": s.observation, "action": s.action,
                                                 "error": s.error} for s in ep.trace]}
            fh.write((json.dumps(record) + "\n").encode("utf-8"))

    try:
        _atomic_write(path, write)
    except OSError as exc:
        fail(f"--failures {path}: {exc.strerror or exc}")


def register(app: typer.Typer) -> None:
    app.command("tasks")(tasks_command)
    app.command("traces")(traces_command)
    app.command("screenshot")(screenshot_command)
    app.command("demo")(demo_command)
