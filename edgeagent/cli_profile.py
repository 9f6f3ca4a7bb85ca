"""Commands of this area, registered on the main ``edgeagent`` app: device profiles and
roofline estimates (``devices``, ``estimate``). Imports happen inside the commands so
``edgeagent --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _load(profile: str) -> Any:
    from edgeagent.output import fail
    from edgeagent.profiles import ProfileError, load_profile

    try:
        return load_profile(profile)
    except ProfileError as exc:
        fail(str(exc))


def devices(json_out: bool = typer.Option(False, "--json", help="Print JSON for machines.")) -> None:
    """List the device profiles: SoC, RAM, memory bandwidth, compute, battery."""
    from rich.table import Table

    from edgeagent.output import console, emit_json, fail
    from edgeagent.profiles import ProfileError, list_profiles, load_profile

    profiles = []
    for name in list_profiles():
        try:
            profiles.append(load_profile(name))
        except ProfileError as exc:
            fail(str(exc))
    if json_out:
        emit_json([
            {**p.model_dump(), "cores": p.cores, "bandwidth_effective_gbs": p.bandwidth_effective_gbs}
            for p in profiles
        ])
        return
    rows = []
    for p in profiles:
        rows.append([
            p.name,
            " + ".join(f"{c.cores}x{c.ghz:g}" for c in p.cpu_clusters),
            f"{p.ram_gb:g} ({p.usable_memory_gb:g})",
            f"{p.bandwidth_theoretical_gbs:g} ({p.bandwidth_effective_gbs:.0f})",
            f"{p.compute_gflops_sustained:,.0f}",
            f"{p.battery.capacity_mah:,.0f}" if p.battery.capacity_mah else "-",
        ])
    # The names are what users type, so they never wrap or get cut (output.table would).
    t = Table(title="Device profiles (device_profiles/*.toml; --json for all fields and sources)")
    t.add_column("name", no_wrap=True)
    for col in ("CPU cores x GHz", "RAM GiB (usable)", "GB/s (effective)", "GFLOP/s", "mAh"):
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    console.print(t)


def _print_estimate(est: dict[str, Any]) -> None:
    from edgeagent.output import console, table

    m, mem, lat, en = est["model"], est["memory"], est["latency"], est["energy"]
    console.print(
        f"[bold]{m['name']}[/] {m['quant']} ({m['n_params'] / 1e9:.2f} B params, {m['bits_per_weight']:.2f} bits/weight) "
        f"on [bold]{est['profile']}[/]: all figures [italic]estimated[/] (roofline)",
        highlight=False,
    )
    rows = [
        ["memory", _fmt(mem["memory_mb"], 0), "MiB",
         f"weights {mem['weights_mb']:,.0f} + KV {mem['kv_cache_mb']:,.0f} ({mem['context']} ctx, {mem['kv_cache_type']}) "
         f"+ compute {mem['compute_buffer_mb']:,.0f} + runtime {mem['overhead_mb']:,.0f}; "
         f"{100 * mem['fraction_of_usable']:.0f}% of {mem['usable_mb']:,.0f} usable"],
        ["TTFT", _fmt(lat["ttft_ms"]), "ms", f"{lat['prompt_tokens']}-token prompt, {lat['prefill_bound']}-bound"],
        ["TPOT", _fmt(lat["tpot_ms"], 2), "ms", f"{lat['decode_bound']}-bound, {lat['bandwidth_effective_gbs']:.1f} GB/s effective"],
        ["tokens/s", _fmt(lat["tokens_per_s"]), "tokens/s", "decode"],
        ["latency", _fmt(lat["total_ms"]), "ms", f"prompt + {lat['gen_tokens']} output tokens"],
        ["energy", _fmt(en["joules_per_inference"], 2), "J", f"above idle; prefill {en['prefill_j']:.2f} J + decode {en['decode_j']:.2f} J"],
        ["battery", _fmt(en["mah_per_100_inferences"], 2), "mAh / 100 inferences",
         f"at {en['nominal_v']:g} V" + (f"; ~{en['inferences_per_charge']:,.0f} inferences per charge" if en.get("inferences_per_charge") else "")],
    ]
    table("Estimate", ["figure", "value", "unit", "how"], rows)


def _print_comparison(cmp: dict[str, Any]) -> None:
    from edgeagent.output import console, table

    pub = cmp["published"]
    console.print(
        f"Estimated on [bold]{cmp['profile']}[/] vs published: {pub['device']}, {pub['runtime']}, {pub['quant']}, "
        f"{pub['prompt_tokens']}-token prompt, {pub['gen_tokens']} output tokens ({pub['citation']})",
        highlight=False,
    )
    keys = [("decode_tokens_per_s", "decode tok/s", 1), ("average_power_w", "avg power W", 1),
            ("run_s", "run s", 2), ("joules_per_run", "J/run", 1), ("joules_per_run_with_load", "J/run +load", 1),
            ("peak_memory_mb", "peak mem MiB", 0), ("ttft_ms", "TTFT ms", 0)]
    rows = []
    for r in cmp["rows"]:
        label = r["model"] + ("" if r["held_out"] else " (power in-sample)")
        for key, name, d in keys:
            c = r[key]
            ratio = f"{c['ratio']:.2f}" if c["ratio"] is not None else "-"
            rows.append([label, name, _fmt(c["estimated"], d), _fmt(c["published"], d), ratio])
            label = ""
    table("estimate / published", ["model", "figure", "estimated", "published", "ratio"], rows)
    for k, v in cmp["assumptions"].items():
        console.print(f"  {k}: {v}", highlight=False)


def estimate(
    profile: str = typer.Option(..., "--profile", "-p", help="Device profile name or path to a .toml file."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="A GGUF file (exact tensor types and sizes)."),
    shape: Optional[str] = typer.Option(None, "--shape", help="A published model shape, e.g. qwen2.5-1.5b."),
    quant: str = typer.Option("q4_k_m", "--quant", help="Quantization for --shape (llama.cpp mix): f16, q8_0, q4_k_m, ..."),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", help="Prompt length."),
    gen_tokens: int = typer.Option(64, "--gen-tokens", help="Output tokens."),
    context: int = typer.Option(2048, "--context", help="Context size allocated (KV cache, compute buffer)."),
    wait_s: float = typer.Option(0.0, "--wait-s", help="Seconds the inference keeps the device awake and idle (charged at idle power)."),
    include_load: bool = typer.Option(False, "--include-load", help="Add a model load (weights / storage read speed)."),
    compare_published: bool = typer.Option(False, "--compare-published", help="Set the estimator beside published phone measurements."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Estimate memory, TTFT/TPOT, tokens/s and battery cost of a model on a device (roofline)."""
    from edgeagent import estimate as est
    from edgeagent.output import emit_json, fail

    prof = _load(profile)
    if compare_published:
        if model or shape:
            fail("--compare-published uses the published models' shapes; drop --model/--shape")
        anchor = est.PUBLISHED_ANCHORS["profile"]
        if prof.name != anchor:
            fail(f"the published measurements are for {anchor}; use --profile {anchor}")
        cmp = est.compare_published(prof, n_ctx=context)
        emit_json(cmp) if json_out else _print_comparison(cmp)
        return
    if (model is None) == (shape is None):
        fail("give exactly one of --model FILE.gguf or --shape NAME (known shapes: " + ", ".join(est.PUBLISHED_SHAPES) + ")")
    try:
        if model is not None:
            if not model.is_file():
                fail(f"{model}: no such GGUF file")
            model_shape = est.shape_from_gguf(model)
        else:
            model_shape = est.shape_from_config(shape, quant)
        result = est.estimate(model_shape, prof, prompt_tokens, gen_tokens, n_ctx=context, wait_s=wait_s, include_load=include_load)
    except ValueError as exc:
        fail(str(exc))
    emit_json(result) if json_out else _print_estimate(result)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
    app.command("estimate")(estimate)
