"""Model commands: ``edgeagent export`` (HF checkpoint -> GGUF). ``edgeagent bench`` is
``cli_bench``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from edgeagent.output import console, emit_json, err_console, fail, table

QUANT_HELP = "f32, f16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k"


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)


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
