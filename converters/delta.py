"""A fine-tune as a small delta file the runtime merges torch-free (``edgeagent.merge``).

A peft LoRA adapter stores, per adapted linear layer, A (r x in) and B (out x r) under HF
names, with the scale alpha/r in its config. The runtime works in GGUF names and llama.cpp's
row order, so this writes ``<gguf name>.lora_a`` = A and ``<gguf name>.lora_b`` = (alpha/r) B,
with B's rows permuted as the exporter permutes Q and K (``permute_rotary``): then
``W_gguf + lora_b @ lora_a`` is exactly the export of the merged HF weight.

Exit heads trained by ``converters.early_exit`` go in as ``exit.<k>.output_norm.weight`` and
``exit.<k>.output.weight`` (dedicated heads only; a shared exit is the final norm and head).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from edgeagent.atomic import atomic_path
from edgeagent.export.hf_to_gguf import gguf_name, permute_rotary, unpermute_rotary

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


class DeltaError(Exception):
    pass


def adapter_delta(adapter_dir: Path, config: dict) -> dict[str, np.ndarray]:
    """A peft adapter directory -> {gguf name + '.lora_a'/'.lora_b': array}."""
    adapter_dir = Path(adapter_dir)
    try:
        acfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as e:
        raise DeltaError(f"{adapter_dir}: not a peft LoRA adapter ({e})") from None
    scale = float(acfg["lora_alpha"]) / float(acfg["r"])
    model_type = config.get("model_type", "llama")
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    out: dict[str, np.ndarray] = {}
    for key, value in tensors.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise DeltaError(f"{adapter_dir}: unexpected adapter tensor {key!r}")
        name = gguf_name(m["module"] + ".weight", model_type)
        if name is None:
            raise DeltaError(f"{adapter_dir}: {key!r} adapts a tensor the GGUF does not have")
        value = value.astype(np.float32)
        if m["ab"] == "B":
            value = value * scale
            if model_type in ("llama", "mistral") and name.split(".")[-2] in ("attn_q", "attn_k"):
                value = permute_rotary(value, n_head if ".attn_q." in name else n_kv)
            out[name + ".lora_b"] = np.ascontiguousarray(value)
        else:
            out[name + ".lora_a"] = np.ascontiguousarray(value)
    return out


def save_delta(delta: dict[str, np.ndarray], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write atomically, as float16 (the factors' precision is far above the 4/8-bit targets)."""
    with atomic_path(path) as tmp:
        save_file({k: v.astype(np.float16) for k, v in delta.items()}, str(tmp), metadata=metadata)


def delta_adapter_state(delta_path: Path, config: dict, modules: list[str], scale: float) -> dict[str, np.ndarray]:
    """The inverse of ``adapter_delta``: a delta file back to a peft state dict for ``modules``
    (HF module names, e.g. ``model.layers.0.self_attn.q_proj``) at LoRA scale alpha/r, so a
    shipped fine-tune's training can continue where its run directory is gone.

    Every module must find its two factors in the delta and every factor a module; a rank or
    shape that differs is an error, not a silent partial start."""
    delta_path = Path(delta_path)
    try:
        delta = load_file(str(delta_path))
    except (OSError, ValueError) as e:
        raise DeltaError(f"{delta_path}: not a delta file ({e})") from None
    model_type = config.get("model_type", "llama")
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for module in modules:
        name = gguf_name(module + ".weight", model_type)
        a_key, b_key = f"{name}.lora_a", f"{name}.lora_b"
        if name is None or a_key not in delta or b_key not in delta:
            raise DeltaError(f"{delta_path}: no LoRA factors for {module!r} ({name})")
        a = delta[a_key].astype(np.float32)
        b = delta[b_key].astype(np.float32) / scale
        if model_type in ("llama", "mistral") and name.split(".")[-2] in ("attn_q", "attn_k"):
            b = unpermute_rotary(b, n_head if ".attn_q." in name else n_kv)
        out[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(a)
        out[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(b)
        used |= {a_key, b_key}
    extra = sorted(k for k in delta if k not in used and (k.endswith(".lora_a") or k.endswith(".lora_b")))
    if extra:
        raise DeltaError(f"{delta_path}: factors for tensors this run does not adapt, e.g. {extra[0]!r}")
    return out
