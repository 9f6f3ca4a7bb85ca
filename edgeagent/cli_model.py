"""Model commands: ``edgeagent export`` (HF checkpoint -> GGUF) and ``edgeagent bench``
(measured tokens/s of the engine next to plain llama-cpp-python)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from edgeagent.output import console, emit_json, err_console, fail, table

QUANT_HELP = "f32, f16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("bench")(bench_command)


def export_command(
    model_dir: Path = typer.Argument(..., help="Hugging Face model directory (llama, mistral or qwen2), a .gguf "
                                     "file (dequantized first) or a named model (smollm2-135m-instruct)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .gguf file (written atomically)."),
    quant: str = typer.Option("f16", "--quant", "-q", help=QUANT_HELP),
    measure_error: bool = typer.Option(
        True, "--measure-error/--no-measure-error", help="Compare a quantized export's logits with F32."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Threads for quantizing (default: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a Hugging Face checkpoint to GGUF, quantized by llama.cpp."""
    from rich.progress import BarColumn, Progress, TextColumn

    from converters.sources import ModelSourceError, resolve_source
    from edgeagent.export.hf_to_gguf import ExportError, export

    try:
        model_dir = resolve_source(model_dir)
    except ModelSourceError as e:
        fail(str(e))
    error = None
    with warnings.catch_warnings(record=True) as caught, Progress(
        TextColumn("writing tensors"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as bar:
        warnings.simplefilter("always")
        task = bar.add_task("export", total=None)
        try:
            result = export(
                model_dir, out, quant, measure_error=measure_error, threads=threads,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except ExportError as e:
            error = " ".join(str(e).split())  # one line, whatever the library said
    if error is not None:
        fail(error)  # after the progress display is gone, so stderr holds just this line
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {w.message}", highlight=False, soft_wrap=True)

    if json_out:
        emit_json(result.to_dict())
        return
    rows = [
        ["file", result.path],
        ["architecture", f"{result.arch} (from {result.model_type})"],
        ["quant", f"{result.quant} (file_type {result.file_type})"],
        ["parameters", f"{result.n_params:,}"],
        ["size", f"{result.size_bytes / 2**20:.2f} MiB"],
        ["tokenizer", result.tokenizer],
        ["tensor types", ", ".join(f"{k}: {v}" for k, v in sorted(result.tensor_types.items()))],
        ["fallbacks", str(len(result.fallbacks))],
        ["seconds", f"{result.seconds:.2f}"],
    ]
    if result.quant_error:
        e = result.quant_error
        rows.append([
            "error vs F32",
            f"max|Δlogit| {e['max_abs_diff']:.4f}, rel RMS {e['rel_rms']:.4f}, "
            f"top-1 agree {e['top1_agreement']:.1%}, KL {e['mean_kl']:.5f} ({e['positions']} positions, measured)",
        ])
    table("GGUF export", ["", ""], rows)
    for note in result.warnings:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def bench_command(
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="GGUF file to benchmark (with --early-exit: an HF dir, default the built-in model)."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Threads (default: all cores)."),
    prompt_tokens: Optional[int] = typer.Option(
        None, "--prompt-tokens", "-p", help="Prompt length (prefill test; default 128, --ablation: 256, one agent step)."
    ),
    gen_tokens: Optional[int] = typer.Option(
        None, "--gen-tokens", "-n", help="Tokens to generate (decode test; default 128, --ablation: 16, one action)."
    ),
    reps: int = typer.Option(5, "--reps", "-r", help="Measured repetitions (after one warm-up)."),
    prefix_reuse: bool = typer.Option(
        False, "--prefix-reuse", help="Instead: what the KV cache kept between calls saves (cold vs cached prefix)."
    ),
    early_exit: bool = typer.Option(
        False, "--early-exit", help="Instead: exit depths (task success, tokens/s, perplexity) and self-speculative decoding."
    ),
    exits: Optional[str] = typer.Option(None, "--exits", help="Exit depths for --early-exit, e.g. 2,4 or 0.5."),
    quant: str = typer.Option("q8_0", "--quant", help="Quantization of the --early-exit variants."),
    tasks: int = typer.Option(20, "--tasks", help="Emulated tasks per variant for --early-exit."),
    seed: int = typer.Option(1000, "--seed", help="Task seed for --early-exit (training used seed 1)."),
    heads: Optional[Path] = typer.Option(None, "--heads", help="Trained exit heads for --early-exit."),
    train_exit_steps: int = typer.Option(0, "--train-exit-steps", help="Train dedicated exit heads first (EE-Tuning)."),
    n_draft: int = typer.Option(4, "--n-draft", help="Draft length for self-speculative decoding."),
    ablation: bool = typer.Option(
        False, "--ablation", help="Instead: the ablation matrix (full precision, 8/4-bit, exit, GQA, pairs, all three)."
    ),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile for --ablation's estimates and constraints."),
    gqa_model: Optional[Path] = typer.Option(None, "--gqa-model", help="GQA-converted sibling (HF dir) for --ablation's GQA cells."),
    shape: Optional[str] = typer.Option(None, "--shape", help="--ablation for a published shape, estimated only (e.g. phi-3-mini)."),
    gqa_groups: int = typer.Option(4, "--gqa-groups", help="KV heads per group for a --shape's GQA cells."),
    png: Optional[Path] = typer.Option(None, "--png", help="--ablation: write the cells on quality vs latency / energy."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure tokens/s: the engine next to plain llama-cpp-python, prefill and decode."""
    from rich.progress import BarColumn, Progress, TextColumn

    from edgeagent import bench
    from edgeagent.engine import EngineError

    if early_exit:
        from edgeagent.early_exit_bench import bench_model, early_exit_rows, run_early_exit_bench

        say = (lambda _msg: None) if json_out else err_console.print
        try:
            target = bench_model(model, exits)
            training = None
            if heads is None and train_exit_steps > 0:
                heads, training = _train_exit_heads(target, seed, train_exit_steps, say)
            result = run_early_exit_bench(target, quant, tasks, seed, heads=heads, training=training, n_draft=n_draft,
                                          threads=threads, progress=say)
        except (ValueError, EngineError) as e:
            fail(" ".join(str(e).split()))
        if json_out:
            emit_json(result)
            return
        columns, rows = early_exit_rows(result)
        table("edgeagent bench --early-exit (measured on this machine)", columns, rows)
        return
    if ablation:
        _ablation(model, profile, gqa_model, shape, gqa_groups, exits, heads, tasks, seed, prompt_tokens, gen_tokens,
                  threads, png, json_out)
        return
    prompt_tokens = 128 if prompt_tokens is None else prompt_tokens
    gen_tokens = 128 if gen_tokens is None else gen_tokens
    if model is None:
        fail("--model FILE.gguf is required (except with --early-exit and --ablation)")
    if not model.is_file():
        fail(f"{model}: model file not found")
    if prompt_tokens < 2 or gen_tokens < 2 or reps < 1:
        fail("need --prompt-tokens >= 2, --gen-tokens >= 2 and --reps >= 1")
    error = None
    with Progress(
        TextColumn("benchmarking"), BarColumn(), TextColumn("{task.completed}/{task.total} reps"),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("bench", total=None)
        try:
            mode = bench.bench_prefix_reuse if prefix_reuse else bench.bench_throughput
            result = mode(
                model, threads=threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except EngineError as e:
            error = " ".join(str(e).split())
    if error is not None:
        fail(error)

    if json_out:
        emit_json(result)
        return
    if prefix_reuse:
        columns, rows = bench.prefix_reuse_rows(result)
        table("edgeagent bench --prefix-reuse (measured on this machine)", columns, rows)
        console.print(
            f"TTFT saved by the cached prefix: {result['ttft_saved_pct']:.1f} %; "
            f"same greedy output: {result['identical_output']}",
            highlight=False,
        )
        return
    columns, rows = bench.throughput_rows(result)
    table("edgeagent bench (measured on this machine)", columns, rows)
    console.print(
        f"engine overhead vs llama-cpp-python: {result['overhead_pct']:+.2f} % ± {result['overhead_pct_std']:.2f} "
        f"(decode, paired over {result['reps']} reps); repack={result['repack']}, "
        f"llama-cpp-python {result['llama_cpp_python']}, {result['machine']}",
        highlight=False,
    )
    console.print(bench.contention_note(result), highlight=False)


def _train_exit_heads(target, seed: int, steps: int, say) -> tuple[Path, dict]:
    """``bench --early-exit --train-exit-steps``: dedicated exit heads trained first (EE-Tuning,
    the converter's) on expert traces; the heads directory and what training reported."""
    from converters.early_exit import train_exits
    from edgeagent.early_exit_bench import head_training_traces

    say(f"training dedicated exit heads at {target.exit_layers} for {steps} steps (EE-Tuning)")
    traces = head_training_traces(target, seed)
    heads = target.work / f"heads-{steps}"
    training = train_exits(target.model_dir, traces, target.exit_layers, "dedicated", heads, steps=steps, resume=True,
                           log=say)
    return heads, training


def _ablation(model, profile, gqa_model, shape, gqa_groups, exits, heads, tasks, seed, prompt_tokens, gen_tokens,
              threads, png, json_out) -> None:
    """``bench --ablation``: measured on a model (default the built-in one), or estimated
    for a published ``--shape``."""
    from edgeagent import ablation as ab
    from edgeagent.builtin import BuiltinModelMissing
    from edgeagent.engine import EngineError
    from edgeagent.measure import MeasureError
    from edgeagent.profiles import ProfileError, load_profile

    if profile is None:
        fail("--ablation needs --profile (the device the cells are estimated on), e.g. --profile snapdragon-8-gen-2")
    try:
        prof = load_profile(profile)
    except ProfileError as e:
        fail(str(e))
    workload = {"prompt_tokens": prompt_tokens or ab.STEP_PROMPT_TOKENS, "gen_tokens": gen_tokens or ab.STEP_GEN_TOKENS}
    try:
        if shape is not None:
            if model is not None or gqa_model is not None:
                fail("--shape is estimated only: drop --model / --gqa-model")
            result = ab.shape_ablation(prof, shape, exit_layer=exits, gqa_groups=gqa_groups, **workload)
        else:
            for path, flag in ((model, "--model"), (gqa_model, "--gqa-model")):
                if path is not None and not (path / "config.json").is_file():
                    fail(f"{flag} {path}: not a Hugging Face model directory (no config.json)")
            result = ab.run_ablation(prof, model, gqa_model=gqa_model, exit_layer=exits, heads=heads, tasks=tasks,
                                     seed=seed, threads=threads, progress=None if json_out else err_console.print,
                                     **workload)
    except (ValueError, EngineError, MeasureError, BuiltinModelMissing) as e:
        fail(" ".join(str(e).split()))
    if png is not None:
        from edgeagent.atomic import write_bytes
        from edgeagent.report.plots import ReportError, ablation_png

        try:
            result["reports"] = [str(write_bytes(png, ablation_png(result)))]
        except ReportError as e:
            fail(str(e))
    if json_out:
        emit_json(result)
        return
    columns, rows = ab.ablation_rows(result)
    what = "estimated" if not result["measured"] else "measured here + estimated"
    table(f"edgeagent bench --ablation: {result['model']} on {result['profile']} ({what})", columns, rows)
    best = result["best"]
    console.print(f"best under the default constraints: {best['cell'] if best else 'none fits'}"
                  + (f" -- {best['basis']}" if best else ""), highlight=False)
    for note in result["notes"]:
        console.print(f"note: {note}", highlight=False)
