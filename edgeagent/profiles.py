"""Device profiles: one TOML file per device, validated once at the edge.

A profile says what the roofline estimator (``edgeagent.estimate``) and the variant
selection need to know about a device: CPU clusters, RAM and the part of it an app may
use, memory bandwidth, sustained compute, power per phase, battery, runtime flags, and
where every number came from (``sources``).

Profiles ship inside the ``device_profiles`` package (``device_profiles/NAME.toml``) and
are read with ``importlib.resources``, so they load from an installed wheel as well as
from a checkout. A path to any other TOML file works too::

    load_profile("snapdragon-8-gen-2")
    load_profile("./my-phone.toml")

Every problem is reported with the file and the key, e.g.
``device_profiles/x.toml: power.decode_w: field required``. This module runs on phones:
it imports pydantic and the standard library only.

Units: RAM in GiB (2^30 bytes: a phone sold with "8 GB" has 8 GiB), bandwidth in GB/s
(10^9 bytes/s, as datasheets quote MT/s x bus width), compute in GFLOP/s counting an int8
multiply-add as two operations, power in W above the idle baseline, voltage in V.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROFILE_PACKAGE = "device_profiles"


class ProfileError(ValueError):
    """A profile that could not be found, parsed or validated. The message names the file
    and the key, and says what is allowed."""


class _Strict(BaseModel):
    # strict: TOML has real types, so ``ram_gb = "12"`` is a mistake worth reporting rather
    # than a string to coerce; ``extra="forbid"``: a misspelt key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CpuCluster(_Strict):
    name: str
    cores: int = Field(gt=0)
    ghz: float = Field(gt=0)
    core: str | None = None  # microarchitecture, e.g. "Cortex-X4"


class Power(_Strict):
    """Whole-device power *above the idle baseline* while each phase runs (what a battery
    measurement with the idle baseline subtracted shows), and the idle baseline itself."""

    prefill_w: float = Field(gt=0)
    decode_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)


class BatterySpec(_Strict):
    capacity_mah: float | None = Field(default=None, gt=0)  # boards have none
    nominal_v: float = Field(gt=0)  # cell nominal voltage (or the supply voltage of a board)


class Runtime(_Strict):
    threads: int = Field(gt=0)
    weight_repack: bool  # llama.cpp CPU_REPACK (AArch64 interleaved Q4_0/Q4_K/IQ4_NL kernels)
    flash_attn: bool = False
    n_ubatch: int = Field(default=512, gt=0)  # llama.cpp physical batch (graph reserve size)
    kv_cache_type: Literal["f16", "q8_0", "f32"] = "f16"
    overhead_mb: float = Field(default=80.0, ge=0)  # process baseline RSS before the model loads
    decode_overhead_ms: float = Field(default=0.0, ge=0)  # fixed cost per decode step (calibrated)
    # Throughput of decode-time attention over the cache (KQ, softmax, KQV: small per-head
    # ops, far below peak compute), calibrated from decode speed at two context lengths.
    # Unset: attention is counted at compute_gflops_sustained inside the roofline's max().
    decode_attention_gflops: float | None = Field(default=None, gt=0)


class Selection(_Strict):
    """Per-device overrides of the selection defaults (TTFT <= 500 ms, >= 20 tokens/s,
    memory <= 80 % of usable RAM, quality >= 90 % of full precision)."""

    max_ttft_ms: float | None = Field(default=None, gt=0)
    min_tokens_per_s: float | None = Field(default=None, gt=0)
    max_memory_fraction: float | None = Field(default=None, gt=0, le=1)
    max_mah_per_100: float | None = Field(default=None, gt=0)
    min_quality: float | None = Field(default=None, gt=0, le=1)


class Source(_Strict):
    what: str
    url: str | None = None
    citation: str | None = None

    @model_validator(mode="after")
    def _cited(self) -> Source:
        if not (self.url or self.citation):
            raise ValueError("a source needs a url or a citation")
        return self


class Profile(_Strict):
    name: str
    soc: str
    kind: Literal["phone", "devboard", "host"]
    example_device: str | None = None
    cpu_clusters: list[CpuCluster] = Field(min_length=1)
    ram_gb: float = Field(gt=0)
    usable_memory_gb: float = Field(gt=0)
    memory_type: str
    bandwidth_theoretical_gbs: float = Field(gt=0)
    bandwidth_efficiency: float = Field(gt=0, le=1)  # eta: fraction llama.cpp CPU decode reaches
    compute_gflops_sustained: float = Field(gt=0)  # int8-dot matmul throughput in prefill, all threads
    storage_read_gbs: float | None = Field(default=None, gt=0)  # sequential read, for model-load time
    power: Power
    battery: BatterySpec
    runtime: Runtime
    selection: Selection = Selection()
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        if self.usable_memory_gb > self.ram_gb:
            raise ValueError(f"usable_memory_gb ({self.usable_memory_gb}) exceeds ram_gb ({self.ram_gb})")
        if self.kind == "phone" and self.battery.capacity_mah is None:
            raise ValueError("battery.capacity_mah is required for a phone")
        return self

    @property
    def cores(self) -> int:
        return sum(c.cores for c in self.cpu_clusters)

    @property
    def bandwidth_effective_gbs(self) -> float:
        return self.bandwidth_theoretical_gbs * self.bandwidth_efficiency

    @property
    def usable_memory_bytes(self) -> float:
        return self.usable_memory_gb * 2**30


# --- loading --------------------------------------------------------------------------


def _models_along(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc`` (to list its allowed keys)."""
    model: type[BaseModel] | None = Profile
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _explain(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"{_key(loc)}: field required"
    if kind == "extra_forbidden":
        owner = _models_along(loc)
        allowed = ", ".join(owner.model_fields) if owner else "?"
        return f"{_key(loc)}: unknown key (allowed here: {allowed})"
    where = _key(loc) or "(top level)"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def parse_profile(data: dict[str, Any], origin: str) -> Profile:
    """Validate already-parsed TOML; ``origin`` is the file name used in error messages."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}: {_explain(e)}" for e in exc.errors()]
        raise ProfileError("\n".join(lines)) from None


def _read(text: str, origin: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{origin}: not valid TOML: {exc}") from None
    return parse_profile(data, origin)


def list_profiles() -> list[str]:
    """Names of the profiles shipped in the ``device_profiles`` package, sorted."""
    root = resources.files(PROFILE_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``snapdragon-8-gen-2``) or any TOML file by path."""
    text_path = str(name_or_path)
    path = Path(text_path)
    if text_path.endswith(".toml") or "/" in text_path or "\\" in text_path:
        if not path.is_file():
            raise ProfileError(f"{text_path}: no such profile file")
        return _read(path.read_text(encoding="utf-8"), text_path)
    resource = resources.files(PROFILE_PACKAGE) / f"{text_path}.toml"
    if not resource.is_file():
        known = ", ".join(list_profiles())
        raise ProfileError(f"unknown device profile {text_path!r}; known profiles: {known} (or pass a path to a .toml file)")
    return _read(resource.read_text(encoding="utf-8"), f"{PROFILE_PACKAGE}/{text_path}.toml")


def load_all() -> list[Profile]:
    return [load_profile(n) for n in list_profiles()]
