"""Device profiles: one TOML file per device, validated once at the edge.

A profile says what the roofline estimator (``edgeagent.estimate``) and the variant
selection need to know about a device: CPU clusters (optionally with each core's power),
RAM and the part of it an app may use, memory bandwidth, sustained compute, power per
phase, battery, runtime flags, and where every number came from (``sources``).

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

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeagent.validation import describe

PROFILE_PACKAGE = "device_profiles"


class ProfileError(ValueError):
    """A profile that could not be found, parsed or validated. The message names the file
    and the key, and says what is allowed."""


class _Strict(BaseModel):
    # strict: TOML has real types, so ``ram_gb = "12"`` is a mistake worth reporting rather
    # than a string to coerce; ``extra="forbid"``: a misspelt key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _within(low: float, high: float, *, default: Any = ..., low_open: bool = True) -> Any:
    """A finite number in a physically plausible range: ``inf``, ``1e309`` (inf to TOML),
    ``1e-308`` bandwidth or ``threads = 10**12`` are mistakes to report, not numbers that
    make every estimate infinite. ``low_open``: ``low`` itself is excluded (> instead of >=)."""
    bound = {"gt": low} if low_open else {"ge": low}
    return Field(default=default, le=high, allow_inf_nan=False, **bound)


# Arm's in-order efficiency cores (Cortex-A53, A55, A510, A520): the "little" cores of a
# big.LITTLE phone SoC. Out-of-order cores (Cortex-A57, A7xx, X, Oryon, x86) do not match.
_IN_ORDER_LITTLE = re.compile(r"\bCortex-A(53|55|510|520)\b", re.IGNORECASE)


class CpuCluster(_Strict):
    name: str
    cores: int = _within(0, 1024)
    ghz: float = _within(0.1, 10.0, low_open=False)
    core: str | None = None  # microarchitecture, e.g. "Cortex-X4"
    # Active power of ONE core of this cluster, busy at ``ghz``, in W: a published single-core
    # measurement (device power above idle), cited in the profile's sources. Optional; given for
    # every cluster or for none (``Profile``). ``estimate.phase_power_w`` shares the profile's
    # phase power among the busy cores by it.
    power_w: float | None = _within(0.0, 50.0, default=None)

    @property
    def in_order_little(self) -> bool:
        """An in-order efficiency core (Cortex-A5xx), read from ``core``; unknown cores are not."""
        return bool(self.core and _IN_ORDER_LITTLE.search(self.core))


class Power(_Strict):
    """Whole-device power *above the idle baseline* while each phase runs (what a battery
    measurement with the idle baseline subtracted shows), and the idle baseline itself."""

    prefill_w: float = _within(0.001, 5000.0, low_open=False)
    decode_w: float = _within(0.001, 5000.0, low_open=False)
    idle_w: float = _within(0.0, 5000.0, low_open=False)


class BatterySpec(_Strict):
    capacity_mah: float | None = _within(10.0, 1e6, default=None, low_open=False)  # boards have none
    nominal_v: float = _within(0.5, 100.0, low_open=False)  # cell nominal voltage (or a board's supply)


# A llama.cpp weight type name as GGUF tensor types print (Q4_0, Q4_K, Q8_0, IQ4_NL, F16, BF16, ...).
_GGML_TYPE = re.compile(r"(F|BF)(16|32|64)|Q[1-8]_[01K]|IQ[1-4]_(XXS|XS|S|M|NL)|TQ[12]_0")
PrefillRate = Annotated[float, Field(gt=0.05, le=20.0, allow_inf_nan=False)]
AttentionRate = Annotated[float, Field(ge=0.001, le=1e7, allow_inf_nan=False)]


def nearest_head_dim(table: dict[str, float], head_dim: int) -> float:
    """The entry of ``table`` (head dimension as text -> a figure) nearest ``head_dim``, the
    larger head dimension on a tie."""
    return table[min(table, key=lambda key: (abs(int(key) - head_dim), -int(key)))]


class Runtime(_Strict):
    threads: int = _within(0, 1024)
    weight_repack: bool  # llama.cpp CPU_REPACK (interleaved kernels; the types: shapes.REPACKED_TYPES)
    flash_attn: bool = True  # llama.cpp's default on a CPU; `edgeagent calibrate` measures it
    # 2 MiB pages under the weights (edgeagent.hugepages); unset: wherever the kernel gives them
    huge_pages: bool | None = None
    n_ubatch: int = _within(0, 65536, default=512)  # llama.cpp physical batch (graph reserve size)
    kv_cache_type: Literal["f16", "q8_0", "f32"] = "f16"
    overhead_mb: float = _within(0.0, 1e6, default=80.0, low_open=False)  # process RSS before the model loads
    decode_overhead_ms: float = _within(0.0, 1e4, default=0.0, low_open=False)  # fixed cost per decode step (calibrated)
    # Throughput of decode-time attention over the cache (KQ, softmax, KQV: small per-head
    # ops, far below peak compute), calibrated from decode speed at two context lengths.
    # Unset: attention is counted at compute_gflops_sustained inside the roofline's max().
    decode_attention_gflops: float | None = _within(0.001, 1e7, default=None, low_open=False)
    # The same per head dimension ("32" = 7.0 GFLOP/s): attention's small per-head ops run at
    # very different rates on small heads and real models' (on an AMD EPYC at 1 thread the
    # built-in model's head_dim 32 ran at 7.0 GFLOP/s, a head_dim-64 probe at ~35). A model
    # takes the entry of the nearest head dimension (the larger on a tie); empty: the figure above.
    decode_attention_gflops_by_head_dim: dict[str, AttentionRate] = Field(default_factory=dict)
    # How many times faster than ``bandwidth_efficiency`` decode reads weights of 8 bits or more
    # (Q8_0, F16, BF16, F32) and an F16/Q8_0 KV cache: the efficiency stands for 4-bit-class
    # types, whose kernels unpack every block (estimate.decode_read_bytes). 1.0: no difference.
    wide_weight_rate: float = _within(1.0, 4.0, default=1.0, low_open=False)
    # Prefill speed per weight type against Q4_K, the type ``compute_gflops_sustained`` stands
    # for: each type has its own matmul kernel (estimate.prefill_work). A type not listed
    # prefills at Q4_K's rate; empty: every type alike.
    prefill_type_rates: dict[str, PrefillRate] = Field(default_factory=dict)

    @field_validator("decode_attention_gflops_by_head_dim")
    @classmethod
    def _head_dims(cls, rates: dict[str, float]) -> dict[str, float]:
        for key in rates:
            if not (key.isdigit() and 1 <= int(key) <= 4096):
                raise ValueError(f"{key!r} is not a head dimension (a whole number of 1 to 4096)")
        return rates

    def attention_gflops(self, head_dim: int) -> float | None:
        """Decode attention's calibrated throughput for a model of ``head_dim``: the entry of
        the nearest head dimension in ``decode_attention_gflops_by_head_dim``, else
        ``decode_attention_gflops`` (None: not calibrated)."""
        table = self.decode_attention_gflops_by_head_dim
        return nearest_head_dim(table, head_dim) if table else self.decode_attention_gflops

    @field_validator("prefill_type_rates")
    @classmethod
    def _known_types(cls, rates: dict[str, float]) -> dict[str, float]:
        for name in rates:
            if not _GGML_TYPE.fullmatch(name):
                raise ValueError(f"{name!r} is not a llama.cpp weight type name (e.g. Q4_0, Q8_0, Q6_K)")
        return rates


class Selection(_Strict):
    """Per-device overrides of the selection defaults (TTFT <= 500 ms, >= 20 tokens/s,
    memory <= 80 % of usable RAM, quality >= 90 % of full precision)."""

    max_ttft_ms: float | None = _within(0.0, 1e7, default=None)
    min_tokens_per_s: float | None = _within(0.0, 1e7, default=None)
    max_memory_fraction: float | None = _within(0.0, 1.0, default=None)
    max_mah_per_100: float | None = _within(0.0, 1e7, default=None)
    min_quality: float | None = _within(0.0, 1.0, default=None)


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
    ram_gb: float = _within(0.0625, 65536.0, low_open=False)  # 64 MiB to 64 TiB
    usable_memory_gb: float = _within(0.0625, 65536.0, low_open=False)
    memory_type: str
    bandwidth_theoretical_gbs: float = _within(0.1, 100000.0, low_open=False)
    bandwidth_efficiency: float = _within(0.001, 1.0, low_open=False)  # eta: fraction llama.cpp CPU decode reaches
    compute_gflops_sustained: float = _within(0.1, 1e8, low_open=False)  # int8-dot matmul throughput in prefill, all threads
    storage_read_gbs: float | None = _within(0.001, 10000.0, default=None, low_open=False)  # sequential read, for model-load time
    power: Power
    battery: BatterySpec
    runtime: Runtime
    selection: Selection = Selection()
    sources: list[Source] = Field(min_length=1)

    @field_validator("cpu_clusters")
    @classmethod
    def _power_for_every_cluster_or_none(cls, clusters: list[CpuCluster]) -> list[CpuCluster]:
        # half a table of per-core power would silently mix two power models in one sum
        missing = [c.name for c in clusters if c.power_w is None]
        if missing and len(missing) < len(clusters):
            raise ValueError(f"power_w is given for some clusters but not for {', '.join(missing)}: "
                             f"give every cluster's per-core power or none")
        return clusters

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
    def per_core_power(self) -> bool:
        """Whether the clusters carry per-core power (``power_w``; all of them or none do)."""
        return all(c.power_w is not None for c in self.cpu_clusters)

    def placement(self, threads: int) -> list[tuple[CpuCluster, int]]:
        """Where ``threads`` busy llama.cpp threads run: (cluster, cores it gives them), in order.

        Threads fill cores fastest first (the scheduler gives busy threads the big cores
        first): every out-of-order cluster, by clock, then the in-order little clusters, by
        clock. Only when the big cores are all taken do threads land on little cores. Both the
        little-core pacing (``little_cluster_reached``) and the power of a thread count
        (``estimate.phase_power_w``) use this one order.
        """
        order = sorted(self.cpu_clusters, key=lambda c: (c.in_order_little, -c.ghz))
        out, left = [], threads
        for cluster in order:
            if left <= 0:
                break
            out.append((cluster, min(cluster.cores, left)))
            left -= cluster.cores
        return out

    def little_cluster_reached(self, threads: int) -> CpuCluster | None:
        """The slowest in-order little cluster that ``threads`` llama.cpp threads reach, or None
        (``placement``); it paces each step (``estimate``)."""
        little = [c for c, _ in self.placement(threads) if c.in_order_little]
        return little[-1] if little else None  # sorted by clock: the last one reached is the slowest

    @property
    def bandwidth_effective_gbs(self) -> float:
        return self.bandwidth_theoretical_gbs * self.bandwidth_efficiency

    @property
    def usable_memory_bytes(self) -> float:
        return self.usable_memory_gb * 2**30


# --- loading --------------------------------------------------------------------------


def parse_profile(data: dict[str, Any], origin: str) -> Profile:
    """Validate already-parsed TOML; ``origin`` is the file name used in error messages."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(describe(exc, origin, Profile)) from None


def _read(raw: bytes, origin: str) -> Profile:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{origin}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{origin}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ProfileError(f"{origin}: not a device profile: arrays or tables nested too deeply") from None
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
        try:
            return _read(path.read_bytes(), text_path)
        except OSError as exc:
            raise ProfileError(f"{text_path}: cannot read ({exc.strerror})") from None
    resource = resources.files(PROFILE_PACKAGE) / f"{text_path}.toml"
    if not resource.is_file():
        known = ", ".join(list_profiles())
        raise ProfileError(f"unknown device profile {text_path!r}; known profiles: {known} (or pass a path to a .toml file)")
    return _read(resource.read_bytes(), f"{PROFILE_PACKAGE}/{text_path}.toml")


def load_all() -> list[Profile]:
    return [load_profile(n) for n in list_profiles()]
