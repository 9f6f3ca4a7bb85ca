"""``edgeagent doctor``: what will work on this machine (or on the device a dump came from),
and why not.

It reads what the kernel publishes (``/proc/cpuinfo``, ``/sys/devices/system/cpu/cpu*/cpufreq``,
``/sys/devices/soc0``, ``/proc/meminfo``) and reports

- the CPU architecture and the features llama.cpp's kernels use (NEON, dotprod, i8mm, SVE/SVE2
  on ARM; AVX2, AVX-512, VNNI, AMX on x86), beside what the llama.cpp build was compiled with
  (``llama_print_system_info``);
- the core clusters (by cpufreq maximum per core), and the thread count and CPU affinity to
  run with: every core but the slowest cluster on a big.LITTLE chip;
- the SoC, when one of its identifiers is readable, and the device profile that matches it;
- memory; the adb devices reachable and whether their battery can be read well enough to
  *measure* energy; whether the runtime imports without torch; the weight-repack choice.

The files come from a `Files` source: this machine, or a dump of another device in the format
``tail -n +1 FILE...`` prints (a ``==> PATH <==`` line before each file's contents), so a
board's or phone's files can be checked on a laptop. The machine-local checks (llama.cpp build,
adb, runtime imports) only run on this machine. Nothing here imports torch.

Length (about 560 lines) on purpose: a checklist in report order, each section a few small
readers of one part of the machine (CPU, clusters, SoC and profile, memory, llama.cpp, adb)
that ``diagnose`` calls in turn; the sections share the ``Files`` source and nothing else.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARM_MACHINES = ("aarch64", "arm64", "armv8l")
X86_MACHINES = ("x86_64", "amd64", "i686", "i386", "x86")

# CPU feature -> (names in /proc/cpuinfo, name in llama.cpp's system info or None if it has none)
ARM_FEATURES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "neon": (("asimd", "neon"), "NEON"),
    "dotprod": (("asimddp",), "DOTPROD"),
    "i8mm": (("i8mm",), "MATMUL_INT8"),
    "sve": (("sve",), "SVE"),
    "sve2": (("sve2",), None),
}
X86_FEATURES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "avx2": (("avx2",), "AVX2"),
    "fma": (("fma",), "FMA"),
    "f16c": (("f16c",), "F16C"),
    "avx512": (("avx512f",), "AVX512"),
    "avx512_vnni": (("avx512_vnni",), "AVX512_VNNI"),
    "avx_vnni": (("avx_vnni",), "AVX_VNNI"),
    "amx_int8": (("amx_int8",), "AMX_INT8"),
    "amx_tile": (("amx_tile",), None),
}

# SoC part numbers as Qualcomm and MediaTek print them, and the ways a kernel or Android names
# them instead: Linux's Qualcomm soc_id table (include/dt-bindings/arm/qcom,ids.h) and the
# Android board codenames (ro.board.platform, the downstream kernels' Hardware line).
SOC_PART = re.compile(r"\b(SM\d{4}|QRB\d{4}|QCS\d{4}|QCM\d{4}|SC\d{4}|SDM\d{3}|MT\d{4})\b", re.IGNORECASE)
QCOM_SOC_IDS = {356: "SM8250", 455: "QRB5165", 457: "SM8450", 487: "SC7280", 519: "SM8550"}
QCOM_CODENAMES = {"kona": "SM8250", "lahaina": "SM8350", "taro": "SM8450", "kalama": "SM8550", "pineapple": "SM8650"}

# What the runtime imports on a device; `runtime_imports` checks that none of it pulls torch.
RUNTIME_MODULES = (
    "edgeagent.cli", "edgeagent.engine", "edgeagent.agent.loop", "edgeagent.profiles", "edgeagent.estimate",
    "edgeagent.energy", "edgeagent.bench", "edgeagent.doctor", "android_bridge.adb", "android_bridge.emulator.phone",
)
DUMP_HEADER = re.compile(r"^==> (.+) <==$")


class DoctorError(ValueError):
    """A file doctor reads is missing or not what the kernel writes; names the file and value."""


# --- where the files come from ------------------------------------------------------------------

class Files:
    """The files of this machine under `root` (normally "/")."""

    def __init__(self, root: str | os.PathLike = "/") -> None:
        self.root = Path(root)
        self.origin = "this machine" if str(root) == "/" else str(root)

    def where(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def read(self, path: str) -> str | None:
        try:
            return Path(self.where(path)).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        return sorted("/" + os.path.relpath(p, self.root) for p in glob.glob(self.where(pattern)))


class DumpFiles(Files):
    """Files from one text dump: ``tail -n +1 FILE...`` output, ``#`` comment lines first."""

    def __init__(self, text: str, origin: str) -> None:
        self.origin = origin
        self.files: dict[str, str] = {}
        current: list[str] | None = None
        for number, line in enumerate(text.splitlines(), 1):
            header = DUMP_HEADER.match(line)
            if header:
                current = self.files.setdefault(header.group(1).strip(), [])
            elif current is not None:
                current.append(line)
            elif line.strip() and not line.startswith("#"):
                raise DoctorError(f"{origin}:{number}: expected a '==> PATH <==' header (the format of `tail -n +1 FILE...`), got {line[:60]!r}")
        if not self.files:
            raise DoctorError(f"{origin}: no '==> PATH <==' sections; make the dump with `tail -n +1 /proc/cpuinfo ...`")
        self.files = {path: "\n".join(lines).strip("\n") + "\n" for path, lines in self.files.items()}

    def where(self, path: str) -> str:
        return f"{self.origin}:{path}"

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.files if fnmatch.fnmatchcase(p, pattern))


