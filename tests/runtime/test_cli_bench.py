"""``edgeagent bench``'s modes are subcommands with only their own options; the flags of the
single command they replace pick the same modes with the same output."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeagent.cli import app

runner = CliRunner()


def _options(*args: str) -> set[str]:
    r = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return {w.strip("│ ,") for w in r.output.split() if w.strip("│ ,").startswith("--")}


def test_each_mode_takes_only_its_own_options() -> None:
    assert {"--reps", "--prompt-tokens"} <= _options("bench", "throughput") and "--exits" not in _options("bench", "throughput")
    assert "--n-draft" in _options("bench", "early-exit") and "--reps" not in _options("bench", "early-exit")
    assert {"--profile", "--shape"} <= _options("bench", "ablation") and "--n-draft" not in _options("bench", "ablation")
    assert {"--early-exit", "--ablation", "--prefix-reuse"} <= _options("bench")  # the old flags stay


def test_a_subcommand_and_its_old_flag_give_the_same_result() -> None:
    args = ["--shape", "qwen3-4b", "--profile", "snapdragon-8-gen-2", "--json"]
    by_flag = runner.invoke(app, ["bench", "--ablation", *args])
    by_command = runner.invoke(app, ["bench", "ablation", *args])
    assert by_flag.exit_code == by_command.exit_code == 0, by_flag.output + by_command.output
    assert json.loads(by_flag.stdout) == json.loads(by_command.stdout)


@pytest.mark.parametrize("args, says", [
    (["bench", "--agent", "no-such-agent"], "no-such-agent"),
    (["bench", "throughput", "-m", "no-such.gguf"], "no-such.gguf: no such model file"),
    (["bench", "prefix-reuse", "-m", "no-such.gguf"], "no-such.gguf: no such model file"),
    (["bench", "ablation", "--shape", "qwen3-4b"], "needs --profile"),
])
def test_bad_input_is_one_line_and_exit_2(args, says) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], r.output
