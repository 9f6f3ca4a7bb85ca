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
    model_dir: Path = typer.Argument(..., help="Hugging Face model directory (llama, mistral or qwen2)."),
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

    from converters.export_gguf import ExportError, export

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
    model: Path = typer.Option(..., "--model", "-m", help="GGUF file to benchmark."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Threads (default: all cores)."),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", "-p", help="Prompt length (prefill test)."),
    gen_tokens: int = typer.Option(128, "--gen-tokens", "-n", help="Tokens to generate (decode test)."),
    reps: int = typer.Option(5, "--reps", "-r", help="Measured repetitions (after one warm-up)."),
    prefix_reuse: bool = typer.Option(
        False, "--prefix-reuse", help="Instead: what the KV cache kept between calls saves (cold vs cached prefix)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure tokens/s: the engine next to plain llama-cpp-python, prefill and decode."""
    from rich.progress import BarColumn, Progress, TextColumn

    from edgeagent import bench
    from edgeagent.engine import EngineError

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
