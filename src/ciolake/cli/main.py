"""The ``ciolake`` entry point: runs the command line and tells a failure in one line.

It imports the commands inside ``main`` so that a Ctrl-C while they load (a second or so) is
answered like any other interruption, not with an import traceback.
"""

from __future__ import annotations

import os
import sys

from ciolake.cli.failures import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    debug_requested,
    describe,
    help_shown_for,
    is_abort,
    is_exit,
)


def main() -> None:
    """Run the command line: one line ``error: ...`` for a failure, unless debugging."""
    debug = debug_requested(sys.argv[1:], os.environ)
    try:
        from ciolake.cli.app import app  # noqa: PLC0415

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
    # Without standalone mode, a command's typer.Exit comes back as its exit code; typer turns
    # a Ctrl-C inside a command into 130 silently, which deserves its one line too.
    if code == EXIT_INTERRUPTED:
        _fail(EXIT_INTERRUPTED, "interrupted")
    sys.exit(code if isinstance(code, int) else 0)


def _fail(code: int, message: str) -> None:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
