"""The agent recipe's ``evaluate``: each test figure is an ``edgeagent demo`` run kept as JSON,
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
