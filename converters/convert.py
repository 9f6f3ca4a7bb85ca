"""``edgeagent convert``: HF model + traces -> a device bundle, in one linear recipe.

    1. data        traces / chat JSONL -> train and held-out examples (whole tasks held out)
    2. gqa         optional MHA -> GQA by mean-pooling KV heads (converters.gqa)
    3. baseline    the model before fine-tuning, in llama.cpp: perplexity, task success, KV bytes
    4. fine-tune   QLoRA + the early-exit loss (converters.finetune), resumable
    5. merge       adapters into the full-precision base (or the NF4-dequantized one)
    6. pack        one GGUF per quant x exit depth (edgeagent.export.bundle / exit_pack.pack_exits)
    7. measure     every variant in llama.cpp on the held-out data (and the F16 reference)
    8. publish     manifest.json written, the bundle swapped into place whole

Intermediate results live in a work directory (default ``BUNDLE.work`` next to the bundle):
the GQA model, fine-tuning checkpoints (``--resume`` continues from them), the merged HF
model. Under ``accelerate launch`` every process runs the fine-tuning step and the main
process does the rest.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from converters.finetune import FinetuneConfig

BUILTIN = "builtin"


class ConvertError(Exception):
    """The conversion cannot go on; one message saying what and what to do."""


@dataclass
class ConvertConfig:
    model: str  # HF model directory, or "builtin"
    data: list[Path]
    out: Path
    profile: str = "snapdragon-8-gen-2"
    quants: list[str] | None = None  # default from the profile
    exits: str | None = None  # "3,6" or "0.5"; default from the profile; the full depth is always added
    exit_kind: str = "dedicated"
    # How exits learn. ee-tuning: after the fine-tune, dedicated heads on the frozen merged model
    # (the full-depth model is untouched). layerskip: the early-exit loss inside the fine-tune,
    # weighted by finetune.exit_loss_weight (shared heads can only learn this way).
    exit_training: str = "ee-tuning"
    exit_steps: int | None = None  # EE-Tuning optimizer steps (default: one pass over the training tokens)
    gqa_groups: int | None = None
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    holdout: float = 0.1  # share of tasks held out (ignored with eval_data)
    eval_data: list[Path] | None = None
    eval_examples: int = 200  # held-out examples for perplexity
    eval_tasks: int = 20  # emulated tasks for task success (0: none)
    eval_max_steps: int = 20
    baseline: bool = True  # measure the model before fine-tuning too
    reference: bool = True  # measure an F16 export of the fine-tuned model (not shipped)
    merge_into: str = "full"  # full | nf4
    work_dir: Path | None = None
    resume: bool = False
    skip_bad_lines: bool = False
    threads: int | None = None
    seed: int = 0
    layout: str | None = None  # a chat model's prompt layout (edgeagent.agent.prompt); None: the source's


def _ee_tune(model_dir: Path, train, held, exits, out_dir: Path, cfg: ConvertConfig, say) -> tuple[Path, dict]:
    """EE-Tuning: dedicated exit heads trained on the frozen (merged) model, on the examples
    the fine-tune saw, in its layout. Resumes from its own checkpoint with ``--resume``."""
    from converters.early_exit import ExitTrainConfig, tune_exit_heads
    from edgeagent.export.exit_pack import EarlyExitError

    ee_cfg = ExitTrainConfig(seq_len=max(cfg.finetune.max_seq_len, 8), seed=cfg.seed)
    one_pass = math.ceil(sum(len(e.input_ids) for e in train) / ee_cfg.batch_tokens)
    ee_cfg.steps = cfg.exit_steps or max(1, one_pass)
    ee_cfg.warmup = min(ee_cfg.warmup, max(1, ee_cfg.steps // 10))
    ee_cfg.ckpt_every = min(ee_cfg.ckpt_every, cfg.finetune.ckpt_every)
    say(f"[5/8] exit heads (EE-Tuning, body frozen, {cfg.exit_kind}): exits {list(exits)}, {ee_cfg.steps} steps of "
        f"{ee_cfg.batch_tokens} packed tokens")
    try:
        info = tune_exit_heads(model_dir, train, held, list(exits), cfg.exit_kind, out_dir, config=ee_cfg,
                               resume=cfg.resume, log=lambda m: say("      " + m))
    except EarlyExitError as e:
        raise ConvertError(f"exit heads: {e}") from None
    after = info.get("heldout_loss_after", {})
    say("      held-out loss per exit: " + ", ".join(f"L{k} {v:.3f}" for k, v in after.items()))
    return out_dir, {"method": "ee-tuning", "kind": cfg.exit_kind, **{k: info[k] for k in ("exits", "steps", "heldout_loss_before",
                                                                   "heldout_loss_after", "train_seconds_this_run")}}


def resolve_model(spec: str | os.PathLike) -> Path:
    """The model to convert, as an HF directory: ``builtin`` (the shipped 5M model), a shipped
    agent (``agent:smollm2``: its base with its fine-tune merged), a named source
    (``smollm2-135m-instruct``), a ``.gguf`` file (dequantized), or an HF model directory."""
    from converters.sources import ModelSourceError, hf_dir_from_gguf, resolve_source

    if str(spec) == BUILTIN:
        from edgeagent.builtin import builtin_model_dir

        try:
            return builtin_model_dir()
        except FileNotFoundError as e:
            raise ConvertError(str(e)) from None
    if str(spec).startswith("agent:"):
        try:
            return hf_dir_from_gguf(_shipped(spec).gguf("f32"))
        except ModelSourceError as e:
            raise ConvertError(str(e)) from None
    try:
        path = resolve_source(spec)
    except ModelSourceError as e:
        raise ConvertError(str(e)) from None
    if not (path / "config.json").is_file():
        raise ConvertError(f"{path}: not a Hugging Face model directory (no config.json); give a model directory, "
                           f"a .gguf file, a named model (smollm2-135m-instruct), '{BUILTIN}' or 'agent:NAME'")
    return path


def _shipped(spec: str | os.PathLike):
    """The shipped agent ``agent:NAME`` names; ConvertError if it is missing or its card is bad."""
    from edgeagent.agents import AgentUnavailable, shipped_agent

    try:
        return shipped_agent(str(spec)[len("agent:"):])
    except AgentUnavailable as e:
        raise ConvertError(str(e)) from None


def source_layout(spec: str | os.PathLike) -> str:
    """The prompt layout a source was trained on: a shipped agent's own (``agent.json``), else
    ``episode`` (what the converter trains a chat model in by default)."""
    if str(spec).startswith("agent:"):
        try:
            return _shipped(spec).prompt_format.layout
        except ValueError as e:  # a bad prompt_format in its card
            raise ConvertError(str(e)) from None
    return "episode"


def default_variants(profile, n_layers: int) -> tuple[list[str], list[int]]:
    """Quantizations and exit depths to pack when the user names none.

    Q8_0 (near-lossless, the quality reference on the device) and Q4_K_M (the usual phone
    choice: ~4.8 bits/weight, the K-quant llama.cpp's AArch64 repack accelerates), at full
    depth and at half depth. A device whose usable memory is under 3 GiB also gets Q4_0, the
    smallest file llama.cpp's ARM repack runs fastest. Selection among them is
    ``edgeagent select``'s job (it knows the memory and latency budget).
    """
    quants = ["q8_0", "q4_k_m"]
    if getattr(profile, "usable_memory_gb", 8.0) < 3.0:
        quants.append("q4_0")
    exits = sorted({max(1, round(n_layers / 2)), n_layers})
    return quants, exits


def convert(cfg: ConvertConfig, *, log: Callable[[str], None] | None = None, progress: bool = True) -> dict | None:
    """Run the whole conversion; returns the manifest (None on non-main processes)."""
    import torch
    from accelerate import PartialState
    from transformers import AutoTokenizer

    from converters import data as data_mod
    from converters.finetune import FinetuneError, finetune, merge_adapter
    from converters.gqa import GQAError, convert_to_gqa
    from edgeagent.export.bundle import (
        make_manifest, measure_variant, pack_variants, publish, staging_dir, write_manifest,
    )
    from edgeagent.export.exit_pack import EarlyExitError, parse_exits
    from edgeagent.export.hf_to_gguf import QUANTS, ExportError, export
    from edgeagent.profiles import ProfileError, load_profile

    # cpu=True on a CPU-only machine: under a torchrun-style launch that is what makes the
    # processes a gloo group (the default would take them for independent single runs).
    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process
    say = (log or (lambda m: None)) if main else (lambda m: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # -- inputs ----------------------------------------------------------------------------
    source = resolve_model(cfg.model)
    try:
        profile = load_profile(cfg.profile)
    except ProfileError as e:
        raise ConvertError(str(e)) from None
    config = json.loads((source / "config.json").read_text())
    n_layers = int(config["num_hidden_layers"])
    default_quants, default_exits = default_variants(profile, n_layers)
    quants = [q.lower() for q in (cfg.quants or default_quants)]
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise ConvertError(f"unknown quant {bad[0]!r} (choose from {', '.join(QUANTS)})")
    try:
        exits = sorted(set(parse_exits(cfg.exits, n_layers)) | {n_layers}) if cfg.exits else default_exits
    except EarlyExitError as e:
        raise ConvertError(str(e)) from None
    if cfg.merge_into not in ("full", "nf4"):
        raise ConvertError(f"--merge-into {cfg.merge_into!r}: choose full or nf4")
    out = Path(cfg.out)
    work = Path(cfg.work_dir) if cfg.work_dir else out.with_name(out.name + ".work")
    if main:
        work.mkdir(parents=True, exist_ok=True)
    say(f"model {source} ({config.get('model_type')}, {n_layers} layers); profile {profile.name}; "
        f"variants {', '.join(quants)} x exits {exits}; work dir {work}")

    # -- 1. data ---------------------------------------------------------------------------
    try:
        loaded = data_mod.read_records(cfg.data, skip_bad=cfg.skip_bad_lines)
        if cfg.eval_data:
            train_records, held_records = loaded.records, data_mod.read_records(
                cfg.eval_data, skip_bad=cfg.skip_bad_lines).records
        else:
            train_records, held_records = data_mod.split_heldout(loaded.records, cfg.holdout, cfg.seed)
        tokenizer = AutoTokenizer.from_pretrained(source)
        fmt = data_mod.prompt_format(tokenizer)
        fmt = fmt.with_layout(cfg.layout or source_layout(cfg.model)) if fmt.kind == "chat" else fmt
        max_len = cfg.finetune.max_seq_len
        train, train_counts = data_mod.encode_records(tokenizer, train_records, max_seq_len=max_len, fmt=fmt)
        held, held_counts = data_mod.encode_records(tokenizer, held_records, max_seq_len=max_len, fmt=fmt)
    except data_mod.DataError as e:
        raise ConvertError(str(e)) from None
    held = held[: cfg.eval_examples]
    tasks = data_mod.emulator_tasks(held_records, cfg.eval_tasks) if cfg.eval_tasks > 0 else []
    heldout_pairs = [(e.input_ids, e.labels) for e in held]
    data_summary = {
        **loaded.summary(), "train_examples": len(train), "heldout_examples": len(held),
        "train_too_long": train_counts["too_long"], "heldout_too_long": held_counts["too_long"],
        "heldout_tasks_for_task_success": len(tasks), "prompt_format": fmt.kind,
        "files": [str(p) for p in cfg.data], "eval_files": [str(p) for p in cfg.eval_data or []],
    }
    if loaded.bad:
        say(f"left out {len(loaded.bad)} bad line(s), e.g. {loaded.bad[0]}")
    say(f"[1/8] data: {len(train)} train / {len(held)} held-out examples ({fmt.kind} format), "
        f"{len(tasks)} held-out emulated tasks")
    if not train and cfg.finetune.epochs > 0:
        raise ConvertError("no training examples left (all too long, or the held-out share took them)")
    timings["data"] = time.perf_counter() - t0

    # -- 2. GQA ----------------------------------------------------------------------------
    base = source
    gqa_info: dict[str, Any] | None = None
    if cfg.gqa_groups and cfg.gqa_groups > 1:
        t = time.perf_counter()
        try:
            if main:
                result = convert_to_gqa(source, cfg.gqa_groups, work / "gqa")
                gqa_info = result.to_dict()
                say(f"[2/8] gqa: {result.kv_heads_before} -> {result.kv_heads_after} KV heads "
                    f"(G = {cfg.gqa_groups}, mean-pooled)")
        except GQAError as e:
            raise ConvertError(str(e)) from None
        state.wait_for_everyone()
        base = work / "gqa"
        timings["gqa"] = time.perf_counter() - t

    # -- 3. baseline -----------------------------------------------------------------------
    measurements: dict[str, Any] = {"data": data_summary, "heldout_loss": {}, "threads": torch.get_num_threads()}
    threads = cfg.threads or torch.get_num_threads()
    if main:
        t = time.perf_counter()
        measurements["heldout_loss"]["source"] = _hf_heldout_loss(source, held)
        if base != source:
            measurements["heldout_loss"]["gqa_pooled"] = _hf_heldout_loss(base, held)
        baseline: dict[str, Any] = {}
        if cfg.baseline or base != source:
            for label, model_dir in [("source", source)] + ([("gqa_pooled", base)] if base != source else []):
                gguf_path = work / f"baseline-{label}-{quants[0]}.gguf"
                try:
                    export(model_dir, gguf_path, quants[0], threads=threads)
                except ExportError as e:
                    raise ConvertError(f"exporting {model_dir}: {e}") from None
                if cfg.baseline:
                    m = measure_variant(gguf_path, heldout=heldout_pairs, tasks=tasks, prompt_format=fmt,
                                        max_steps=cfg.eval_max_steps, threads=threads)
                else:
                    from edgeagent.quality import kv_cache_bytes_per_token

                    m = {"quality": {}, "kv_cache_bytes_per_token":
                         kv_cache_bytes_per_token(gguf_path)["kv_cache_bytes_per_token"]}
                baseline[label] = {"quant": quants[0], **m}
                q = m["quality"]
                say(f"[3/8] before fine-tuning ({label}, {quants[0]}): "
                    + _quality_text(q) + f", KV {m['kv_cache_bytes_per_token']} B/token")
        measurements["baseline"] = baseline
        if gqa_info is not None and "gqa_pooled" in baseline:
            kv_src = baseline["source"]["kv_cache_bytes_per_token"]
            kv_gqa = baseline["gqa_pooled"]["kv_cache_bytes_per_token"]
            gqa_info["kv_cache_bytes_per_token"] = {"source": kv_src, "gqa": kv_gqa,
                                                    "ratio": kv_src / kv_gqa if kv_gqa else None,
                                                    "source_of_figures": "measured in llama.cpp"}
            say(f"      KV cache per token in llama.cpp: {kv_src} -> {kv_gqa} B (÷{kv_src / kv_gqa:.2f})")
        measurements["gqa"] = gqa_info
        timings["baseline"] = time.perf_counter() - t

    # -- 4. fine-tune and 5. merge ---------------------------------------------------------
    merged, heads_dir = base, None
    trained_exits = tuple(k for k in exits if k < n_layers)
    ee_tuning = cfg.exit_training == "ee-tuning" and cfg.exit_kind in ("dedicated", "lens") and bool(trained_exits)
    if cfg.finetune.epochs > 0:
        t = time.perf_counter()
        ft_cfg = replace(cfg.finetune, exits=() if ee_tuning else trained_exits, exit_kind=cfg.exit_kind, seed=cfg.seed)
        kind = "LoRA (full-precision base)"
        if ft_cfg.load_in_4bit:
            import importlib.util

            kind = "QLoRA (NF4 base" + (")" if importlib.util.find_spec("kernels") else
                                        "; bitsandbytes' slower CPU 4-bit path: its fast kernel is a hub download)")
        say(f"[4/8] fine-tune: {kind} r={ft_cfg.rank} alpha={ft_cfg.alpha} lr={ft_cfg.lr} epochs={ft_cfg.epochs} "
            f"batch={ft_cfg.batch_size}" + (f", exits {list(trained_exits)} ({cfg.exit_kind}, LayerSkip loss "
                                            f"x{ft_cfg.exit_loss_weight:g})" if ft_cfg.exits else ""))
        try:
            result = finetune(base, train, work / "finetune", ft_cfg, heldout=held, resume=cfg.resume,
                              progress=progress, log=say)
        except FinetuneError as e:
            raise ConvertError(str(e)) from None
        if result.interrupted:
            raise ConvertError(f"fine-tuning stopped at step {result.steps}/{result.total_steps}; "
                               "run the same command with --resume to continue")
        if not main:
            return None
        timings["finetune"] = time.perf_counter() - t
        ft = result.to_dict()
        ft["loss_curve"] = _thin(result.history, 50)
        measurements["finetune"] = ft
        say(f"      {result.steps} steps, train loss (first/last steps) {result.loss_first:.4f} -> {result.loss_last:.4f}, "
            f"held-out loss {_f(result.heldout_loss_before)} -> {_f(result.heldout_loss_after)}, "
            f"{result.tokens_per_s:,.0f} tok/s")
        t = time.perf_counter()
        merged = merge_adapter(base, result.adapter_dir, work / "merged", into=cfg.merge_into)
        heads_dir = result.heads_dir if cfg.exit_kind != "shared" and not ee_tuning else None
        measurements["merge"] = {"into": cfg.merge_into, "dir": str(merged)}
        measurements["heldout_loss"]["finetuned"] = _hf_heldout_loss(merged, held)
        say(f"[5/8] merged into the {'NF4-dequantized' if cfg.merge_into == 'nf4' else 'full-precision'} base: {merged}")
        timings["merge"] = time.perf_counter() - t
    elif not main:
        return None
    else:
        say("[4/8] fine-tune: skipped (--epochs 0); packing the " + ("GQA model" if base != source else "model"))

    if ee_tuning and main:
        t = time.perf_counter()
        heads_dir, measurements["exit_training"] = _ee_tune(merged, train, held, trained_exits, work / "exit_heads",
                                                             cfg, say)
        timings["exit_training"] = time.perf_counter() - t

    # -- 6. pack, 7. measure ---------------------------------------------------------------
    t = time.perf_counter()
    staging = staging_dir(out)
    try:
        name = "builtin" if str(cfg.model) == BUILTIN else _slug(source.name)
        try:
            variants = pack_variants(merged, staging, quants, exits, heads_dir=heads_dir, name=name, threads=threads)
        except (ExportError, EarlyExitError) as e:
            raise ConvertError(f"packing variants: {e}") from None
        say(f"[6/8] packed {len(variants)} variant(s)")
        timings["pack"] = time.perf_counter() - t
        t = time.perf_counter()
        for i, v in enumerate(variants, 1):
            v.update(measure_variant(staging / v["path"], heldout=heldout_pairs, tasks=tasks, prompt_format=fmt,
                                     max_steps=cfg.eval_max_steps, threads=threads))
            say(f"[7/8] {i}/{len(variants)} {v['id']}: " + _quality_text(v["quality"])
                + f", KV {v['kv_cache_bytes_per_token']} B/token")
        variants, rejected = drop_worse_than_chance(variants, staging, int(config["vocab_size"]))
        for v in rejected:
            say(f"      left out {v['id']}: held-out loss {v['quality']['heldout_nll']:.2f} nats is worse than "
                f"guessing uniformly ({v['chance_nll']:.2f})")
        measurements["rejected_variants"] = rejected
        if not variants:
            raise ConvertError("every variant predicts the held-out actions worse than chance; nothing to pack")
        if cfg.reference:
            ref_path = work / "reference-f16.gguf"
            export(merged, ref_path, "f16", threads=threads)
            ref = measure_variant(ref_path, heldout=heldout_pairs, tasks=tasks, prompt_format=fmt,
                                  max_steps=cfg.eval_max_steps, threads=threads)
            measurements["reference"] = {"quant": "f16", "exit_layer": n_layers, **ref}
            say("      reference (f16, not shipped): " + _quality_text(ref["quality"]))
        timings["measure"] = time.perf_counter() - t

        # -- 8. publish --------------------------------------------------------------------
        timings["total"] = time.perf_counter() - t0
        measurements["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
        final_config = json.loads((Path(merged) / "config.json").read_text())
        source_model = {
            "name": BUILTIN if str(cfg.model) == BUILTIN else source.name, "path": str(source),
            "model_type": final_config.get("model_type"), "n_layers": n_layers,
            "hidden_size": final_config.get("hidden_size"),
            "num_attention_heads": final_config.get("num_attention_heads"),
            "num_key_value_heads": final_config.get("num_key_value_heads") or final_config.get("num_attention_heads"),
            "source_num_key_value_heads": config.get("num_key_value_heads") or config.get("num_attention_heads"),
            "gqa_groups": cfg.gqa_groups or 1, "vocab_size": final_config.get("vocab_size"),
            "fine_tuned": cfg.finetune.epochs > 0, "exit_heads": cfg.exit_kind if trained_exits else None,
        }
        tokenizer_info = {"class": type(tokenizer).__name__, "vocab_size": len(tokenizer),
                          "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
                          "chat_template": bool(getattr(tokenizer, "chat_template", None))}
        manifest = make_manifest(variants, source_model=source_model, prompt_format=fmt, tokenizer=tokenizer_info,
                                 measurements=measurements, profile=profile.name)
        write_manifest(staging, manifest)
        publish(staging, out)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    say(f"[8/8] bundle written: {out}/manifest.json ({len(variants)} variants, {timings['total'] / 60:.1f} min)")
    return manifest.to_dict()


def drop_worse_than_chance(variants: list[dict], staging: Path, vocab_size: int) -> tuple[list[dict], list[dict]]:
    """(kept, rejected): a variant whose held-out cross-entropy is above ln(vocab), the loss of
    a uniform guess, is not a model worth shipping (an untrained exit head measured 25 nats
    against 10.8); its file is removed from the staging directory."""
    chance = math.log(vocab_size)
    kept, rejected = [], []
    for v in variants:
        nll = v.get("quality", {}).get("heldout_nll")
        if nll is not None and nll > chance:
            (staging / v["path"]).unlink(missing_ok=True)
            rejected.append({"id": v["id"], "quality": v["quality"], "chance_nll": round(chance, 4)})
        else:
            kept.append(v)
    return kept, rejected


def _hf_heldout_loss(model_dir: Path, examples) -> float | None:
    """Held-out loss of an HF checkpoint in fp32 (transformers), on the target tokens."""
    if not examples:
        return None
    import torch
    from transformers import AutoModelForCausalLM

    from converters.finetune import _quiet_load, heldout_loss

    model = _quiet_load(AutoModelForCausalLM.from_pretrained, model_dir, dtype=torch.float32)
    loss, _ = heldout_loss(model, examples)
    del model
    return loss


def _quality_text(q: dict) -> str:
    parts = []
    if q.get("perplexity") is not None:
        parts.append(f"perplexity {q['perplexity']:.3f}")
    if q.get("task_success") is not None:
        parts.append(f"task success {q['task_success']:.0%} of {q.get('tasks')}")
    return ", ".join(parts) or "no held-out data"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _thin(history: list[dict], n: int) -> list[dict]:
    """At most ~n points of the loss curve (the first and last kept)."""
    if len(history) <= n:
        return history
    stride = len(history) / n
    picked = [history[int(i * stride)] for i in range(n)]
    return picked + ([history[-1]] if picked[-1] is not history[-1] else [])


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"
