"""Model inputs for the converter: an HF directory, a GGUF file, or a named source.

transformers reads a GGUF (``from_pretrained(dir, gguf_file=...)``), dequantizing every tensor,
but will not ``save_pretrained`` the result ("quantized with gguf and is not serializable").
So a GGUF becomes a plain HF directory once: a model rebuilt from the same config, loaded with
the dequantized state dict, saved with the tokenizer (and its chat template) beside it, cached
by the GGUF's sha256. Everything downstream (fine-tuning, export, parity tests) then takes a
directory as for any Hugging Face model.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeagent.atomic import atomic_dir
from edgeagent.bundle import sha256_file
from edgeagent.sources import SourceError, named_source


class ModelSourceError(Exception):
    """The model named cannot be read; the message says what it is and what to do."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeagent" / "hf-from-gguf"


def resolve_source(spec: str | os.PathLike) -> Path:
    """A named source or a ``.gguf`` file -> an HF model directory made from it; anything else
    is returned as the path it names (the caller checks the directory and says what is wrong)."""
    named = named_source(str(spec))
    if named is not None:
        try:
            return hf_dir_from_gguf(named.gguf())
        except SourceError as e:
            raise ModelSourceError(str(e)) from None
    path = Path(spec)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelSourceError(f"{path}: no such GGUF file")
        return hf_dir_from_gguf(path)
    if (path / "pytorch_model.bin").is_file() and not any(
            (path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        return safetensors_dir_from_bin(path)
    return path


def safetensors_dir_from_bin(model_dir: Path, cache: Path | None = None) -> Path:
    """A legacy ``pytorch_model.bin`` checkpoint as a safetensors directory (the runtime's
    exporter reads no pickles and imports no torch), built once, cached by the file's sha256;
    every other file of the directory (config, tokenizer) is copied beside it."""
    import shutil

    import torch
    from safetensors.torch import save_file

    source = model_dir / "pytorch_model.bin"
    digest = sha256_file(source)
    out = (cache or cache_root().parent / "hf-from-bin") / f"{model_dir.name}-{digest[:16]}"
    if (out / "model.safetensors").is_file():
        return out
    try:
        state = torch.load(str(source), map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign pickle: one line, not a traceback
        raise ModelSourceError(f"{source}: unreadable PyTorch checkpoint ({str(e).strip()[:160]})") from None
    with atomic_dir(out) as tmp:
        for item in model_dir.iterdir():
            if item.is_file() and item.name != source.name:
                shutil.copy2(item, tmp / item.name)
        # Tied weights share storage in a pickle; safetensors wants each tensor on its own.
        save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
    return out


def hf_dir_from_gguf(gguf: Path, cache: Path | None = None) -> Path:
    """The GGUF as a plain HF directory, built once and cached by content."""
    gguf = Path(gguf)
    digest = sha256_file(gguf)
    out = (cache or cache_root()) / f"{gguf.stem}-{digest[:16]}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        raise ModelSourceError(f"{gguf}: transformers cannot read this GGUF ({str(e).splitlines()[0]})") from None
    # A plain model of the same config: the loaded one is marked as GGUF-quantized and refuses
    # to be saved; its weights are already dequantized to float32.
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelSourceError(f"{gguf}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    with atomic_dir(out) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"dequantized from {gguf.name} (sha256 {digest})\n")
    return out
