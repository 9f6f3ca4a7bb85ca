"""Variant selection: the best-quality variant of a bundle that fits a device.

Every variant (quantization x exit depth) is costed on the device profile by the roofline
estimator (``edgeagent.estimate``, from the GGUF's real tensor types) for one agent step,
then held to the deployment checklist practitioners use before shipping a phone model:

    TTFT            <= 500 ms              (a step must feel immediate)
    decode          >= 20 tokens/s
    memory          <= 80 % of the device's usable memory (headroom for the app and the OS)
    quality         >= 90 % of the full-precision model's
    battery         <= max mAh per 100 inferences   (only when asked)

Each bound comes from a flag, else the profile's ``[selection]`` table, else the default
above, and the result says which. Quality is task success on emulated tasks relative to the
full-precision reference; when the reference's task success is not there (or is 0, so a
ratio means nothing) it is perplexity-derived: ``ppl_reference / ppl_variant`` (a variant
whose perplexity is 11 % higher keeps 90 %). The reference is the bundle's measured F16
export (``measurements.reference``) when the converter made one, else its highest-bit
full-depth variant. A shipped agent's bundle measured no full precision: its best variant is
the reference, and the output names it (``reference_label``).

Among the variants that fit every bound, the highest relative quality wins, compared at a
resolution of one point of the reference's quality (``QUALITY_RESOLUTION``: a smaller
difference is measurement noise -- a few hundred held-out tokens, ten tasks); ties go to the
one with the least energy per inference. Every rejected variant carries its reasons. Runtime
module: no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeagent.bundle import Bundle, Variant
from edgeagent.estimate import estimate
from edgeagent.shapes import shape_from_gguf
from edgeagent.profiles import Profile

DEFAULT_MAX_TTFT_MS = 500.0
DEFAULT_MIN_TOKENS_PER_S = 20.0
DEFAULT_MAX_MEMORY_FRACTION = 0.8
DEFAULT_MIN_QUALITY = 0.9

# One agent step of the built-in model, measured (`edgeagent profile`): ~220 prompt tokens
# (screen, previous action, task) and ~13 action tokens; rounded up.
STEP_PROMPT_TOKENS = 256
STEP_GEN_TOKENS = 16
MAX_CONTEXT = 2048  # what `edgeagent run` allocates; less when the model was trained shorter
QUALITY_RESOLUTION = 0.01  # relative quality closer than this is a tie


def quality_rank(relative: float) -> int:
    """Relative quality in whole points (``QUALITY_RESOLUTION``), what variants are ranked by."""
    return round(relative / QUALITY_RESOLUTION)


class NoVariantFits(Exception):
    """No variant meets every constraint; ``result`` holds every variant's reasons."""

    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


@dataclass
class Constraints:
    max_ttft_ms: float
    min_tokens_per_s: float
    max_memory_mb: float
    min_quality: float  # fraction of the reference's quality
    max_mah_per_100: float | None = None
    origin: dict[str, str] = field(default_factory=dict)  # bound -> flag | profile | default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def constraints_for(
    profile: Profile,
    *,
    max_ttft_ms: float | None = None,
    min_tokens_per_s: float | None = None,
    max_memory_mb: float | None = None,
    min_quality: float | None = None,
    max_mah_per_100: float | None = None,
) -> Constraints:
    """The bounds for ``profile``: a given argument (a flag) wins, then the profile's
    ``[selection]`` table, then the defaults. A flag that is not a finite number above 0
    raises ValueError naming it."""
    sel = profile.selection
    origin: dict[str, str] = {}

    def pick(name: str, flag: float | None, from_profile: float | None, default: float | None) -> float | None:
        if flag is not None:
            if not (math.isfinite(flag) and flag > 0):
                raise ValueError(f"--{name.replace('_', '-')} {flag!r}: expected a finite number above 0")
            origin[name] = "flag"
            return flag
        if from_profile is not None:
            origin[name] = f"profile {profile.name}"
            return from_profile
        origin[name] = "default"
        return default

    fraction = sel.max_memory_fraction if sel.max_memory_fraction is not None else DEFAULT_MAX_MEMORY_FRACTION
    usable_mb = profile.usable_memory_bytes / 2**20
    memory = pick("max_memory_mb", max_memory_mb,
                  round(fraction * usable_mb, 1) if sel.max_memory_fraction is not None else None,
                  round(DEFAULT_MAX_MEMORY_FRACTION * usable_mb, 1))
    if origin["max_memory_mb"] != "flag":
        origin["max_memory_mb"] += f" ({fraction:.0%} of {usable_mb:,.0f} MiB usable)"
    return Constraints(
        max_ttft_ms=pick("max_ttft_ms", max_ttft_ms, sel.max_ttft_ms, DEFAULT_MAX_TTFT_MS),
        min_tokens_per_s=pick("min_tokens_per_s", min_tokens_per_s, sel.min_tokens_per_s, DEFAULT_MIN_TOKENS_PER_S),
        max_memory_mb=memory,
        min_quality=pick("min_quality", min_quality, sel.min_quality, DEFAULT_MIN_QUALITY),
        max_mah_per_100=pick("max_mah_per_100", max_mah_per_100, sel.max_mah_per_100, None),
        origin=origin,
    )


