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
    from edgeagent import cli_agent, cli_bridge, cli_convert, cli_doctor, cli_phone, cli_model, cli_profile

    for module in (cli_agent, cli_phone, cli_model, cli_convert, cli_profile, cli_bridge, cli_doctor):
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
