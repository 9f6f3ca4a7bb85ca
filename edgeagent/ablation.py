"""``edgeagent bench --ablation``: the experiment plan run before shipping a phone agent.

Nine cells: the full-precision baseline; each technique alone (8-bit Q8_0, 4-bit Q4_K_M,
early exit at one depth, MHA->GQA); the pairs engineers try next (4-bit + exit, 4-bit + GQA,
8-bit + exit); and all three (4-bit + exit + GQA). For each cell:

- measured here: task success on emulated tasks and perplexity of the expert's actions
  (from a bundle built by ``edgeagent.export.bundle.build_bundle``), resident memory, TTFT and TPOT
  of one agent step (``edgeagent.measure``: a fresh process per GGUF). Energy cannot be
  measured on this machine (no battery, no RAPL in a VM): the "here" joules are the host
  profile's power times the time measured here, and say so;
- estimated on the profile's device: memory, TTFT, TPOT, energy and battery per inference
  (``edgeagent.select.estimate_variant``);
- whether it meets the default constraints (``edgeagent.select``) on that device, and why
  not. ``best`` is the highest-quality cell that does, ties to the least energy.

GQA cells come from a GQA-converted sibling of the model (``edgeagent convert --gqa-groups``
or ``converters.gqa.convert_to_gqa`` on an MHA checkpoint): without one they are listed as
missing, with the reason.

``shape_ablation`` is the same table for a published model shape (no weights: nothing can be
measured, quality included), e.g. a ~4B model on the Snapdragon 8 Gen 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeagent.select import STEP_GEN_TOKENS, STEP_PROMPT_TOKENS, Constraints, check, constraints_for, quality_rank


@dataclass(frozen=True)
class Cell:
    name: str
    quant: str  # "full" is the full-precision type of the model (f32 built-in, f16 shapes)
    exit: bool
    gqa: bool

    @property
    def techniques(self) -> int:
        return (self.quant != "full") + self.exit + self.gqa


CELLS = (
    Cell("baseline", "full", False, False),
    Cell("8-bit", "q8_0", False, False),
    Cell("4-bit", "q4_k_m", False, False),
    Cell("early exit", "full", True, False),
    Cell("GQA", "full", False, True),
    Cell("4-bit + exit", "q4_k_m", True, False),
    Cell("4-bit + GQA", "q4_k_m", False, True),
    Cell("8-bit + exit", "q8_0", True, False),
    Cell("all three", "q4_k_m", True, True),
)

TASKS = 10
HELDOUT_TASKS = 4
TASK_SEED = 1000


def _quant(cell: Cell, full: str) -> str:
    return full if cell.quant == "full" else cell.quant


def _exit_depth(spec: int | str | None, n_layers: int) -> int:
    """One exit depth: None -> half the depth; ``"3"`` or ``"0.5"`` as ``--exits`` takes them."""
    if spec is None:
        return max(1, round(n_layers / 2))
    if isinstance(spec, int):
        return spec
    from edgeagent.export.exit_pack import parse_exits

    depths = [k for k in parse_exits(spec, n_layers) if k < n_layers]
    if len(depths) != 1:
        raise ValueError(f"--exits {spec!r}: the ablation takes one exit depth below {n_layers}, e.g. 3 or 0.5")
    return depths[0]


def _best(cells: list[dict]) -> dict[str, Any] | None:
    fitting = [c for c in cells if c.get("fits")]
    if not fitting:
        return None
    best = max(fitting, key=lambda c: (quality_rank(c["quality_relative"]), -c["device"]["joules_per_inference"]))
    return {"cell": best["cell"], "quant": best["quant"], "exit_layer": best["exit_layer"], "gqa": best["gqa"],
            "basis": "highest quality (relative to the baseline, in whole points) among the cells meeting every "
                     "default constraint on the profile's device (estimated cost), ties to the least energy"}


def _host_joules(ttft_ms: float, tpot_ms: float, gen_tokens: int) -> float | None:
    """Host profile power x time measured here: an estimate (no energy counter here)."""
    from edgeagent.profiles import ProfileError, load_profile

    try:
        host = load_profile("host")
    except ProfileError:
        return None
    return host.power.prefill_w * ttft_ms / 1e3 + host.power.decode_w * tpot_ms * max(0, gen_tokens - 1) / 1e3


# --- measured: a model with weights -------------------------------------------------------


def _bundle_for(model_dir: Path, quants: Sequence[str], exit_layer: int, heads: Path | None, tasks: int, seed: int,
                exclude_apps: Sequence[str], threads: int | None, log) -> Any:
    """A bundle of ``model_dir`` at ``quants`` x {exit_layer, full}, built once and cached
    (keyed by the weights, the exit, the heads and the task set)."""
    from android_bridge.emulator.tasks import generate_tasks
    from edgeagent.builtin import cache_dir, weights_digest
    from edgeagent.bundle import load_bundle
    from edgeagent.agent.episode import expert_examples
    from edgeagent.export.bundle import build_bundle

    key = "-".join([weights_digest(model_dir), f"exit{exit_layer}", "-".join(quants), f"t{tasks}s{seed}",
                    weights_digest(heads) if heads else "shared"])
    out = cache_dir() / "ablation" / key
    if not (out / "manifest.json").is_file():
        log(f"building {model_dir.name}: {', '.join(quants)} x exits {{{exit_layer}, full}}, {tasks} tasks ...")
        task_list = generate_tasks(tasks, seed, exclude_apps=exclude_apps or None)
        examples = expert_examples(HELDOUT_TASKS, seed + 1, exclude_apps=exclude_apps or None)
        build_bundle(model_dir, out, quants, [exit_layer], name=model_dir.name, heads_dir=heads, tasks=task_list,
                     heldout_examples=examples, threads=threads)
    return load_bundle(out)


def _variant(bundle: Any, quant: str, exit_layer: int | None) -> Any:
    for v in bundle.variants:
        if v.quant == quant and (v.exit_layer == exit_layer if exit_layer else v.is_full_depth):
            return v
    raise KeyError(f"{bundle.root}: no {quant} variant at exit {exit_layer}")


def run_ablation(
    profile: Any,
    model_dir: str | Path | None = None,
    *,
    gqa_model: str | Path | None = None,
    exit_layer: int | str | None = None,
    heads: str | Path | None = None,
    tasks: int = TASKS,
    seed: int = TASK_SEED,
    prompt_tokens: int = STEP_PROMPT_TOKENS,
    gen_tokens: int = STEP_GEN_TOKENS,
    threads: int | None = None,
    constraints: Constraints | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The nine cells on ``model_dir`` (default: the built-in model), measured here and
    estimated on ``profile``."""
    from edgeagent.builtin import HELD_OUT_APPS, builtin_model_dir
    from edgeagent.shapes import shape_from_gguf
    from edgeagent.measure import measure_gguf
    from edgeagent.select import estimate_variant, relative_quality, variant_context

    log = progress or (lambda m: None)
    builtin = model_dir is None
    model_dir = Path(model_dir) if model_dir else builtin_model_dir()
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    exit_layer = _exit_depth(exit_layer, n_layers)
    if not 1 <= exit_layer < n_layers:
        raise ValueError(f"exit layer {exit_layer} must be within 1..{n_layers - 1} (the model has {n_layers} blocks)")
    exclude = HELD_OUT_APPS if builtin else ()
    heads = Path(heads) if heads else None
    c = constraints or constraints_for(profile)
    full = "f32"
    base = _bundle_for(model_dir, (full, "q8_0", "q4_k_m"), exit_layer, heads, tasks, seed, exclude, threads, log)
    gqa_bundle = gqa_config = None
    if gqa_model is not None:
        gqa_model = Path(gqa_model)
        gqa_config = json.loads((gqa_model / "config.json").read_text(encoding="utf-8"))
        if int(gqa_config["num_hidden_layers"]) != n_layers:
            raise ValueError(f"{gqa_model}: {gqa_config['num_hidden_layers']} blocks, the model has {n_layers}: "
                             "not its GQA sibling")
        gqa_bundle = _bundle_for(gqa_model, (full, "q4_k_m"), exit_layer, None, tasks, seed, exclude, threads, log)
    reference_variant = _variant(base, full, None)
    reference = {"id": reference_variant.id, "shipped": True, "quality": reference_variant.quality}
    kv_heads = int(config.get("num_key_value_heads") or n_head)

    measured: dict[str, dict] = {}
    cells = []
    for cell in CELLS:
        quant = _quant(cell, full)
        row: dict[str, Any] = {"cell": cell.name, "quant": quant, "exit_layer": exit_layer if cell.exit else n_layers,
                               "n_layers": n_layers, "gqa": cell.gqa}
        if cell.gqa and gqa_bundle is None:
            row.update(missing=True, reason="no --gqa-model given: GQA cells need the model's GQA-converted sibling "
                                            "(edgeagent convert MHA_MODEL --gqa-groups G, or converters.gqa.convert_to_gqa)",
                       task_success=None, memory_mb=None, ttft_ms=None, tpot_ms=None, joules_per_inference=None)
            cells.append(row)
            continue
        bundle = gqa_bundle if cell.gqa else base
        v = _variant(bundle, quant, exit_layer if cell.exit else None)
        ctx = variant_context(v)
        if str(v.path) not in measured:
            log(f"measuring {v.id} ...")
            measured[str(v.path)] = measure_gguf(v.path, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, n_ctx=ctx,
                                                 threads=threads)
        m = measured[str(v.path)]
        device = estimate_variant(v, profile, prompt_tokens, gen_tokens, ctx)
        device["prompt_budget_tokens"] = min(ctx, prompt_budget(shape_from_gguf(v.path), profile, c.max_ttft_ms))
        quality = relative_quality(v, reference)
        reasons = check(device, quality, c)
        here_j = _host_joules(m["ttft_ms"], m["tpot_ms"], gen_tokens)
        cfg = gqa_config if cell.gqa else config
        row.update(
            variant=v.id, n_head=n_head, n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            kv_cache_bytes_per_token=v.kv_cache_bytes_per_token, size_mb=v.size_bytes / 2**20,
            task_success=v.quality.get("task_success"), tasks=v.quality.get("tasks"),
            perplexity=v.quality.get("perplexity"),
            quality_relative=quality["relative"], quality_basis=quality["basis"],
            memory_mb=m["rss_peak_mb"], ttft_ms=m["ttft_ms"], tpot_ms=m["tpot_ms"],
            joules_per_inference=device["joules_per_inference"],
            sources={"task_success": "measured", "memory_mb": "measured", "ttft_ms": "measured",
                     "tpot_ms": "measured", "joules_per_inference": f"estimated ({profile.name})"},
            here={"memory_mb": m["rss_peak_mb"], "ttft_ms": m["ttft_ms"], "tpot_ms": m["tpot_ms"],
                  "tokens_per_s": m["tokens_per_s"], "joules_per_inference": here_j,
                  "joules_source": "estimated: host profile power x time measured here (no energy counter on this machine)",
                  "threads": m["threads"], "source": "measured"},
            device={**device, "profile": profile.name},
            fits=not reasons, reasons=reasons,
        )
        cells.append(row)
    notes = [f"full precision = {full} (the model's own dtype); early exit at {exit_layer} of {n_layers} blocks with "
             + ("trained exit heads" if heads else "the final norm and head shared (no trained exit heads)")]
    if kv_heads < n_head:
        notes.append(f"the base model already shares KV heads ({kv_heads} for {n_head} query heads): the GQA cells "
                     "measure a further conversion of it, not MHA vs GQA")
    if gqa_bundle is not None:
        notes.append(f"GQA sibling {gqa_model}: {gqa_config.get('num_key_value_heads')} KV heads; its exits share the "
                     "final head")
    return {
        "mode": "ablation", "measured": True,
        "model": str(model_dir), "gqa_model": str(gqa_model) if gqa_model else None,
        "profile": profile.name, "constraints": c.to_dict(),
        "workload": {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "tasks": tasks, "task_seed": seed,
                     "what": "one agent step for the costs; emulated tasks for task success"},
        "cells": cells, "best": _best(cells), "notes": notes,
        "source": "measured here (task success, memory, TTFT, TPOT) + estimated on the profile's device",
    }


