"""QLoRA fine-tuning: one visible loop, torchtune style (a recipe, not a Trainer subclass).

QLoRA (Dettmers et al. 2023, arXiv:2305.14314): the base weights are frozen in 4-bit NF4
(bitsandbytes; on CPU from bitsandbytes 0.47, on CUDA where present), and low-rank adapters
B·A (Hu et al. 2021, arXiv:2106.09685) on every linear layer of the blocks are trained in
the compute dtype: W x + (alpha/r) · B A x.

Read top to bottom:

1. ``load_base``: the base in NF4 (``BitsAndBytesConfig``), ``peft.prepare_model_for_kbit_training``,
   LoRA on ``all-linear``, gradient checkpointing;
2. the early-exit heads of ``converters.early_exit`` when exits are asked for, trained at the
   same time: loss = LM loss + Σ_k w_k (CE_k + T²·KL), see ``early_exit_loss``;
3. ``finetune``: the loop. Each epoch's order is a function of (seed, epoch); a step's global
   batch is split across processes, so ``accelerate launch --num_processes N`` runs the same
   optimisation (gradients all-reduced by DDP, the loss normalised by the global number of
   target tokens); checkpoints every ``ckpt_every`` steps hold adapter, heads, optimizer,
   scheduler, every process's RNG state and the step (the data position follows from it),
   written atomically; ``resume=True`` continues and ends where an uninterrupted run ends;
4. ``merge_adapter``: the adapters merged into the full-precision base (or, as axolotl
   offers, into the NF4-dequantized base the adapters were trained against) -> an HF dir.

Scale-out: ``accelerate launch --multi_gpu --num_processes 2 -m converters.finetune --model DIR
--data TRACES.jsonl --out DIR``; nothing in the loop changes. ``--multi_gpu`` selects
accelerate's torchrun launcher: on GPUs one process per GPU over NCCL, on a CPU-only machine N
processes over gloo (``--cpu`` alone would start a single process).

Length (about 840 lines) on purpose: the loop is one visible function (``_finetune``), and
its checkpoint/resume, distributed reductions, progress lines and the adapter merge are the
helpers it calls, each next to the step that needs it (``convert`` and the recipes import
``FinetuneConfig``, ``finetune`` and ``merge_adapter`` from here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from converters.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from converters.data import IGNORE, Example
from converters.schedule import warmup_cosine
from edgeagent.agent.prompt import LAYOUTS
from edgeagent.atomic import atomic_dir, write_text

CHECKPOINT = "checkpoint.pt"
ADAPTER_DIR = "adapter"
HEADS_DIR = "exit_heads"
RESULT = "finetune.json"
QLORA_META = "qlora.json"  # how the base was loaded, for the NF4-dequantized merge
MERGE_MODES = ("full", "nf4")


class FinetuneError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass
class FinetuneConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    lr: float = 2e-4
    min_lr_ratio: float = 0.1  # cosine decay to lr * this
    warmup_steps: int = 10
    weight_decay: float = 0.0
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule is fitted to it)
    batch_size: int = 8  # examples per optimizer step, all processes together
    micro_batch_size: int = 8  # examples per forward pass on one process (accumulated up to batch_size)
    max_seq_len: int = 2048
    grad_clip: float = 1.0
    load_in_4bit: bool = True  # False: plain LoRA on a full-precision base
    compute_dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    gradient_checkpointing: bool = True
    target_modules: str = "all-linear"  # or a comma list: q_proj,k_proj,...
    exits: tuple[int, ...] = ()  # exit layers (< n_layers) trained with the early-exit loss
    exit_kind: str = "dedicated"  # dedicated | shared
    exit_ce_weight: float = 1.0
    exit_kd_weight: float = 1.0
    exit_temperature: float = 2.0
    exit_loss_weight: float = 1.0  # the whole early-exit term, added to the LM loss
    ckpt_every: int = 50
    keep_adapters: bool = False  # also keep each checkpoint's adapter (out_dir/adapters/step-N), to choose one later
    logits_at_targets_only: bool = True  # the vocabulary projection only where a label is (same loss, less memory)
    init_adapter: str | None = None  # a peft adapter directory whose LoRA weights start this run
    seed: int = 0

    # Fields that do not change the optimisation: a resumed run may change them.
    RESUMABLE = ("ckpt_every", "keep_adapters", "logits_at_targets_only")

    def trajectory(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in self.RESUMABLE}


@dataclass
class FinetuneResult:
    out_dir: str
    adapter_dir: str | None
    heads_dir: str | None
    steps: int
    total_steps: int
    epochs: int
    train_examples: int
    target_tokens: int
    seconds: float  # this process, this invocation
    tokens_per_s: float
    world_size: int
    resumed_from_step: int | None
    interrupted: bool
    loss_first: float | None  # train loss, mean of the first few steps (one batch is noisy)
    loss_last: float | None  # the same over the last few steps
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    exit_heldout_loss_after: dict[str, float] | None
    history: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self, history: bool = False) -> dict:
        d = asdict(self)
        if not history:
            d.pop("history")
        return d


# ---------------------------------------------------------------------------------------
# the model


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32  # CPU: fp32 compute (bitsandbytes dequantizes NF4 to it per matmul)
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise FinetuneError(f"compute dtype {name!r} is unknown (choose auto, float32, bfloat16 or float16)") from None


def bnb_config(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    # As in the QLoRA paper: NF4 storage, compute in `compute_dtype`. Double quantization
    # (quantizing the scales) saves ~0.4 bit/param and is left off: on a phone-sized model it
    # saves little, and off keeps the NF4-dequantized merge simple to reproduce.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=False)


def _quiet_load(fn: Callable, *args, **kwargs):
    """transformers/bitsandbytes print progress bars and deprecation notes on every load."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_base(model_dir: str | os.PathLike, cfg: FinetuneConfig, device: torch.device):
    """The frozen base, 4-bit NF4 when ``cfg.load_in_4bit``, with LoRA adapters on it."""
    # peft imports bitsandbytes, which warns on CPUs with AVX512-BF16 that its fast 4-bit kernel
    # (a hub download, `kernels`) is missing: plain LoRA never runs it, and QLoRA's log line says
    # which path runs (convert.py), so the warning is not repeated.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    compute_dtype = resolve_dtype(cfg.compute_dtype, device)
    device_map = {"": device.index if device.type == "cuda" else str(device)}
    if cfg.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise FinetuneError("4-bit QLoRA needs bitsandbytes >= 0.47 (pip install 'edgeagent[convert]'), "
                                "or train plain LoRA with load_in_4bit=False") from None
        model = _quiet_load(AutoModelForCausalLM.from_pretrained, model_dir,
                            quantization_config=bnb_config(compute_dtype), dtype=compute_dtype, device_map=device_map)
        # Casts norms to fp32 and freezes the base; checkpointing is enabled below, the
        # non-reentrant way (works with DDP and needs no input-grad hook).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        _keep_4bit_trainable(model)
    else:
        model = _quiet_load(AutoModelForCausalLM.from_pretrained, model_dir, dtype=compute_dtype).to(device)
        for p in model.parameters():
            p.requires_grad_(False)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    targets: str | list[str] = cfg.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lora = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    return _quiet_load(get_peft_model, model, lora)


