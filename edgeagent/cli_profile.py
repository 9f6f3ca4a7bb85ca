"""Commands of this area, registered on the main ``edgeagent`` app: device profiles and
roofline estimates (``devices``, ``estimate [--validate]``), variant selection (``select``),
measured cost (``profile``) and this machine's profile (``calibrate``). Imports happen inside the commands so
``edgeagent --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeagent.report.html import fmt


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
        ["memory", fmt(mem["memory_mb"], 0), "MiB",
         f"weights {mem['weights_mb']:,.0f} + KV {mem['kv_cache_mb']:,.0f} ({mem['context']} ctx, {mem['kv_cache_type']}) "
         f"+ compute {mem['compute_resident_mb']:,.0f}"
         + (f" (of {mem['compute_buffer_mb']:,.0f} reserved)" if mem["compute_buffer_mb"] - mem["compute_resident_mb"] >= 0.5 else "")
         + f" + vocab {mem['vocab_mb']:,.0f} + runtime {mem['overhead_mb']:,.0f}; "
         f"{100 * mem['fraction_of_usable']:.0f}% of {mem['usable_mb']:,.0f} usable"],
        ["TTFT", fmt(lat["ttft_ms"]), "ms", f"{lat['prompt_tokens']}-token prompt, {lat['prefill_bound']}-bound"],
        ["TPOT", fmt(lat["tpot_ms"], 2), "ms", f"{lat['decode_bound']}-bound, {lat['bandwidth_effective_gbs']:.1f} GB/s effective"],
        ["tokens/s", fmt(lat["tokens_per_s"]), "tokens/s", "decode"],
        ["latency", fmt(lat["total_ms"]), "ms", f"prompt + {lat['gen_tokens']} output tokens"],
        ["energy", fmt(en["joules_per_inference"], 2), "J", f"above idle; prefill {en['prefill_j']:.2f} J + decode {en['decode_j']:.2f} J"],
        ["battery", fmt(en["mah_per_100_inferences"], 2), "mAh / 100 inferences",
         f"at {en['nominal_v']:g} V" + (f"; ~{en['inferences_per_charge']:,.0f} inferences per charge" if en.get("inferences_per_charge") else "")],
    ]
    spec = est.get("speculative")
    if spec:
        rows.append(["TPOT, self-speculative", fmt(spec["tpot_ms"], 2), "ms",
                     f"draft {spec['draft_token_ms']:.2f} ms/token x {spec['n_draft']}, verification of "
                     f"{spec['n_draft'] + 1} {spec['verify_ms']:.2f} ms ({spec['verify_bound']}-bound), alpha "
                     f"{spec['acceptance']:.2f}: x{spec['decode_speedup']:.2f} decode"])
    table("Estimate", ["figure", "value", "unit", "how"], rows)


def _print_comparison(cmp: dict[str, Any]) -> None:
    from edgeagent.anchors import FIGURES
    from edgeagent.output import console, table

    for src in cmp["sources"]:
        console.print(f"[bold]{src['id']}[/]: {src['device']}, {src['runtime']} ({src['citation']}); "
                      f"energy: {src['energy_includes']}", highlight=False)
    digits = {"decode_tokens_per_s": 1, "prefill_tokens_per_s": 1, "run_s": 2, "joules_per_run": 1, "peak_memory_mb": 0}
    rows = []
    for r in cmp["rows"]:
        if not r["estimated"]:
            continue  # in-sample rows the estimator cannot shape: in --json, with the reason
        label = f"{r['model']} {r['quant']} ({r['profile']}, {'held out' if r['held_out'] else 'in-sample'})"
        for key in FIGURES:
            c = r[key]
            if c["published"] is None and c["estimated"] is None:
                continue
            ratio = f"{c['ratio']:.2f}" if c["ratio"] is not None else "-"
            rows.append([label, key, fmt(c["estimated"], digits[key]), fmt(c["published"], digits[key]), ratio])
            label = ""
    table("estimate / published", ["row", "figure", "estimated", "published", "ratio"], rows)
    srows = [[k, v["held_out_rows"], fmt(v["median_ratio"], 2), fmt(v["worst_ratio"], 2)] for k, v in cmp["summary"].items()]
    table("held-out rows: estimated / published", ["figure", "rows", "median", "worst"], srows)
    for r in cmp["rows"]:
        for miss in r.get("misses", ()):
            console.print(f"  outside the tolerance: {r['source']} {r['model']} {r['quant']}, {miss['figure']} "
                          f"{miss['ratio']:.2f}: {'; '.join(miss['why'])}", highlight=False)
    for note in cmp["notes"]:
        console.print(f"  {note}", highlight=False)


def estimate(
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Device profile name or path to a .toml file."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="A GGUF file (exact tensor types and sizes)."),
    shape: Optional[str] = typer.Option(None, "--shape", help="A published model shape, e.g. qwen2.5-1.5b."),
    quant: str = typer.Option("q4_k_m", "--quant", help="Quantization for --shape (llama.cpp mix): f16, q8_0, q4_k_m, ..."),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", help="Prompt length."),
    gen_tokens: int = typer.Option(64, "--gen-tokens", help="Output tokens."),
    context: int = typer.Option(2048, "--context", help="Context size allocated (KV cache, compute buffer)."),
    wait_s: float = typer.Option(0.0, "--wait-s", help="Seconds the inference keeps the device awake and idle (charged at idle power)."),
    include_load: bool = typer.Option(False, "--include-load", help="Add a model load (weights / storage read speed)."),
    compare_published: bool = typer.Option(False, "--compare-published", help="Set the estimator beside published phone measurements."),
    validate: bool = typer.Option(False, "--validate", help="Estimated vs measured on this machine for every variant of --bundle, or for --model (use --profile host)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Bundle for --validate (default: the built-in model's)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="llama.cpp threads the estimate runs on (default: the profile's runtime.threads; threads past the big cores "
                                          "are paced by the little ones). With --validate: threads for building the built-in bundle."),
    draft_model: Optional[Path] = typer.Option(None, "--draft-model", help="An exit variant GGUF of --model: also estimate "
                                               "self-speculative decoding with it as the draft."),
    acceptance: float = typer.Option(0.9, "--acceptance", help="With --draft-model: the per-token acceptance alpha "
                                     "(the `alpha` of `bench early-exit`'s draft choice)."),
    n_draft: int = typer.Option(4, "--n-draft", help="With --draft-model: draft tokens per verification."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Estimate memory, TTFT/TPOT, tokens/s and battery cost of a model on a device (roofline)."""
    from edgeagent import estimate as est
    from edgeagent.output import emit_json, fail

    if profile is None and not compare_published:
        fail("--profile is required (only --compare-published runs without one: every source on its own profile)")
    prof = _load(profile) if profile is not None else None
    if validate:
        _validate(prof, bundle, model, prompt_tokens, gen_tokens, context, threads, json_out)
        return
    if compare_published:
        if model or shape:
            fail("--compare-published uses the published models' shapes; drop --model/--shape")
        from edgeagent.anchors import compare_published as compare

        try:
            cmp = compare({prof.name: prof} if prof else None, only_profile=prof.name if prof else None)
        except ValueError as exc:
            fail(str(exc))
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
        result = est.estimate(model_shape, prof, prompt_tokens, gen_tokens, n_ctx=context, wait_s=wait_s,
                              include_load=include_load, threads=threads)
        if draft_model is not None:
            if model is None:
                fail("--draft-model needs --model (the full-depth GGUF it drafts for)")
            if not draft_model.is_file():
                fail(f"{draft_model}: no such GGUF file")
            result["speculative"] = {**est.speculative_estimate(model_shape, est.shape_from_gguf(draft_model), prof,
                                                                prompt_tokens, acceptance, n_draft, threads),
                                     "draft_model": str(draft_model), "source": "estimated"}
    except ValueError as exc:
        fail(str(exc))
    emit_json(result) if json_out else _print_estimate(result)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table whose first column (a variant id, what users type) never wraps or gets cut."""
    from rich.table import Table

    from edgeagent.output import console

    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, no_wrap=i == 0)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    console.print(t)


def _agent_variant(agent: str, quant: str) -> tuple[Any, Any]:
    """A shipped agent's GGUF at ``quant`` as a full-depth ``bundle.Variant`` (built once and
    cached, as ``run --agent`` does), and the prompt format it was trained with."""
    from edgeagent.output import fail
    from edgeagent.variants import VariantError, resolve_model

    try:
        choice = resolve_model(None, quant, agent)
    except VariantError as exc:
        fail(str(exc))
    return _full_depth_variant(choice.path, f"{agent}-{quant}", quant), choice.prompt_format


def _full_depth_variant(path: Path, variant_id: str, quant: str | None = None) -> Any:
    """One GGUF as a full-depth ``bundle.Variant`` (its quant from the file when not given):
    the shipped agent's files and a ``--model`` file are not a bundle."""
    from edgeagent.bundle import Variant
    from edgeagent.output import fail
    from edgeagent.shapes import shape_from_gguf

    try:
        shape = shape_from_gguf(path)
    except ValueError as exc:
        fail(str(exc))
    return Variant(id=variant_id, quant=quant or shape.quant.lower(), exit_layer=shape.n_layers,
                   n_layers=shape.n_layers, path=Path(path).resolve(), sha256="", size_bytes=Path(path).stat().st_size)


