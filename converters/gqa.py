"""Multi-head attention -> grouped-query attention by mean-pooling key and value heads.

GQA (Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
Multi-Head Checkpoints", arXiv:2305.13245) lets several query heads share one key/value
head. An MHA checkpoint is converted by replacing each group of key (and value) heads with
their mean, which the paper found better than keeping the group's first head or a random
init; a short "uptraining" run then recovers most of the quality (here: the QLoRA
fine-tuning run of ``edgeagent convert``).

``G`` here is the group *size*: ``G`` query heads share each KV head, so
``num_key_value_heads`` becomes ``num_key_value_heads / G`` (``num_attention_heads / G`` for
an MHA model) and the KV cache shrinks by ``G``. (The paper's "GQA-8" counts groups
instead.) Groups are contiguous: KV head ``j`` of the result is the mean of the original KV
heads ``j*G .. j*G+G-1``, which the query heads ``j*G*r .. (j+1)*G*r-1`` used (``r`` = query
heads per original KV head), exactly the heads that will share it under transformers' and
llama.cpp's GQA layout (query head ``h`` reads KV head ``h // (n_heads / n_kv_heads)``).

Works on the checkpoint's tensors directly (safetensors in, safetensors out, dtype kept), so
nothing but the K/V projections and ``num_key_value_heads`` changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeagent.atomic import atomic_dir

SUPPORTED = ("llama", "mistral", "qwen2")
_KV_TENSOR = re.compile(r"^model\.layers\.\d+\.self_attn\.(k_proj|v_proj)\.(weight|bias)$")
_WEIGHT_FILES = re.compile(r"^(model.*\.safetensors|model\.safetensors\.index\.json|pytorch_model.*\.bin(\.index\.json)?)$")


class GQAError(ValueError):
    """The model cannot be converted; the message says which value and what would work."""


@dataclass
class GQAResult:
    out_dir: str
    groups: int
    num_attention_heads: int
    kv_heads_before: int
    kv_heads_after: int
    head_dim: int
    n_layers: int
    pooled_tensors: int
    params_before: int
    params_after: int

    @property
    def kv_cache_ratio(self) -> float:
        """KV-cache bytes after / before (by the formula; measured in llama.cpp by the tests)."""
        return self.kv_heads_after / self.kv_heads_before

    def to_dict(self) -> dict:
        return {**asdict(self), "kv_cache_ratio": self.kv_cache_ratio}


def pool_kv_heads(tensor, n_kv_heads: int, groups: int, head_dim: int):
    """Mean of each contiguous group of ``groups`` heads of a K or V projection weight
    ``(n_kv_heads*head_dim, hidden)`` or bias ``(n_kv_heads*head_dim,)``: the mean computed in
    float64 and rounded once to the input's dtype."""
    rest = tuple(tensor.shape[1:])
    if tensor.shape[0] != n_kv_heads * head_dim:
        raise GQAError(f"K/V projection has {tensor.shape[0]} rows, expected {n_kv_heads} heads x {head_dim}")
    pooled = tensor.double().reshape(n_kv_heads // groups, groups, head_dim, *rest).mean(dim=1)
    return pooled.reshape(n_kv_heads // groups * head_dim, *rest).to(tensor.dtype).contiguous()


def check_groups(config: dict, groups: int, where: str = "config.json") -> tuple[int, int, int]:
    """(num_attention_heads, kv heads before, head_dim), or GQAError saying what would work."""
    model_type = config.get("model_type")
    if model_type not in SUPPORTED:
        raise GQAError(f"{where}: model_type {model_type!r} is not supported for GQA conversion "
                       f"(supported: {', '.join(SUPPORTED)})")
    n_heads = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_heads)
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_heads)
    if not isinstance(groups, int) or groups < 1:
        raise GQAError(f"--gqa-groups must be a positive integer, got {groups!r}")
    if n_kv % groups:
        divisors = [d for d in range(1, n_kv + 1) if n_kv % d == 0]
        raise GQAError(
            f"{where}: num_key_value_heads = {n_kv} is not divisible by G = {groups} "
            f"(G query heads share each KV head; choose G from {', '.join(map(str, divisors))})")
    return n_heads, n_kv, head_dim


def convert_to_gqa(model_dir: str | os.PathLike, groups: int, out_dir: str | os.PathLike) -> GQAResult:
    """Write a copy of the HF checkpoint in ``model_dir`` to ``out_dir`` with every group of
    ``groups`` KV heads mean-pooled into one. ``out_dir`` appears whole or not at all."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise GQAError(f"{config_path}: missing (not a Hugging Face model directory?)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    n_heads, n_kv, head_dim = check_groups(config, groups, str(config_path))

    shards = _weight_shards(model_dir)
    pooled = params_before = params_after = 0
    weight_map: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        for shard in shards:
            if shard.suffix == ".bin":
                state = torch.load(shard, map_location="cpu", weights_only=True)
            else:
                with safe_open(shard, framework="pt") as f:
                    state = {name: f.get_tensor(name) for name in f.keys()}
            out_state = {}
            for name, tensor in state.items():
                params_before += tensor.numel()
                if _KV_TENSOR.match(name) and groups > 1:
                    tensor = pool_kv_heads(tensor, n_kv, groups, head_dim)
                    pooled += 1
                params_after += tensor.numel()
                out_state[name] = tensor.contiguous()
            out_name = shard.name if shard.suffix == ".safetensors" else shard.name.replace(
                "pytorch_model", "model").replace(".bin", ".safetensors")
            save_file(out_state, str(tmp / out_name), metadata={"format": "pt"})
            weight_map.update({name: out_name for name in out_state})
        if len(shards) > 1:
            total = sum((tmp / f).stat().st_size for f in set(weight_map.values()))
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        if groups > 1 and pooled == 0:
            raise GQAError(f"{model_dir}: no self_attn.k_proj/v_proj tensors found to pool")
        for item in model_dir.iterdir():  # tokenizer, generation config, cards: copied as they are
            if item.is_file() and item.name != "config.json" and not _WEIGHT_FILES.match(item.name):
                shutil.copy2(item, tmp / item.name)
        config["num_key_value_heads"] = n_kv // groups
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return GQAResult(
        out_dir=str(out_dir), groups=groups, num_attention_heads=n_heads, kv_heads_before=n_kv,
        kv_heads_after=n_kv // groups, head_dim=head_dim, n_layers=int(config["num_hidden_layers"]),
        pooled_tensors=pooled, params_before=params_before, params_after=params_after,
    )


def _weight_shards(model_dir: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = model_dir / index_name
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [f for f in files if not (model_dir / f).is_file()]
            if missing:
                raise GQAError(f"{model_dir / missing[0]}: listed in {index_name} but missing")
            return [model_dir / f for f in files]
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise GQAError(f"{model_dir}: no model.safetensors, safetensors index or pytorch_model.bin")
