"""The built-in agent model: shipped HF weights + tokenizer, and its GGUF bundle.

The HF directory (``model/``) is in the package; its card (``model/training.json`` and
``MODEL_CARD.md``) says how it was trained and with which command. GGUF files are not shipped:
the first run exports them (the exporter needs no torch) into a per-user cache keyed by the
weights' hash, so the repository stays small and a changed model never reuses stale files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Apps whose tasks were kept out of the built-in model's training (`--exclude-app` in the
# recipe's traces command): the converter's fine-tuning shows what QLoRA teaches on them.
HELD_OUT_APPS = ("Notes",)


class BuiltinModelMissing(FileNotFoundError):
    pass


def builtin_model_dir() -> Path:
    """The shipped HF model directory (config.json, model.safetensors, tokenizer files)."""
    d = PACKAGE_DIR / "model"
    if not (d / "config.json").exists():
        raise BuiltinModelMissing(
            f"{d}: the built-in model is not in this checkout; train it with "
            "`python -m converters.recipes.train_builtin` (see MODEL_CARD.md)"
        )
    return d


def weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        p = model_dir / name
        if p.exists():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("EDGEAGENT_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeagent"


def builtin_gguf(quant: str = "q8_0") -> Path:
    """The built-in model exported at ``quant``; exported on first use, then cached."""
    from converters.export_gguf import export

    model_dir = builtin_model_dir()
    out = cache_dir() / f"builtin-{weights_digest(model_dir)}" / f"builtin-{quant}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        export(model_dir, out, quant=quant)
    return out