def _excluded_apps(b: Any) -> tuple[str, ...]:
    """The apps a bundle's model was never trained on (``measurements.excluded_apps``, which the
    built-in model's and the shipped agents' bundles write), left out of its emulated tasks."""
    apps = (b.manifest.get("measurements") or {}).get("excluded_apps") or ()
    return tuple(a for a in apps if isinstance(a, str))


def _bundle(path: Optional[Path], threads: Optional[int], builtin: bool = False) -> Any:
    """``--bundle`` loaded and verified; when not given, the default agent's bundle
    (``variants.default_bundle``: its measured quantizations), or with ``builtin`` the built-in
    model's."""
    from edgeagent.bundle import BundleError, load_bundle
    from edgeagent.output import err_console, fail

    if path is None and not builtin:
        from edgeagent.variants import VariantError, default_bundle

        try:
            path = default_bundle(threads, note=lambda line: err_console.print(line, highlight=False, soft_wrap=True))
        except VariantError as exc:
            fail(f"{exc}; or pass --bundle DIR")
    if path is None:
        from edgeagent.builtin import BuiltinModelMissing, builtin_bundle

        try:
            from edgeagent.builtin import builtin_model_dir, cache_dir, weights_digest

            if not (cache_dir() / f"builtin-{weights_digest(builtin_model_dir())}" / "bundle" / "manifest.json").is_file():
                err_console.print("building the built-in model's bundle (once: f32, q8_0, q4_k_m, quality on emulated tasks)...")
            path = builtin_bundle(threads=threads)
        except BuiltinModelMissing as exc:
            fail(f"{exc}; or pass --bundle DIR")
    try:
        return load_bundle(path)
    except BundleError as exc:
        fail(str(exc))


