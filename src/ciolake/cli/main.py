"""The ``ciolake`` entry point: registers every subcommand."""

from __future__ import annotations

import os
import sys

import typer

from ciolake import __version__
from ciolake.cli import (
    check,
    compact,
    dashboard,
    replay,
    report,
    send_test,
    serve,
    simulate,
    tables,
    views,
    webhooks,
)
from ciolake.cli.failures import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    debug_requested,
    describe,
    help_shown_for,
    is_abort,
    is_exit,
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
app.add_typer(webhooks.app, name="webhooks")
app.command("check")(check.check)
app.command("views")(views.views)
app.command("simulate")(simulate.simulate)
app.command("report")(report.report)
app.command("dashboard")(dashboard.dashboard)


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


def main() -> None:
    """Run the command line: one line ``error: ...`` for a failure, unless debugging."""
    debug = debug_requested(sys.argv[1:], os.environ)
    try:
        code = app(standalone_mode=False)
    except (Exception, KeyboardInterrupt) as exc:
        if is_exit(exc):
            sys.exit(getattr(exc, "exit_code", 0))
        if (text := help_shown_for(exc)) is not None:
            print(text)
            sys.exit(EXIT_USAGE)
        if is_abort(exc):
            _fail(EXIT_INTERRUPTED, "interrupted")
        if debug:
            raise
        _fail(*describe(exc))
    # Without standalone mode, a command's typer.Exit comes back as its exit code.
    sys.exit(code if isinstance(code, int) else 0)


def _fail(code: int, message: str) -> None:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
