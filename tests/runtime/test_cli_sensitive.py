"""``--sensitive ask|deny|allow``: one policy for sensitive steps in ``run`` and ``demo``, with the
same meaning in both, printed in their output; ``run --allow-sensitive`` is ``--sensitive allow``."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from android_bridge.actions import Action
from android_bridge.emulator.tasks import make_task
from edgeagent.agent.safety import ConfirmationGate
from edgeagent.cli import app
from edgeagent.cli_common import _interactive_confirm, sensitive_gate

runner = CliRunner()
PAY = Action(action="tap", index=0)


def test_each_policy_makes_its_gate() -> None:
    asked: list[str] = []
    answer = lambda action, reason: asked.append(reason) or True  # noqa: E731
    assert ConfirmationGate.for_policy("allow").in_effect == "allow"
    assert ConfirmationGate.for_policy("deny", answer).in_effect == "deny"  # deny never asks
    assert ConfirmationGate.for_policy("ask", answer).in_effect == "ask"
    assert ConfirmationGate.for_policy("ask").in_effect == "deny"  # no one to ask: an unanswered question is a no
    with pytest.raises(ValueError, match="'maybe'"):
        ConfirmationGate.for_policy("maybe")
    assert asked == []


def test_ask_asks_only_where_someone_can_answer(monkeypatch) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert sensitive_gate("ask", json_out=False).confirm is _interactive_confirm
    assert sensitive_gate("ask", json_out=True).in_effect == "deny"  # --json output is for a machine
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert sensitive_gate("ask", json_out=False).in_effect == "deny"


def _demo(*args: str) -> dict:
    r = runner.invoke(app, ["demo", "--policy", "expert", "--n", "3", "--templates", "delete_alarm", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_demo_applies_and_reports_the_policy() -> None:
    allowed = _demo("--sensitive", "allow")
    assert allowed["success_rate"] == 1.0
    assert allowed["sensitive"] == {"policy": "allow", "in_effect": "allow", "steps": 6, "denied": 0,  # two taps:
                                    "tasks_ended_by_denial": 0}  # "Delete alarm", then "Delete"
    denied = _demo("--sensitive", "deny")
    assert denied["success_rate"] == 0.0  # the expert stops at the first Delete, as the agent would
    assert denied["sensitive"] == {"policy": "deny", "in_effect": "deny", "steps": 3, "denied": 3,
                                   "tasks_ended_by_denial": 3}
    assert _demo()["sensitive"]["policy"] == "ask"  # the default, as run's
    human = runner.invoke(app, ["demo", "--policy", "expert", "--n", "2", "--templates", "delete_alarm"])
    flat = " ".join(human.stdout.split())  # the console wraps at its width
    assert "sensitive steps: ask (no terminal to ask at: deny) · 2 met, 2 denied; the denials ended 2 tasks" in flat
    rows = [line for line in human.stdout.splitlines() if "Delete the" in line]
    assert len(rows) == 2 and all("denied" in line and "FAILED" not in line for line in rows), human.stdout


def test_a_bad_policy_is_one_line_naming_it() -> None:
    for args in (["demo", "--policy", "expert", "--n", "1", "--sensitive", "maybe"],
                 ["run", "--task", "x", "--sensitive", "maybe"],
                 ["run", "--task", "x", "--sensitive", "deny", "--allow-sensitive"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and ("'maybe'" in lines[0] or "deny" in lines[0])


@pytest.fixture(scope="module")
def delete_task(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "task.json"
    path.write_text(json.dumps(make_task("delete_contact", 5).to_dict()))
    return path


@pytest.mark.parametrize("args, policy, in_effect", [
    ([], "ask", "deny"),  # no terminal under the test runner
    (["--sensitive", "deny"], "deny", "deny"),
    (["--sensitive", "allow"], "allow", "allow"),
    (["--allow-sensitive"], "allow", "allow"),  # what external checks call
])
def test_run_applies_and_reports_the_policy(delete_task, args, policy, in_effect) -> None:
    r = runner.invoke(app, ["run", "--task-json", str(delete_task), "--agent", "builtin", "--threads", "1", "--json", *args])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    sensitive = out["sensitive"]
    assert (sensitive["policy"], sensitive["in_effect"]) == (policy, in_effect)
    assert sensitive["steps"] >= 1, out["actions"]  # deleting a contact takes a Delete tap
    if in_effect == "deny":
        assert sensitive["denied"] == 1 and out["status"] == "denied" and out["success_rate"] == 0.0
    else:
        assert sensitive["denied"] == 0 and out["status"] != "denied"