def init_adapter_state(path: Path, model_dir: str | os.PathLike, model: nn.Module, cfg: FinetuneConfig) -> dict:
    """The LoRA weights a run starts from: a peft adapter directory (``OUT/adapters/step-N``) or
    a shipped delta file (``edgeagent/agents/NAME/delta.safetensors``, converted back)."""
    from safetensors.torch import load_file

    if path.is_dir():
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            raise FinetuneError(f"{weights}: no adapter to start from")
        return load_file(str(weights))
    if not path.is_file():
        raise FinetuneError(f"{path}: no adapter directory or delta file to start from")
    from converters.delta import DeltaError, delta_adapter_state

    prefix = "base_model.model."
    modules = [name[len(prefix):] for name, m in model.named_modules()
               if hasattr(m, "lora_A") and name.startswith(prefix) and len(getattr(m, "lora_A", {}))]
    config = json.loads((Path(model_dir) / "config.json").read_text())
    try:
        state = delta_adapter_state(path, config, modules, cfg.alpha / cfg.rank)
    except DeltaError as e:
        raise FinetuneError(str(e)) from None
    for key, value in state.items():
        want = tuple(model.get_parameter(key.replace(".weight", ".default.weight")).shape)
        if tuple(value.shape) != want:
            raise FinetuneError(f"{path}: {key} is {tuple(value.shape)}, this run's LoRA (rank {cfg.rank}) needs {want}")
    return {k: torch.from_numpy(v) for k, v in state.items()}


