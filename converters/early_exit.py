"""Early-exit heads: the loss, the heads, layer dropout, EE-Tuning, and packing exits as GGUF.

An *exit* at depth k reads the residual stream after the first k decoder blocks and turns it
into next-token logits with a norm + LM head. Two kinds:

- ``shared``: the model's own final norm and ``lm_head`` applied at layer k (LayerSkip,
  Elhoushi et al. 2024, arXiv:2404.16710). No new parameters; it only learns when the body
  does (inside the fine-tuning loop).
- ``dedicated``: a per-exit RMSNorm + Linear, initialised as copies of the final ones, so an
  untrained dedicated exit starts out equal to the shared one (EE-Tuning, Pan et al. 2024,
  arXiv:2402.00518: add exit heads to a trained model and train only them, body frozen).

The pieces, each a plain function:

- ``early_exit_loss``: Σ_k w_k · (α · CE_k + β · T² · KL(p_L^T ∥ p_k^T)), on the label mask.
  CE_k is next-token cross-entropy at exit k; the second term distils the final layer's
  distribution at temperature T into the exit (Hinton et al. 2015, arXiv:1503.02531: the
  soft-target gradients scale as 1/T², hence the T²). w_k is LayerSkip's per-layer scale
  (eq. 6 there: e(l) = Σ_{i≤l} i, normalised), rising with depth, or one the caller gives.
- ``layer_dropout``: LayerSkip's stochastic depth, p_l = p_max · (e^{l·ln2/(L-1)} − 1)
  (zero at the first layer, p_max at the last), training mode only.
- ``train_exits``: the EE-Tuning loop (body frozen, heads only) on agent traces, with
  atomic checkpoints and ``resume``.
- packing exits (``write_exit_model`` / ``pack_exits``) is torch-free and lives in the
  runtime, ``edgeagent.export.exit_pack``: an HF directory holding the first k blocks with
  the exit's norm and head as the model's own, so ``edgeagent.export.hf_to_gguf.export``
  packs each exit as its own GGUF (llama.cpp has no layer skipping and refuses files with
  unused tensors).

Conventions: an exit layer k counts blocks, 1 ≤ k ≤ L; k = L is the model's own output. With
transformers' ``output_hidden_states=True``, ``hidden_states[k]`` (k < L) is the residual
stream after k blocks, before any norm; ``hidden_states[L]`` is already final-normed, so the
final layer's logits are always taken from the model's own ``logits``.

Length (about 520 lines): the exit heads, their loss and their training loop in one place;
the GGUF packing of exits is the runtime's (``edgeagent.export.exit_pack``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from converters.schedule import warmup_cosine
from converters.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from edgeagent.atomic import atomic_path, write_text
from edgeagent.export.exit_pack import HEADS_FILE, HEADS_META, EarlyExitError, parse_exits

KINDS = ("shared", "dedicated", "lens")
LOSS_SCALES = ("sum_l", "l", "one")


# ---------------------------------------------------------------------------------------
# heads


def _decoder(model: nn.Module) -> nn.Module:
    """The inner decoder (``model.model`` for *ForCausalLM), through a peft wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def _lm_head(model: nn.Module) -> nn.Module:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.lm_head


def _n_layers(model: nn.Module) -> int:
    return len(_decoder(model).layers)


