"""Writing a bundle: GGUF variants (quantization x exit depth), their measured quality, and
``manifest.json`` (the format ``edgeagent.bundle`` reads and verifies).

The bundle is assembled in a staging directory and swapped into place whole at the end, so
a reader sees the old bundle or the new one, never a mix; inside it every file is written
through a temp file and a rename, the manifest last.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeagent.atomic import swap_dir_in, temp_dir_next_to, write_text
from edgeagent.bundle import MANIFEST, BundleError, Manifest, PromptFormat
from edgeagent.validation import describe


def pack_variants(model_dir: str | os.PathLike, bundle_dir: str | os.PathLike, quants: Sequence[str],
                  exits: Sequence[int], *, heads_dir: str | os.PathLike | None = None, name: str = "model",
                  threads: int | None = None) -> list[dict]:
    """One GGUF per (exit depth, quant) in ``bundle_dir``: the full depth through the
    exporter, shallower exits through ``edgeagent.export.exit_pack.pack_exits`` (first k blocks +
    that exit's norm and head). ``heads_dir`` None: shared exits (the final norm and head)."""
    from edgeagent.export.exit_pack import pack_exits

    return pack_exits(model_dir, heads_dir, list(exits), list(quants), bundle_dir, name=name, threads=threads)


def measure_variant(path: str | os.PathLike, *, heldout: Sequence[tuple[list[int], list[int]]] = (),
                    tasks: Sequence[Any] = (), prompt_format: PromptFormat | None = None, max_steps: int = 20,
                    threads: int | None = None) -> dict[str, Any]:
    """Quality of one GGUF in llama.cpp: held-out perplexity (target tokens only), task success
    on emulated tasks when there are any, and KV-cache bytes per token."""
    from edgeagent.quality import heldout_perplexity, kv_cache_bytes_per_token, task_success

    started = time.perf_counter()
    quality: dict[str, Any] = {}
    if heldout:
        ppl = heldout_perplexity(path, heldout, threads=threads)
        quality.update(perplexity=ppl["perplexity"], heldout_nll=ppl["heldout_nll"],
                       heldout_tokens=ppl["heldout_tokens"], heldout_examples=ppl["examples"])
    if tasks:
        ts = task_success(path, tasks, prompt_format=prompt_format, max_steps=max_steps, threads=threads)
        quality.update(task_success=ts["task_success"], tasks=ts["tasks"], steps_per_task=ts["steps"],
                       per_template=ts.get("per_template", {}), failed_tasks=ts.get("failed_tasks", []))
    kv = kv_cache_bytes_per_token(path, threads=1)
    quality["source"] = "measured"
    quality["seconds"] = round(time.perf_counter() - started, 2)
    return {"quality": quality, "kv_cache_bytes_per_token": kv["kv_cache_bytes_per_token"]}


def make_manifest(variants: Sequence[dict], *, source_model: dict, prompt_format: PromptFormat,
                  tokenizer: dict, measurements: dict, profile: str | None,
                  created_by: str = "edgeagent convert") -> Manifest:
    """The manifest of ``variants`` written now (``Manifest.new``); a malformed variant is a
    ``BundleError`` here, before anything is written."""
    try:
        return Manifest.new(list(variants), source_model=source_model, prompt_format=prompt_format,
                            tokenizer=tokenizer, measurements=measurements, profile=profile, created_by=created_by)
    except ValidationError as e:
        raise BundleError(describe(e, MANIFEST, Manifest)) from None


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest | dict) -> Path:
    """``manifest.json``, atomically (temp file, fsync, rename). A dict is validated as a
    ``Manifest`` first (``BundleError`` naming the file and key)."""
    path = Path(bundle_dir) / MANIFEST
    if not isinstance(manifest, Manifest):
        try:
            manifest = Manifest.model_validate(manifest)
        except ValidationError as e:
            raise BundleError(describe(e, str(path), Manifest)) from None
    return write_text(path, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")


def staging_dir(out_dir: str | os.PathLike) -> Path:
    """A fresh directory next to ``out_dir`` to assemble the bundle in. Its name carries the
    writing process's id (``.OUT.<pid>.<random>.staging``), so the leftovers of a run that was
    killed (kill -9 leaves no chance to clean up) are recognised and removed here."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    return temp_dir_next_to(out_dir, suffix=".staging")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging and swapped-out directories of ``out_dir`` that a dead process left
    (``.OUT.<pid>.*.staging``, ``.OUT.old.<pid>``); a live writer's are kept. Returns them."""
    removed = []
    for leftover in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*"):
        middle = leftover.name[len(out_dir.name) + 2:]
        pid_text = middle.split(".")[0] if middle.endswith(".staging") else middle.removeprefix("old.")
        if not pid_text.isdigit() or leftover.is_symlink() or not leftover.is_dir() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(leftover, ignore_errors=True)
        removed.append(leftover)
    return removed


def publish(staging: Path, out_dir: str | os.PathLike) -> Path:
    """Swap the finished staging directory in as ``out_dir`` (the old bundle, if any, goes)."""
    return swap_dir_in(staging, out_dir)


def variant_rows(manifest: dict) -> tuple[list[str], list[list[Any]]]:  # a Manifest.to_dict()
    """The variant table ``edgeagent convert`` prints."""
    columns = ["variant", "quant", "exit", "size MiB", "perplexity", "task success", "KV B/token"]
    rows = []
    for v in manifest["variants"]:
        q = v.get("quality", {})
        ppl = q.get("perplexity")
        ts = q.get("task_success")
        rows.append([
            v["id"], v["quant"], f"{v['exit_layer']}/{v['n_layers']}", f"{v['size_bytes'] / 2**20:.2f}",
            f"{ppl:.3f}" if ppl is not None else "-",
            f"{ts:.0%} of {q.get('tasks')}" if ts is not None else "-",
            v.get("kv_cache_bytes_per_token", "-"),
        ])
    return columns, rows



def build_bundle(model_dir: str | os.PathLike, out_dir: str | os.PathLike, quants: Sequence[str],
                 exits: Sequence[int] | None = None, *, name: str = "model", heads_dir: str | os.PathLike | None = None,
                 tasks: Sequence[Any] = (), heldout_examples: Sequence[dict] = (), max_steps: int = 15,
                 prompt_format: PromptFormat | None = None, source_model: dict | None = None,
                 measurements: dict | None = None, profile: str | None = None, threads: int | None = None,
                 log: Any = None) -> dict:
    """A bundle of an HF model as it is (no fine-tuning): pack every quant x exit depth,
    measure each variant in llama.cpp (task success on ``tasks``, perplexity of the action
    tokens of ``heldout_examples`` -- prompt/completion dicts), write the manifest, publish.

    What ``edgeagent.builtin.builtin_bundle`` and ``edgeagent bench --ablation`` use; numpy,
    safetensors and llama.cpp only (no torch). Returns the manifest."""
    from edgeagent.quality import heldout_perplexity, text_examples

    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    n_layers = int(config["num_hidden_layers"])
    fmt = prompt_format or PromptFormat()
    exits = sorted(set(exits or []) | {n_layers})
    say = log or (lambda message: None)
    staging = staging_dir(out_dir)
    try:
        variants = pack_variants(model_dir, staging, quants, exits, heads_dir=heads_dir, name=name, threads=threads)
        examples = [{**ex, "prompt": fmt.wrap(ex["prompt"])} for ex in heldout_examples]
        for v in variants:
            path = staging / v["path"]
            v.update(measure_variant(path, tasks=tasks, prompt_format=fmt, max_steps=max_steps, threads=threads))
            if examples:
                ppl = heldout_perplexity(path, text_examples(path, examples), threads=threads)
                v["quality"].update(perplexity=ppl["perplexity"], heldout_nll=ppl["heldout_nll"],
                                    heldout_tokens=ppl["heldout_tokens"])
            say(f"{v['id']}: task success {v['quality'].get('task_success')}, perplexity {v['quality'].get('perplexity')}")
        tokenizer_config = model_dir / "tokenizer_config.json"
        tok = json.loads(tokenizer_config.read_text(encoding="utf-8")) if tokenizer_config.is_file() else {}
        manifest = make_manifest(
            variants,
            source_model=source_model or {
                "name": name, "path": str(model_dir), "model_type": config.get("model_type"), "n_layers": n_layers,
                "hidden_size": config.get("hidden_size"), "num_attention_heads": config.get("num_attention_heads"),
                "num_key_value_heads": config.get("num_key_value_heads") or config.get("num_attention_heads"),
                "vocab_size": config.get("vocab_size"), "fine_tuned": False,
                "exit_heads": "dedicated" if heads_dir else "shared",
            },
            prompt_format=fmt,
            tokenizer={"class": tok.get("tokenizer_class"), "bos_token": tok.get("bos_token"),
                       "eos_token": tok.get("eos_token"), "chat_template": bool(tok.get("chat_template"))},
            measurements={"tasks_for_task_success": len(tasks), "heldout_examples": len(examples),
                          "max_steps": max_steps, **(measurements or {})},
            profile=profile,
            created_by="edgeagent.export.bundle.build_bundle",
        )
        write_manifest(staging, manifest)
        publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest.to_dict()
