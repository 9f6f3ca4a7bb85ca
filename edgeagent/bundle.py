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
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeagent.agent.prompt import PromptFormat  # noqa: F401  (the manifest's prompt_format)
from edgeagent.validation import describe

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

    def speculative_draft(self, chosen: Variant) -> tuple[Variant, int] | None:
        """(draft variant, draft length) the manifest names for running ``chosen``: only for a
        full-depth variant of the quant the draft was measured with."""
        spec = self.manifest.get("speculative")
        if not spec or not chosen.is_full_depth or chosen.quant.lower() != str(spec["quant"]).lower():
            return None
        return self.variant(spec["draft_variant"]), int(spec["n_draft"])

    def best_quality(self) -> Variant:
        """The full-depth variant with the most bits (the reference the others are held to)."""
        full = [v for v in self.variants if v.is_full_depth] or self.variants
        return max(full, key=lambda v: (v.size_bytes, v.exit_layer))


MAX_MANIFEST_BYTES = 16 * 2**20


class VariantEntry(BaseModel):
    """One variant of the manifest: a GGUF file and what conversion measured of it."""

    model_config = ConfigDict(extra="allow", strict=True)

    id: str = Field(min_length=1)
    quant: str = Field(min_length=1)
    exit_layer: int = Field(ge=1, le=100_000)  # blocks in this GGUF
    n_layers: int = Field(ge=1, le=100_000)
    path: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size_bytes: int = Field(ge=0, le=2**50)
    quality: dict[str, Any]
    kv_cache_bytes_per_token: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _depth(self) -> "VariantEntry":
        if self.exit_layer > self.n_layers:
            raise ValueError(f"exit_layer {self.exit_layer} is not within 1..n_layers ({self.n_layers})")
        return self


class SpeculativeEntry(BaseModel):
    """``manifest.speculative``: the draft ``run`` and ``demo`` decode with (self-speculative
    decoding, lossless) when they run the full-depth variant of ``quant``. Written by
    ``edgeagent bench early-exit --bundle B --save`` from what it measured on this bundle."""

    model_config = ConfigDict(extra="allow", strict=True)

    quant: str = Field(min_length=1)  # the full-depth variant's
    draft_variant: str = Field(min_length=1)  # an exit below the full depth (this quant, or fewer bits)
    n_draft: int = Field(ge=1, le=32)


