"""A quiet CLI: llama.cpp's log stays off unless ``--verbose`` (its warnings included, which
llama-cpp-python prints by default), and a file llama.cpp cannot load is one line with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.builtin import builtin_gguf
from edgeagent.engine import Engine, EngineError


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def _edgeagent(*args: str) -> subprocess.CompletedProcess:
    return _python("from edgeagent.cli import main; main()", *args)


LOAD_PAST_TRAINING = ("import sys; from edgeagent.engine import Engine; "
                      "Engine(sys.argv[1], n_ctx=4096, n_threads=1, verbose=sys.argv[2] == 'verbose').generate('hi', max_tokens=2)")


def test_llama_cpp_warnings_print_only_when_verbose() -> None:
    """A context past the built-in model's training context (1024) makes llama.cpp warn
    "n_ctx_seq (4096) > n_ctx_train (1024)"; llama-cpp-python's own callback prints it even
    with verbose=False."""
    model = str(builtin_gguf("q8_0"))
    quiet = _python(LOAD_PAST_TRAINING, model, "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = _python(LOAD_PAST_TRAINING, model, "verbose")
    assert loud.returncode == 0, loud.stderr
    assert "n_ctx_seq (4096) > n_ctx_train (1024)" in loud.stderr and "llama_model_loader" in loud.stderr


@pytest.mark.parametrize("content, reason", [
    (b"not a gguf at all", "invalid magic characters"),
    (b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (1).to_bytes(8, "little"), "failed to read"),
])
def test_a_file_llama_cpp_cannot_load_is_named_with_its_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(EngineError) as caught:
        Engine(path, n_threads=1)
    message = str(caught.value)
    assert message.startswith(f"{path}: llama.cpp could not load it: ") and reason in message and "\n" not in message


def test_demo_and_run_print_nothing_but_their_own_lines(tmp_path: Path) -> None:
    demo = _edgeagent("demo", "--agent", "builtin", "--n", "1", "--threads", "1")
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr.strip() == "running 1 emulated tasks with the model policy ..."
    assert "sensitive steps: ask" in demo.stdout
    run = _edgeagent("run", "--task", "open the settings", "--agent", "builtin", "--threads", "1", "--json")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    verbose = _edgeagent("run", "--task", "open the settings", "--agent", "builtin", "--threads", "1", "--json", "--verbose")
    assert verbose.returncode == 0 and "llama_model_loader" in verbose.stderr
    assert json.loads(verbose.stdout)["sensitive"]["policy"] == "ask"  # the log goes to stderr, the JSON alone to stdout


def test_the_default_agents_demo_prints_only_its_own_lines() -> None:
    """README command 1 (`edgeagent demo`, here on one task of one step): whichever agent is the
    default, stderr holds only edgeagent's own lines (a first run's build line, the fallback
    note where the agent extra is missing, the task count), never llama.cpp's log."""
    demo = _edgeagent("demo", "--n", "1", "--max-steps", "1", "--threads", "1")
    assert demo.returncode == 0, demo.stderr
    lines = demo.stderr.strip().splitlines()
    assert lines[-1] == "running 1 emulated tasks with the model policy ..."
    assert all(line.startswith(("building the ", "note: ")) for line in lines[:-1]), lines