def _gguf_variant(model: Path) -> Any:
    """``--validate --model``: the file as a full-depth variant."""
    from edgeagent.output import fail

    if not model.is_file():
        fail(f"{model}: no such GGUF file")
    return _full_depth_variant(model, model.stem)


def _validate(prof: Any, bundle: Optional[Path], model: Optional[Path], prompt_tokens: int, gen_tokens: int,
              context: int, threads: Optional[int], json_out: bool) -> None:
    from edgeagent.calibrate import validate_estimates, validate_rows
    from edgeagent.measure import MeasureError
    from edgeagent.output import console, emit_json, err_console, fail

    if model is not None and bundle is not None:
        fail("--validate takes --bundle or --model, not both")
    b = None if model is not None else _bundle(bundle, threads, builtin=True)
    variants = [_gguf_variant(model)] if model is not None else b.variants
    try:
        result = validate_estimates(variants, prof, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, n_ctx=context,
                                    log=None if json_out else err_console.print)
    except (MeasureError, ValueError) as exc:
        fail(str(exc))
    result["bundle" if b is not None else "model"] = str(b.root if b is not None else model)
    if json_out:
        emit_json(result)
        return
    w = result["workload"]
    columns, rows = validate_rows(result)
    _table(f"estimated on {prof.name} / measured here ({w['prompt_tokens']}-token prompt, {w['gen_tokens']} tokens, "
          f"{w['threads']} thread(s))", columns, rows)
    console.print("targets: memory within 10 %, decode tokens/s within 25 % (ratio = estimated / measured; "
                  "TTFT has no target). Measured: peak RSS of a fresh process, median token gap.", highlight=False)


def _constraints(prof: Any, max_memory_mb, max_ttft_ms, min_tokens_per_s, max_mah_per_100, min_quality) -> Any:
    from edgeagent.output import fail
    from edgeagent.select import constraints_for

    if min_quality is not None and min_quality > 1:
        min_quality /= 100.0  # 90 means 90 %
    try:
        return constraints_for(prof, max_memory_mb=max_memory_mb, max_ttft_ms=max_ttft_ms, min_tokens_per_s=min_tokens_per_s,
                               max_mah_per_100=max_mah_per_100, min_quality=min_quality)
    except ValueError as exc:
        fail(str(exc))


