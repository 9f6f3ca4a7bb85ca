"""Device profiles: every shipped profile loads, and a broken one is refused with the file
and the key named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeagent.profiles import ProfileError, list_profiles, load_profile

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {
    "snapdragon-8-gen-2", "snapdragon-8-gen-3", "snapdragon-8-elite", "snapdragon-7-plus-gen-2",
    "dimensity-9300", "tensor-g3", "qualcomm-rb5", "qualcomm-rb3-gen-2", "host",
}


def shipped_text(name: str) -> str:
    return (resources.files("device_profiles") / f"{name}.toml").read_text(encoding="utf-8")


def write(tmp_path: Path, text: str, name: str = "x.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_required_devices_ship() -> None:
    assert REQUIRED <= set(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads_and_cites_sources(name: str) -> None:
    p = load_profile(name)
    assert p.name == name  # the file name is the profile's name
    assert p.sources and all(s.url or s.citation for s in p.sources)
    assert 0 < p.usable_memory_gb <= p.ram_gb
    if p.kind == "host":
        # Fitted by `calibrate` against a measured streaming-read ceiling, clamped at 1: a
        # probe model that partly sits in the last-level cache decodes at about that ceiling.
        assert 0.3 <= p.bandwidth_efficiency <= 1.0
    else:
        assert 0.3 <= p.bandwidth_efficiency <= 0.8  # the sourced range for llama.cpp CPU decode
    assert p.runtime.threads <= p.cores
    if p.kind == "phone":
        assert p.battery.capacity_mah and 3.6 <= p.battery.nominal_v <= 4.0
        assert p.runtime.weight_repack  # ARM


def test_a_profile_loads_from_a_path_too(tmp_path: Path) -> None:
    path = write(tmp_path, shipped_text("snapdragon-8-gen-2"))
    assert load_profile(path).name == "snapdragon-8-gen-2"
    assert load_profile(str(path)).bandwidth_effective_gbs == pytest.approx(67.2 * 0.322)


def test_missing_field_names_file_and_key(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace("decode_w = 6.6", "")
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value) == f"{path}: power.decode_w: field required"


def test_missing_field_in_a_shipped_name_says_device_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeagent import profiles

    text = shipped_text("tensor-g3").replace("nominal_v = 3.87", "")
    monkeypatch.setattr(profiles, "_read", lambda t, origin, _orig=profiles._read: _orig(text.encode(), origin))
    with pytest.raises(ProfileError, match=r"^device_profiles/tensor-g3\.toml: battery\.nominal_v: field required$"):
        profiles.load_profile("tensor-g3")


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace("idle_w = 0.7", "idle_w = 0.7\nsleep_w = 0.1", 1)
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value) == f"{path}: power.sleep_w: unknown key (allowed here: prefill_w, decode_w, idle_w)"


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'bandwith_gbs = 60.0\n' + shipped_text("snapdragon-8-gen-2"))
    with pytest.raises(ProfileError, match=r"x\.toml: bandwith_gbs: unknown key \(allowed here: name, soc, kind"):
        load_profile(path)


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace("ram_gb = 8.0", 'ram_gb = "8"')
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: ram_gb: Input should be a valid number")
    assert "'8'" in str(err.value)


def test_wrong_type_inside_a_list_names_the_index(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace("cores = 2\nghz = 2.8", 'cores = "two"\nghz = 2.8', 1)
    path = write(tmp_path, text)
    with pytest.raises(ProfileError, match=r"x\.toml: cpu_clusters\[1\]\.cores: Input should be a valid integer"):
        load_profile(path)


def test_wrong_kind_lists_allowed_values(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace('kind = "phone"', 'kind = "tablet"')
    with pytest.raises(ProfileError, match=r"kind: Input should be 'phone', 'devboard' or 'host'"):
        load_profile(write(tmp_path, text))


def test_phone_without_battery_capacity_is_refused(tmp_path: Path) -> None:
    text = shipped_text("snapdragon-8-gen-2").replace("capacity_mah = 3900.0", "")
    with pytest.raises(ProfileError, match="battery.capacity_mah is required for a phone"):
        load_profile(write(tmp_path, text))


_POWER = ("snapdragon-8-gen-3", "power_w = 6.27", "cpu_clusters[0].power_w")
_RATE = ("snapdragon-8-gen-2", "wide_weight_rate = 1.38", "runtime.wide_weight_rate")


@pytest.mark.parametrize(("where", "value", "why"), [
    (_POWER, "-1.0", "Input should be greater than 0"),
    (_POWER, "0.0", "Input should be greater than 0"),
    (_POWER, "500.0", "Input should be less than or equal to 50"),
    (_POWER, "inf", "Input should be a finite number"),
    (_POWER, "nan", "Input should be a finite number"),
    (_POWER, '"6.27"', "Input should be a valid number"),
    (_RATE, "0.5", "Input should be greater than or equal to 1"),
    (_RATE, "9.0", "Input should be less than or equal to 4"),
    (_RATE, "nan", "Input should be a finite number"),
])
def test_a_bad_number_names_file_and_key(tmp_path: Path, where: tuple[str, str, str], value: str, why: str) -> None:
    """A per-core power or a per-type decode rate out of range: one line naming file and key."""
    profile, line, key = where
    text = shipped_text(profile).replace(line, f"{line.split(' = ')[0]} = {value}", 1)
    assert text != shipped_text(profile)
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: {key}: {why}")
    assert "\n" not in str(err.value)


def test_per_core_power_for_some_clusters_only_is_refused(tmp_path: Path) -> None:
    lines = [ln for ln in shipped_text("snapdragon-8-gen-3").splitlines() if not ln.startswith("power_w = 0.46")]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    assert str(err.value).startswith(f"{path}: cpu_clusters: Value error, power_w is given for some clusters but "
                                     f"not for efficiency: give every cluster's per-core power or none")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", list_profiles())
def test_per_core_power_is_cited(name: str) -> None:
    """A profile that gives per-core power says where each core type's figure comes from."""
    p = load_profile(name)
    if not p.per_core_power:
        assert all(c.power_w is None for c in p.cpu_clusters)
        return
    cited = " ".join(s.what for s in p.sources if "power_w" in s.what)
    for c in p.cpu_clusters:
        assert c.core.split()[0] in cited, (name, c.core)