def load_dump(path: str | os.PathLike) -> DumpFiles:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DoctorError(f"{path}: cannot read the dump ({exc.strerror or exc})") from None
    return DumpFiles(text, str(path))


# --- CPU ------------------------------------------------------------------------------------------

@dataclass
class CpuInfo:
    arch: str  # "aarch64" or "x86_64" (what the cpuinfo format says), else platform.machine()
    processors: list[dict[str, str]]  # one dict per "processor" block
    extra: dict[str, str]  # lines outside the blocks (Android kernels' "Hardware")
    flags: set[str]  # x86 "flags" or ARM "Features" of the first processor

    @property
    def model(self) -> str:
        first = self.processors[0]
        return first.get("model name") or self.extra.get("Hardware") or first.get("CPU part", "unknown")

    def physical_cores(self) -> int:
        """Distinct (physical id, core id) pairs: SMT siblings share a core. Blocks without
        topology lines count as one core each."""
        keys = {(p.get("physical id"), p.get("core id")) if "core id" in p else i for i, p in enumerate(self.processors)}
        return len(keys)


def parse_cpuinfo(text: str, origin: str = "/proc/cpuinfo") -> CpuInfo:
    processors: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    block: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            block = None
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            block = {}
            processors.append(block)
        (block if block is not None else extra)[key] = value
    if not processors:
        raise DoctorError(f"{origin}: no 'processor : N' entries; is this /proc/cpuinfo?")
    first = processors[0]
    if "flags" in first:
        arch, flags = "x86_64", first["flags"]
    elif "Features" in first:
        arch, flags = "aarch64", first["Features"]
    else:
        arch, flags = platform.machine().lower(), ""
    return CpuInfo(arch=arch, processors=processors, extra=extra, flags=set(flags.split()))


def cpu_features(cpu: CpuInfo) -> dict[str, bool]:
    table = ARM_FEATURES if cpu.arch in ARM_MACHINES else X86_FEATURES if cpu.arch in X86_MACHINES else {}
    return {name: any(n in cpu.flags for n in names) for name, (names, _) in table.items()}


def has_amx(cpu: CpuInfo) -> bool:
    """Whether the CPU has Intel AMX tiles (``amx_tile`` in the flags)."""
    return "amx_tile" in cpu.flags


def parse_system_info(text: str) -> set[str]:
    """The features a llama.cpp build reports as on: ``CPU : NEON = 1 | DOTPROD = 1 | ...``."""
    return {m.group(1) for m in re.finditer(r"([A-Z0-9_]+) = 1\b", text)}