# --- estimated: a published shape ---------------------------------------------------------


def prompt_budget(shape: Any, profile: Any, max_ttft_ms: float) -> int:
    """The longest prompt (new tokens per step) whose estimated TTFT stays within the bound."""
    from edgeagent.estimate import latency_estimate

    def ttft(t: int) -> float:
        return latency_estimate(shape, profile, t, 2)["ttft_ms"]

    if ttft(1) > max_ttft_ms:
        return 0
    lo, hi = 1, 1
    while hi < 65536 and ttft(hi) <= max_ttft_ms:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ttft(mid) <= max_ttft_ms else (lo, mid)
    return lo


def shape_ablation(
    profile: Any,
    shape_name: str = "phi-3-mini",
    *,
    exit_layer: int | str | None = None,
    gqa_groups: int = 4,
    full: str = "f16",
    prompt_tokens: int = STEP_PROMPT_TOKENS,
    gen_tokens: int = STEP_GEN_TOKENS,
    n_ctx: int = 4096,
    constraints: Constraints | None = None,
) -> dict[str, Any]:
    """The nine cells for a published shape on ``profile``: estimates only. Quality cannot be
    measured without the weights, so ``best`` is the cell meeting the cost constraints with
    the fewest quality-risking techniques (a prior, said as such), and says so."""
    from edgeagent.estimate import estimate
    from edgeagent.shapes import PUBLISHED_SHAPES, shape_from_config

    key = shape_name.lower()
    if key not in PUBLISHED_SHAPES:
        raise ValueError(f"unknown model shape {shape_name!r}; known: {', '.join(PUBLISHED_SHAPES)}")
    spec = PUBLISHED_SHAPES[key]
    n_layers, n_head, kv = spec["n_layers"], spec["n_head"], spec["n_head_kv"]
    exit_layer = _exit_depth(exit_layer, n_layers)
    if not 1 <= exit_layer < n_layers:
        raise ValueError(f"exit layer {exit_layer} must be within 1..{n_layers - 1} ({key} has {n_layers} blocks)")
    if kv % gqa_groups:
        raise ValueError(f"{key} has {kv} KV heads: --gqa-groups {gqa_groups} must divide it")
    c = constraints or constraints_for(profile)
    cells = []
    for cell in CELLS:
        quant = _quant(cell, full)
        shape = shape_from_config(key, quant, exit_layer=exit_layer if cell.exit else None,
                                  n_head_kv=kv // gqa_groups if cell.gqa else None)
        est = estimate(shape, profile, prompt_tokens, gen_tokens, n_ctx=n_ctx)
        f = est["figures"]
        device = {"memory_mb": f["memory_mb"]["value"], "weights_mb": est["memory"]["weights_mb"],
                  "kv_cache_mb": est["memory"]["kv_cache_mb"], "ttft_ms": f["ttft_ms"]["value"],
                  "tpot_ms": f["tpot_ms"]["value"], "tokens_per_s": f["tokens_per_s"]["value"],
                  "step_ms": est["latency"]["total_ms"], "joules_per_inference": f["joules_per_inference"]["value"],
                  "mah_per_100_inferences": f["mah_per_100_inferences"]["value"], "context": n_ctx,
                  "prompt_budget_tokens": min(n_ctx, prompt_budget(shape, profile, c.max_ttft_ms)), "profile": profile.name,
                  "source": "estimated"}
        # Quality is unknown, so check the cost bounds only.
        reasons = [r for r in check(device, {"relative": 1.0, "basis": None}, c)]
        cells.append({
            "cell": cell.name, "quant": quant, "exit_layer": exit_layer if cell.exit else n_layers, "n_layers": n_layers,
            "gqa": cell.gqa, "n_head": n_head, "n_head_kv": shape.n_head_kv, "bits_per_weight": shape.bits_per_weight,
            "task_success": None, "quality_relative": None,
            "quality": "not measurable for a shape: there are no weights to run",
            "memory_mb": device["memory_mb"], "ttft_ms": device["ttft_ms"], "tpot_ms": device["tpot_ms"],
            "joules_per_inference": device["joules_per_inference"],
            "sources": {k: f"estimated ({profile.name})" for k in ("memory_mb", "ttft_ms", "tpot_ms", "joules_per_inference")},
            "device": device, "fits": not reasons, "reasons": reasons, "techniques": cell.techniques,
        })
    # Prior, not a measurement: fewer techniques first; then quantization (mild at 8 and 4 bits
    # in published llama.cpp perplexity tables) before GQA (needs uptraining) before exit
    # (drops blocks); then the least energy.
    order = {"baseline": 0, "8-bit": 1, "4-bit": 2, "GQA": 3, "early exit": 4, "4-bit + GQA": 5, "8-bit + exit": 6,
             "4-bit + exit": 7, "all three": 8}
    fitting = sorted((x for x in cells if x["fits"]), key=lambda x: (order[x["cell"]], x["joules_per_inference"]))
    best = None
    if fitting:
        b = fitting[0]
        best = {"cell": b["cell"], "quant": b["quant"], "exit_layer": b["exit_layer"], "gqa": b["gqa"],
                "basis": "the cell meeting the memory, TTFT and decode constraints with the fewest quality-risking "
                         "techniques (an ordering prior: quality cannot be measured for a shape); its quality "
                         "(>= 90 % of full precision) is unverified until measured on the real weights"}
    latency_short = [x["cell"] for x in cells if any(r.startswith("TTFT") for r in x["reasons"])]
    notes = [
        f"{key}: {n_layers} blocks, {n_head} query heads, {kv} KV heads ({spec['url']}); full precision = {full}; "
        f"early exit at {exit_layer} blocks; GQA = {kv} -> {kv // gqa_groups} KV heads (groups of {gqa_groups})",
        "quality: not measurable for a shape (no weights); every cell's quality is unknown",
        f"one simple step = {prompt_tokens} new prompt tokens + {gen_tokens} output tokens, {n_ctx}-token context "
        "allocated; prompt_budget_tokens = the most new tokens per step within the TTFT bound",
    ]
    if len(latency_short) == len(cells):
        notes.append(f"no cell reaches TTFT <= {c.max_ttft_ms:g} ms for a {prompt_tokens}-token step on "
                     f"{profile.name}'s CPU: prefill is compute-bound; see prompt_budget_tokens for what a step may add "
                     "(KV-prefix reuse between steps) or an NPU")
    return {
        "mode": "ablation", "measured": False, "shape": key, "model": key, "profile": profile.name,
        "constraints": c.to_dict(),
        "workload": {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "context": n_ctx},
        "cells": cells, "best": best, "notes": notes,
        "source": f"estimated on {profile.name} (roofline); nothing measured",
    }


def ablation_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table ``edgeagent bench --ablation`` prints."""
    def f(v, d=1):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{d}f}"

    measured = result["measured"]
    columns = ["cell", "quant", "exit", "KV heads", "task success", "quality"]
    columns += (["MiB here", "TTFT here", "TPOT here"] if measured else [])
    columns += [f"MiB {result['profile']}", "TTFT", "TPOT", "J/inf", "mAh/100", "prompt budget", "verdict"]
    rows = []
    best = (result.get("best") or {}).get("cell")
    for c in result["cells"]:
        if c.get("missing"):
            rows.append([c["cell"], c["quant"], f"{c['exit_layer']}/{c['n_layers']}", "-", "-", "-"]
                        + (["-"] * 3 if measured else []) + ["-"] * 6 + ["missing: no --gqa-model (see JSON reason)"])
            continue
        d = c["device"]
        ts = "-" if c["task_success"] is None else f"{c['task_success']:.0%}"
        q = "n/a" if c["quality_relative"] is None else f"{c['quality_relative']:.0%}"
        row = [c["cell"], c["quant"], f"{c['exit_layer']}/{c['n_layers']}", f"{c['n_head_kv']}/{c['n_head']}", ts, q]
        if measured:
            row += [f(c["here"]["memory_mb"], 0), f(c["here"]["ttft_ms"]), f(c["here"]["tpot_ms"], 2)]
        verdict = "BEST" if c["cell"] == best else ("fits" if c["fits"] else "; ".join(c["reasons"]))
        row += [f(d["memory_mb"], 0), f(d["ttft_ms"]), f(d["tpot_ms"], 2), f(d["joules_per_inference"], 3),
                f(d["mah_per_100_inferences"], 3), d.get("prompt_budget_tokens", "-"), verdict]
        rows.append(row)
    return columns, rows
