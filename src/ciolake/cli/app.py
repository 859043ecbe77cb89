"""The ``ciolake`` command line: names every subcommand (``cli/main.py`` runs it).

A command's module is imported only when that command runs (or when the top-level help lists
them all): each one pulls in what its work needs (Arrow, delta-rs, DuckDB, the HTTP client, the
web server), and loading all of them made every command, even ``--version``, start about half a
second later.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from ciolake import __version__

# Each command's name and where its function (or, for a group of commands, its Typer app)
# lives, in the order the help lists them.
COMMANDS: dict[str, str] = {
    "serve": "ciolake.cli.serve:serve",
    "send-test": "ciolake.cli.send_test:send_test",
    "tables": "ciolake.cli.tables:tables",
    "replay": "ciolake.cli.replay:replay",
    "compact": "ciolake.cli.compact:compact",
    "derive": "ciolake.cli.derive:derive",
    "webhooks": "ciolake.cli.webhooks:app",
    "databricks": "ciolake.cli.databricks:app",
    "check": "ciolake.cli.check:check",
    "views": "ciolake.cli.views:views",
    "simulate": "ciolake.cli.simulate:simulate",
    "report": "ciolake.cli.report:report",
    "dashboard": "ciolake.cli.dashboard:dashboard",
    "reconcile": "ciolake.cli.reconcile:reconcile",
    "backfill": "ciolake.cli.backfill:backfill",
}

# What every command and group of commands shares with the root: help texts name their env
# variable in brackets, which rich markup would swallow.
TYPER_SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "add_completion": False}


class _CommandsOnDemand(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)


def load_command(name: str) -> Any:
    """The click command ``name`` runs, its module imported now."""
    module_name, _, attribute = COMMANDS[name].partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    command: Any
    if isinstance(target, typer.Typer):
        # A group even when it has one command (``databricks setup``): get_command would
        # turn a one-command app into that command.
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(**TYPER_SETTINGS)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


app = typer.Typer(
    name="ciolake",
    cls=_CommandsOnDemand,
    help="Customer.io reporting webhooks, verified and landed exactly once in Delta Lake tables.",
    no_args_is_help=True,
    # Failures are told in one line by main(); a traceback only with --debug.
    pretty_exceptions_enable=False,
    **TYPER_SETTINGS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ciolake {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of a failure [env CIOLAKE_DEBUG=1]."
    ),
) -> None:
    """Customer.io reporting webhooks into Delta Lake."""
