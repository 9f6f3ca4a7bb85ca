"""Hostile and clumsy input against the real entry points: bundles that escape through
symlinks or break the manifest's schema, corrupt GGUF headers, implausible profiles, full
disks, absurd numbers from a device or an adb client, and what interrupted runs leave.
Every class ends in one line naming the file, key or value (exit code 2 from the CLI), never
a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import adbutils
import pytest
from typer.testing import CliRunner

from android_bridge.adb import AdbDevice
from android_bridge.emulator import adb_shell
from android_bridge.emulator.adb_server import AdbServer
from android_bridge.emulator.phone import EmulatedPhone
from android_bridge.uitree import UIDumpError, parse_dump
from edgeagent.bundle import BundleError, load_bundle
from edgeagent.cli import app
from edgeagent.estimate import shape_from_gguf
from edgeagent.output import emit_json
from edgeagent.profiles import ProfileError, load_profile

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _one_line_error(stderr: str) -> bool:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in stderr


def _cli(*args: str, limit_file_bytes: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``edgeagent ARGS`` in a fresh process; ``limit_file_bytes`` makes every write past that
    size fail as on a full disk (RLIMIT_FSIZE: EFBIG instead of ENOSPC, the same path)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run([sys.executable, "-m", "edgeagent.cli", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if limit_file_bytes is not None else None, cwd=cwd)


# --- bundles ------------------------------------------------------------------------------

def _manifest(variants: list[dict], **extra) -> dict:
    return {"format": "edgeagent-bundle", "format_version": 1, "prompt_format": {"kind": "plain"},
            "variants": variants, **extra}


def _entry(path: str, data: bytes, **extra) -> dict:
    return {"id": "v", "quant": "q8_0", "exit_layer": 1, "n_layers": 1, "path": path,
            "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "quality": {}, **extra}


def _write_bundle(root: Path, manifest: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_a_bundle_cannot_reach_outside_itself_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "secret.gguf"
    outside.write_bytes(b"GGUF not yours")
    data = outside.read_bytes()
    linked_dir = _write_bundle(tmp_path / "b1", _manifest([_entry("root/secret.gguf", data)]))
    (linked_dir / "root").symlink_to(tmp_path)  # ln -s / B/root, in small
    linked_file = _write_bundle(tmp_path / "b2", _manifest([_entry("model.gguf", data)]))
    (linked_file / "model.gguf").symlink_to(outside)
    wrong_hash = _write_bundle(tmp_path / "b3", _manifest([_entry("root/secret.gguf", data, sha256="0" * 64)]))
    (wrong_hash / "root").symlink_to(tmp_path)
    for bundle in (linked_dir, linked_file, wrong_hash):
        with pytest.raises(BundleError, match="symlink") as err:
            load_bundle(bundle)
        assert hashlib.sha256(data).hexdigest()[:16] not in str(err.value)  # no hash of an outside file
    r = runner.invoke(app, ["run", "--task", "x", "--bundle", str(linked_dir)])
    assert r.exit_code != 0 and "symlink" in r.output and isinstance(r.exception, SystemExit)
    # A symlinked manifest is refused too.
    real = _write_bundle(tmp_path / "b4", _manifest([_entry("m.gguf", b"x")]))
    (real / "m.gguf").write_bytes(b"x")
    linked_manifest = tmp_path / "b5"
    linked_manifest.mkdir()
    (linked_manifest / "manifest.json").symlink_to(real / "manifest.json")
    with pytest.raises(BundleError, match="symlink"):
        load_bundle(linked_manifest)
    assert load_bundle(real).variants[0].path == (real / "m.gguf").resolve()  # the plain bundle loads


@pytest.mark.parametrize("change, key", [
    ({"measurements": [1, 2]}, "measurements"),
    ({"prompt_format": "chat"}, "prompt_format"),
    ({"variants": [{**_entry("m.gguf", b"x"), "size_bytes": "1"}]}, "variants[0].size_bytes"),
    ({"variants": [{**_entry("m.gguf", b"x"), "sha256": "abc"}]}, "variants[0].sha256"),
    ({"variants": [{**_entry("m.gguf", b"x"), "exit_layer": True}]}, "variants[0].exit_layer"),
    ({"source_model": 7}, "source_model"),
])
def test_a_manifest_is_checked_against_its_schema(tmp_path: Path, change: dict, key: str) -> None:
    bundle = _write_bundle(tmp_path / "b", {**_manifest([_entry("m.gguf", b"x")]), **change})
    (bundle / "m.gguf").write_bytes(b"x")
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    assert f"manifest.json: {key}" in str(err.value)
    r = runner.invoke(app, ["select", "--bundle", str(bundle), "--profile", "snapdragon-8-gen-2"])
    assert r.exit_code != 0 and key in r.output and not isinstance(r.exception, (TypeError, AttributeError))


def test_a_manifest_nested_100000_deep_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(bundle)


# --- GGUF headers ----------------------------------------------------------------------------

def _gguf(tmp_path: Path, name: str, n_tensors: int, n_kv: int, tail: bytes = b"") -> Path:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + tail + b"\0" * 256)
    return path


def test_gguf_headers_with_impossible_counts_or_lengths_are_refused(tmp_path: Path) -> None:
    files = [
        _gguf(tmp_path, "tensors", 2**40, 0),
        _gguf(tmp_path, "kvs", 0, 2**40),
        _gguf(tmp_path, "key_length", 0, 1, struct.pack("<Q", 2**60)),
        _gguf(tmp_path, "string_length", 0, 1, struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 2**60)),
    ]
    for path in files:
        with pytest.raises(ValueError, match=str(path.name)):
            shape_from_gguf(path)
        r = runner.invoke(app, ["estimate", "--model", str(path), "--profile", "snapdragon-8-gen-2"])
        assert r.exit_code != 0 and path.name in r.output and isinstance(r.exception, SystemExit), r.output


def test_run_and_demo_on_a_gguf_llama_cpp_cannot_load_say_so_in_one_line(tmp_path: Path) -> None:
    bad = _gguf(tmp_path, "corrupt", 3, 2)
    for args in (["run", "--task", "open settings", "--model", str(bad)], ["demo", "--n", "1", "--model", str(bad)]):
        r = _cli(*args)
        assert r.returncode == 2 and _one_line_error(r.stderr) and "corrupt.gguf" in r.stderr, r.stderr


# --- profiles and --json -----------------------------------------------------------------------

def _profile_text() -> str:
    return (REPO / "device_profiles" / "snapdragon-8-gen-2.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("old, new, key", [
    ("bandwidth_theoretical_gbs = ", "bandwidth_theoretical_gbs = inf #", "bandwidth_theoretical_gbs"),
    ("bandwidth_theoretical_gbs = ", "bandwidth_theoretical_gbs = 1e309 #", "bandwidth_theoretical_gbs"),
    ("bandwidth_theoretical_gbs = ", "bandwidth_theoretical_gbs = 1e-308 #", "bandwidth_theoretical_gbs"),
    ("compute_gflops_sustained = ", "compute_gflops_sustained = nan #", "compute_gflops_sustained"),
    ("threads = ", "threads = 1000000000000 #", "runtime.threads"),
    ("prefill_type_rates = { Q4_0 = 1.31", "prefill_type_rates = { Q4_0 = inf", "runtime.prefill_type_rates.Q4_0"),
    ("prefill_type_rates = { Q4_0 = 1.31", "prefill_type_rates = { Q4_0 = 0.0", "runtime.prefill_type_rates.Q4_0"),
    ("prefill_type_rates = { Q4_0 = ", "prefill_type_rates = { Q4_X = ", "runtime.prefill_type_rates"),
])
def test_profile_numbers_must_be_finite_and_plausible(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = tmp_path / "p.toml"
    text = _profile_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ProfileError, match=rf"^{path}: {key}: "):
        load_profile(path)
    r = runner.invoke(app, ["estimate", "--profile", str(path), "--shape", "qwen2.5-1.5b", "--json"])
    assert r.exit_code != 0 and key in r.output and "Infinity" not in r.output


def test_profiles_that_are_not_utf8_or_nest_too_deep_are_refused(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(_profile_text().replace("Snapdragon", "Snapdrag\xf6n").encode("latin-1", "replace"))
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 30_000 + "]" * 30_000 + "\n")
    with pytest.raises(ProfileError, match="not UTF-8"):
        load_profile(latin1)
    with pytest.raises(ProfileError, match="nested too deeply"):
        load_profile(deep)


def test_json_output_is_strict_json(capsys) -> None:
    emit_json({"tokens_per_s": float("inf"), "rows": [float("nan"), 1.5], "ok": True})
    out = capsys.readouterr().out

    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(out, parse_constant=refuse) == {"tokens_per_s": None, "rows": [None, 1.5], "ok": True}
    r = runner.invoke(app, ["select", "--profile", "snapdragon-8-gen-2", "--max-ttft-ms", "inf", "--json"])
    assert r.exit_code == 2 and "--max-ttft-ms inf" in r.output


# --- full disks -------------------------------------------------------------------------------

def test_a_full_disk_ends_a_command_with_one_line(tmp_path: Path) -> None:
    for args in (["traces", "--n", "3", "--seed", "1", "-o", str(tmp_path / "t.jsonl")],
                 ["screenshot", "--task-seed", "1", "-o", str(tmp_path / "s.png")]):
        r = _cli(*args, limit_file_bytes=512)
        assert r.returncode == 2 and _one_line_error(r.stderr), (args, r.stderr)
        assert "File too large" in r.stderr


# --- devices and the emulator's adb -----------------------------------------------------------

def test_a_5000_digit_coordinate_is_a_bad_dump_and_ends_the_run_with_status_error() -> None:
    hostile = f'<hierarchy><node text="Pay" clickable="true" bounds="[0,0][{"9" * 5000},10]"/></hierarchy>'
    with pytest.raises(UIDumpError, match="bad bounds"):
        parse_dump(hostile)
    phone = EmulatedPhone(seed=3)
    phone.dump_xml = lambda: hostile  # the device under attack serves this dump over adb
    from edgeagent.agent.loop import run_agent

    class Never:
        def decide(self, instruction, screen, previous):  # pragma: no cover - never reached
            raise AssertionError("no screen should reach the policy")

    with AdbServer(phone, port=0) as server:
        device = AdbDevice(port=server.port, timeout_s=5)
        result = run_agent(device, "pay", Never(), max_steps=2)
    assert result.status == "error" and "bad bounds" in result.steps[0].error


def test_adb_push_is_capped_per_file_and_in_total(monkeypatch) -> None:
    monkeypatch.setattr(adb_shell, "MAX_FILE_BYTES", 1 << 20)
    monkeypatch.setattr(adb_shell, "MAX_TOTAL_BYTES", 3 << 20)
    with AdbServer(EmulatedPhone(seed=3), port=0) as server:
        d = adbutils.AdbClient("127.0.0.1", server.port).device("emulator-edgeagent")
        with pytest.raises(adbutils.AdbError):
            d.sync.push(b"x" * ((1 << 20) + 1), "/data/local/tmp/big.bin")
        assert not d.sync.exists("/data/local/tmp/big.bin")
        for i in range(3):
            d.sync.push(b"y" * ((1 << 20) - 10), f"/data/local/tmp/f{i}.bin")
        with pytest.raises(adbutils.AdbError):
            d.sync.push(b"z" * 100, "/data/local/tmp/one_more.bin")
        held = sum(len(content) for content, _ in server.shell.files.values())
        assert held <= 3 << 20
        d.sync.push(b"y" * 100, "/data/local/tmp/f0.bin")  # replacing a file frees its room
        with pytest.raises(OSError, match="File too large"):
            server.shell.write_file("/data/local/tmp/direct.bin", b"x" * ((1 << 20) + 1))


def test_adb_input_with_an_infinite_or_huge_number_is_bad_input() -> None:
    """What `adb shell input tap inf 1` runs on the emulator: a usage error, not an internal one."""
    shell = AdbServer(EmulatedPhone(seed=3), port=0).shell
    for command in ("input tap inf 1", "input tap nan 5", "input swipe 1 1 2 2 1e400",
                    f"input tap {'9' * 5000} 1", f"input keyevent {'6' * 5000}"):
        result = shell.run(command)
        stderr = result.stderr.decode()
        assert result.exit_code != 0 and "internal error" not in stderr and stderr.startswith("input"), (command, stderr)


# --- what interrupted runs leave -----------------------------------------------------------------

def test_a_killed_packers_staging_directory_is_removed_by_the_next_run(tmp_path: Path) -> None:
    from edgeagent.export.bundle import staging_dir

    out = tmp_path / "OUT"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".OUT.{dead.pid}.abc123.staging"
    stale.mkdir()
    (stale / "q8_0-L6.gguf").write_bytes(b"x" * 1000)
    stale_old = tmp_path / f".OUT.old.{dead.pid}"
    stale_old.mkdir()
    live = tmp_path / f".OUT.{os.getpid()}.zzz.staging"
    live.mkdir()
    fresh = staging_dir(out)
    assert not stale.exists() and not stale_old.exists()
    assert live.exists() and fresh.exists() and fresh.name.startswith(f".OUT.{os.getpid()}.")


def test_convert_checks_its_paths_and_checkpoint_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = tmp_path / "t.jsonl"
    r = _cli("traces", "--n", "2", "--seed", "1", "-o", str(data))
    assert r.returncode == 0, r.stderr
    as_file = tmp_path / "out_file"
    as_file.write_text("not a directory")
    r = _cli("convert", "builtin", "--data", str(data), "-o", str(as_file), "--epochs", "0", "--eval-tasks", "0")
    assert r.returncode == 2 and _one_line_error(r.stderr) and "out_file: exists and is not a directory" in r.stderr
    assert not (tmp_path / "out_file.work").exists()

    checkpoint = tmp_path / "B.work" / "finetune" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"an interrupted run's state")
    r = _cli("convert", "builtin", "--data", str(data), "-o", str(tmp_path / "B"), "--epochs", "0")
    assert r.returncode == 2 and _one_line_error(r.stderr) and "--resume" in r.stderr
    assert checkpoint.read_bytes() == b"an interrupted run's state"

    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    r = _cli("convert", "builtin", "--data", str(bad), "-o", str(tmp_path / "C"), "--epochs", "0")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert not (tmp_path / "C.work").exists()  # a data error leaves no empty work directory
