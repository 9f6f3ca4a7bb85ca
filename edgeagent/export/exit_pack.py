"""Packing early exits for llama.cpp: one HF directory, then one GGUF, per exit depth.

llama.cpp has no layer skipping and refuses GGUF files with tensors its graph does not use,
so an exit at depth k ships as a model of its own: the first k blocks, with the exit's norm
and LM head as the model's ``model.norm`` / ``lm_head`` and ``num_hidden_layers = k``. The
exporter (``edgeagent.export.hf_to_gguf.export``) then packs it like any checkpoint.

Numpy and safetensors only (no torch), so the runtime (``edgeagent bench --early-exit``) can
pack exits of a model it was handed. The heads themselves are trained in
``converters.early_exit``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from edgeagent.atomic import atomic_dir
from edgeagent.bundle import sha256_file

HEADS_FILE = "exit_heads.safetensors"
HEADS_META = "exit_heads.json"


class EarlyExitError(ValueError):
    """Bad early-exit settings or files; the message says which value and what to do."""


# ---------------------------------------------------------------------------------------
# exit depths


def parse_exits(spec: str | Sequence[int | float], n_layers: int) -> list[int]:
    """``"2,4,6"`` (block counts) or ``"0.33,0.66"`` (fractions of L) -> sorted exit layers.

    A fraction f becomes round(f·L), at least 1. Every exit must satisfy 1 ≤ k ≤ L (k = L is
    the full model). Duplicates collapse.
    """
    if n_layers < 1:
        raise EarlyExitError(f"the model has {n_layers} layers; exits need at least one")
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [s for s in items if s != ""]
    if not items:
        raise EarlyExitError(f"no exit layers in {spec!r}; give e.g. '2,4' or '0.33,0.66'")
    exits = set()
    for item in items:
        text = str(item)
        try:
            value = float(text)
        except ValueError:
            raise EarlyExitError(f"exit {text!r} is not a number; give layer counts ('2,4') or fractions ('0.5')") from None
        is_fraction = isinstance(item, float) or (isinstance(item, str) and any(c in text for c in ".eE"))
        if is_fraction:
            if not 0.0 < value <= 1.0:
                raise EarlyExitError(f"exit fraction {text} is outside (0, 1]")
            k = max(1, round(value * n_layers))
        else:
            if value != int(value):
                raise EarlyExitError(f"exit {text!r} is not a whole number of layers")
            k = int(value)
        if not 1 <= k <= n_layers:
            raise EarlyExitError(f"exit layer {k} (from {text!r}) is outside 1..{n_layers} (the model has {n_layers} layers)")
        exits.add(k)
    return sorted(exits)


# ---------------------------------------------------------------------------------------
# heads on disk


def read_heads(path: str | os.PathLike) -> tuple[dict, dict]:
    """(metadata, {name: float32 numpy array}) from a heads file or the directory holding it."""
    from safetensors.numpy import load_file

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    weights = folder / HEADS_FILE if path.is_dir() else path
    meta_path = folder / HEADS_META
    if not meta_path.is_file():
        raise EarlyExitError(f"{meta_path}: missing (write exit heads with converters.early_exit.train_exits)")
    meta = json.loads(meta_path.read_text())
    tensors = {}
    if meta.get("kind") == "dedicated":
        if not weights.is_file():
            raise EarlyExitError(f"{weights}: missing; {meta_path} says the exits are dedicated heads")
        tensors = load_file(str(weights))
    return meta, tensors


# ---------------------------------------------------------------------------------------
# packing


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja")


def write_exit_model(
    model_dir: str | os.PathLike,
    heads_path: str | os.PathLike | None,
    exit_layer: int,
    out_dir: str | os.PathLike,
) -> Path:
    """An HF directory holding the first ``exit_layer`` blocks with that exit's norm and head
    as ``model.norm`` / ``lm_head`` (config ``num_hidden_layers = exit_layer``), so
    ``export()`` packs it as a GGUF of its own. ``heads_path`` None: the shared exit (the
    model's own final norm and head). Tensors are read and written with numpy (no torch);
    the directory appears atomically.
    """
    from safetensors.numpy import save_file

    from edgeagent.export.hf_to_gguf import Checkpoint, ExportError

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise EarlyExitError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    config = json.loads(config_path.read_text())
    n_layers = int(config["num_hidden_layers"])
    if not 1 <= exit_layer <= n_layers:
        raise EarlyExitError(f"exit layer {exit_layer} is outside 1..{n_layers} for {model_dir}")
    head_tensors: dict = {}
    if heads_path is not None:
        meta, head_tensors = read_heads(heads_path)
        if meta.get("kind") == "dedicated" and exit_layer < n_layers and exit_layer not in meta.get("exits", []):
            raise EarlyExitError(f"{heads_path}: no head for exit layer {exit_layer} (heads for {meta.get('exits')})")

    try:
        checkpoint = Checkpoint(model_dir)
    except ExportError as e:
        raise EarlyExitError(str(e)) from None
    tied = bool(config.get("tie_word_embeddings", False))
    dedicated = f"head.{exit_layer}.weight" in head_tensors
    tensors = {}
    for name in checkpoint.names():
        if name.startswith("model.layers."):
            if int(name.split(".")[2]) >= exit_layer:
                continue
        elif name == "lm_head.weight" and tied:
            continue  # a saved copy of the tied embedding; the exporter skips it too
        tensors[name] = checkpoint.load(name)
    if dedicated:
        tensors["model.norm.weight"] = head_tensors[f"norm.{exit_layer}.weight"]
        tensors["lm_head.weight"] = head_tensors[f"head.{exit_layer}.weight"]
        tied = False  # the exit's head is its own, even when the model ties its output to the embedding
    config.update(num_hidden_layers=exit_layer, tie_word_embeddings=tied)
    config["edgeagent_exit"] = {"exit_layer": exit_layer, "n_layers": n_layers,
                                "kind": "dedicated" if dedicated else "shared"}
    if "layer_types" in config:  # per-layer lists must match the new depth
        config["layer_types"] = config["layer_types"][:exit_layer]

    with atomic_dir(out_dir) as tmp:
        save_file({k: v for k, v in tensors.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
    return out_dir


def pack_exits(
    model_dir: str | os.PathLike,
    heads: str | os.PathLike | None,
    exits: str | Sequence[int | float],
    quants: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    threads: int | None = None,
) -> list[dict]:
    """One GGUF per (exit depth, quant) in ``out_dir``; returns the bundle's variant dicts
    ``{id, quant, exit_layer, n_layers, path, sha256, size_bytes}`` (``path`` relative to
    ``out_dir``). An exit equal to the model's depth is the full model. Each file is written
    atomically by ``export``."""
    from edgeagent.export.hf_to_gguf import export

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    config = json.loads((model_dir / "config.json").read_text())
    n_layers = int(config["num_hidden_layers"])
    exit_layers = parse_exits(exits, n_layers)
    name = name or model_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".exit-dirs.") as scratch:
        for k in exit_layers:
            source = model_dir if k == n_layers else write_exit_model(model_dir, heads, k, Path(scratch) / f"exit{k}")
            for quant in quants:
                quant = quant.lower()
                vid = f"{name}-{quant}" if k == n_layers else f"{name}-exit{k}-{quant}"
                path = out_dir / f"{vid}.gguf"
                export(source, path, quant, threads=threads)
                variants.append({
                    "id": vid, "quant": quant, "exit_layer": k, "n_layers": n_layers, "path": path.name,
                    "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
                })
    return variants
