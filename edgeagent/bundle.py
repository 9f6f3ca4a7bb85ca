"""Reading a bundle: the directory ``edgeagent convert`` writes and the runtime loads.

A bundle is ``manifest.json`` plus the GGUF files it lists, one per variant
(quantization x exit depth)::

    {"format": "edgeagent-bundle", "format_version": 1,
     "source_model": {...}, "prompt_format": {"kind": "plain"} | {"kind": "chat", ...},
     "action_schema_version": 1,
     "variants": [{"id": "q8_0-L6", "quant": "q8_0", "exit_layer": 6, "n_layers": 6,
                   "path": "q8_0-L6.gguf", "sha256": "...", "size_bytes": 123,
                   "quality": {"perplexity": 1.9, "task_success": 0.9, ...}}, ...],
     "measurements": {...}}

``load_bundle`` checks every listed file (present, the recorded size, the recorded sha256)
before returning anything, and raises one ``BundleError`` naming every file that is missing
or altered: a bundle is used whole or not at all. Runtime module: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
FORMAT = "edgeagent-bundle"
FORMAT_VERSION = 1


class BundleError(Exception):
    """A bundle that cannot be used; the message names the file (and key) and says why."""


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Variant:
    id: str
    quant: str
    exit_layer: int  # blocks in this GGUF; == n_layers for the full model
    n_layers: int  # blocks in the full model
    path: Path  # absolute, inside the bundle
    sha256: str
    size_bytes: int
    quality: dict[str, Any] = field(default_factory=dict)
    kv_cache_bytes_per_token: int | None = None  # measured in llama.cpp (F16 cache)

    @property
    def is_full_depth(self) -> bool:
        return self.exit_layer >= self.n_layers

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "quant": self.quant, "exit_layer": self.exit_layer, "n_layers": self.n_layers,
            "path": str(self.path), "sha256": self.sha256, "size_bytes": self.size_bytes,
            "quality": dict(self.quality), "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token,
        }


@dataclass(frozen=True)
class PromptFormat:
    """How the agent's plain prompt (``edgeagent.agent.prompt.build_prompt``) reaches the model.

    ``plain``: as is (the built-in model is trained on exactly that text). ``chat``: as the
    user turn of the model's own chat template, the assistant turn opened
    (``add_generation_prompt``), as the converter rendered it for fine-tuning.
    """

    kind: str = "plain"  # plain | chat
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = True  # the tokenizer puts BOS in front by itself (llama.cpp does the same)

    def wrap(self, prompt: str) -> str:
        if self.kind == "plain":
            return prompt
        text = render_chat(
            self.chat_template or "", [{"role": "user", "content": prompt.rstrip()}],
            add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token,
        )
        # Templates that write BOS themselves would get a second one from llama.cpp's
        # tokenizer (add_bos), so the text leaves it to the tokenizer; the converter's
        # training data are built the same way (converters.data).
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token):]
        return text

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        if self.kind == "chat":
            d.update(chat_template=self.chat_template, bos_token=self.bos_token, eos_token=self.eos_token,
                     add_bos=self.add_bos)
        return d


def render_chat(template: str, messages: list[dict], *, add_generation_prompt: bool,
                bos_token: str | None = None, eos_token: str | None = None) -> str:
    """A Hugging Face chat template rendered the way transformers renders it (a sandboxed
    jinja2 environment with ``trim_blocks``/``lstrip_blocks`` and ``raise_exception``)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=bos_token or "", eos_token=eos_token or "",
    )


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]
    variants: list[Variant]
    prompt_format: PromptFormat

    @property
    def n_layers(self) -> int:
        return max(v.n_layers for v in self.variants)

    def variant(self, variant_id: str) -> Variant:
        for v in self.variants:
            if v.id == variant_id:
                return v
        known = ", ".join(v.id for v in self.variants)
        raise BundleError(f"{self.root / MANIFEST}: no variant {variant_id!r} (variants: {known})")

    def best_quality(self) -> Variant:
        """The full-depth variant with the most bits (the reference the others are held to)."""
        full = [v for v in self.variants if v.is_full_depth] or self.variants
        return max(full, key=lambda v: (v.size_bytes, v.exit_layer))


