"""Which GGUF runs (edgeagent.variants): a model file, a shipped agent or the built-in model, a
bundle's best variant or the one selected for a device profile; every choice that names nothing
runnable is one ``VariantError`` line, and ``run`` prints it and exits 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from edgeagent.builtin import builtin_bundle, builtin_gguf  # noqa: E402
from edgeagent.bundle import load_bundle  # noqa: E402
from edgeagent.profiles import load_profile  # noqa: E402
from edgeagent.select import select_variant  # noqa: E402
from edgeagent.variants import ModelChoice, VariantError, resolve_model, resolve_variant  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_dir() -> Path:
    return builtin_bundle(threads=1)


def test_a_model_file_runs_as_given_and_a_missing_one_is_named(tmp_path):
    gguf = builtin_gguf("q8_0")
    assert resolve_model(gguf) == ModelChoice(gguf, str(gguf))
    with pytest.raises(VariantError, match=r"nope\.gguf: no such model file"):
        resolve_model(tmp_path / "nope.gguf")
    with pytest.raises(VariantError, match="--model or --agent, not both"):
        resolve_model(gguf, agent="builtin")


def test_the_builtin_agent_and_an_unknown_agent():
    choice = resolve_model(None, "q8_0", "builtin")
    assert choice.path == builtin_gguf("q8_0") and choice.name == "builtin q8_0" and choice.prompt_format is None
    from edgeagent.agents import DEFAULT_AGENT

    if DEFAULT_AGENT == "builtin":
        assert resolve_model(None, "q8_0") == choice
    else:  # the default is a shipped agent: it runs where installed, else the built-in model, with a note
        notes: list[str] = []
        default = resolve_model(None, "q8_0", note=notes.append)
        assert default.name == (f"{DEFAULT_AGENT} q8_0" if not notes else "builtin q8_0")
        assert all("running the built-in 5M model instead" in n for n in notes)
    with pytest.raises(VariantError, match="no-such-agent"):
        resolve_model(None, "q8_0", "no-such-agent")


def test_a_bundle_runs_its_best_variant_or_the_one_selected_for_a_profile(bundle_dir):
    loaded = load_bundle(bundle_dir)
    best = resolve_variant(bundle=bundle_dir)
    assert best.path == loaded.best_quality().path and best.prompt_format == loaded.prompt_format
    assert best.name.endswith(loaded.best_quality().id)

    selected = select_variant(loaded, load_profile("snapdragon-8-gen-2"))["selected"]
    given = resolve_variant(bundle=bundle_dir, profile="snapdragon-8-gen-2")
    builtin = resolve_variant(agent="builtin", profile="snapdragon-8-gen-2", threads=1)
    assert given.path == builtin.path == Path(selected["path"])
    assert given.name == f"{selected['id']} (selected for snapdragon-8-gen-2 from {bundle_dir})"
    assert builtin.name == f"{selected['id']} (selected for snapdragon-8-gen-2)"  # no cache path for a bundle not given


def _smollm2_or_skip():
    from edgeagent.agents import AgentUnavailable, shipped_agent

    agent = shipped_agent("smollm2")
    try:
        agent.base_gguf()
    except AgentUnavailable as e:  # the agent extra is not installed
        pytest.skip(str(e))
    return agent


def test_profile_alone_selects_among_the_default_agents_measured_quantizations():
    """``--profile`` without ``--bundle`` chooses among the default agent's quantizations (its
    bundle: the cached GGUFs hard-linked, each with the task success ``quality.json`` measured),
    not among the built-in model's."""
    from edgeagent.agents import DEFAULT_AGENT, shipped_agent

    if DEFAULT_AGENT == "builtin":
        pytest.skip("the default agent is the built-in model")
    agent = _smollm2_or_skip() if DEFAULT_AGENT == "smollm2" else shipped_agent(DEFAULT_AGENT)
    root = agent.bundle(quiet=True)
    loaded = load_bundle(root)  # every file's sha256 checked
    measured = agent.measured_quality()["variants"]
    assert {v.id: v.quality["task_success"] for v in loaded.variants} == {
        f"{DEFAULT_AGENT}-{q}": m["task_success"] for q, m in measured.items()}
    for v in loaded.variants:
        assert v.is_full_depth and v.path.samefile(agent.gguf(v.quant, quiet=True))  # the same file, not a copy here
    assert loaded.prompt_format == agent.prompt_format
    assert agent.bundle(quiet=True) == root  # built once
    choice = resolve_variant(profile="snapdragon-8-gen-2")
    result = select_variant(loaded, load_profile("snapdragon-8-gen-2"))
    selected = result["selected"]
    # no full precision was measured for the agent: its quality is held to its best variant's, and said so
    assert result["reference"]["label"] == f"the best variant, {DEFAULT_AGENT}-q8_0"
    assert choice.path == Path(selected["path"]) and choice.prompt_format == agent.prompt_format