class Manifest(BaseModel):
    """``manifest.json``: written by the converter (``edgeagent.export.bundle.write_manifest``),
    validated here on load. Keys not declared are kept as written; keys a bundle written before
    them lacks are None."""

    model_config = ConfigDict(extra="allow", strict=True)

    format: str
    format_version: int
    created_unix: int | None = None
    created_by: str | None = None
    machine: dict[str, Any] | None = None
    profile: str | None = None
    source_model: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None
    prompt_format: dict[str, Any] | None = None  # PromptFormat.to_dict()
    action_schema_version: int | None = None
    variants: list[VariantEntry] = Field(min_length=1)
    measurements: dict[str, Any] | None = None
    speculative: SpeculativeEntry | None = None

    @model_validator(mode="after")
    def _draft(self) -> "Manifest":
        if self.speculative is not None:
            by_id = {v.id: v for v in self.variants}
            d = by_id.get(self.speculative.draft_variant)
            if d is None or d.exit_layer >= d.n_layers:
                raise ValueError(f"speculative.draft_variant {self.speculative.draft_variant!r} is not an exit variant "
                                 "in this manifest")
        return self

    @classmethod
    def new(cls, variants: list[dict[str, Any]], *, source_model: dict[str, Any], prompt_format: PromptFormat,
            tokenizer: dict[str, Any], measurements: dict[str, Any], profile: str | None,
            created_by: str = "edgeagent convert") -> Manifest:
        """A manifest for variants written now, on this machine."""
        from android_bridge.actions import SCHEMA_VERSION

        return cls.model_validate({
            "format": FORMAT, "format_version": FORMAT_VERSION, "created_unix": int(time.time()),
            "created_by": created_by,
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "profile": profile, "source_model": source_model, "tokenizer": tokenizer,
            "prompt_format": prompt_format.to_dict(), "action_schema_version": SCHEMA_VERSION,
            "variants": list(variants), "measurements": measurements,
        })

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (and printed by ``convert --json``): the
        keys given, in the declared order, then the others as given."""
        return self.model_dump(mode="python", exclude_unset=True)


def _read_manifest(manifest_path: Path) -> dict[str, Any]:
    """The manifest's JSON object, read without following a symlink, size-capped."""
    try:
        with _open_inside(manifest_path) as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise BundleError(f"{manifest_path}: cannot read ({e.strerror or e})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"{manifest_path}: not a manifest: JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object")
    return manifest


def load_bundle(bundle_dir: str | os.PathLike, *, verify: bool = True) -> Bundle:
    """Read and check a bundle. Raises BundleError naming the file for a missing manifest, a
    malformed entry (the manifest is validated against its schema), a path that leaves the
    bundle or goes through a symlink, or any variant file that is missing, of the wrong
    size or whose sha256 differs from the manifest (all such files in one message)."""
    root = Path(bundle_dir)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory (write one with `edgeagent convert`)")
    root = root.resolve()  # the bundle itself may be reached through a link; nothing inside it may
    manifest_path = root / MANIFEST
    if not manifest_path.is_file() and not manifest_path.is_symlink():
        raise BundleError(f"{manifest_path}: missing (not a bundle written by `edgeagent convert`?)")
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path}: a symlink; a bundle holds its own files, so it is refused")
    manifest = _read_manifest(manifest_path)
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this edgeagent reads {FORMAT_VERSION}); re-run `edgeagent convert`"
        )
    try:
        checked = Manifest.model_validate(manifest)
    except ValidationError as e:
        raise BundleError(describe(e, str(manifest_path), Manifest)) from None

    variants = [_variant(root, manifest_path, i, e) for i, e in enumerate(checked.variants)]
    ids = [v.id for v in variants]
    if len(set(ids)) != len(ids):
        raise BundleError(f"{manifest_path}: variants: duplicate id {next(i for i in ids if ids.count(i) > 1)!r}")
    if verify:
        problems = [p for v in variants if (p := _check_file(root, v))]
        if problems:
            raise BundleError(
                f"{root}: bundle refused, {len(problems)} file(s) missing or altered:\n  " + "\n  ".join(problems)
            )
    try:
        prompt_format = PromptFormat.from_dict(checked.prompt_format or {"kind": "plain"})
    except ValueError as e:
        raise BundleError(f"{manifest_path}: {e}") from None
    return Bundle(root=root, manifest=manifest, variants=variants, prompt_format=prompt_format)


def _variant(root: Path, manifest_path: Path, i: int, entry: VariantEntry) -> Variant:
    rel = PurePosixPath(entry.path)
    # A manifest is data from wherever the bundle came from: it may not point outside it.
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\\" in entry.path or "\0" in entry.path:
        raise BundleError(f"{manifest_path}: variants[{i}].path: {entry.path!r} must be a relative path inside the bundle")
    return Variant(
        id=entry.id, quant=entry.quant, exit_layer=entry.exit_layer, n_layers=entry.n_layers,
        path=root.joinpath(*rel.parts), sha256=entry.sha256.lower(), size_bytes=entry.size_bytes,
        quality=dict(entry.quality), kv_cache_bytes_per_token=entry.kv_cache_bytes_per_token,
    )


def _open_inside(path: Path):
    """``path`` opened for reading, refusing a symlink as the file itself (``O_NOFOLLOW``)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    return os.fdopen(os.open(path, flags), "rb")


def _escape(root: Path, path: Path) -> str | None:
    """Why ``path`` is not a plain file inside ``root``: a symlink on the way, or a target
    outside the bundle; None when it is one."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return f"{current}: a symlink; a bundle holds its own files, so it is refused"
    if not path.resolve().is_relative_to(root):
        return f"{path}: resolves outside the bundle {root}"
    return None


def _check_file(root: Path, v: Variant) -> str | None:
    if (why := _escape(root, v.path)) is not None:
        return f"{why} (variant {v.id})"
    if not v.path.is_file():
        return f"{v.path}: missing (variant {v.id})"
    try:
        with _open_inside(v.path) as f:
            size = os.fstat(f.fileno()).st_size
            if size != v.size_bytes:
                return f"{v.path}: altered (variant {v.id}: {size} bytes, manifest says {v.size_bytes})"
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        return f"{v.path}: cannot read ({e.strerror or e}) (variant {v.id})"
    if digest != v.sha256:
        return f"{v.path}: altered (variant {v.id}: sha256 {digest[:16]}..., manifest says {v.sha256[:16]}...)"
    return None