# --- quality ------------------------------------------------------------------------------


def _number(q: dict[str, Any], key: str) -> float | None:
    v = q.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def reference_label(reference: dict[str, Any]) -> str:
    """What relative quality is a fraction of: full precision, or the bundle's best variant
    where no full-precision quality was measured (a shipped agent's quantizations)."""
    if not reference.get("shipped") or reference.get("quant") in ("f32", "f16", "bf16"):
        return "full precision"
    return f"the best variant, {reference['id']}"


def reference_quality(bundle: Bundle) -> dict[str, Any]:
    """The full-precision reference the variants are held to."""
    ref = (bundle.manifest.get("measurements") or {}).get("reference")
    if isinstance(ref, dict) and isinstance(ref.get("quality"), dict):
        return {"id": f"reference-{ref.get('quant', 'f16')}", "quant": ref.get("quant", "f16"),
                "shipped": False, "quality": ref["quality"]}
    best = bundle.best_quality()
    return {"id": best.id, "quant": best.quant, "shipped": True, "quality": best.quality}


def relative_quality(variant: Variant, reference: dict[str, Any]) -> dict[str, Any]:
    """``{value, basis, relative}``: the variant's quality, what it is, and its fraction of
    the reference's (None when the manifest holds nothing to compare)."""
    q, rq = variant.quality, reference["quality"]
    ts, ref_ts = _number(q, "task_success"), _number(rq, "task_success")
    if ts is not None and ref_ts:  # a ratio to a reference that never succeeds means nothing
        return {"value": ts, "basis": "task_success", "relative": ts / ref_ts, "reference": ref_ts}
    ppl, ref_ppl = _number(q, "perplexity"), _number(rq, "perplexity")
    if ppl and ref_ppl:
        return {"value": ppl, "basis": "perplexity", "relative": ref_ppl / ppl, "reference": ref_ppl}
    if reference["shipped"] and variant.id == reference["id"]:
        return {"value": None, "basis": "reference", "relative": 1.0, "reference": None}
    return {"value": None, "basis": None, "relative": None, "reference": None}


# --- cost and fit -------------------------------------------------------------------------


def variant_context(variant: Variant) -> int:
    """The context `run` gives this GGUF: MAX_CONTEXT, or less when trained shorter."""
    from edgeagent.quality import trained_context

    return min(MAX_CONTEXT, trained_context(variant.path) or MAX_CONTEXT)


def estimate_variant(variant: Variant, profile: Profile, prompt_tokens: int, gen_tokens: int,
                     n_ctx: int | None = None) -> dict[str, Any]:
    """The roofline figures of one agent step of ``variant`` on ``profile``."""
    return estimate_gguf(variant.path, profile, prompt_tokens, gen_tokens, n_ctx or variant_context(variant))


def estimate_gguf(path: Path, profile: Profile, prompt_tokens: int, gen_tokens: int, n_ctx: int) -> dict[str, Any]:
    """The roofline figures of one agent step of the GGUF at ``path`` on ``profile``."""
    est = estimate(shape_from_gguf(path), profile, prompt_tokens, gen_tokens, n_ctx=n_ctx)
    f = est["figures"]
    return {
        "memory_mb": f["memory_mb"]["value"],
        "ttft_ms": f["ttft_ms"]["value"],
        "tpot_ms": f["tpot_ms"]["value"],
        "tokens_per_s": f["tokens_per_s"]["value"],
        "step_ms": est["latency"]["total_ms"],
        "joules_per_inference": f["joules_per_inference"]["value"],
        "mah_per_100_inferences": f["mah_per_100_inferences"]["value"],
        "context": n_ctx,
        "source": "estimated",
    }