def test_source_needs_url_or_citation(tmp_path: Path) -> None:
    text = shipped_text("host") + '\n[[sources]]\nwhat = "a number from nowhere"\n'
    with pytest.raises(ProfileError, match=r"sources\[\d+\]: Value error, a source needs a url or a citation"):
        load_profile(write(tmp_path, text))


def test_invalid_toml_and_unknown_name() -> None:
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile("nowhere/x.toml")
    with pytest.raises(ProfileError, match=r"unknown device profile 'pixel-99'; known profiles: .*snapdragon-8-gen-2"):
        load_profile("pixel-99")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match=r"x\.toml: not valid TOML"):
        load_profile(write(tmp_path, "name = \n"))


@pytest.mark.parametrize("name", list_profiles())
def test_default_threads_stay_on_big_cores(name: str) -> None:
    """Every shipped profile's runtime.threads runs on out-of-order cores only, so its default
    estimate carries no little-core term; running every core reaches its A5xx cluster, if any."""
    p = load_profile(name)
    assert p.little_cluster_reached(p.runtime.threads) is None
    little = [c for c in p.cpu_clusters if c.in_order_little]
    assert [c.core.split()[0] for c in little] == [c.core.split()[0] for c in p.cpu_clusters
                                                  if c.core and c.core.split()[0] in ("Cortex-A55", "Cortex-A510", "Cortex-A520")]
    reached = p.little_cluster_reached(p.cores)
    assert reached == (min(little, key=lambda c: c.ghz) if little else None)


def test_devices_json_lists_every_profile_by_name() -> None:
    from edgeagent.cli import app

    result = CliRunner().invoke(app, ["devices", "--json"])
    assert result.exit_code == 0, result.output
    devices = json.loads(result.stdout)
    assert isinstance(devices, list)
    assert [d["name"] for d in devices] == list_profiles()
    elite = next(d for d in devices if d["name"] == "snapdragon-8-elite")
    assert elite["bandwidth_effective_gbs"] == pytest.approx(84.8 * 0.534)
    assert elite["sources"]


def test_devices_table() -> None:
    from edgeagent.cli import app

    result = CliRunner().invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    for name in list_profiles():
        assert name in result.stdout


@pytest.mark.slow
def test_profiles_load_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel from a copy of the tree, install it elsewhere, load a profile there
    (importlib.resources, not the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md", "edgeagent", "converters", "android_bridge", "device_profiles"):
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy(path, src / item)
    if not (src / "README.md").exists():
        (src / "README.md").write_text("edgeagent\n")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                   check=True, cwd=tmp_path)
    wheel = next(dist.glob("edgeagent-*.whl"))
    assert "device_profiles/snapdragon-8-gen-2.toml" in zipfile.ZipFile(wheel).namelist()
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    code = ("import edgeagent.profiles as p, sys; assert p.__file__.startswith(sys.argv[1]); "
            "print(p.load_profile('snapdragon-8-gen-2').name, len(p.list_profiles()))")
    out = subprocess.run([sys.executable, "-c", code, str(target)], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["snapdragon-8-gen-2", str(len(list_profiles()))]


def test_attention_throughput_is_taken_for_the_nearest_head_dimension(tmp_path) -> None:
    """`decode_attention_gflops_by_head_dim` as calibrate writes it (a TOML inline table keyed by
    head dimension): a model takes the nearest entry (the larger on a tie); a key that is not a
    head dimension is refused naming it; without a table the single figure stands."""
    import tomllib

    from edgeagent.calibrate import to_toml
    from edgeagent.profiles import ProfileError, load_profile, parse_profile

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "device_profiles" / "host.toml").read_text())
    data["runtime"]["decode_attention_gflops"] = 5.0
    data["runtime"]["decode_attention_gflops_by_head_dim"] = {"32": 3.5, "64": 30.0}
    path = tmp_path / "h.toml"
    path.write_text(to_toml(data))
    rt = load_profile(path).runtime
    assert [rt.attention_gflops(d) for d in (16, 32, 47, 48, 64, 128)] == [3.5, 3.5, 3.5, 30.0, 30.0, 30.0]
    data["runtime"]["decode_attention_gflops_by_head_dim"] = {}
    assert parse_profile(data, "h.toml").runtime.attention_gflops(64) == 5.0
    data["runtime"]["decode_attention_gflops_by_head_dim"] = {"wide": 3.0}
    with pytest.raises(ProfileError, match="decode_attention_gflops_by_head_dim"):
        parse_profile(data, "h.toml")
