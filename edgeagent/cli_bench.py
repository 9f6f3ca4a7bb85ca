"""``edgeagent bench``: what the engine and a model's variants cost, measured on this machine.

One mode per subcommand, each with only its own options:

- ``bench throughput -m F.gguf`` (also plain ``bench -m F.gguf``): the engine next to plain
  llama-cpp-python, prefill and decode;
- ``bench prefix-reuse -m F.gguf``: what the KV cache kept between agent calls saves;
- ``bench early-exit [--model HF_DIR]``: exit depths and self-speculative decoding on the agent;
- ``bench ablation --profile P``: the quantization x exit x GQA matrix, measured and estimated;
- ``bench stock [-m F.gguf]``: the engine beside stock ``llama-bench`` (``edgeagent.stock_bench``).

The flags of the single command it replaces (``--prefix-reuse``, ``--early-exit``,
``--ablation``) still pick the same modes, so scripts written for them keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeagent.cli_common import ATTENTION_HELP
from edgeagent.hugepages import huge_pages_text
from edgeagent.output import console, emit_json, err_console, fail, table

bench_app = typer.Typer(
    name="bench", invoke_without_command=True, add_completion=False, pretty_exceptions_enable=False,
    help="Measure what the engine and a model's variants cost here: throughput (the default), prefix-reuse, "
         "early-exit, ablation.",
)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


# Each option once; the subcommands and the flag-style command take the ones they use.
def _model(help: str):
    return typer.Option(None, "--model", "-m", help=help)


GGUF_HELP = "GGUF file to benchmark."
HF_HELP = "Hugging Face model directory (default: the built-in model)."


def _threads():
    return typer.Option(None, "--threads", "-t", help="Threads (default: all cores).")


def _prompt_tokens(default: str):
    return typer.Option(None, "--prompt-tokens", "-p", help=f"Prompt length (default {default}).")


def _gen_tokens(default: str):
    return typer.Option(None, "--gen-tokens", "-n", help=f"Tokens to generate (default {default}).")


def _reps():
    return typer.Option(5, "--reps", "-r", help="Measured repetitions (after one warm-up).")


def _exits():
    return typer.Option(None, "--exits", help="Exit depths, e.g. 2,4 or 0.5 (a fraction of the depth).")


def _tasks():
    return typer.Option(20, "--tasks", help="Emulated tasks per variant.")


def _seed():
    return typer.Option(1000, "--seed", help="Task seed (training used seed 1).")


def _heads():
    return typer.Option(None, "--heads", help="Trained exit heads (a directory from converters.early_exit).")


def _json():
    return typer.Option(False, "--json", help="Print the result as JSON.")


def _bundle():
    return typer.Option(None, "--bundle", help="Early exit on a bundle `edgeagent convert` wrote: its full-depth and "
                        "exit variants at --quant, with its prompt format.")


def _exclude_app():
    return typer.Option(None, "--exclude-app", help="Leave this app's tasks out (repeatable; the built-in model "
                        "leaves out the apps it never saw).")


@bench_app.callback()
def bench_command(
    ctx: typer.Context,
    model: Optional[Path] = _model("GGUF file to benchmark (default: the default shipped agent's variant at --quant; "
                                   "with --early-exit / --ablation: an HF dir, default the built-in model)."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Shipped agent whose GGUF is benchmarked when no --model "
                                        "is given."),
    threads: Optional[int] = _threads(),
    prompt_tokens: Optional[int] = _prompt_tokens("128, --ablation: 256, one agent step"),
    gen_tokens: Optional[int] = _gen_tokens("128, --ablation: 16, one action"),
    reps: int = _reps(),
    prefix_reuse: bool = typer.Option(False, "--prefix-reuse", help="= bench prefix-reuse."),
    early_exit: bool = typer.Option(False, "--early-exit", help="= bench early-exit."),
    exits: Optional[str] = _exits(),
    quant: str = typer.Option("q8_0", "--quant", help="Quantization of the shipped agent's GGUF, and of the "
                              "--early-exit variants."),
    tasks: int = _tasks(),
    seed: int = _seed(),
    heads: Optional[Path] = _heads(),
    train_exit_steps: int = typer.Option(0, "--train-exit-steps", help="Train dedicated exit heads first (EE-Tuning)."),
    n_draft: int = typer.Option(4, "--n-draft", help="Draft length for self-speculative decoding."),
    bundle: Optional[Path] = _bundle(),
    exclude_app: Optional[list[str]] = _exclude_app(),
    ablation: bool = typer.Option(False, "--ablation", help="= bench ablation."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile for --ablation."),
    gqa_model: Optional[Path] = typer.Option(None, "--gqa-model", help="GQA-converted sibling (HF dir) for --ablation."),
    shape: Optional[str] = typer.Option(None, "--shape", help="--ablation for a published shape, estimated only."),
    gqa_groups: int = typer.Option(4, "--gqa-groups", help="KV heads per group for a --shape's GQA cells."),
    png: Optional[Path] = typer.Option(None, "--png", help="--ablation: write the cells as a chart."),
    json_out: bool = _json(),
) -> None:
    """Measure tokens/s: the engine next to plain llama-cpp-python, prefill and decode (or the
    mode a flag or subcommand names)."""
    if ctx.invoked_subcommand is not None:
        return  # the subcommand runs with its own options
    if early_exit:
        _early_exit(model, exits, quant, tasks, seed, heads, train_exit_steps, n_draft, threads, json_out, bundle,
                    exclude_app)
    elif ablation:
        _ablation(model, profile, gqa_model, shape, gqa_groups, exits, heads, tasks, seed, prompt_tokens, gen_tokens,
                  threads, png, json_out)
    else:
        _throughput(model, agent, quant, threads, prompt_tokens, gen_tokens, reps, prefix_reuse, json_out)


def _throughput_mode(prefix_reuse: bool, doc: str):
    """``bench throughput`` and ``bench prefix-reuse``: the same options, two measurements."""
    def command(
        model: Optional[Path] = _model(GGUF_HELP),
        agent: Optional[str] = typer.Option(None, "--agent", help="Shipped agent whose GGUF is benchmarked when no "
                                            "--model is given."),
        quant: str = typer.Option("q8_0", "--quant", help="Quantization of the shipped agent's GGUF."),
        threads: Optional[int] = _threads(),
        prompt_tokens: Optional[int] = _prompt_tokens("128"),
        gen_tokens: Optional[int] = _gen_tokens("128"),
        reps: int = _reps(),
        json_out: bool = _json(),
    ) -> None:
        _throughput(model, agent, quant, threads, prompt_tokens, gen_tokens, reps, prefix_reuse, json_out)

    command.__doc__ = doc
    return command


bench_app.command("throughput")(_throughput_mode(
    False, "The engine next to plain llama-cpp-python: prefill and decode tokens/s, paired reps."))
bench_app.command("prefix-reuse")(_throughput_mode(
    True, "What the KV cache kept between calls saves: a cold prompt vs one whose prefix is cached."))


@bench_app.command("early-exit")
def early_exit_command(
    model: Optional[Path] = _model(HF_HELP),
    exits: Optional[str] = _exits(),
    quant: str = typer.Option("q8_0", "--quant", help="Quantization of the variants."),
    tasks: int = _tasks(),
    seed: int = _seed(),
    heads: Optional[Path] = _heads(),
    train_exit_steps: int = typer.Option(0, "--train-exit-steps", help="Train dedicated exit heads first (EE-Tuning)."),
    n_draft: int = typer.Option(4, "--n-draft", min=1, help="Draft length for self-speculative decoding."),
    drafts: Optional[str] = typer.Option(None, "--drafts", help="Exit depths tried as speculative drafts, e.g. 15,21 "
                                         "(default: the exits in the model's first half, else the shallowest)."),
    confidence: float = typer.Option(0.9, "--confidence", min=0.0, max=1.0, help="CALM threshold of the lossy "
                                     "dynamic exit measured beside (0: skip it)."),
    draft_vocab: bool = typer.Option(False, "--draft-vocab", help="Cut each draft's vocabulary to the tokens the "
                                     "agent writes (its head is most of a shallow draft's cost on a large vocabulary)."),
    draft_quant: Optional[str] = typer.Option(None, "--draft-quant", help="With --bundle: draft with its exits at "
                                              "this quant (e.g. q4_k_m under an f16 model: the same layers in fewer "
                                              "bytes; the full model still verifies every token)."),
    bundle: Optional[Path] = _bundle(),
    save: bool = typer.Option(False, "--save", help="With --bundle: write the chosen draft depth and length into its "
                              "manifest (run and demo then decode with it), or remove the entry when no draft pays."),
    exclude_app: Optional[list[str]] = _exclude_app(),
    threads: Optional[int] = _threads(),
    json_out: bool = _json(),
) -> None:
    """Exit depths (task success, tokens/s, perplexity) and self-speculative decoding, on the agent."""
    _early_exit(model, exits, quant, tasks, seed, heads, train_exit_steps, n_draft, threads, json_out, bundle,
                exclude_app, drafts=drafts, confidence=confidence, save=save, draft_vocab=draft_vocab,
                draft_quant=draft_quant)


@bench_app.command("ablation")
def ablation_command(
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile the cells are estimated on."),
    model: Optional[Path] = _model(HF_HELP),
    gqa_model: Optional[Path] = typer.Option(None, "--gqa-model", help="GQA-converted sibling (HF dir) for the GQA cells."),
    shape: Optional[str] = typer.Option(None, "--shape", help="A published shape, estimated only (e.g. phi-3-mini)."),
    gqa_groups: int = typer.Option(4, "--gqa-groups", help="KV heads per group for a --shape's GQA cells."),
    exits: Optional[str] = _exits(),
    heads: Optional[Path] = _heads(),
    tasks: int = _tasks(),
    seed: int = _seed(),
    prompt_tokens: Optional[int] = _prompt_tokens("256, one agent step"),
    gen_tokens: Optional[int] = _gen_tokens("16, one action"),
    threads: Optional[int] = _threads(),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the cells on quality vs latency / energy."),
    json_out: bool = _json(),
) -> None:
    """The ablation matrix (full precision, 8/4-bit, exit, GQA, pairs, all three): measured here, estimated on P."""
    _ablation(model, profile, gqa_model, shape, gqa_groups, exits, heads, tasks, seed, prompt_tokens, gen_tokens,
              threads, png, json_out)


@bench_app.command("stock")
def stock_command(
    model: Optional[Path] = _model("GGUF file (default: the default shipped agent's variant at --quant)."),
    agent: Optional[str] = typer.Option(None, "--agent", help="Shipped agent whose GGUF runs when no --model is given."),
    quant: str = typer.Option("q8_0", "--quant", help="Quantization of the shipped agent's GGUF."),
    threads: Optional[int] = _threads(),
    prompt_tokens: Optional[int] = _prompt_tokens("128"),
    gen_tokens: Optional[int] = _gen_tokens("128"),
    depth: int = typer.Option(0, "--depth", "-d", min=0, help="Tokens already in the KV cache before the prompt, as "
                              "in llama-bench's -d (an agent step: -d 380 -p 160 -n 16, calibrate's probe)."),
    reps: int = _reps(),
    llama_bench: Optional[Path] = typer.Option(
        None, "--llama-bench", help="The llama-bench binary (default: the cached stock build of the installed "
                                    "llama-cpp-python, else llama-bench on PATH)."),
    build: bool = typer.Option(False, "--build", help="Build stock llama.cpp from the source llama-cpp-python vendors "
                                                      "first if no llama-bench is found (minutes; cached)."),
    attention: str = typer.Option("on", "--attention", help=ATTENTION_HELP),
    paired: int = typer.Option(0, "--paired", min=0, help="Instead of the table: N interleaved pairs of decode, "
                               "llama-bench at its defaults (-r 1) then the engine at its defaults, and the mean ratio "
                               "with its 95 % interval (N >= 2)."),
    json_out: bool = _json(),
) -> None:
    """The engine beside stock llama-bench on the same GGUF: prefill and decode tokens/s and
    engine / stock, with the engine's settings and with llama-bench's defaults."""
    from edgeagent import bench, stock_bench
    from edgeagent.cli_common import attention_or_fail, choose_model
    from edgeagent.engine import EngineError
    from edgeagent.stock import StockError, build_stock

    say = (lambda _msg: None) if json_out else err_console.print
    prompt_tokens = 128 if prompt_tokens is None else prompt_tokens
    gen_tokens = 128 if gen_tokens is None else gen_tokens
    if prompt_tokens < 2 or gen_tokens < 2 or reps < 1:
        fail("need --prompt-tokens >= 2, --gen-tokens >= 2 and --reps >= 1")
    attention_or_fail(attention)
    chosen = choose_model(model=model, agent=agent, quant=quant)
    try:
        found = stock_bench.find_llama_bench(llama_bench)
        if found is None and build:
            built = build_stock(log=err_console.print)
            found = built.tool("llama-bench"), f"stock build: {built.describe()}"
        if found is None:
            fail("no llama-bench: give --llama-bench PATH, put it on PATH, or add --build to build stock llama.cpp "
                 "from the source llama-cpp-python vendors (minutes, once)")
        if paired:
            if paired < 2:
                fail(f"--paired {paired}: give at least 2 pairs")
            result = stock_bench.run_paired_decode(chosen.path, found[0], found[1], threads=threads,
                                                   prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, depth=depth,
                                                   pairs=paired, attention=attention, progress=say)
            if json_out:
                emit_json(result)
            else:
                console.print(f"decode, {paired} pairs after {result['context_tokens']} tokens: engine / llama-bench "
                              f"median {result['median_ratio']:.3f}, mean {result['mean_ratio']:.3f} (95 % interval "
                              f"{result['ci95'][0]:.3f}-{result['ci95'][1]:.3f}): {result['verdict']}", highlight=False)
                low, high = result["decode_timer_ci95"]
                console.print(f"by llama.cpp's own decode timer the engine reads {result['median_decode_timer_ratio']:.3f} "
                              f"(median; mean {result['mean_decode_timer_ratio']:.3f}, 95 % interval {low:.3f}-{high:.3f}); "
                              f"its wall time runs {result['median_outside_decode_us_per_token']:.0f} us a "
                              "token beyond that timer, which starts after llama_decode has checked the batch (the "
                              "engine's own Python is ~5 us of it)", highlight=False)
                console.print(f"the engine's weights on 2 MiB pages: {huge_pages_text(result['engine_huge_pages'])} "
                              "(llama-bench's stay mapped from the file on 4 KiB pages)", highlight=False)
            return
        say(f"engine: {chosen.name}, {reps} reps")
        engine = bench.bench_throughput(chosen.path, threads=threads, prompt_tokens=prompt_tokens,
                                        gen_tokens=gen_tokens, reps=reps, depth=depth, attention=attention)
        result = stock_bench.run_stock_bench(engine, found[0], found[1], reps=reps, progress=say)
    except (StockError, EngineError) as e:
        fail(" ".join(str(e).split()))
    if json_out:
        emit_json(result)
        return
    columns, rows = stock_bench.stock_rows(result)
    table(f"edgeagent bench stock: {chosen.name} ({result['model']})", columns, rows)
    for line in stock_bench.notes(result):
        console.print(line, highlight=False)


def _early_exit(model, exits, quant, tasks, seed, heads, train_exit_steps, n_draft, threads, json_out, bundle=None,
                exclude_app=None, drafts=None, confidence=0.9, save=False, draft_vocab=False,
                draft_quant=None) -> None:
    from edgeagent.bundle import BundleError
    from edgeagent.early_exit_bench import (bench_bundle, bench_model, early_exit_rows, early_exit_summary,
                                            run_early_exit_bench, save_draft_choice)
    from edgeagent.engine import EngineError

    say = (lambda _msg: None) if json_out else err_console.print
    if save and bundle is None:
        fail("--save writes the chosen draft into a bundle's manifest: give --bundle")
    if save and draft_vocab:
        fail("--draft-vocab measures drafts the bundle does not hold; --save only records a bundle's own variants")
    if draft_quant is not None and bundle is None:
        fail("--draft-quant takes a bundle's exits at that quant: give --bundle")
    if bundle is not None and (model is not None or heads is not None or train_exit_steps):
        fail("--bundle brings its own model and exits: drop --model, --heads and --train-exit-steps")
    exclude = [a for item in exclude_app or [] for a in item.split(",") if a.strip()] or None
    try:
        if bundle is not None:
            target = bench_bundle(bundle, quant, exits, exclude_apps=exclude, draft_quant=draft_quant)
        else:
            target = bench_model(model, exits, exclude_apps=exclude)
        training = None
        if heads is None and train_exit_steps > 0:
            heads, training = _train_exit_heads(target, seed, train_exit_steps, say)
        draft_exits = None
        if drafts:
            try:
                draft_exits = [int(k) for k in drafts.split(",") if k.strip()]
            except ValueError:
                fail(f"--drafts {drafts!r}: give exit depths as whole numbers, e.g. 15,21")
            unknown = [k for k in draft_exits if k not in target.exit_layers]
            if unknown:
                fail(f"--drafts {drafts}: no exit at depth {', '.join(map(str, unknown))} "
                     f"(exits: {', '.join(map(str, target.exit_layers))})")
        result = run_early_exit_bench(target, quant, tasks, seed, heads=heads, training=training, n_draft=n_draft,
                                      draft_exits=draft_exits, confidence=confidence or None, threads=threads,
                                      draft_vocab=draft_vocab, progress=say)
        if save:
            result["saved"] = save_draft_choice(bundle, quant, result)
    except (ValueError, EngineError, BundleError) as e:
        fail(" ".join(str(e).split()))
    if json_out:
        emit_json(result)
        return
    columns, rows = early_exit_rows(result)
    table("edgeagent bench early-exit (measured on this machine)", columns, rows)
    for line in early_exit_summary(result):
        console.print(line, highlight=False)


def _throughput(model, agent, quant, threads, prompt_tokens, gen_tokens, reps, prefix_reuse, json_out) -> None:
    from rich.progress import BarColumn, Progress, TextColumn

    from edgeagent import bench
    from edgeagent.cli_common import choose_model
    from edgeagent.engine import EngineError

    prompt_tokens = 128 if prompt_tokens is None else prompt_tokens
    gen_tokens = 128 if gen_tokens is None else gen_tokens
    if prompt_tokens < 2 or gen_tokens < 2 or reps < 1:
        fail("need --prompt-tokens >= 2, --gen-tokens >= 2 and --reps >= 1")
    model = choose_model(model=model, agent=agent, quant=quant).path  # the file, or the shipped agent's at --quant
    error = None
    with Progress(
        TextColumn("benchmarking"), BarColumn(), TextColumn("{task.completed}/{task.total} reps"),
        console=err_console, transient=True, disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("bench", total=None)
        try:
            mode = bench.bench_prefix_reuse if prefix_reuse else bench.bench_throughput
            result = mode(
                model, threads=threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, reps=reps,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        except EngineError as e:
            error = " ".join(str(e).split())
    if error is not None:
        fail(error)

    if json_out:
        emit_json(result)
        return
    if prefix_reuse:
        columns, rows = bench.prefix_reuse_rows(result)
        table("edgeagent bench prefix-reuse (measured on this machine)", columns, rows)
        console.print(
            f"TTFT saved by the cached prefix: {result['ttft_saved_pct']:.1f} %; "
            f"same greedy output: {result['identical_output']}",
            highlight=False,
        )
        return
    columns, rows = bench.throughput_rows(result)
    table("edgeagent bench (measured on this machine)", columns, rows)
    console.print(
        f"engine overhead vs llama-cpp-python: {result['overhead_pct']:+.2f} % ± {result['overhead_pct_std']:.2f} "
        f"(decode, paired over {result['reps']} reps); repack={result['repack']}, "
        f"2 MiB pages: {huge_pages_text(result['huge_pages'])}, "
        f"llama-cpp-python {result['llama_cpp_python']}, {result['machine']}",
        highlight=False,
    )
    console.print(bench.contention_note(result), highlight=False)


def _train_exit_heads(target, seed: int, steps: int, say) -> tuple[Path, dict]:
    """``bench --early-exit --train-exit-steps``: dedicated exit heads trained first (EE-Tuning,
    the converter's) on expert traces; the heads directory and what training reported."""
    from converters.early_exit import train_exits
    from edgeagent.early_exit_bench import head_training_traces

    say(f"training dedicated exit heads at {target.exit_layers} for {steps} steps (EE-Tuning)")
    traces = head_training_traces(target, seed)
    heads = target.work / f"heads-{steps}"
    training = train_exits(target.model_dir, traces, target.exit_layers, "dedicated", heads, steps=steps, resume=True,
                           log=say)
    return heads, training


def _ablation(model, profile, gqa_model, shape, gqa_groups, exits, heads, tasks, seed, prompt_tokens, gen_tokens,
              threads, png, json_out) -> None:
    """``bench --ablation``: measured on a model (default the built-in one), or estimated
    for a published ``--shape``."""
    from edgeagent import ablation as ab
    from edgeagent.builtin import BuiltinModelMissing
    from edgeagent.engine import EngineError
    from edgeagent.measure import MeasureError
    from edgeagent.profiles import ProfileError, load_profile

    if profile is None:
        fail("--ablation needs --profile (the device the cells are estimated on), e.g. --profile snapdragon-8-gen-2")
    try:
        prof = load_profile(profile)
    except ProfileError as e:
        fail(str(e))
    workload = {"prompt_tokens": prompt_tokens or ab.STEP_PROMPT_TOKENS, "gen_tokens": gen_tokens or ab.STEP_GEN_TOKENS}
    try:
        if shape is not None:
            if model is not None or gqa_model is not None:
                fail("--shape is estimated only: drop --model / --gqa-model")
            result = ab.shape_ablation(prof, shape, exit_layer=exits, gqa_groups=gqa_groups, **workload)
        else:
            for path, flag in ((model, "--model"), (gqa_model, "--gqa-model")):
                if path is not None and not (path / "config.json").is_file():
                    fail(f"{flag} {path}: not a Hugging Face model directory (no config.json)")
            result = ab.run_ablation(prof, model, gqa_model=gqa_model, exit_layer=exits, heads=heads, tasks=tasks,
                                     seed=seed, threads=threads, progress=None if json_out else err_console.print,
                                     **workload)
    except (ValueError, EngineError, MeasureError, BuiltinModelMissing) as e:
        fail(" ".join(str(e).split()))
    if png is not None:
        from edgeagent.atomic import write_bytes
        from edgeagent.report.plots import ReportError, ablation_png

        try:
            result["reports"] = [str(write_bytes(png, ablation_png(result)))]
        except ReportError as e:
            fail(str(e))
    if json_out:
        emit_json(result)
        return
    columns, rows = ab.ablation_rows(result)
    what = "estimated" if not result["measured"] else "measured here + estimated"
    table(f"edgeagent bench ablation: {result['model']} on {result['profile']} ({what})", columns, rows)
    best = result["best"]
    console.print(f"best under the default constraints: {best['cell'] if best else 'none fits'}"
                  + (f" -- {best['basis']}" if best else ""), highlight=False)
    for note in result["notes"]:
        console.print(f"note: {note}", highlight=False)
