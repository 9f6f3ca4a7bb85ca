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
    from edgeagent.export.hf_to_gguf import export

    model_dir = builtin_model_dir()
    out = cache_dir() / f"builtin-{weights_digest(model_dir)}" / f"builtin-{quant}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        export(model_dir, out, quant=quant)
    return out


# The built-in bundle: full depth at these quantizations (f32 is the full-precision reference
# the selection holds the others to), quality measured on a few emulated tasks of the apps
# the model was trained on, with a task seed training never used.
BUNDLE_QUANTS = ("f32", "q8_0", "q4_k_m")
BUNDLE_TASKS = 10
BUNDLE_HELDOUT_TASKS = 4  # expert episodes whose action tokens give the perplexity
BUNDLE_TASK_SEED = 1000


def builtin_bundle(model_dir: Path | None = None, *, threads: int | None = None) -> Path:
    """The built-in model's bundle (``edgeagent select``/``profile``/``run`` default to it):
    written by ``edgeagent.export.bundle.build_bundle`` on first use, then cached next to the GGUFs
    (keyed by the weights' hash). No torch needed."""
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.agent.episode import expert_examples
    from edgeagent.export.bundle import build_bundle

    model_dir = model_dir or builtin_model_dir()
    out = cache_dir() / f"builtin-{weights_digest(model_dir)}" / "bundle"
    if not (out / "manifest.json").is_file():
        tasks = generate_tasks(BUNDLE_TASKS, BUNDLE_TASK_SEED, exclude_apps=HELD_OUT_APPS)
        examples = expert_examples(BUNDLE_HELDOUT_TASKS, BUNDLE_TASK_SEED + 1, exclude_apps=HELD_OUT_APPS)
        build_bundle(model_dir, out, BUNDLE_QUANTS, name="builtin", tasks=tasks, heldout_examples=examples,
                     measurements={"task_seed": BUNDLE_TASK_SEED, "excluded_apps": list(HELD_OUT_APPS)},
                     threads=threads)
    return out
