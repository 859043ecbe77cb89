"""The ``ciolake`` command line: registers every subcommand (``cli/main.py`` runs it)."""

from __future__ import annotations

import typer

from ciolake import __version__
from ciolake.cli import (
    backfill,
    check,
    compact,
    dashboard,
    databricks,
    derive,
    reconcile,
    replay,
    report,
    send_test,
    serve,
    simulate,
    tables,
    views,
    webhooks,
)

app = typer.Typer(
    name="ciolake",
    help="Customer.io reporting webhooks, verified and landed exactly once in Delta Lake tables.",
    no_args_is_help=True,
    add_completion=False,
    # Help texts name their env variable in brackets, which rich markup would swallow.
    rich_markup_mode=None,
    # Failures are told in one line by main(); a traceback only with --debug.
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("send-test")(send_test.send_test)
app.command("tables")(tables.tables)
app.command("replay")(replay.replay)
app.command("compact")(compact.compact)
app.command("derive")(derive.derive)
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(databricks.app, name="databricks")
app.command("check")(check.check)
app.command("views")(views.views)
app.command("simulate")(simulate.simulate)
app.command("report")(report.report)
app.command("dashboard")(dashboard.dashboard)
app.command("reconcile")(reconcile.reconcile)
app.command("backfill")(backfill.backfill)


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