def _write_reports(html: Optional[Path], png: Optional[Path], make_png, make_report) -> list[str]:
    """Write --png / --html (the HTML embeds the PNG); returns the paths written."""
    from edgeagent.output import fail
    from edgeagent.atomic import write_bytes
    from edgeagent.report.html import write
    from edgeagent.report.plots import ReportError

    written = []
    if html is None and png is None:
        return written
    try:
        image = make_png()
    except ReportError as exc:
        fail(str(exc))
    if png is not None:
        written.append(str(write_bytes(png, image)))
    if html is not None:
        written.append(str(write(make_report(image), html)))
    return written


def select(
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory (default: the quantizations of "
                                          "the agent `demo` runs, with their measured quality; the built-in model's "
                                          "where that agent is not installed)."),
    profile: str = typer.Option(..., "--profile", "-p", help="Device profile name or path to a .toml file."),
    max_memory_mb: Optional[float] = typer.Option(None, "--max-memory-mb", help="Memory bound (default: 80% of the profile's usable memory)."),
    max_ttft_ms: Optional[float] = typer.Option(None, "--max-ttft-ms", help="TTFT bound per agent step (default 500)."),
    min_tokens_per_s: Optional[float] = typer.Option(None, "--min-tokens-per-s", help="Decode speed bound (default 20)."),
    max_mah_per_100: Optional[float] = typer.Option(None, "--max-mah-per-100", help="Battery bound, mAh per 100 inferences (default none)."),
    min_quality: Optional[float] = typer.Option(None, "--min-quality", help="Quality bound as a fraction of the reference's: full precision, or the best variant where none was measured (0.9, or 90; default 0.9)."),
    prompt_tokens: int = typer.Option(256, "--prompt-tokens", min=1, help="Prompt tokens of one agent step."),
    gen_tokens: int = typer.Option(16, "--gen-tokens", min=1, help="Output tokens of one agent step."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads when the built-in bundle must be built first."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (plots embedded)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the quality vs latency / energy plot."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """The best-quality variant of a bundle that fits the device; why each other one does not."""
    from edgeagent.output import console, emit_json, fail
    from edgeagent.select import NoVariantFits, select_rows, select_variant

    prof = _load(profile)
    b = _bundle(bundle, threads)
    c = _constraints(prof, max_memory_mb, max_ttft_ms, min_tokens_per_s, max_mah_per_100, min_quality)
    error = None
    try:
        result = select_variant(b, prof, c, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens)
    except NoVariantFits as exc:
        result, error = exc.result, str(exc)
    except ValueError as exc:
        fail(str(exc))
    result["error"] = error

    def report(image: bytes):
        from edgeagent.report.html import Report, table_from

        columns, rows = select_rows(result)
        return Report(
            title=f"edgeagent select: {b.root.name} on {prof.name}",
            subtitle=f"selected: {result['selected']['id'] if result['selected'] else 'none'} - all figures estimated "
                     f"(roofline) for a {prompt_tokens}-token prompt + {gen_tokens} tokens; quality measured at conversion",
            images=[("Variants on quality vs latency per step and vs battery; Pareto front in green, selected starred, "
                     "rejected hollow.", image)],
            tables=[table_from("Variants", columns, rows),
                    table_from("Constraints", ["bound", "value", "from"],
                               [[k, v, c.origin.get(k, "")] for k, v in c.to_dict().items() if k != "origin"])],
            warnings=[error] if error else [],
        )

    from edgeagent.report.plots import tradeoff_png

    written = _write_reports(html, png, lambda: tradeoff_png(result), report)
    result["reports"] = written
    if json_out:
        emit_json(result)
    else:
        columns, rows = select_rows(result)
        _table(f"edgeagent select: {b.root.name} on {prof.name} (estimated; one step = {prompt_tokens}-token prompt + "
              f"{gen_tokens} tokens)", columns, rows)
        bounds = ", ".join(f"{k} {v:g} ({c.origin[k]})" for k, v in c.to_dict().items() if k != "origin" and v is not None)
        console.print(f"constraints: {bounds}", highlight=False)
        if result["selected"]:
            console.print(f"selected: [bold]{result['selected']['id']}[/] ({result['selected']['path']})", highlight=False)
        for path in written:
            console.print(f"report: {path}", highlight=False)
    if error:
        fail(error)


def _energy_range(result: dict[str, Any]) -> None:
    """Give the battery figure a low/high range. Estimated: the estimator's held-out error on
    published phone measurements (``anchors.energy_ratio_range``); measured: the spread between
    the integral of current and the coulomb counter, when the phone has one."""
    fig = result["figures"]["mah_per_100_inferences"]
    value = fig["value"]
    if fig["source"] == "estimated":
        from edgeagent.anchors import compare_published, decode_misses, energy_ratio_range, with_range

        cmp = compare_published()
        lo_r, hi_r = energy_ratio_range(cmp)
        rng = with_range(value, (lo_r, hi_r))
        fig.update(low=rng["low"], high=rng["high"],
                   range_from=f"held-out published energy per run, estimated/published {lo_r:.2f}-{hi_r:.2f} "
                              "(edgeagent estimate --compare-published)")
        caveat = decode_misses(result["profile"], cmp)
        if caveat:
            fig["caveat"] = caveat
    else:
        energy = result["measured_here"]["energy"]
        runs = result["workload"]["runs"]
        by_counter = energy.get("mah_charge_counter")
        values = [value] + ([100 * by_counter / runs] if by_counter is not None else [])
        fig.update(low=min(values), high=max(values),
                   range_from="integral of current and charge_counter" if by_counter is not None
                   else "integral of current only (no charge_counter): no range")
    result["mah_per_100_inferences_low"] = fig["low"]
    result["mah_per_100_inferences_high"] = fig["high"]


def profile_command(
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory, its variant selected for "
                                          "--profile (default: the quantizations of the agent `demo` runs, with their "
                                          "measured quality; the built-in model's where that agent is not installed)."),
    agent: Optional[str] = typer.Option(None, "--agent", help="A shipped agent (smollm2, builtin) instead of a bundle: "
                                        "its GGUF at --quant, no selection."),
    quant: str = typer.Option("q8_0", "--quant", help="Quantization of the agent's GGUF, as `run --agent` builds it (q8_0, q4_k_m, f32, ...)."),
    profile: str = typer.Option(..., "--profile", "-p", help="Target device profile (the estimated figures; a bundle's selection)."),
    runs: int = typer.Option(100, "--runs", "-n", min=1, help="Agent inferences to run."),
    device: str = typer.Option("host", "--device", help="host | emulator | adb | adb:SERIAL (adb: battery measured)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="Variant id (default: what `edgeagent select` picks)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="llama.cpp threads here (default: all cores)."),
    seed: int = typer.Option(1000, "--seed", help="Task seed for the emulated screens."),
    hz: float = typer.Option(10.0, "--hz", help="Battery sampling rate on adb (>= 4)."),
    baseline_s: float = typer.Option(3.0, "--baseline-s", help="Idle baseline before the run on adb, seconds."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write an HTML report (plots embedded)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the variants' trade-offs and the per-call timings."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Run N agent inferences; measured RSS, TTFT, TPOT, tokens/s and energy beside the target's estimates."""
    from android_bridge.device import DeviceError
    from edgeagent.bundle import BundleError
    from edgeagent.engine import EngineError
    from edgeagent.output import console, emit_json, err_console, fail
    from edgeagent.profiling import profile_rows, profile_variant
    from edgeagent.builtin import HELD_OUT_APPS
    from edgeagent.select import NoVariantFits, select_variant

    prof = _load(profile)
    selection = None
    if agent is not None:
        if bundle is not None or variant is not None:
            fail("--agent profiles a shipped agent's GGUF; drop --bundle and --variant (or drop --agent)")
        chosen, prompt_format = _agent_variant(agent, quant)
        exclude = HELD_OUT_APPS  # no shipped agent trained on the held-out app either
    else:
        b = _bundle(bundle, threads)
        prompt_format = b.prompt_format
        try:
            selection = select_variant(b, prof)
            chosen = b.variant(variant) if variant else b.variant(selection["selected"]["id"])
        except NoVariantFits as exc:
            selection = exc.result
            if not variant:
                fail(f"{exc}\n(profile one anyway with --variant ID)")
            try:
                chosen = b.variant(variant)
            except BundleError as e:
                fail(str(e))
        except BundleError as exc:
            fail(str(exc))
        exclude = _excluded_apps(b)
    progress = None
    if not json_out and err_console.is_terminal:
        progress = lambda done, total: err_console.print(f"\r{done}/{total} inferences", end="")  # noqa: E731
    try:
        result = profile_variant(chosen, prompt_format, prof, runs=runs, device=device, threads=threads, seed=seed,
                                 hz=hz, baseline_s=baseline_s, exclude_apps=exclude, progress=progress)
    except (ValueError, DeviceError, EngineError) as exc:
        fail(str(exc))
    if progress:
        err_console.print()
    _energy_range(result)
    result["bundle"] = None if agent is not None else str(b.root)
    result["agent"] = agent
    result["selection"] = None if selection is None else (
        {k: selection[k] for k in ("constraints", "workload", "reference", "variants")}
        | {"selected": selection["selected"]["id"] if selection["selected"] else None})

    def report(image: bytes):
        from edgeagent.report.html import Report, table_from
        from edgeagent.select import select_rows

        columns, rows = profile_rows(result)
        tables = [table_from("Measured here beside estimated on the target", columns, rows)]
        if selection is not None:
            tables.append(table_from(f"Variants on {prof.name}", *select_rows(selection)))
        here = result["measured_here"]
        return Report(
            title=f"edgeagent profile: {chosen.id} on {device} (target {prof.name})",
            subtitle=f"{result['workload']['runs']} agent inferences; measured on {here['where']}; "
                     f"estimated for {result['estimated_on_target']['where']}",
            images=[("Top: the bundle's variants on quality vs latency per step and vs battery on the target "
                     "(estimated; Pareto front green, selected starred). Bottom: every inference of this run "
                     "(measured here).", image)],
            tables=tables,
            warnings=result["warnings"],
            notes=[f"{k}: {v['source']} ({v['where']})" for k, v in result["figures"].items()],
        )

    from edgeagent.report.plots import profile_png

    result["reports"] = _write_reports(html, png, lambda: profile_png(result, selection), report)
    if json_out:
        emit_json(result)
        return
    columns, rows = profile_rows(result)
    _table(f"edgeagent profile: {chosen.id}, {result['workload']['runs']} inferences on {device}", columns, rows)
    console.print(f"measured: {result['measured_here']['where']}", highlight=False)
    for key, fig in result["figures"].items():
        console.print(f"  {key}: {fig['source']} ({fig['where']})", highlight=False)
        if fig.get("caveat"):
            console.print(f"    caveat: {fig['caveat']}", highlight=False)
    for w in result["warnings"]:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    for path in result["reports"]:
        console.print(f"report: {path}", highlight=False)


def calibrate_command(
    out: Path = typer.Option(..., "-o", "--out", help="Profile TOML to write, e.g. device_profiles/host.toml."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="HF model dir for the probes (default: the built-in model)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Threads to calibrate with (default: all cores)."),
    probe_mb: Optional[str] = typer.Option(None, "--probe-mb", help="Sizes of the random probe models in MiB, e.g. 48,160 (default: 1.5x and 5x the last-level cache)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Measure this machine (bandwidth, compute, llama.cpp decode) and write its device profile."""
    from edgeagent.builtin import BuiltinModelMissing
    from edgeagent.calibrate import CalibrationError, calibrate, write_profile
    from edgeagent.export.hf_to_gguf import ExportError
    from edgeagent.measure import MeasureError
    from edgeagent.output import console, emit_json, err_console, fail
    from edgeagent.profiles import ProfileError

    if model_dir is not None and not (model_dir / "config.json").is_file():
        fail(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    sizes = None
    if probe_mb:
        try:
            sizes = [float(x) * 2**20 for x in probe_mb.split(",") if x.strip()]
        except ValueError:
            fail(f"--probe-mb {probe_mb!r}: expected sizes in MiB separated by commas, e.g. 48,160")
        if not sizes or min(sizes) <= 0:
            fail(f"--probe-mb {probe_mb!r}: sizes must be positive")
    try:
        result = calibrate(model_dir, threads=threads, probe_bytes=sizes, log=None if json_out else err_console.print)
        path = write_profile(result["profile"], out)
    except (BuiltinModelMissing, CalibrationError, MeasureError, ExportError, ProfileError, OSError) as exc:
        fail(str(exc))
    result["path"] = str(path)
    if json_out:
        emit_json(result)
        return
    p = result["profile"]
    console.print(
        f"wrote {path}: bandwidth {p['bandwidth_theoretical_gbs']} GB/s x eta {p['bandwidth_efficiency']}, "
        f"compute {p['compute_gflops_sustained']} GFLOP/s, decode overhead {p['runtime']['decode_overhead_ms']} ms/token, "
        f"runtime {p['runtime']['overhead_mb']} MiB ({p['runtime']['threads']} thread(s))", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
    app.command("estimate")(estimate)
    app.command("select")(select)
    app.command("profile")(profile_command)
    app.command("calibrate")(calibrate_command)