class ExitHeads(nn.Module):
    """Norm + LM head per exit layer.

    ``shared`` holds no parameters and applies the model's own final norm and ``lm_head``
    (the model is passed at call time, so no weight is registered twice). ``dedicated`` holds
    ``norms[str(k)]`` and ``heads[str(k)]``, float32 copies of the final ones. ``lens`` holds
    a norm and a d x d matrix ``lenses[str(k)]`` (identity at first) in front of the model's own
    frozen head: the tuned lens of Belrose et al. 2023 (arXiv:2303.08112) without its bias,
    since llama.cpp's output layer has none. It has d^2 parameters per exit instead of V x d
    (0.33M against 28M on SmolLM2), and packs as a dedicated head whose matrix is E W.
    """

    def __init__(self, model: nn.Module, exits: Sequence[int], kind: str = "dedicated"):
        super().__init__()
        if kind not in KINDS:
            raise EarlyExitError(f"exit head kind {kind!r} is unknown (choose from {', '.join(KINDS)})")
        n_layers = _n_layers(model)
        self.kind = kind
        self.n_layers = n_layers
        self.exits = [int(k) for k in exits if int(k) < n_layers]  # k = L is the model's own head
        if len(self.exits) != len(set(self.exits)) or any(k < 1 for k in self.exits):
            raise EarlyExitError(f"exit layers {list(exits)} must be distinct and in 1..{n_layers}")
        self.norms = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        self.lenses = nn.ModuleDict()
        self._unembed: torch.Tensor | None = None
        if kind in ("dedicated", "lens"):
            final_norm, final_head = _decoder(model).norm, _lm_head(model)
            weight = final_head.weight.detach().float()  # a dequantized copy if lm_head was quantized
            for k in self.exits:
                norm = copy.deepcopy(final_norm).float()
                for p in norm.parameters():
                    p.requires_grad_(True)
                self.norms[str(k)] = norm
                if kind == "dedicated":
                    head = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device)
                    with torch.no_grad():
                        head.weight.copy_(weight)
                    self.heads[str(k)] = head
                else:
                    lens = nn.Linear(weight.shape[1], weight.shape[1], bias=False, device=weight.device)
                    with torch.no_grad():
                        lens.weight.copy_(torch.eye(weight.shape[1]))
                    self.lenses[str(k)] = lens
            if kind == "lens":
                self._unembed = weight  # frozen, not a parameter: the packed head is unembed @ lens

    def logits(self, model: nn.Module, exit_layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits at `exit_layer` from the residual stream ``hidden`` (..., d)."""
        if self.kind == "shared":
            return _lm_head(model)(_decoder(model).norm(hidden))
        key = str(exit_layer)
        if key not in self.norms:
            raise EarlyExitError(f"no {self.kind} head for exit layer {exit_layer} (heads: {', '.join(self.norms)})")
        if self.kind == "lens":
            return _lm_head(model)(self.lenses[key](self.norms[key](hidden.float())))
        return self.heads[key](self.norms[key](hidden.float()))

    def head_tensors(self) -> dict[str, torch.Tensor]:
        """The heads' weights as saved and packed: ``norm.{k}.weight``, ``head.{k}.weight``; a
        lens exit's head is the model's unembedding times its lens (E (W x) = (E W) x), and its
        lens is kept too (``lens.{k}.weight``, d x d: what a shipped agent would carry)."""
        out = {}
        for k in self.exits:
            if self.kind == "shared":
                continue
            out[f"norm.{k}.weight"] = self.norms[str(k)].weight.detach().float().contiguous()
            if self.kind == "dedicated":
                out[f"head.{k}.weight"] = self.heads[str(k)].weight.detach().float().contiguous()
            else:
                lens = self.lenses[str(k)].weight.detach().float()
                out[f"lens.{k}.weight"] = lens.contiguous()
                out[f"head.{k}.weight"] = (self._unembed @ lens).contiguous()
        return out

    def load_head_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k in self.exits:
                self.norms[str(k)].weight.copy_(tensors[f"norm.{k}.weight"])
                if self.kind == "lens":
                    self.lenses[str(k)].weight.copy_(tensors[f"lens.{k}.weight"])
                else:
                    self.heads[str(k)].weight.copy_(tensors[f"head.{k}.weight"])


def exit_loss_weights(exits: Sequence[int], scale: str | Sequence[float] = "sum_l") -> list[float]:
    """Per-exit weights w_k, summing to 1.

    ``sum_l`` is LayerSkip's e(l) = Σ_{i=0}^{l} i (arXiv:2404.16710, eq. 6) at l = k: later
    exits weigh more, since they carry more of the model's quality. ``l`` is w ∝ k,
    ``one`` uniform; a sequence gives the weights directly (normalised here).
    """
    if not exits:
        return []
    if isinstance(scale, str):
        if scale == "sum_l":
            raw = [k * (k + 1) / 2 for k in exits]
        elif scale == "l":
            raw = [float(k) for k in exits]
        elif scale == "one":
            raw = [1.0] * len(exits)
        else:
            raise EarlyExitError(f"exit loss scale {scale!r} is unknown (choose from {', '.join(LOSS_SCALES)}, or give weights)")
    else:
        raw = [float(w) for w in scale]
        if len(raw) != len(exits) or any(w < 0 for w in raw) or sum(raw) <= 0:
            raise EarlyExitError(f"exit loss weights {list(scale)} must be {len(exits)} non-negative numbers, not all zero")
    total = sum(raw)
    return [w / total for w in raw]


def early_exit_loss(
    hidden_states: Sequence[torch.Tensor],
    labels: torch.Tensor,
    model: nn.Module,
    heads: ExitHeads,
    exits: Sequence[int],
    *,
    ce_weight: float = 1.0,
    kd_weight: float = 1.0,
    temperature: float = 2.0,
    final_logits: torch.Tensor | None = None,
    scale: str | Sequence[float] = "sum_l",
    teacher_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[int, dict[str, float]]]:
    """The extra loss the exits add to the normal language-model loss.

    total = Σ_k w_k · (ce_weight · CE_k + kd_weight · T² · KL(softmax(z_L/T) ∥ softmax(z_k/T)))

    - ``hidden_states``: transformers' ``output_hidden_states`` tuple (L+1 tensors (B, S, d));
      entry k < L is the residual stream after k blocks.
    - ``labels`` (B, S): the same labels the main loss uses (-100 = not a target); position t
      predicts ``labels[:, t+1]``, as transformers' causal-LM loss shifts them.
    - ``final_logits`` (B, S, V): the model's own logits, needed when ``kd_weight`` > 0; they
      are detached here (the teacher is the final layer, not trained by this term).
    - ``teacher_logits`` (N, V): instead of ``final_logits``, the model's logits at the target
      positions only, in ``labels``' row-major order (a model run with ``logits_to_keep``).
    - ``exits``: exit layers; any k ≥ L is skipped (that is the main loss). ``scale``: see
      ``exit_loss_weights``.

    Only positions with a label are projected to the vocabulary, so the cost is
    (exits × target tokens × V), not (exits × all tokens × V).

    Returns (loss tensor, {k: {"ce": float, "kd": float, "weight": float}}). With no exit below
    L the loss is a zero that still carries a graph-free tensor on the right device.

    Stable API: ``converters.finetune`` calls this inside its loop.
    """
    n_layers = len(hidden_states) - 1
    used = [int(k) for k in exits if int(k) < n_layers]
    if kd_weight > 0 and final_logits is None and teacher_logits is None:
        raise EarlyExitError("kd_weight > 0 needs final_logits (the model's own logits) as the distillation target")
    if temperature <= 0:
        raise EarlyExitError(f"temperature must be > 0, got {temperature}")
    device = hidden_states[0].device
    if not used:
        return torch.zeros((), device=device), {}

    target = labels[:, 1:]
    mask = target != -100  # (B, S-1)
    y = target[mask]  # (N,)
    if y.numel() == 0:
        return torch.zeros((), device=device), {k: {"ce": 0.0, "kd": 0.0, "weight": 0.0} for k in used}
    teacher = None
    if kd_weight > 0:
        at_targets = teacher_logits if teacher_logits is not None else final_logits[:, :-1][mask]
        teacher = F.log_softmax(at_targets.detach().float() / temperature, dim=-1)

    weights = exit_loss_weights(used, scale)
    total = torch.zeros((), device=device)
    per_exit: dict[int, dict[str, float]] = {}
    for k, w in zip(used, weights):
        z = heads.logits(model, k, hidden_states[k][:, :-1][mask]).float()  # (N, V)
        ce = F.cross_entropy(z, y)
        term = ce_weight * ce
        kd_value = 0.0
        if teacher is not None:
            student = F.log_softmax(z / temperature, dim=-1)
            # KL(teacher ∥ student), mean over target tokens, times T² (Hinton et al. 2015).
            kd = F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature**2
            term = term + kd_weight * kd
            kd_value = float(kd.detach())
        total = total + w * term
        per_exit[k] = {"ce": float(ce.detach()), "kd": kd_value, "weight": w}
    return total, per_exit


# ---------------------------------------------------------------------------------------
# layer dropout


def layer_dropout_probs(n_layers: int, p_max: float, curve: str = "exp") -> list[float]:
    """Per-layer drop probabilities rising with depth (LayerSkip, arXiv:2404.16710, eq. 3-4):
    ``exp``: p_l = p_max · (e^{l·ln2/(L−1)} − 1), ``linear``: p_max · l/(L−1), ``uniform``: p_max."""
    if not 0.0 <= p_max < 1.0:
        raise EarlyExitError(f"layer dropout p_max must be in [0, 1), got {p_max}")
    if n_layers == 1:
        return [0.0]
    if curve == "exp":
        return [p_max * (math.exp(l * math.log(2) / (n_layers - 1)) - 1) for l in range(n_layers)]
    if curve == "linear":
        return [p_max * l / (n_layers - 1) for l in range(n_layers)]
    if curve == "uniform":
        return [p_max] * n_layers
    raise EarlyExitError(f"layer dropout curve {curve!r} is unknown (choose from exp, linear, uniform)")


class LayerDropout:
    """Skips whole decoder layers at random during training: a dropped layer returns its input,
    so its residual update is skipped for the whole batch (and its compute saved).

        handle = layer_dropout(model, p_max=0.2)
        ...train...
        handle.remove()

    Inactive when the layer is in eval mode, so evaluation and export see the whole model.
    """

    def __init__(self, layers: Sequence[nn.Module], probs: Sequence[float], generator: random.Random):
        self.layers = list(layers)
        self.probs = list(probs)
        self.rng = generator
        self.dropped: list[int] = []  # layers skipped in the last forward (for tests and logs)
        self._originals = []
        for i, (layer, p) in enumerate(zip(self.layers, self.probs)):
            original = layer.forward
            self._originals.append(original)
            layer.forward = self._wrap(i, layer, original, p)

    def _wrap(self, index: int, layer: nn.Module, original: Callable, p: float) -> Callable:
        def forward(hidden_states, *args, **kwargs):
            if index == 0:
                self.dropped = []
            if layer.training and p > 0 and self.rng.random() < p:
                self.dropped.append(index)
                return hidden_states
            return original(hidden_states, *args, **kwargs)

        return forward

    def remove(self) -> None:
        for layer, original in zip(self.layers, self._originals):
            layer.forward = original
        self._originals = []


def layer_dropout(model: nn.Module, p_max: float, curve: str = "exp", seed: int = 0) -> LayerDropout:
    """Install LayerSkip layer dropout on the model's decoder layers (see ``LayerDropout``)."""
    layers = _decoder(model).layers
    return LayerDropout(layers, layer_dropout_probs(len(layers), p_max, curve), random.Random(seed))


# ---------------------------------------------------------------------------------------
# heads on disk


def save_heads(heads: ExitHeads, out_dir: str | os.PathLike, meta: dict) -> Path:
    """``exit_heads.safetensors`` (dedicated weights) + ``exit_heads.json``, each atomically.
    Shared heads write the json alone (they have no weights of their own)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a lens exit packs as a dedicated head (its own norm and output matrix); head_form says which
    meta = {"kind": "dedicated" if heads.kind == "lens" else heads.kind, "head_form": heads.kind,
            "exits": heads.exits, "n_layers": heads.n_layers, **meta}
    tensors = heads.head_tensors()
    path = out_dir / HEADS_FILE
    if tensors:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"kind": heads.kind, "exits": ",".join(map(str, heads.exits))})
    write_text(out_dir / HEADS_META, json.dumps(meta, indent=2))
    return path


# ---------------------------------------------------------------------------------------
# EE-Tuning: train the heads of a frozen model on agent traces


@dataclass
class ExitTrainConfig:
    steps: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    batch_tokens: int = 4096
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    temperature: float = 2.0
    scale: str = "sum_l"
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ckpt_every: int = 50
    holdout_tasks: int = 50  # whole tasks kept out for the held-out loss (train_exits)
    eval_batches: int = 4
    seq_len: int = 2048  # packed row length; longer examples (whole episodes) are left out
    seed: int = 0


def _lr_at(step: int, cfg: ExitTrainConfig) -> float:
    return warmup_cosine(step, peak=cfg.lr, floor=cfg.min_lr, warmup=cfg.warmup, total=cfg.steps)


def _frozen_forward(model, ids: torch.Tensor, lab: torch.Tensor, seg: torch.Tensor):
    """(output with every layer's hidden states, the final logits at the target positions in
    ``lab``'s row-major order) for a packed batch. The vocabulary projection runs only at
    positions where some row has a target: over a whole episode it would cost more than the body."""
    from converters.recipes.train_builtin import packed_forward

    mask = lab[:, 1:] != -100  # position t predicts token t+1
    keep = mask.any(0).nonzero().squeeze(1)
    out = packed_forward(model, ids, seg, output_hidden_states=True, logits_to_keep=keep)
    return out, out.logits[mask[:, keep]]


@torch.no_grad()
def exit_heldout_loss(model, heads: ExitHeads, batches) -> dict[int, float]:
    """Mean next-token cross-entropy per exit layer (the full model as layer L) on the
    target tokens of ``batches``; exp() of it is the held-out perplexity."""
    n_layers = _n_layers(model)
    sums: dict[int, float] = {k: 0.0 for k in [*heads.exits, n_layers]}
    count = 0
    for ids, lab, _plab, seg in batches:
        out, final = _frozen_forward(model, ids, lab, seg)
        mask = lab[:, 1:] != -100
        y = lab[:, 1:][mask]
        n = int(y.numel())
        if n == 0:
            continue
        for k in heads.exits:
            z = heads.logits(model, k, out.hidden_states[k][:, :-1][mask]).float()
            sums[k] += float(F.cross_entropy(z, y, reduction="sum"))
        sums[n_layers] += float(F.cross_entropy(final.float(), y, reduction="sum"))
        count += n
    return {k: v / max(1, count) for k, v in sums.items()}


def train_exits(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    exits: str | Sequence[int | float],
    kind: str = "dedicated",
    out_dir: str | os.PathLike = "exits",
    steps: int | None = None,
    lr: float | None = None,
    *,
    config: ExitTrainConfig | None = None,
    resume: bool = False,
    max_examples: int | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """EE-Tuning (arXiv:2402.00518) on a traces file: ``tune_exit_heads`` on its examples.

    ``data`` is a traces JSONL (``edgeagent traces``), rendered the way the model is prompted
    (``converters.data.prompt_format``: a chat model's template in the episode layout, one
    example per episode with the loss on every action; the plain format otherwise, token for
    token the built-in recipe's). ``config.holdout_tasks`` whole tasks are held out for the
    held-out loss. See ``tune_exit_heads`` for the rest.
    """
    from transformers import PreTrainedTokenizerFast

    from converters import data as data_mod

    cfg = copy.deepcopy(config) if config is not None else ExitTrainConfig()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise EarlyExitError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    fmt = data_mod.prompt_format(tokenizer)
    try:
        records = data_mod.read_records(Path(data)).records
    except data_mod.DataError as e:
        raise EarlyExitError(str(e)) from None
    groups = sorted({r.group for r in records})
    random.Random(1234).shuffle(groups)
    held_groups = set(groups[: min(cfg.holdout_tasks, max(0, len(groups) - 1))])
    train_rec = [r for r in records if r.group not in held_groups]
    held_rec = [r for r in records if r.group in held_groups]
    try:  # in the episode layout, encode_records makes one example of each episode's steps
        train, _ = data_mod.encode_records(tokenizer, train_rec, max_seq_len=cfg.seq_len, fmt=fmt)
        held, _ = data_mod.encode_records(tokenizer, held_rec, max_seq_len=cfg.seq_len, fmt=fmt)
    except data_mod.DataError as e:
        raise EarlyExitError(str(e)) from None
    if max_examples is not None:
        random.Random(cfg.seed).shuffle(train)
        train = train[:max_examples]
    if not train:
        raise EarlyExitError(f"{data}: no training examples left after holding out {cfg.holdout_tasks} tasks")
    return tune_exit_heads(model_dir, train, held, exits, kind, out_dir, steps, lr, config=cfg, resume=resume,
                           on_step=on_step, log=log, data_label=str(data))


def tune_exit_heads(
    model_dir: str | os.PathLike,
    train: Sequence,
    held: Sequence,
    exits: str | Sequence[int | float],
    kind: str = "dedicated",
    out_dir: str | os.PathLike = "exits",
    steps: int | None = None,
    lr: float | None = None,
    *,
    config: ExitTrainConfig | None = None,
    resume: bool = False,
    on_step: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = print,
    data_label: str = "",
) -> dict:
    """EE-Tuning (arXiv:2402.00518): freeze the model, train only dedicated exit heads.

    ``train`` and ``held`` are tokenized examples (``converters.data.Example``: input ids and
    labels, -100 where there is no target), the ones the fine-tune saw. Examples are packed
    into rows of ``config.seq_len`` tokens, each attending only to itself. The loss is
    ``early_exit_loss`` (CE + distillation from the frozen final layer), with every logit taken
    at the target positions only. Because the body is frozen, the full-depth model is exactly
    the one given: an exit can only add a variant, never damage the model.

    Checkpoints ``out_dir/exit_checkpoint.pt`` every ``ckpt_every`` steps (atomic);
    ``resume=True`` continues from it and ends where an uninterrupted run would (the batch
    stream is a function of the seed and is fast-forwarded). ``on_step(step, record)`` is
    called after every optimizer step (a test raises there to simulate a kill). Writes
    ``exit_heads.safetensors`` + ``exit_heads.json`` (exits, kind, losses) to ``out_dir`` and
    returns that metadata.
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from converters.recipes.train_builtin import make_batches

    cfg = copy.deepcopy(config) if config is not None else ExitTrainConfig()
    if steps is not None:
        cfg.steps = steps
    if lr is not None:
        cfg.lr = lr
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    say = log or (lambda _msg: None)
    if kind == "shared":
        raise EarlyExitError(
            "shared exits reuse the final norm and lm_head, so with the body frozen there is nothing to train: "
            "use kind='dedicated' here, or train shared exits inside the fine-tuning loop (converters.finetune)"
        )
    if not (model_dir / "config.json").is_file():
        raise EarlyExitError(f"{model_dir}: not a Hugging Face model directory (no config.json)")

    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n_layers = _n_layers(model)
    exit_layers = [k for k in parse_exits(exits, n_layers) if k < n_layers]
    if not exit_layers:
        raise EarlyExitError(f"no exit below the model's {n_layers} layers in {exits!r}; nothing to train")
    heads = ExitHeads(model, exit_layers, kind)

    def pairs(examples) -> list[tuple[list[int], list[int]]]:
        return [(list(e.input_ids), list(e.labels)) for e in examples if len(e.input_ids) <= cfg.seq_len]

    train_pairs, held_pairs = pairs(train), pairs(held)
    if not train_pairs:
        raise EarlyExitError(f"no training example fits in {cfg.seq_len} tokens")
    eval_batches = []
    if held_pairs:
        for batch in make_batches(held_pairs, cfg.batch_tokens, random.Random(0), seq_len=cfg.seq_len):
            eval_batches.append(batch)
            if len(eval_batches) >= cfg.eval_batches:
                break

    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "exit_checkpoint.pt"
    step, history, before = 0, [], None
    if resume and ckpt_path.is_file():
        try:
            state = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            raise EarlyExitError(str(e)) from None
        if state["exits"] != exit_layers or state["kind"] != kind:
            raise EarlyExitError(
                f"{ckpt_path}: checkpoint is for exits {state['exits']} ({state['kind']}), not {exit_layers} ({kind}); "
                "remove it or use another out_dir"
            )
        heads.load_state_dict(state["heads"])
        opt.load_state_dict(state["opt"])
        step, history, before = state["step"], state["history"], state["before"]
        say(f"resumed exit training at step {step}")
    if before is None:  # the heads as they start (a resumed run kept the first run's)
        before = exit_heldout_loss(model, heads, eval_batches) if eval_batches else {}

    batches = make_batches(train_pairs, cfg.batch_tokens, random.Random(cfg.seed), seq_len=cfg.seq_len)
    for _ in range(step):  # the stream is a pure function of the seed: replay it to the resume point
        next(batches)
    started, first_step = time.perf_counter(), step
    heads.train()
    while step < cfg.steps:
        ids, lab, _plab, seg = next(batches)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        with torch.no_grad():  # the body is frozen: no graph through it
            out, teacher = _frozen_forward(model, ids, lab, seg)
        loss, per_exit = early_exit_loss(
            out.hidden_states, lab, model, heads, exit_layers,
            ce_weight=cfg.ce_weight, kd_weight=cfg.kd_weight, temperature=cfg.temperature,
            teacher_logits=teacher, scale=cfg.scale,
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(heads.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        record = {"step": step, "loss": float(loss.detach()), "lr": _lr_at(step - 1, cfg),
                  "exits": {str(k): v for k, v in per_exit.items()}}
        history.append(record)
        if step % 10 == 0 or step == cfg.steps:
            rate = (step - first_step) / max(1e-9, time.perf_counter() - started)  # this run's steps
            say(f"exit step {step}/{cfg.steps} loss {record['loss']:.4f} "
                + " ".join(f"L{k}:ce={v['ce']:.3f}" for k, v in per_exit.items()) + f" ({60 * rate:.1f} steps/min)")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_path, {"heads": heads.state_dict(), "opt": opt.state_dict(), "step": step,
                                        "history": history, "before": before, "exits": exit_layers, "kind": kind})
        if on_step is not None:
            on_step(step, record)

    heads.eval()
    after = exit_heldout_loss(model, heads, eval_batches) if eval_batches else {}
    meta = {
        "source_model": str(model_dir),
        "data": data_label,
        "config": asdict(cfg),
        "steps": step,
        "train_examples": len(train_pairs),
        "heldout_examples": len(held_pairs),
        "train_seconds_this_run": round(time.perf_counter() - started, 2),
        "heldout_loss_before": {str(k): v for k, v in before.items()},
        "heldout_loss_after": {str(k): v for k, v in after.items()},
        "heldout_perplexity_after": {str(k): math.exp(min(v, 50.0)) for k, v in after.items()},
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    save_heads(heads, out_dir, meta)
    # the saved file must round-trip (a truncated write would fail here, not at packing time)
    load_file(str(out_dir / HEADS_FILE))
    return {"kind": kind, "exits": exit_layers, "n_layers": n_layers, **meta}