def feature_rows(cpu: CpuInfo, build: set[str] | None) -> list[dict[str, Any]]:
    """Each kernel feature: whether the CPU has it, whether the llama.cpp build uses it, and
    what that means (a feature the build uses but the CPU lacks crashes with SIGILL)."""
    table = ARM_FEATURES if cpu.arch in ARM_MACHINES else X86_FEATURES
    rows = []
    for name, has in cpu_features(cpu).items():
        llama_name = table[name][1]
        in_build = None if build is None or llama_name is None else llama_name in build
        if in_build is None:
            if not has:
                verdict = "absent"
            elif llama_name is None and build is not None:
                verdict = "present (llama.cpp reports no flag for it)"
            else:
                verdict = "present"
        elif has and in_build:
            verdict = "used"
        elif has:
            verdict = "not used: this build was compiled without it (rebuild with GGML_NATIVE=ON)"
        elif in_build:
            verdict = "build uses it but the CPU lacks it: illegal-instruction crash"
        else:
            verdict = "absent"
        rows.append({"feature": name, "cpu": has, "llama_cpp": in_build, "verdict": verdict})
    return rows


# --- clusters and threads ---------------------------------------------------------------------

def parse_cpu_list(text: str, origin: str) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6] (the kernel's cpulist format)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise DoctorError(f"{origin}: {text.strip()!r} is not a CPU list like 0-3,6")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 6] -> ``0-3,6``."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and cpu == parts[-1][1] + 1:
            parts[-1] = (parts[-1][0], cpu)
        else:
            parts.append((cpu, cpu))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def read_clusters(files: Files, cpu: CpuInfo) -> list[dict[str, Any]]:
    """Cores grouped by cpufreq maximum, fastest first, named prime / big / little."""
    online_text = files.read("/sys/devices/system/cpu/online")
    cpus = parse_cpu_list(online_text, files.where("/sys/devices/system/cpu/online")) if online_text else list(range(len(cpu.processors)))
    max_khz: dict[int, int | None] = {}
    for n in cpus:
        path = f"/sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq"
        text = files.read(path)
        if text is not None and not text.strip().isdigit():
            raise DoctorError(f"{files.where(path)}: {text.strip()!r} is not a frequency in kHz")
        max_khz[n] = int(text) if text is not None else None
    if any(v is None for v in max_khz.values()):
        return [{"name": "all", "cpus": format_cpu_list(cpus), "cores": len(cpus), "max_mhz": None}]
    groups: dict[int, list[int]] = {}
    for n, khz in max_khz.items():
        groups.setdefault(khz, []).append(n)
    ordered = sorted(groups.items(), reverse=True)
    clusters = []
    for i, (khz, members) in enumerate(ordered):
        if len(ordered) == 1:
            name = "all"
        elif i == len(ordered) - 1:
            name = "little"
        elif i == 0 and len(ordered) > 2 and len(members) <= 2:
            name = "prime"
        else:
            name = "big"
        clusters.append({"name": name, "cpus": format_cpu_list(members), "cores": len(members), "max_mhz": khz / 1000})
    return clusters


def recommend_threads(cpu: CpuInfo, clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """Threads and affinity for llama.cpp: leave the little cores out (they finish their share of
    each synchronised matmul last, so the whole step waits for them); on one cluster, one thread
    per physical core (SMT siblings share the vector units)."""
    fast = [c for c in clusters if c["name"] != "little"]
    cpus = [n for c in fast for n in parse_cpu_list(c["cpus"], "clusters")]
    if len(clusters) > 1:
        threads, why = len(cpus), "every core but the little cluster"
    else:
        threads, why = min(len(cpus), cpu.physical_cores()), "one per physical core"
    affinity = format_cpu_list(cpus)
    return {
        "threads": threads,
        "affinity": affinity,
        "why": why,
        "command": f"taskset -c {affinity} edgeagent run --threads {threads} ...",
    }


# --- SoC and profile --------------------------------------------------------------------------

def soc_names(text: str) -> set[str]:
    """Part numbers in a string, directly (SM8550) or through a Qualcomm codename (KALAMA)."""
    parts = {m.upper() for m in SOC_PART.findall(text)}
    parts |= {QCOM_CODENAMES[w] for w in re.findall(r"[a-z]+", text.lower()) if w in QCOM_CODENAMES}
    return parts


def identify_soc(files: Files, cpu: CpuInfo) -> list[dict[str, str]]:
    """Every SoC identifier readable, with where it came from."""
    found = []
    for key in ("machine", "family", "soc_id"):
        value = (files.read(f"/sys/devices/soc0/{key}") or "").strip()
        if value:
            found.append({"source": f"/sys/devices/soc0/{key}", "value": value})
    soc_id = next((f["value"] for f in found if f["source"].endswith("soc_id")), "")
    if soc_id.isdigit() and int(soc_id) in QCOM_SOC_IDS and any("Snapdragon" in f["value"] for f in found):
        found.append({"source": "Qualcomm soc_id table", "value": QCOM_SOC_IDS[int(soc_id)]})
    for key in ("Hardware",):
        if cpu.extra.get(key):
            found.append({"source": f"/proc/cpuinfo {key}", "value": cpu.extra[key]})
    if cpu.arch in X86_MACHINES:
        found.append({"source": "/proc/cpuinfo model name", "value": cpu.model})
    return found


def match_profile(identifiers: list[str], profiles: list[Any]) -> Any | None:
    """The first profile whose SoC part number is among the identifiers, or whose SoC name
    (before any parenthesis) appears in one of them."""
    parts = set().union(*(soc_names(i) for i in identifiers)) if identifiers else set()
    lowered = [i.lower() for i in identifiers]
    for profile in profiles:
        name = profile.soc.split(" (")[0].strip().lower()
        if soc_names(profile.soc) & parts or any(name and name in i for i in lowered):
            return profile
    return None


def profile_report(profile: Any | None, threads: dict[str, Any], repack: bool) -> dict[str, Any]:
    if profile is None:
        return {"profile": None, "advice": "none matches: run `edgeagent calibrate -o device_profiles/this.toml`"}
    runtime = profile.runtime
    report = {
        "profile": profile.name,
        "soc": profile.soc,
        "threads": runtime.threads,
        "weight_repack": runtime.weight_repack,
        "flash_attn": runtime.flash_attn,
        "huge_pages": runtime.huge_pages,  # None: wherever the kernel gives them
    }
    advice = []
    if runtime.threads != threads["threads"]:
        advice.append(f"the profile runs {runtime.threads} thread(s), the clusters here suggest {threads['threads']}")
    if runtime.weight_repack and not repack:
        advice.append("the profile sets weight_repack = true, this CPU's default is false (Intel AMX, where llama.cpp's "
                      "repacking crashes on quantized models): re-run `edgeagent calibrate` here")
    elif runtime.weight_repack != repack:
        advice.append(f"the profile sets weight_repack = false, this CPU's default is true: `edgeagent calibrate` "
                      "writes false where one agent step ran at least 2 % faster without repacking; re-run it if this "
                      "is another machine")
    if advice:
        report["advice"] = "; ".join(advice)
    if profile.kind == "host":
        report["note"] = "a host profile describes the machine it was calibrated on; re-run `edgeagent calibrate` if this is another"
    return report


# --- memory, llama.cpp, runtime, adb ---------------------------------------------------------

def read_memory(files: Files) -> dict[str, Any]:
    text = files.read("/proc/meminfo")
    if text is None:
        return {"total_gib": None, "available_gib": None}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable"):
            if not fields or not fields[0].isdigit():
                raise DoctorError(f"{files.where('/proc/meminfo')}: {key}: {rest.strip()!r} is not a size in kB")
            values[key] = round(int(fields[0]) / 2**20, 2)
    return {"total_gib": values.get("MemTotal"), "available_gib": values.get("MemAvailable")}


def llama_build() -> dict[str, Any]:
    """The llama.cpp build llama-cpp-python loads: version and compiled-in features."""
    try:
        import llama_cpp
    except Exception as exc:  # an import of a compiled library fails in many ways
        return {"importable": False, "error": f"{type(exc).__name__}: {exc}"}
    from edgeagent.llama import ThreadPool

    info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    features = parse_system_info(info)
    return {"importable": True, "llama_cpp_python": llama_cpp.__version__, "system_info": info,
            "features": sorted(features), "threads": thread_pool_finding("OPENMP" in features, ThreadPool.available())}


def thread_pool_finding(openmp: bool, attachable: bool) -> dict[str, Any]:
    """How the build runs its worker threads between tokens, and whether the engine keeps
    them: with OpenMP they are OpenMP's own; without it the engine's persistent pool
    (``llama.ThreadPool``) keeps ggml's, or they start and stop for every token."""
    if openmp:
        what, ok = "OpenMP's workers (the engine's persistent pool changes nothing measurable)", True
    elif attachable:
        what, ok = "ggml's own workers, kept between tokens by the engine's persistent pool", True
    else:
        what, ok = "ggml's own workers, started and joined for every token: this build exports no thread-pool calls", False
    return {"openmp": openmp, "pool_attachable": attachable, "what": what, "ok": ok}


def runtime_imports(timeout_s: float = 120.0) -> dict[str, Any]:
    """Import the runtime modules in a fresh interpreter and report whether torch came with them."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(RUNTIME_MODULES)!r}: importlib.import_module(m)\n"
        "print(json.dumps({'torch_imported': 'torch' in sys.modules}))\n"
    )
    torch_installed = importlib.util.find_spec("torch") is not None
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"ok": False, "torch_installed": torch_installed, "error": f"importing the runtime took over {timeout_s:g} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "torch_installed": torch_installed, "error": last}
    torch_imported = json.loads(done.stdout.strip().splitlines()[-1])["torch_imported"]
    return {"ok": not torch_imported, "torch_installed": torch_installed, "torch_imported": torch_imported, "modules": list(RUNTIME_MODULES)}


def adb_report(profiles: list[Any], host: str | None = None, port: int | None = None, timeout_s: float = 5.0) -> dict[str, Any]:
    """The devices an adb server knows, each with its SoC, matching profile and whether its
    battery current is readable (what `edgeagent profile --device adb` needs to *measure*
    energy; without it energy is estimated from the profile)."""
    from adbutils.errors import AdbError

    from android_bridge.adb import AdbDevice, _FailFastClient
    from android_bridge.device import DeviceError

    host = host or os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    port = int(port or os.environ.get("ANDROID_ADB_SERVER_PORT", 5037))
    client = _FailFastClient(host, port)
    client.timeout_s = timeout_s
    report: dict[str, Any] = {"server": f"{host}:{port}", "devices": []}
    try:
        infos = client.list()
    except (AdbError, OSError) as exc:
        report["reachable"] = False
        report["advice"] = (f"no adb server answers at {host}:{port} ({type(exc).__name__}): install Google's platform-tools and run "
                            "`adb start-server`; on the phone itself enable wireless debugging and `adb connect 127.0.0.1:PORT`")
        return report
    report["reachable"] = True
    for info in infos:
        entry: dict[str, Any] = {"serial": info.serial, "state": info.state}
        if info.state != "device":
            entry["advice"] = "not ready: accept the USB debugging prompt on the device" if info.state == "unauthorized" else f"state {info.state}"
            report["devices"].append(entry)
            continue
        try:
            device = AdbDevice(info.serial, host=host, port=port, timeout_s=timeout_s)
            props = {name: device.shell(["getprop", name])[1].strip() for name in ("ro.soc.model", "ro.board.platform", "ro.product.model")}
            battery = device.battery()
        except DeviceError as exc:
            entry["error"] = str(exc)
            report["devices"].append(entry)
            continue
        profile = match_profile([v for v in props.values() if v], profiles)
        entry.update({
            "model": props["ro.product.model"],
            "soc": props["ro.soc.model"] or props["ro.board.platform"] or None,
            "profile": profile.name if profile else None,
            "battery_source": battery.source,
            "battery_current_readable": battery.current_ma is not None,
            "energy": "measured" if battery.current_ma is not None else "estimated (no battery current readable)",
        })
        report["devices"].append(entry)
    return report


def repack_report(cpuinfo_text: str, cpu: CpuInfo) -> dict[str, Any]:
    from edgeagent.engine import default_repack

    on = default_repack(cpuinfo_text)
    if cpu.arch in ARM_MACHINES:
        why = "ARM: repacked Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL and Q8_0 run the interleaved dotprod/i8mm kernels"
    elif has_amx(cpu):
        why = "x86 with AMX (amx_tile): llama.cpp's AMX repack buffer crashes on quantized models, so off"
    else:
        why = "x86 without AMX: only the AVX2/AVX-512 repack buffers apply, and they do not crash"
    return {"on": on, "why": why}


def huge_pages_report(files: Files, probed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether the engine's weights get 2 MiB pages here (``edgeagent.hugepages``): the
    kernel's transparent-huge-page setting decides; on this machine ``probed`` (a test buffer,
    ``hugepages.probe``) says whether the kernel really gives them."""
    from edgeagent.hugepages import THP_ENABLED, THP_MODES_ON, thp_mode

    mode = thp_mode(files.read(str(THP_ENABLED)) or "")
    if mode is None:
        return {"thp": None, "on": False,
                "why": f"{files.where(str(THP_ENABLED))} is not readable (not Linux, or a kernel without transparent "
                       "huge pages): the weights stay on 4 KiB pages"}
    on = mode in THP_MODES_ON
    why = (f"the kernel's THP setting is {mode!r}: the engine loads the weights into buffers marked for 2 MiB pages"
           if on else f"the kernel's THP setting is {mode!r}: no 2 MiB pages, the weights stay on 4 KiB pages")
    report: dict[str, Any] = {"thp": mode, "on": on, "why": why}
    if on and probed is not None:
        report["probe"] = probed
        got = probed.get("huge_mb", 0.0)
        report["works"] = got > 0
        cause = probed.get("error") or "a THP switch of the process or container, or memory too fragmented"
        report["why"] += (f"; a {probed['size_mb']} MiB test buffer got {got:.0f} MiB of them" if got > 0 else
                          f"; but a {probed['size_mb']} MiB test buffer got none ({cause}): the weights will be on "
                          "4 KiB pages")
    return report


def huge_page_probe() -> dict[str, Any] | None:
    """``hugepages.probe`` where the kernel's setting allows huge pages (None elsewhere)."""
    from edgeagent.hugepages import available, probe

    if not available():
        return None
    try:
        return probe()
    except OSError as exc:  # no libc to call: say so rather than fail the report
        return {"size_mb": 0, "huge_mb": 0.0, "error": str(exc)}


# --- the whole report ---------------------------------------------------------------------------

def diagnose(files: Files, *, profiles: list[Any] | None = None, local: bool | None = None,
             system_info: str | None = None, adb_port: int | None = None) -> dict[str, Any]:
    """Everything doctor knows about the machine `files` describes. `local` (default: when the
    files are this machine's) adds the checks only this machine can answer: the llama.cpp build,
    the runtime imports, adb. `system_info` replaces the build's ``llama_print_system_info``."""
    from edgeagent.profiles import load_all

    profiles = load_all() if profiles is None else profiles
    local = files.origin == "this machine" if local is None else local
    text = files.read("/proc/cpuinfo")
    if text is None:
        raise DoctorError(f"{files.where('/proc/cpuinfo')}: not found")
    cpu = parse_cpuinfo(text, files.where("/proc/cpuinfo"))
    clusters = read_clusters(files, cpu)
    threads = recommend_threads(cpu, clusters)
    soc = identify_soc(files, cpu)
    profile = match_profile([s["value"] for s in soc], profiles)
    repack = repack_report(text, cpu)

    build = llama_build() if local and system_info is None else None
    if system_info is not None:
        build = {"importable": True, "system_info": system_info, "features": sorted(parse_system_info(system_info))}
    build_features = set(build["features"]) if build and build.get("importable") else None
    report: dict[str, Any] = {
        "source": files.origin,
        "cpu": {
            "arch": cpu.arch,
            "model": cpu.model,
            "logical_cpus": len(cpu.processors),
            "physical_cores": cpu.physical_cores(),
            "features": feature_rows(cpu, build_features),
        },
        "llama_cpp": build if build is not None else "not checked (not this machine)",
        "repack": repack,
        "huge_pages": huge_pages_report(files, huge_page_probe() if local else None),
        "clusters": clusters,
        "threads": threads,
        "soc": {"identifiers": soc, **profile_report(profile, threads, repack["on"])},
        "memory": read_memory(files),
    }
    if local:
        report["runtime"] = runtime_imports()
        report["adb"] = adb_report(profiles, port=adb_port)
    return report


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per finding for the human table: area, finding, status (ok / warn / no)."""
    rows: list[list[str]] = []
    cpu = report["cpu"]
    rows.append(["cpu", f"{cpu['arch']}, {cpu['model']}, {cpu['logical_cpus']} CPUs", "ok"])
    for f in cpu["features"]:
        bad = f["verdict"].startswith(("not used", "build uses"))
        rows.append(["feature", f"{f['feature']}: {f['verdict']}", "warn" if bad else "ok" if f["cpu"] else "-"])
    llama = report["llama_cpp"]
    if isinstance(llama, dict):
        status = "ok" if llama.get("importable") else "no"
        rows.append(["llama.cpp", llama.get("system_info") or llama.get("error", ""), status])
        if llama.get("threads"):
            rows.append(["workers", llama["threads"]["what"], "ok" if llama["threads"]["ok"] else "warn"])
    repack = report["repack"]
    rows.append(["repack", f"{'on' if repack['on'] else 'off'}: {repack['why']}", "ok"])
    huge = report["huge_pages"]
    rows.append(["huge pages", f"{'on' if huge['on'] else 'off'}: {huge['why']}",
                 ("ok" if huge.get("works", True) else "warn") if huge["on"] else "-"])
    for c in report["clusters"]:
        mhz = f"{c['max_mhz']:.0f} MHz" if c["max_mhz"] else "no cpufreq"
        rows.append(["cluster", f"{c['name']}: cpus {c['cpus']} ({c['cores']} cores, {mhz})", "ok"])
    t = report["threads"]
    rows.append(["threads", f"{t['threads']} on cpus {t['affinity']} ({t['why']}): {t['command']}", "ok"])
    soc = report["soc"]
    ids = ", ".join(f"{s['value']} ({s['source']})" for s in soc["identifiers"]) or "none readable"
    rows.append(["soc", ids, "ok" if soc["identifiers"] else "warn"])
    if soc["profile"]:
        flags = f"threads {soc['threads']}, weight_repack {soc['weight_repack']}, flash_attn {soc['flash_attn']}"
        if soc.get("huge_pages") is not None:
            flags += f", huge_pages {soc['huge_pages']}"
        rows.append(["profile", f"{soc['profile']} ({soc['soc']}): {flags}", "ok"])
    else:
        rows.append(["profile", soc["advice"], "warn"])
    for key in ("advice", "note"):
        if soc["profile"] and soc.get(key):
            rows.append(["profile", soc[key], "warn" if key == "advice" else "-"])
    mem = report["memory"]
    rows.append(["memory", f"{mem['total_gib']} GiB total, {mem['available_gib']} GiB available" if mem["total_gib"] else "unknown (no /proc/meminfo)",
                 "ok" if mem["total_gib"] else "warn"])
    if "runtime" in report:
        rt = report["runtime"]
        detail = "imports without torch" if rt["ok"] else rt.get("error") or "importing the runtime imported torch"
        rows.append(["runtime", f"{detail} (torch {'installed' if rt['torch_installed'] else 'not installed'})", "ok" if rt["ok"] else "no"])
    if "adb" in report:
        adb = report["adb"]
        if not adb["reachable"]:
            rows.append(["adb", adb["advice"], "warn"])
        elif not adb["devices"]:
            rows.append(["adb", f"server at {adb['server']}, no devices attached", "warn"])
        for d in adb["devices"]:
            if "energy" in d:
                rows.append(["adb", f"{d['serial']}: {d['model']}, soc {d['soc'] or 'unknown'}, profile {d['profile'] or 'none'}, "
                                    f"battery via {d['battery_source']}, energy {d['energy']}", "ok" if d["battery_current_readable"] else "warn"])
            else:
                rows.append(["adb", f"{d['serial']}: {d.get('error') or d.get('advice')}", "no"])
    return rows