def test_quality_measured_on_another_delta_is_refused(tmp_path):
    import shutil

    from edgeagent.agents import AgentUnavailable, shipped_agent

    src = shipped_agent("smollm2").dir
    copy = tmp_path / "smollm2"
    shutil.copytree(src, copy)
    q = json.loads((copy / "quality.json").read_text())
    assert shipped_agent(str(copy)).measured_quality()["variants"] == q["variants"]
    (copy / "quality.json").write_text(json.dumps({**q, "delta_sha256": "0" * 64}))
    with pytest.raises(AgentUnavailable, match="measured on another delta"):
        shipped_agent(str(copy)).measured_quality()
    (copy / "quality.json").write_text(json.dumps({**q, "variants": {"q8_0": {"task_success": 1.5}}}))
    with pytest.raises(AgentUnavailable, match="task_success between 0 and 1"):
        shipped_agent(str(copy)).measured_quality()
    (copy / "quality.json").unlink()
    with pytest.raises(AgentUnavailable, match="quality.json: missing"):
        shipped_agent(str(copy)).measured_quality()


def test_conflicting_or_unknown_choices_are_one_line(bundle_dir, tmp_path):
    gguf = builtin_gguf("q8_0")
    with pytest.raises(VariantError, match="--model or --bundle, not both"):
        resolve_variant(model=gguf, bundle=bundle_dir)
    with pytest.raises(VariantError, match="drop --model"):
        resolve_variant(model=gguf, profile="snapdragon-8-gen-2")
    with pytest.raises(VariantError, match="no-such-phone"):
        resolve_variant(bundle=bundle_dir, profile="no-such-phone")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(VariantError, match="manifest.json"):
        resolve_variant(bundle=broken)


def test_run_prints_a_bad_choice_as_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeagent.cli", "run", "--task", "Open Clock", "--model",
                           str(builtin_gguf("q8_0")), "--bundle", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "not both" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_default_agent_falls_back_to_the_builtin_model_with_a_note(monkeypatch):
    import edgeagent.agents as agents

    def unavailable(name):
        raise agents.AgentUnavailable(f"the {name} agent needs its package: {agents.INSTALL_HINT}")

    monkeypatch.setattr(agents, "DEFAULT_AGENT", "smollm2")
    monkeypatch.setattr(agents, "shipped_agent", unavailable)
    notes: list[str] = []
    choice = resolve_model(None, "q8_0", note=notes.append)
    assert choice.path == builtin_gguf("q8_0") and choice.name == "builtin q8_0"
    (note,) = notes
    assert agents.INSTALL_HINT in note and note.endswith("running the built-in 5M model instead")


def test_the_default_bundle_falls_back_to_the_builtin_models_with_a_note(monkeypatch, bundle_dir):
    import edgeagent.agents as agents
    from edgeagent.variants import default_bundle

    def unavailable(name):
        raise agents.AgentUnavailable(f"the {name} agent needs its package: {agents.INSTALL_HINT}")

    monkeypatch.setattr(agents, "DEFAULT_AGENT", "smollm2")
    monkeypatch.setattr(agents, "shipped_agent", unavailable)
    notes: list[str] = []
    assert default_bundle(threads=1, note=notes.append) == bundle_dir
    (note,) = notes
    assert agents.INSTALL_HINT in note and note.endswith("using the built-in 5M model's bundle instead")
