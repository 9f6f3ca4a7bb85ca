"""``edgeagent convert``: a Hugging Face model (or ``builtin``) + agent traces -> a device bundle.

The work is done by ``converters.convert`` (the converter extra: torch, transformers, peft,
bitsandbytes, accelerate); this module parses the command line and prints the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeagent.output import console, emit_json, err_console, fail, table


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)


def check_paths(out: Path, work: Path, resume: bool) -> None:
    """Refuse what would fail or lose work only at the end, before any work starts: an
    output path that is a file, and (without ``--resume``) a fine-tuning checkpoint an
    interrupted run left, which a fresh run would overwrite."""
    from converters.finetune import CHECKPOINT

    for path, what in ((out, "-o"), (work, "--work-dir")):
        if path.exists() and not path.is_dir():
            fail(f"{what} {path}: exists and is not a directory; give a directory path")
    checkpoint = work / "finetune" / CHECKPOINT
    if checkpoint.is_file() and not resume:
        fail(f"{checkpoint}: an interrupted run's checkpoint; add --resume to continue it, "
             "or delete it to start over", 2)


def convert_command(
    model: str = typer.Argument(..., help="Hugging Face model directory (llama, mistral, qwen2), a .gguf file, a named model "
                                               "(smollm2-135m-instruct), 'builtin', or a shipped agent ('agent:smollm2')."),
    data: list[Path] = typer.Option(..., "--data", help="Training JSONL: `edgeagent traces` output or chat "
                                    "({\"messages\": [...]}) lines. Repeatable."),
    out: Path = typer.Option(..., "-o", "--out", help="Bundle directory to write (replaced whole at the end)."),
    profile: str = typer.Option("snapdragon-8-gen-2", "--profile", help="Device profile: default variants, recorded in the manifest."),
    quants: Optional[str] = typer.Option(None, "--quants", help="Comma list, e.g. q8_0,q4_k_m (default: from the profile)."),
    exits: Optional[str] = typer.Option(None, "--exits", help="Exit depths: layer counts '3,6' or fractions '0.5' "
                                        "(default: half and full depth; full depth is always packed)."),
    exit_kind: str = typer.Option("dedicated", "--exit-kind", help="dedicated (own norm + head per exit), lens (own norm + a d x d "
                                   "map before the model's head: 1/85 of the parameters on SmolLM2) or shared."),
    exit_training: Optional[str] = typer.Option(None, "--exit-training", help="How exits learn: ee-tuning (after the "
                                                "fine-tune, dedicated heads only, the model frozen; the default for "
                                                "dedicated exits) or layerskip (the early-exit loss inside the fine-tune; "
                                                "the default and only way for shared exits)."),
    exit_steps: Optional[int] = typer.Option(None, "--exit-steps", min=1, help="EE-Tuning steps (default: one pass "
                                             "over the training tokens)."),
    exit_loss_weight: float = typer.Option(1.0, "--exit-loss-weight", min=0.0, help="LayerSkip: weight of the early-exit "
                                           "loss beside the language-model loss."),
    gqa_groups: Optional[int] = typer.Option(None, "--gqa-groups", min=1,
                                             help="Convert to grouped-query attention first: G query heads share each KV head."),
    rank: int = typer.Option(16, "--rank", min=1, help="LoRA rank r."),
    alpha: float = typer.Option(32.0, "--alpha", help="LoRA alpha (scale alpha/r)."),
    dropout: float = typer.Option(0.05, "--dropout", min=0.0, max=0.9, help="LoRA dropout."),
    lr: float = typer.Option(2e-4, "--lr", help="Peak learning rate (warm-up, cosine decay)."),
    epochs: int = typer.Option(1, "--epochs", min=0, help="Passes over the training data (0: no fine-tuning)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop fine-tuning after N optimizer steps."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Examples per optimizer step."),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size", min=1,
                                                   help="Examples per forward pass (default: 1 for the multi-turn layouts, "
                                                   "whose examples differ in length, else the batch size)."),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing/--no-grad-checkpointing",
                                            help="Recompute activations in the backward pass: less memory, about a "
                                            "third more compute."),
    max_seq_len: int = typer.Option(4096, "--max-seq-len", min=8, help="Longer examples are left out (counted)."),
    layout: Optional[str] = typer.Option(None, "--layout", help="A chat model's prompt layout, in training and in the "
                               "bundle: episode (one multi-turn example per episode), delta (the same, each screen written as its changes "
                               "since the last where that is shorter) or step (one prompt per step). Default: a shipped agent's own, "
                               "else episode."),
    ckpt_every: int = typer.Option(50, "--ckpt-every", min=1, help="Checkpoint every N steps."),
    no_4bit: bool = typer.Option(False, "--no-4bit", help="Plain LoRA on a full-precision base instead of QLoRA."),
    merge_into: str = typer.Option("full", "--merge-into", help="full (the original weights) or nf4 (the NF4-dequantized "
                                   "weights the adapters were trained against)."),
    holdout: float = typer.Option(0.1, "--holdout", min=0.0, max=0.9, help="Share of tasks held out for evaluation."),
    eval_data: Optional[list[Path]] = typer.Option(None, "--eval-data", help="Held-out JSONL instead of a split of --data."),
    eval_tasks: int = typer.Option(20, "--eval-tasks", min=0, help="Held-out emulated tasks run per variant (0: none)."),
    eval_examples: int = typer.Option(200, "--eval-examples", min=0, help="Held-out examples for perplexity."),
    eval_max_steps: int = typer.Option(20, "--eval-max-steps", min=1, help="Step budget per evaluated task."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also measure the model before fine-tuning."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also measure an F16 export (not shipped)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Intermediate files (default: BUNDLE.work)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted fine-tuning run from its checkpoint."),
    skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines", help="Leave bad data lines out (counted) instead of failing."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (torch and llama.cpp)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, LoRA init and data order."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Fine-tune (QLoRA + early-exit heads), optionally convert to GQA, and pack a bundle of
    GGUF variants measured on held-out data."""
    try:
        from converters.convert import ConvertConfig, ConvertError, convert
        from converters.finetune import FinetuneConfig
    except ImportError as e:
        fail(f"`edgeagent convert` needs the converter extra ({e.name} is missing): pip install 'edgeagent[convert]'")

    exit_training = exit_training or ("layerskip" if exit_kind == "shared" else "ee-tuning")
    ft = FinetuneConfig(
        rank=rank, alpha=alpha, dropout=dropout, lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        micro_batch_size=micro_batch_size or (batch_size if layout == "step" else 1), max_seq_len=max_seq_len,
        ckpt_every=ckpt_every, load_in_4bit=not no_4bit, gradient_checkpointing=grad_checkpointing, seed=seed,
        exit_loss_weight=exit_loss_weight,
    )
    cfg = ConvertConfig(
        model=model, data=list(data), out=out, profile=profile,
        quants=[q.strip() for q in quants.split(",") if q.strip()] if quants else None,
        exits=exits, exit_kind=exit_kind, exit_training=exit_training, exit_steps=exit_steps, gqa_groups=gqa_groups, finetune=ft, holdout=holdout,
        eval_data=list(eval_data) if eval_data else None, eval_examples=eval_examples, eval_tasks=eval_tasks,
        eval_max_steps=eval_max_steps, baseline=baseline, reference=reference, merge_into=merge_into,
        work_dir=work_dir, resume=resume, skip_bad_lines=skip_bad_lines, threads=threads, seed=seed, layout=layout,
    )
    from edgeagent.agent.prompt import LAYOUTS

    if layout is not None and layout not in LAYOUTS:
        fail(f"--layout {layout!r}: choose {', '.join(LAYOUTS)}")
    if exit_kind not in ("dedicated", "lens", "shared"):
        fail(f"--exit-kind {exit_kind!r}: choose dedicated, lens or shared")
    if exit_training not in ("ee-tuning", "layerskip"):
        fail(f"--exit-training {exit_training!r}: choose ee-tuning or layerskip")
    if exit_training == "ee-tuning" and exit_kind == "shared":
        fail("--exit-training ee-tuning trains dedicated heads on a frozen model; shared exits have nothing to train "
             "that way: use --exit-kind dedicated or lens, or --exit-training layerskip")
    work = work_dir or out.with_name(out.name + ".work")
    check_paths(out, work, resume)

    def say(message: str) -> None:
        err_console.print(message, highlight=False, soft_wrap=True)

    work_existed = work.exists()
    try:
        manifest = convert(cfg, log=say, progress=True)  # a bar on a terminal, else a line per step (stderr)
    except (ConvertError, RecursionError) as e:
        if not work_existed and work.is_dir() and not any(work.iterdir()):
            work.rmdir()  # a run that failed before its first intermediate file leaves nothing
        fail(str(e) if isinstance(e, ConvertError) else
             f"{', '.join(map(str, data))}: a line is nested too deeply to be a training example", 2)
    if manifest is None:  # a non-main process under `accelerate launch`
        return
    if json_out:
        emit_json(manifest)
        return
    from edgeagent.export.bundle import variant_rows

    columns, rows = variant_rows(manifest)
    table(f"bundle {out} (measured on held-out data, this machine)", columns, rows)
    m = manifest["measurements"]
    loss = m.get("heldout_loss", {})
    console.print(
        "held-out loss (transformers, fp32): "
        + ", ".join(f"{k} {v:.4f}" for k, v in loss.items() if v is not None), highlight=False)
    for label, b in (m.get("baseline") or {}).items():
        q = b.get("quality", {})
        if q:
            console.print(f"before fine-tuning ({label}, {b['quant']}): perplexity {q.get('perplexity', 0):.3f}"
                          + (f", task success {q['task_success']:.0%}" if q.get("task_success") is not None else ""),
                          highlight=False)
    gqa = m.get("gqa")
    if gqa and gqa.get("kv_cache_bytes_per_token"):
        kv = gqa["kv_cache_bytes_per_token"]
        console.print(f"GQA G={gqa['groups']}: KV cache per token in llama.cpp {kv['source']} -> {kv['gqa']} bytes "
                      f"(÷{kv['ratio']:.2f})", highlight=False)
