"""`edgeagent doctor` on the files of three real machine types (tests/fixtures/doctor/*.txt, each
saying where its data came from), on this machine, and against the emulated phone over adb;
and the repack choice `engine.default_repack` makes from a CPU's flags."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.doctor import (
    DoctorError,
    DumpFiles,
    adb_report,
    diagnose,
    format_cpu_list,
    huge_pages_report,
    load_dump,
    parse_cpu_list,
    parse_cpuinfo,
    runtime_imports,
    summary_rows,
)
from edgeagent.engine import default_repack
from edgeagent.hugepages import available, thp_mode
from edgeagent.profiles import load_all

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "doctor"
SD8G2, RB5, EPYC = (FIXTURES / f"{n}.txt" for n in ("snapdragon-8-gen-2", "qualcomm-rb5", "x86-host-epyc"))
# What an aarch64 llama.cpp build compiled without i8mm prints (written for the test, in the
# format of llama_print_system_info).
ARM_BUILD_NO_I8MM = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | OPENMP = 1 | REPACK = 1 |"


def section(path: Path, name: str) -> str:
    return load_dump(path).read(name)


def features(report: dict) -> dict[str, dict]:
    return {f["feature"]: f for f in report["cpu"]["features"]}


def test_every_fixture_says_where_its_data_came_from():
    for path in (SD8G2, RB5, EPYC):
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert any("Source" in line for line in header), path.name
        assert load_dump(path).read("/proc/cpuinfo"), path.name


def test_snapdragon_8_gen_2_phone():
    r = diagnose(load_dump(SD8G2), system_info=ARM_BUILD_NO_I8MM)
    assert r["cpu"]["arch"] == "aarch64" and r["cpu"]["logical_cpus"] == 8
    f = features(r)
    assert [f[n]["cpu"] for n in ("neon", "dotprod", "i8mm", "sve", "sve2")] == [True, True, True, False, False]
    assert f["dotprod"]["verdict"] == "used"
    assert f["i8mm"]["verdict"].startswith("not used: this build was compiled without it")
    assert [(c["name"], c["cpus"], c["max_mhz"]) for c in r["clusters"]] == [
        ("prime", "7", 3187.2), ("big", "3-6", 2803.2), ("little", "0-2", 2016.0)]
    assert (r["threads"]["threads"], r["threads"]["affinity"]) == (5, "3-7")
    assert "SM8550" in [s["value"] for s in r["soc"]["identifiers"]]
    assert r["soc"]["profile"] == "snapdragon-8-gen-2" and r["soc"]["threads"] == 5 and "advice" not in r["soc"]
    assert r["repack"]["on"] is True
    assert r["memory"]["total_gib"] == pytest.approx(7654321 / 2**20, abs=0.01)
    assert "runtime" not in r and "adb" not in r  # a dump is not this machine


def test_rb5_dev_board():
    r = diagnose(load_dump(RB5))
    f = features(r)
    assert [f[n]["cpu"] for n in ("neon", "dotprod", "i8mm", "sve")] == [True, True, False, False]
    assert r["llama_cpp"] == "not checked (not this machine)"
    assert [(c["name"], c["cpus"], c["cores"]) for c in r["clusters"]] == [("prime", "7", 1), ("big", "4-6", 3), ("little", "0-3", 4)]
    assert (r["threads"]["threads"], r["threads"]["affinity"]) == (4, "4-7")
    assert {"source": "Qualcomm soc_id table", "value": "QRB5165"} in r["soc"]["identifiers"]
    assert r["soc"]["profile"] == "qualcomm-rb5"
    assert r["repack"]["on"] is True


def test_x86_host_without_amx():
    r = diagnose(load_dump(EPYC), system_info="CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    f = features(r)
    assert f["avx512"]["verdict"] == "used" and f["amx_tile"]["cpu"] is False
    assert f["amx_tile"]["verdict"] == "absent"  # llama.cpp has no flag for it, and this CPU lacks it
    # A build with AMX kernels on a CPU without AMX (llama.cpp#28756's SIGILL) is called out.
    assert f["amx_int8"]["verdict"].startswith("build uses it but the CPU lacks it")
    assert r["clusters"] == [{"name": "all", "cpus": "0-1", "cores": 2, "max_mhz": None}]
    assert r["threads"]["threads"] == 2
    assert r["soc"]["profile"] == "host" and "note" in r["soc"]
    assert r["repack"]["on"] is True and r["repack"]["why"].startswith("x86 without AMX")
    # a host profile calibrated when repack was off on every x86 (as host.toml was until
    # 2026-12-05): doctor says so
    from edgeagent.profiles import load_all

    stale = [p.model_copy(update={"runtime": p.runtime.model_copy(update={"weight_repack": False})})
             if p.name == "host" else p for p in load_all()]
    r = diagnose(load_dump(EPYC), profiles=stale,
                 system_info="CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    assert "weight_repack = false, this CPU's default is true" in r["soc"]["advice"]


def test_repack_follows_the_cpu():
    epyc = section(EPYC, "/proc/cpuinfo")
    amx = epyc.replace(" avx512_vp2intersect", " avx512_vp2intersect amx_bf16 avx512_fp16 amx_tile amx_int8")
    assert amx != epyc
    assert default_repack(epyc) is True
    assert default_repack(amx) is False
    assert default_repack(section(SD8G2, "/proc/cpuinfo")) is True
    assert default_repack(section(RB5, "/proc/cpuinfo")) is True
    assert diagnose(DumpFiles(f"==> /proc/cpuinfo <==\n{amx}", "amx"))["repack"]["on"] is False
    # a profile that repacks, on a CPU where repacking crashes: doctor says to calibrate here
    repacking = [p.model_copy(update={"runtime": p.runtime.model_copy(update={"weight_repack": True})})
                 if p.name == "host" else p for p in load_all()]
    r = diagnose(DumpFiles(f"==> /proc/cpuinfo <==\n{amx}", "amx"), profiles=repacking)
    assert r["soc"]["profile"] == "host" and "Intel AMX" in r["soc"]["advice"]


def test_huge_pages_follow_the_kernels_setting():
    """The engine's weights go on 2 MiB pages where the kernel's THP setting gives them; a dump
    without the setting says it is not readable (the fixtures, like an app kept from sysfs)."""
    cpuinfo = section(EPYC, "/proc/cpuinfo")
    for setting, on in (("always madvise [never]", False), ("always [madvise] never", True), ("[always] madvise never", True)):
        dump = f"==> /proc/cpuinfo <==\n{cpuinfo}\n==> /sys/kernel/mm/transparent_hugepage/enabled <==\n{setting}\n"
        r = diagnose(DumpFiles(dump, "thp"))
        assert r["huge_pages"]["on"] is on and r["huge_pages"]["thp"] == setting.split("[")[1].split("]")[0]
    r = diagnose(load_dump(SD8G2), system_info=ARM_BUILD_NO_I8MM)
    assert r["huge_pages"] == {"thp": None, "on": False, "why": r["huge_pages"]["why"]}
    assert "transparent_hugepage/enabled is not readable" in r["huge_pages"]["why"]
    assert any(row[0] == "huge pages" for row in summary_rows(r))
    # allowed by the setting, but a test buffer got none: a warning that says so
    dump = f"==> /proc/cpuinfo <==\n{cpuinfo}\n==> /sys/kernel/mm/transparent_hugepage/enabled <==\nalways [madvise] never\n"
    report = huge_pages_report(DumpFiles(dump, "thp"), {"size_mb": 4, "huge_mb": 0.0})
    assert report["works"] is False and "test buffer got none" in report["why"]
    rows = summary_rows({**diagnose(DumpFiles(dump, "thp")), "huge_pages": report})
    assert ["huge pages", f"on: {report['why']}", "warn"] in rows


def test_a_soc_without_a_profile_and_a_codename():
    cpuinfo = section(RB5, "/proc/cpuinfo")
    phone = diagnose(DumpFiles(f"==> /proc/cpuinfo <==\n{cpuinfo}\nHardware\t: Qualcomm Technologies, Inc SM8250\n", "sd865"))
    assert phone["soc"]["profile"] is None and "edgeagent calibrate" in phone["soc"]["advice"]
    kalama = diagnose(DumpFiles(f"==> /proc/cpuinfo <==\n{cpuinfo}\nHardware\t: Qualcomm Technologies, Inc KALAMA\n", "kalama"))
    assert kalama["soc"]["profile"] == "snapdragon-8-gen-2"
    # ...whose 5 threads differ from the 8 this cpufreq-less dump suggests: said, not hidden.
    assert kalama["clusters"][0]["name"] == "all" and "advice" in kalama["soc"]


def test_cpu_lists():
    assert parse_cpu_list("0-3,6", "x") == [0, 1, 2, 3, 6]
    assert format_cpu_list([6, 0, 1, 2, 3]) == "0-3,6"
    with pytest.raises(DoctorError, match="x: 'a-b' is not a CPU list"):
        parse_cpu_list("a-b", "x")


@pytest.mark.parametrize("text, message", [
    ("hello\n", "dump.txt:1: expected a '==> PATH <==' header"),
    ("# only a comment\n", "dump.txt: no '==> PATH <==' sections"),
    ("==> /proc/meminfo <==\nMemTotal: 1 kB\n", "dump.txt:/proc/cpuinfo: not found"),
    ("==> /proc/cpuinfo <==\nnothing: here\n", "dump.txt:/proc/cpuinfo: no 'processor : N' entries"),
    ("==> /proc/cpuinfo <==\nprocessor : 0\nFeatures : asimd\n\n"
     "==> /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq <==\nfast\n", "cpuinfo_max_freq: 'fast' is not a frequency in kHz"),
])
def test_bad_dumps_are_one_clear_error(tmp_path, text, message):
    dump = tmp_path / "dump.txt"
    dump.write_text(text)
    with pytest.raises(DoctorError) as err:
        diagnose(load_dump(dump), profiles=[])
    assert message in str(err.value).replace(str(tmp_path) + "/", "")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeagent.cli", "doctor", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_on_each_fixture():
    for path, profile in ((SD8G2, "snapdragon-8-gen-2"), (RB5, "qualcomm-rb5"), (EPYC, "host")):
        proc = run_cli("--dump", str(path), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["soc"]["profile"] == profile
    table = run_cli("--dump", str(SD8G2))
    assert table.returncode == 0 and "taskset -c 3-7" in table.stdout


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not a dump\n")
    for args, message in (((("--dump", str(bad))), "bad.txt:1: expected"), (("--dump", str(tmp_path / "none.txt")), "none.txt: cannot read"),
                          (("--adb-port", "0"), "--adb-port must be 1..65535")):
        proc = run_cli(*args)
        assert proc.returncode == 2 and message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_adb_section_against_the_emulated_phone():
    from android_bridge.emulator.adb_server import AdbServer
    from android_bridge.emulator.phone import EmulatedPhone

    with AdbServer(EmulatedPhone(seed=2), port=0) as server:
        r = adb_report(load_all(), port=server.port)
    assert r["reachable"] is True and len(r["devices"]) == 1
    d = r["devices"][0]
    assert d["serial"] == server.serial and d["model"] == "EdgeAgent Emulated Phone"
    assert d["soc"] is None and d["profile"] is None  # the emulator publishes no ro.soc.model
    assert d["battery_current_readable"] is True and d["energy"] == "measured"
    nobody = adb_report(load_all(), port=free_port(), timeout_s=1.0)
    assert nobody["reachable"] is False and "adb start-server" in nobody["advice"]


def test_runtime_imports_without_torch():
    r = runtime_imports()
    assert r["ok"] is True and r["torch_imported"] is False, r


def test_doctor_on_this_machine():
    proc = run_cli("--json", "--adb-port", str(free_port()))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["source"] == "this machine"
    assert r["cpu"]["logical_cpus"] == len(parse_cpuinfo(Path("/proc/cpuinfo").read_text()).processors)
    assert r["llama_cpp"]["importable"] is True and "CPU :" in r["llama_cpp"]["system_info"]
    threads = r["llama_cpp"]["threads"]
    assert threads["openmp"] == ("OPENMP = 1" in r["llama_cpp"]["system_info"]) and threads["pool_attachable"] is True
    assert r["runtime"]["ok"] is True and r["adb"]["reachable"] is False
    assert r["repack"]["on"] is default_repack()
    assert r["huge_pages"]["on"] is available() and r["huge_pages"]["thp"] == thp_mode()
    if available():  # a test buffer says whether the kernel really gives them
        assert r["huge_pages"]["probe"]["size_mb"] == 4 and r["huge_pages"]["works"] is (r["huge_pages"]["probe"]["huge_mb"] > 0)
    if platform.machine() == "x86_64":
        used = {f["feature"] for f in r["cpu"]["features"] if f["verdict"] == "used"}
        assert "avx2" in used or not features(r)["avx2"]["cpu"]
    assert all(len(row) == 3 for row in summary_rows(r))


def test_the_thread_finding_for_each_kind_of_build():
    from edgeagent.doctor import thread_pool_finding

    assert thread_pool_finding(True, True)["ok"] and "OpenMP" in thread_pool_finding(True, False)["what"]
    kept = thread_pool_finding(False, True)
    assert kept["ok"] and "persistent pool" in kept["what"]
    lost = thread_pool_finding(False, False)
    assert not lost["ok"] and "every token" in lost["what"]