def load_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read and check a bundle. Raises BundleError naming the file for a missing manifest, a
    malformed entry, or any variant file that is missing, of the wrong size or whose sha256
    differs from the manifest (all such files in one message)."""
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory (write one with `edgeagent convert`)")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing (not a bundle written by `edgeagent convert`?)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this edgeagent reads {FORMAT_VERSION}); re-run `edgeagent convert`"
        )
    entries = manifest.get("variants")
    if not isinstance(entries, list) or not entries:
        raise BundleError(f"{manifest_path}: variants: expected a non-empty list")

    variants = [_variant(root, manifest_path, i, e) for i, e in enumerate(entries)]
    ids = [v.id for v in variants]
    if len(set(ids)) != len(ids):
        raise BundleError(f"{manifest_path}: variants: duplicate id {next(i for i in ids if ids.count(i) > 1)!r}")
    if verify:
        problems = [p for v in variants if (p := _check_file(v))]
        if problems:
            raise BundleError(
                f"{root}: bundle refused, {len(problems)} file(s) missing or altered:\n  " + "\n  ".join(problems)
            )
    pf = manifest.get("prompt_format") or {"kind": "plain"}
    if pf.get("kind") not in ("plain", "chat") or (pf.get("kind") == "chat" and not pf.get("chat_template")):
        raise BundleError(f"{manifest_path}: prompt_format: expected kind plain, or chat with a chat_template")
    prompt_format = PromptFormat(
        kind=pf["kind"], chat_template=pf.get("chat_template"), bos_token=pf.get("bos_token"),
        eos_token=pf.get("eos_token"), add_bos=bool(pf.get("add_bos", True)),
    )
    return Bundle(root=root, manifest=manifest, variants=variants, prompt_format=prompt_format)


_FIELDS = {"id": str, "quant": str, "exit_layer": int, "n_layers": int, "path": str, "sha256": str,
           "size_bytes": int, "quality": dict}


def _variant(root: Path, manifest_path: Path, i: int, entry: Any) -> Variant:
    where = f"{manifest_path}: variants[{i}]"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: expected an object")
    for key, kind in _FIELDS.items():
        value = entry.get(key)
        if value is None:
            raise BundleError(f"{where}.{key}: field required")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
    rel = PurePosixPath(entry["path"])
    # A manifest is data from wherever the bundle came from: it may not point outside it.
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise BundleError(f"{where}.path: {entry['path']!r} must be a relative path inside the bundle")
    if not 1 <= entry["exit_layer"] <= entry["n_layers"]:
        raise BundleError(f"{where}.exit_layer: {entry['exit_layer']} is not within 1..n_layers ({entry['n_layers']})")
    kv = entry.get("kv_cache_bytes_per_token")
    return Variant(
        id=entry["id"], quant=entry["quant"], exit_layer=entry["exit_layer"], n_layers=entry["n_layers"],
        path=root / rel, sha256=entry["sha256"].lower(), size_bytes=entry["size_bytes"],
        quality=dict(entry["quality"]), kv_cache_bytes_per_token=int(kv) if isinstance(kv, int) else None,
    )


def _check_file(v: Variant) -> str | None:
    if not v.path.is_file():
        return f"{v.path}: missing (variant {v.id})"
    size = v.path.stat().st_size
    if size != v.size_bytes:
        return f"{v.path}: altered (variant {v.id}: {size} bytes, manifest says {v.size_bytes})"
    digest = sha256_file(v.path)
    if digest != v.sha256:
        return f"{v.path}: altered (variant {v.id}: sha256 {digest[:16]}..., manifest says {v.sha256[:16]}...)"
    return None