def _keep_4bit_trainable(model: nn.Module) -> None:
    """bitsandbytes 0.50 on CPUs with AVX512-BF16 repacks a Linear4bit's weight into an
    inference-only layout the first time it runs in eval mode without grad (e.g. a held-out
    evaluation), and keeps it: the packed path (``gemv_4bit``) then passes no gradient to the
    layer's input and fails on biases. Turning the repack off keeps every forward on the
    differentiable dequantize+matmul path, in training and evaluation alike."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


class Objective(nn.Module):
    """Model + exit heads as one module, so DDP sees (and all-reduces) every trained
    parameter, and the forward returns the loss the loop minimises."""

    def __init__(self, model: nn.Module, heads: nn.Module | None, cfg: FinetuneConfig):
        super().__init__()
        self.model = model
        self.heads = heads
        self.cfg = cfg

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, scale: float):
        """Returns (loss to backpropagate, summed LM cross-entropy, number of target tokens,
        per-exit stats). ``scale`` = world_size / global target tokens, so the loss DDP
        averages over processes is the token mean over the whole global batch."""
        want_hidden = self.heads is not None
        target = labels[:, 1:]
        mask = target != IGNORE  # (B, S-1): position t predicts token t+1
        # Logits only where some row has a target: the vocabulary projection at every position
        # (49k x sequence) is most of a small model's training memory and much of its time.
        keep = mask.any(0).nonzero().squeeze(1)
        if not self.cfg.logits_at_targets_only:
            keep = torch.arange(target.shape[1], device=target.device)
        out = self.model(input_ids=input_ids, output_hidden_states=want_hidden, use_cache=False, logits_to_keep=keep)
        logits = out.logits.float()  # (B, K, V)
        n_tokens = int(mask.sum())
        ce_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target[:, keep].reshape(-1),
                                 ignore_index=IGNORE, reduction="sum")
        loss = ce_sum * scale
        per_exit: dict = {}
        if self.heads is not None and n_tokens:
            from converters.early_exit import early_exit_loss

            ee, per_exit = early_exit_loss(
                out.hidden_states, labels, self.model, self.heads, self.cfg.exits,
                ce_weight=self.cfg.exit_ce_weight, kd_weight=self.cfg.exit_kd_weight,
                temperature=self.cfg.exit_temperature, teacher_logits=out.logits[mask[:, keep]],
            )
            loss = loss + self.cfg.exit_loss_weight * ee * n_tokens * scale  # its token mean, reweighted
        return loss, ce_sum.detach(), n_tokens, per_exit


# ---------------------------------------------------------------------------------------
# data order


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def global_batch(order: list[int], step_in_epoch: int, batch_size: int) -> list[int]:
    return order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]


def collate(examples: Sequence[Example], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels); padding carries no loss, and a causal model never
    attends forward, so no attention mask is needed."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
    return ids.to(device), labels.to(device)


def data_fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input_ids, e.labels]).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def heldout_loss(model: nn.Module, examples: Sequence[Example], *, batch_size: int = 8,
                 heads: nn.Module | None = None) -> tuple[float | None, dict[str, float]]:
    """Mean next-token cross-entropy on the target tokens (exp of it: perplexity), and the
    same per exit layer when ``heads`` are given."""
    if not examples:
        return None, {}
    was_training = model.training
    model.eval()
    device = next(p for p in model.parameters()).device
    total, count = 0.0, 0
    exit_sums: dict[int, float] = {}
    for i in range(0, len(examples), batch_size):
        ids, labels = collate(examples[i:i + batch_size], device)
        out = model(input_ids=ids, output_hidden_states=heads is not None, use_cache=False)
        target = labels[:, 1:]
        total += float(F.cross_entropy(out.logits[:, :-1].float().reshape(-1, out.logits.shape[-1]),
                                       target.reshape(-1), ignore_index=IGNORE, reduction="sum"))
        count += int((target != IGNORE).sum())
        if heads is not None:
            mask = target != IGNORE
            for k in heads.exits:
                z = heads.logits(model, k, out.hidden_states[k][:, :-1][mask]).float()
                exit_sums[k] = exit_sums.get(k, 0.0) + float(F.cross_entropy(z, target[mask], reduction="sum"))
    if was_training:
        model.train()
    return total / max(1, count), {str(k): v / max(1, count) for k, v in exit_sums.items()}


# ---------------------------------------------------------------------------------------
# checkpoints


def _atomic_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Write a directory next to its place, then swap it in (old one removed after)."""
    with atomic_dir(out_dir) as tmp:
        write(tmp)