def check(cost: dict[str, Any], quality: dict[str, Any], c: Constraints, reference: str = "full precision") -> list[str]:
    """Why a variant does not fit (empty: it fits), one reason per broken bound; ``reference``
    names what the relative quality is a fraction of (``reference_label``)."""
    reasons = []
    if cost["memory_mb"] > c.max_memory_mb:
        reasons.append(f"memory {cost['memory_mb']:,.0f} MiB > {c.max_memory_mb:,.0f} MiB")
    if cost["ttft_ms"] > c.max_ttft_ms:
        reasons.append(f"TTFT {cost['ttft_ms']:,.0f} ms > {c.max_ttft_ms:,.0f} ms")
    if cost["tokens_per_s"] < c.min_tokens_per_s:
        reasons.append(f"decode {cost['tokens_per_s']:,.1f} tokens/s < {c.min_tokens_per_s:,.1f} tokens/s")
    if c.max_mah_per_100 is not None and cost["mah_per_100_inferences"] > c.max_mah_per_100:
        reasons.append(f"battery {cost['mah_per_100_inferences']:,.2f} mAh/100 > {c.max_mah_per_100:,.2f} mAh/100")
    rel = quality["relative"]
    if rel is None:
        reasons.append("quality unknown: the manifest has no task success or perplexity to compare "
                       "(re-run `edgeagent convert` with held-out data)")
    elif rel < c.min_quality:
        reasons.append(f"quality {rel:.0%} of {reference} ({quality['basis']}) < {c.min_quality:.0%}")
    return reasons


def select_variant(
    bundle: Bundle,
    profile: Profile,
    constraints: Constraints | None = None,
    *,
    prompt_tokens: int = STEP_PROMPT_TOKENS,
    gen_tokens: int = STEP_GEN_TOKENS,
    n_ctx: int | None = None,
) -> dict[str, Any]:
    """Cost every variant on ``profile``, keep those meeting every constraint, return the
    best-quality one with every variant's figures and reasons. Raises ``NoVariantFits``
    (its ``result`` is the same dict, ``selected`` None) when none fits."""
    c = constraints or constraints_for(profile)
    reference = reference_quality(bundle)
    rows = []
    for v in bundle.variants:
        cost = estimate_variant(v, profile, prompt_tokens, gen_tokens, n_ctx)
        quality = relative_quality(v, reference)
        reasons = check(cost, quality, c, reference_label(reference))
        rows.append({
            "id": v.id, "quant": v.quant, "exit_layer": v.exit_layer, "n_layers": v.n_layers,
            "path": str(v.path), "size_bytes": v.size_bytes, "quality": quality, "estimate": cost,
            "fits": not reasons, "reasons": reasons,
        })
    fitting = [r for r in rows if r["fits"]]
    best = max(fitting, key=lambda r: (quality_rank(r["quality"]["relative"]), -r["estimate"]["joules_per_inference"]),
               default=None)
    for r in rows:
        r["selected"] = r is best
    result = {
        "bundle": str(bundle.root),
        "label": f"{(bundle.manifest.get('source_model') or {}).get('name') or bundle.root.name} bundle: variants",
        "profile": profile.name,
        "constraints": c.to_dict(),
        "workload": {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
                     "what": "one agent step: a screen prompt, then an action"},
        "reference": {**{k: reference[k] for k in ("id", "quant", "shipped")}, "label": reference_label(reference)},
        "selected": best,
        "variants": rows,
        "source": f"estimated on {profile.name} (roofline); quality measured at conversion time",
    }
    if best is None:
        lines = [f"{r['id']}: {'; '.join(r['reasons'])}" for r in rows]
        raise NoVariantFits(
            f"no variant of {bundle.root} fits {profile.name}:\n  " + "\n  ".join(lines), result)
    return result


def select_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table ``edgeagent select`` prints."""
    columns = ["variant", "exit", "MiB", "TTFT ms", "tok/s", "mAh/100", "quality", "verdict"]
    rows = []
    for r in result["variants"]:
        e, q = r["estimate"], r["quality"]
        basis = {"task_success": "tasks", "perplexity": "ppl"}.get(q["basis"], q["basis"])
        quality = "-" if q["relative"] is None else f"{q['relative']:.0%} {basis}"
        verdict = "SELECTED" if r["selected"] else ("fits" if r["fits"] else "; ".join(r["reasons"]))
        rows.append([r["id"], f"{r['exit_layer']}/{r['n_layers']}", f"{e['memory_mb']:,.0f}", f"{e['ttft_ms']:,.1f}",
                     f"{e['tokens_per_s']:,.0f}", f"{e['mah_per_100_inferences']:.3f}", quality, verdict])
    return columns, rows
