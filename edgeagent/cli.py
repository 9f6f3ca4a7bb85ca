"""The ``edgeagent`` command. Each area registers its commands from its own module, and
heavy imports (llama.cpp, torch) happen inside the commands, so ``edgeagent --help`` is fast
and the runtime commands never import torch."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="edgeagent",
    help="Put an LLM agent on a phone: convert a model, run the agent, profile what it costs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from edgeagent import cli_agent, cli_bench, cli_bridge, cli_convert, cli_doctor, cli_phone, cli_model, cli_profile

    for module in (cli_agent, cli_phone, cli_model, cli_bench, cli_convert, cli_profile, cli_bridge, cli_doctor):
        module.register(app)


_register()


def _write_errors() -> tuple[type[BaseException], ...]:
    """What writing a file can raise: OSError (a full disk, a read-only or vanished
    directory) and, when the converter extra is installed, safetensors' own error."""
    try:
        from safetensors import SafetensorError
    except ImportError:
        return (OSError,)
    return (OSError, SafetensorError)


def main() -> None:
    """Run the command. A file that cannot be written or read, wherever in a command it
    happens, ends it with one line naming the file and exit code 2, not a traceback."""
    from edgeagent.output import fail

    try:
        app()
    except _write_errors() as exc:
        where = getattr(exc, "filename", None)
        reason = getattr(exc, "strerror", None) or str(exc)
        fail(f"{where}: {reason}" if where else f"cannot write or read a file: {reason}")
    except RecursionError:
        fail("input nested too deeply (a JSON or TOML file with thousands of levels of brackets)")


if __name__ == "__main__":
    main()