def trainable_state(model: nn.Module, heads: nn.Module | None) -> dict:
    from peft import get_peft_model_state_dict

    return {"adapter": {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()},
            "heads": {k: v.detach().cpu().clone() for k, v in heads.state_dict().items()} if heads is not None else None}


# ---------------------------------------------------------------------------------------
# the loop


def finetune(
    model_dir: str | os.PathLike,
    train: Sequence[Example],
    out_dir: str | os.PathLike,
    cfg: FinetuneConfig | None = None,
    *,
    heldout: Sequence[Example] = (),
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Train LoRA adapters (and exit heads) on ``train``; write ``out_dir/adapter`` (peft
    format), ``out_dir/exit_heads`` and ``out_dir/finetune.json``.

    ``stop_after``: leave after that many optimizer steps in total, without a final
    checkpoint or adapter (what a kill does; for tests). SIGINT/SIGTERM stop the run after the
    current step with a checkpoint written. ``resume`` continues from ``out_dir/checkpoint.pt``.
    Under ``accelerate launch`` every process calls this with the same arguments.
    """
    with warnings.catch_warnings():
        # transformers 5 renamed gradient checkpointing to activation checkpointing; peft
        # still asks under the old name on every forward.
        warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning)
        return _finetune(model_dir, train, out_dir, cfg, heldout=heldout, resume=resume, stop_after=stop_after,
                         progress=progress, log=log)


def _finetune(model_dir, train, out_dir, cfg, *, heldout, resume, stop_after, progress, log) -> FinetuneResult:
    from accelerate import Accelerator

    cfg = cfg or FinetuneConfig()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    say = (log or (lambda m: print(m, file=sys.stderr, flush=True))) if main else (lambda m: None)
    if not train:
        raise FinetuneError("no training examples")
    if cfg.batch_size < world:
        raise FinetuneError(f"batch_size {cfg.batch_size} is smaller than the {world} processes; each needs an example")
    steps_per_epoch = len(train) // cfg.batch_size
    if steps_per_epoch == 0:
        raise FinetuneError(f"{len(train)} training examples do not fill one batch of {cfg.batch_size}; "
                            "lower the batch size or add data")
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    # A warm-up longer than a tenth of a short run would be most of it.
    warmup_steps = min(cfg.warmup_steps, max(1, total_steps // 10))
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    torch.manual_seed(cfg.seed + rank)
    random.seed(cfg.seed + rank)
    model = load_base(model_dir, cfg, accelerator.device)
    if cfg.init_adapter:  # continue from an earlier run's adapter (a warm start; the optimizer starts afresh)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, init_adapter_state(Path(cfg.init_adapter), model_dir, model, cfg))
    heads = None
    if cfg.exits:
        from converters.early_exit import ExitHeads

        heads = ExitHeads(model, cfg.exits, cfg.exit_kind).to(accelerator.device)
        if not heads.exits:
            heads = None  # exits only at full depth: nothing to train
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(heads.parameters()) if heads is not None else []
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_lambda(step: int) -> float:  # a multiplier of cfg.lr: linear warm-up, cosine decay to min_lr_ratio
        return warmup_cosine(step, peak=1.0, floor=cfg.min_lr_ratio, warmup=warmup_steps, total=total_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    heldout_before = None
    if heldout and not (resume and (out_dir / CHECKPOINT).is_file()):
        heldout_before, _ = heldout_loss(model, heldout, batch_size=cfg.micro_batch_size)

    fingerprint = data_fingerprint(train)
    step, history, resumed_from = 0, [], None
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.is_file():
        try:
            state = load_checkpoint(ckpt_path, restore_rng=False)  # this rank's RNG state is restored below
        except CheckpointError as e:
            raise FinetuneError(str(e)) from None
        _check_resumable(state, cfg, fingerprint, world, ckpt_path)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state["adapter"])
        if heads is not None:
            heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][rank])
        step, history = state["step"], state["history"]
        heldout_before = state.get("heldout_loss_before")
        resumed_from = step
        say(f"resumed from {ckpt_path} at step {step}/{total_steps}")
    elif resume:
        say(f"no checkpoint at {ckpt_path}; starting from step 0")

    objective = Objective(model, heads, cfg)
    # Only model and optimizer go through accelerate: a prepared scheduler would step once
    # per process, and the data order is ours (a global batch split across processes).
    objective, optimizer = accelerator.prepare(objective, optimizer)
    objective.train()

    stop_requested = {"signal": None}

    def on_signal(signum, _frame):
        stop_requested["signal"] = signum

    handlers = {}  # every process stops at the same step: the flag is summed across them below
    if hasattr(signal, "SIGTERM"):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: no handlers, a kill is still resumable
            handlers = {}

    def checkpoint_now() -> None:
        rng_states = accelerator_gather_objects(accelerator, rng_state())
        if main:
            trained = trainable_state(accelerator.unwrap_model(objective).model, heads)
            save_checkpoint(ckpt_path, {
                "adapter": trained["adapter"], "heads": trained["heads"],
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_states, "step": step, "epoch": step // steps_per_epoch,
                "step_in_epoch": step % steps_per_epoch, "world_size": world,
                "config": cfg.trajectory(), "data": fingerprint, "history": history,
                "heldout_loss_before": heldout_before,
            }, with_rng=False)  # every rank's RNG state, gathered above
            if cfg.keep_adapters:
                snapshot = out_dir / "adapters" / f"step-{step}"
                unwrapped_model = accelerator.unwrap_model(objective).model
                _atomic_dir(snapshot, lambda tmp: _save_adapter(unwrapped_model, tmp, model_dir, cfg))
                if heads is not None:
                    from converters.early_exit import save_heads

                    _atomic_dir(snapshot.with_name(f"heads-{step}"), lambda tmp: save_heads(heads, tmp, {
                        "source_model": str(model_dir), "step": step}))
        accelerator.wait_for_everyone()

    started = time.perf_counter()
    tokens_seen = 0
    interrupted = False
    bar = _progress(main and progress, total_steps, step)
    try:
        while step < total_steps:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            batch = global_batch(epoch_order(len(train), cfg.seed, epoch), in_epoch, cfg.batch_size)
            mine = [train[i] for i in batch[rank::world]]
            target_local = sum(e.n_target_tokens for e in mine)
            target_global = _sum_across(accelerator, target_local)
            scale = world / max(1, target_global)
            micro = [mine[i:i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)]
            ce_sum, exit_stats = 0.0, {}
            for j, chunk in enumerate(micro):
                ids, labels = collate(chunk, accelerator.device)
                sync = accelerator.no_sync(objective) if j < len(micro) - 1 else _nullcontext()
                with sync:
                    loss, ce, _n, per_exit = objective(ids, labels, scale)
                    accelerator.backward(loss)
                ce_sum += float(ce)
                tokens_seen += sum(len(e.input_ids) for e in chunk)  # real tokens, not padding
                for k, v in per_exit.items():  # logged: the last micro-batch's exit CE
                    exit_stats[str(k)] = round(v["ce"], 5)
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss_value = _sum_across(accelerator, ce_sum, float) / max(1, target_global)
            record = {"step": step, "epoch": epoch, "loss": round(loss_value, 6),
                      "lr": optimizer.param_groups[0]["lr"], "target_tokens": target_global}
            if exit_stats:
                record["exit_ce"] = exit_stats
            history.append(record)
            elapsed = time.perf_counter() - started
            if bar is not None:
                bar.update(step, loss_value, tokens_seen * world / max(elapsed, 1e-9))
            stop_now = stop_requested["signal"] is not None
            if world > 1:
                stop_now = bool(_sum_across(accelerator, int(stop_now)))
            if step % cfg.ckpt_every == 0 or stop_now:
                checkpoint_now()
            if stop_now:
                interrupted = True
                say(f"stopped by signal at step {step}/{total_steps}; checkpoint {ckpt_path} (continue with --resume)")
                break
            if stop_after is not None and step >= stop_after and step < total_steps:
                interrupted = True
                break
    finally:
        if bar is not None:
            bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    seconds = time.perf_counter() - started
    unwrapped = accelerator.unwrap_model(objective).model
    result = FinetuneResult(
        out_dir=str(out_dir), adapter_dir=None, heads_dir=None, steps=step, total_steps=total_steps,
        epochs=cfg.epochs, train_examples=len(train), target_tokens=sum(r["target_tokens"] for r in history),
        seconds=round(seconds, 3), tokens_per_s=round(tokens_seen * world / max(seconds, 1e-9), 1), world_size=world,
        resumed_from_step=resumed_from, interrupted=interrupted,
        loss_first=_mean_loss(history[:_ends(history)]), loss_last=_mean_loss(history[-_ends(history):]),
        heldout_loss_before=heldout_before, heldout_loss_after=None, exit_heldout_loss_after=None, history=history,
    )
    if interrupted:
        return result

    if heldout:
        result.heldout_loss_after, exits_after = heldout_loss(unwrapped, heldout, batch_size=cfg.micro_batch_size,
                                                              heads=heads)
        result.exit_heldout_loss_after = exits_after or None
    if step % cfg.ckpt_every:  # the final state, so a later --resume finds the run finished
        checkpoint_now()
    result.adapter_dir = str(out_dir / ADAPTER_DIR)
    result.heads_dir = str(out_dir / HEADS_DIR) if heads is not None else None
    if main:
        _atomic_dir(out_dir / ADAPTER_DIR, lambda tmp: _save_adapter(unwrapped, tmp, model_dir, cfg))
        if heads is not None:
            from converters.early_exit import save_heads

            _atomic_dir(out_dir / HEADS_DIR, lambda tmp: save_heads(heads, tmp, {
                "source_model": str(model_dir), "trained_with": "converters.finetune (QLoRA + early-exit loss)",
                "heldout_loss_after": result.exit_heldout_loss_after}))
        text = json.dumps({**result.to_dict(history=True), "config": asdict(cfg)}, indent=2)
        write_text(out_dir / RESULT, text)
    accelerator.wait_for_everyone()
    return result


def _ends(history: list[dict]) -> int:
    """How many steps at each end of the curve to average: up to 5, at most a quarter of it."""
    return max(1, min(5, len(history) // 4))


def _mean_loss(records: list[dict]) -> float | None:
    return round(sum(r["loss"] for r in records) / len(records), 6) if records else None


def _save_adapter(model, tmp: Path, model_dir: Path, cfg: FinetuneConfig) -> None:
    model.save_pretrained(tmp)
    (tmp / QLORA_META).write_text(json.dumps({
        "base_model": str(model_dir), "load_in_4bit": cfg.load_in_4bit, "quant_type": "nf4",
        "double_quant": False, "compute_dtype": cfg.compute_dtype}, indent=2))


def _check_resumable(state: dict, cfg: FinetuneConfig, fingerprint: str, world: int, path: Path) -> None:
    saved = state.get("config", {})
    changed = [k for k, v in cfg.trajectory().items() if _norm(saved.get(k)) != _norm(v)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise FinetuneError(f"{path}: the checkpoint was made with other settings ({diffs}); "
                            "resume with the same settings, or remove the checkpoint to start over")
    if state.get("data") != fingerprint:
        raise FinetuneError(f"{path}: the checkpoint was made on other training data; resume with the same "
                            "data and split, or remove the checkpoint to start over")
    if state.get("world_size") != world:
        raise FinetuneError(f"{path}: the checkpoint was made by {state.get('world_size')} process(es), this run has "
                            f"{world}; resume with the same number (the per-process RNG streams differ)")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _sum_across(accelerator, value, kind=int):
    """Sum a number over processes (itself when there is one)."""
    if accelerator.num_processes == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device)
    total = float(accelerator.reduce(t, reduction="sum").item())
    return kind(round(total)) if kind is int else total


def accelerator_gather_objects(accelerator, obj: Any) -> list:
    if accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


class _Bar:
    """A rich progress bar with loss and tokens/s (stderr; only on the main process)."""

    def __init__(self, total: int, start: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("fine-tune"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self.task = self.progress.add_task("steps", total=total, completed=start, loss="-", tps="-")
        self.progress.start()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_s:,.0f}")

    def close(self) -> None:
        self.progress.stop()


class _LogLines:
    """Progress for a run in the background (stderr is a file): one plain line per step."""

    def __init__(self, total: int, start: int):
        self.total = total

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        print(f"fine-tune step {step}/{self.total} loss {loss:.4f} {tokens_per_s:,.0f} tok/s "
              f"{time.strftime('%H:%M:%S')}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int, start: int) -> _Bar | _LogLines | None:
    if not enabled:
        return None
    return _Bar(total, start) if sys.stderr.isatty() else _LogLines(total, start)


# ---------------------------------------------------------------------------------------
# merging


def merge_adapter(base_dir: str | os.PathLike, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  into: str = "full", dtype: torch.dtype = torch.float32) -> Path:
    """The adapters merged into the base: W' = W + (alpha/r) B A, saved as an HF directory.

    ``into="full"``: into the original full-precision weights (QLoRA's recommendation: the
    4-bit copy was only the training-time stand-in). ``into="nf4"``: into the NF4-dequantized
    weights the adapters were trained against (axolotl's option), so the merged model computes
    exactly what the QLoRA model computed, quantization error included.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if into not in MERGE_MODES:
        raise FinetuneError(f"merge mode {into!r} is unknown (choose full or nf4)")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FinetuneError(f"{adapter_dir}: no adapter_config.json (not a peft adapter directory)")
    if into == "nf4":
        model = _quiet_load(AutoModelForCausalLM.from_pretrained, base_dir, quantization_config=bnb_config(dtype),
                            dtype=dtype, device_map={"": "cpu"})
        model = _quiet_load(model.dequantize, dtype=dtype)
    else:
        model = _quiet_load(AutoModelForCausalLM.from_pretrained, base_dir, dtype=dtype)
    model = _quiet_load(PeftModel.from_pretrained, model, adapter_dir)
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(merged.config, attr):
            delattr(merged.config, attr)
    if hasattr(merged, "hf_quantizer"):
        merged.hf_quantizer = None
    merged.is_quantized = False
    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    def write(tmp: Path) -> None:
        _quiet_load(merged.save_pretrained, tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "merge.json").write_text(json.dumps({"base_model": str(base_dir), "adapter": str(adapter_dir),
                                                    "into": into, "dtype": str(dtype).replace("torch.", "")}, indent=2))
        config = json.loads((tmp / "config.json").read_text())
        if config.pop("quantization_config", None) is not None:
            (tmp / "config.json").write_text(json.dumps(config, indent=2))

    _atomic_dir(out_dir, write)
    return out_dir


# ---------------------------------------------------------------------------------------
# command line (the entry point for `accelerate launch -m converters.finetune`)


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoTokenizer

    from converters.data import DataError, encode_records, prompt_format, read_records, split_heldout

    p = argparse.ArgumentParser(description="QLoRA fine-tuning on agent traces or chat JSONL.")
    p.add_argument("--model", type=Path, required=True, help="Hugging Face model directory")
    p.add_argument("--data", type=Path, required=True, nargs="+", help="JSONL: `edgeagent traces` output or chat")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--holdout", type=float, default=0.1, help="share of tasks/records held out for the loss")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--skip-bad-lines", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, help="leave after N steps without saving (tests)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--merge", choices=("none",) + MERGE_MODES, default="none",
                   help="merge the adapter into the base afterwards (into OUT/merged)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--layout", choices=LAYOUTS, default="episode",
                   help="a chat model's prompt layout: one example per episode (delta: screens as their changes), "
                   "or one per step")
    for f in fields(FinetuneConfig):
        if f.name == "exits":
            p.add_argument("--exits", type=lambda s: tuple(int(x) for x in s.split(",") if x), default=())
        elif isinstance(f.default, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"max_steps": int, "init_adapter": str}.get(f.name, type(f.default))  # those two may be unset
            p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    try:
        data = read_records(args.data, skip_bad=args.skip_bad_lines)
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        train_records, held_records = split_heldout(data.records, args.holdout, cfg.seed)
        fmt = prompt_format(tokenizer)
        fmt = fmt.with_layout(args.layout) if fmt.kind == "chat" else fmt
        train, _ = encode_records(tokenizer, train_records, max_seq_len=cfg.max_seq_len, fmt=fmt)
        held, _ = encode_records(tokenizer, held_records, max_seq_len=cfg.max_seq_len, fmt=fmt)
        result = finetune(args.model, train, args.out, cfg, heldout=held, resume=args.resume,
                          stop_after=args.stop_after, progress=not args.no_progress)
    except (DataError, FinetuneError) as e:
        sys.exit(f"error: {e}")
    from accelerate import PartialState

    if PartialState().is_main_process:
        if args.merge != "none" and not result.interrupted:
            merge_adapter(args.model, result.adapter_dir, args.out / "merged", into=args.merge)
        print(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
