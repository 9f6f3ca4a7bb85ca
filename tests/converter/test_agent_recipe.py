"""The agent recipe's ``evaluate``, ``validate`` and ``new-app``: each figure is an ``edgeagent demo`` run kept as JSON,
reused on a rerun, and summarized from what demo printed."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from converters.recipes.train_agent import EVALUATIONS, main  # noqa: E402


def test_evaluate_runs_demo_keeps_its_json_and_reuses_it(tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    main(["evaluate", "--agent", "builtin", "--out", str(out), "--only", "impossible-q8_0", "--n", "3", "--jobs", "1"])
    first = json.loads(capsys.readouterr().out)
    (row,) = first["rows"]
    demo = json.loads((out / "impossible-q8_0.json").read_text())
    assert row["tasks"] == demo["tasks"] == 40  # the impossible set's own size wins over --n
    assert row["infeasible"] == sum(e["status"] == "infeasible" for e in demo["episodes"])
    from android_bridge.emulator.tasks import TEMPLATE_GROUPS, TEMPLATES

    assert all(TEMPLATE_GROUPS["impossible"](TEMPLATES[e["template"]]) for e in demo["episodes"])  # only those
    assert row["unrequested_sensitive_allowed"] == 0  # --sensitive allow is scoped to what each task asks
    assert "--sensitive allow" in (out / "impossible-q8_0.cmd").read_text()
    stamp = (out / "impossible-q8_0.json").stat().st_mtime_ns
    main(["evaluate", "--agent", "builtin", "--out", str(out), "--only", "impossible-q8_0"])
    assert json.loads(capsys.readouterr().out)["rows"] == first["rows"]
    assert (out / "impossible-q8_0.json").stat().st_mtime_ns == stamp  # kept, not measured again


def test_evaluate_names_an_unknown_evaluation(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--agent", "builtin", "--out", str(tmp_path), "--only", "templat-q8_0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'templat-q8_0'" in err[0] and all(n in err[0] for n in EVALUATIONS)


@pytest.mark.parametrize("templates", ["all", "default", "calc_binary"])
def test_each_demo_command_names_its_task_set_once(templates) -> None:
    from converters.recipes.train_agent import demo_command

    for name, options in EVALUATIONS.items():
        cmd = demo_command("builtin", options, 200, 1000, 1, templates)
        given = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--templates"]  # demo adds up repeated ones
        own = [options[i + 1] for i, a in enumerate(options) if a == "--templates"]
        assert given == (own or ([] if templates == "default" else [templates])), (name, cmd)


def test_add_exits_puts_lens_exits_into_an_agents_delta_and_card(tmp_path) -> None:
    """``add-exits``: the lens and norm of each exit go into the delta (d x d + d numbers), the
    card lists them and names the draft; dedicated heads (V x d each) are refused."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    d = 8
    heads = tmp_path / "heads"
    heads.mkdir()
    save_file({f"{kind}.{k}.weight": np.ones((d, d) if kind == "lens" else (d,), np.float32)
               for k in (2, 3) for kind in ("lens", "norm")}, str(heads / "exit_heads.safetensors"))
    (heads / "exit_heads.json").write_text(json.dumps({"kind": "dedicated", "head_form": "lens", "exits": [2, 3],
                                                       "steps": 5, "heldout_loss_after": {"2": 1.0}}))
    agent = tmp_path / "agent"
    agent.mkdir()
    save_file({"blk.0.attn_q.weight.lora_a": np.zeros((2, d), np.float16)}, str(agent / "delta.safetensors"))
    (agent / "agent.json").write_text(json.dumps({"base": "x", "prompt_format": {"kind": "plain"}, "exits": []}))
    main(["add-exits", "--agent", str(agent), "--heads", str(heads), "--exits", "3", "--draft", "3", "--n-draft", "5"])
    delta = load_file(str(agent / "delta.safetensors"))
    assert set(delta) == {"blk.0.attn_q.weight.lora_a", "exit.3.lens.weight", "exit.3.output_norm.weight"}
    card = json.loads((agent / "agent.json").read_text())
    assert card["exits"] == [3] and card["exit_kind"] == "lens"
    assert card["speculative"] == {"draft_exit": 3, "n_draft": 5}
    assert card["exit_training"]["steps"] == 5

    (heads / "exit_heads.json").write_text(json.dumps({"kind": "dedicated", "exits": [2, 3]}))
    with pytest.raises(SystemExit, match="only lens exits are small enough"):
        main(["add-exits", "--agent", str(agent), "--heads", str(heads)])


