"""The learning-rate schedule every trainer here uses: linear warm-up, then cosine decay.

One function for the QLoRA fine-tune (``converters.finetune``, as a multiplier of the base
rate through ``LambdaLR``), the early-exit heads (``converters.early_exit``) and the built-in
model's recipe (``converters.recipes.train_builtin``). Plain arithmetic, no torch.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, peak: float, floor: float, warmup: int, total: int) -> float:
    """The rate for 0-based ``step``: ``peak * (step + 1) / warmup`` during the first ``warmup``
    steps, then half a cosine from ``peak`` down to ``floor``, reached at ``total`` and held."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))