def test_validation_rows_never_touch_the_test_seed_or_the_heldout_wording() -> None:
    from converters.recipes.train_agent import VALIDATIONS, demo_command

    for name, options in VALIDATIONS.items():
        cmd = demo_command("builtin", options, 60, 2000, 1, "default")
        seeds = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--seed"]
        phrasings = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--phrasing"]
        assert len(seeds) == 1 and 2000 <= int(seeds[0]) <= 2007, name
        assert phrasings in (["template"], ["val"], ["paraphrase"]), name
        assert cmd.count("--n") == 1 and cmd.count("--templates") <= 1, name


def test_validate_sums_each_wording_over_its_tasks(tmp_path, capsys) -> None:
    main(["validate", "--agent", "builtin", "--out", str(tmp_path), "--only", "val-2000", "--jobs", "1"])
    d = json.loads(capsys.readouterr().out)
    (row,) = d["rows"]
    demo = json.loads((tmp_path / "val-2000.json").read_text())
    assert row["tasks"] == demo["tasks"] == 40
    assert d["success"] == {"val": round(sum(e["success"] for e in demo["episodes"]) / 40, 4)}
    assert "--seed 2000 " in (tmp_path / "val-2000.cmd").read_text()


def test_validate_asks_for_a_folder_for_a_named_agent(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["validate", "--agent", "smollm2"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "smollm2" in err[0]


def test_validate_names_a_checkpoint_the_run_does_not_hold(tmp_path, capsys) -> None:
    (tmp_path / "run" / "adapters" / "step-20").mkdir(parents=True)
    for step in ("40", "0"):
        with pytest.raises(SystemExit) as e:
            main(["validate", "--run", str(tmp_path / "run"), "--step", step])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"step-{step}" in err[0] and "--step" in err[0]


def test_new_app_traces_converts_and_measures_before_and_after_then_reuses_it(tmp_path, capsys) -> None:
    """The whole new-app recipe on the built-in model, tiny: the app's traces and the mix hold
    what they say, the bundle verifies, and the three demo rows are the app before, the app
    after and the other apps after, on the bundle's full-depth q8_0 variant."""
    out = tmp_path / "notes"
    args = ["new-app", "--agent", "builtin", "--out", str(out), "--n-traces", "4", "--max-steps", "1",
            "--n", "2", "--jobs", "2"]
    main(args)
    d = json.loads(capsys.readouterr().out)
    from edgeagent.bundle import load_bundle

    bundle = load_bundle(out / "bundle")  # verifies every file's hash
    assert d["variant"] == next(v.id for v in bundle.variants if v.quant == "q8_0" and v.is_full_depth)
    apps = {json.loads(line)["task"]["app"] for line in (out / "notes-s50.jsonl").read_text().splitlines()}
    others = {json.loads(line)["task"]["app"] for line in (out / "mix-s52.jsonl").read_text().splitlines()}
    assert apps == {"Notes"} and "Notes" not in others and len(others) > 1
    rows = {r["evaluation"]: r for r in d["rows"]}
    assert list(rows) == ["before-app", "after-app", "after-others"]
    for name, want_notes in (("before-app", True), ("after-app", True), ("after-others", False)):
        demo = json.loads((out / f"{name}.json").read_text())
        assert rows[name]["tasks"] == demo["tasks"] == 2
        assert all((e["app"] == "Notes") == want_notes for e in demo["episodes"]), name
        assert "--seed 1000 " in (out / f"{name}.cmd").read_text()
    assert "--bundle" in (out / "after-app.cmd").read_text() and "--agent builtin" in (out / "before-app.cmd").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    main(args)  # everything is kept: nothing runs again
    assert json.loads(capsys.readouterr().out) == d
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps


def test_new_app_stops_at_a_failing_step_with_its_exit_code(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["new-app", "--app", "Nots", "--agent", "builtin", "--out", str(tmp_path / "o"), "--n-traces", "2"])
    assert e.value.code == 2  # edgeagent traces' own code for bad input
    err = capsys.readouterr().err.strip().splitlines()
    assert "edgeagent traces exited 2" in err[-1] and "--apps Nots" in err[-1]
    assert not list((tmp_path / "o").glob("*.jsonl"))  # nothing half-written taken for done
