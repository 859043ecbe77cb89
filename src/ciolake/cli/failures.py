"""How a command's failure reaches the user: one line ``error: ...`` and an exit code.

Exit 2 means the input is wrong (a flag, a setting, a file the user named); exit 1 means the
world failed (a damaged table, an unreachable store, a full disk); 130 means interrupted.
A traceback is shown only with ``--debug`` or ``CIOLAKE_DEBUG=1``. Library errors are
recognised by their class names, so this module imports none of the heavy libraries, nor
click (typer vendors its own copy since 0.22).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from ciolake.errors import CiolakeError, ConfigurationError, InputError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEBUG_ENV = "CIOLAKE_DEBUG"

# Library errors by class name: the first matching name (anywhere in the class's MRO) wins.
_WORLD_ERRORS_BY_NAME: dict[str, str] = {
    "TableNotFoundError": "table not found",
    "CommitFailedError": "a Delta commit failed",
    "DeltaProtocolError": "the table's Delta protocol is not supported",
    "DeltaError": "a Delta table could not be read or written",
    "SchemaMismatchError": "the data does not match the table's schema",
    "ArrowInvalid": "invalid data",
    "IOException": "a table could not be read",
    "HTTPError": "an HTTP request failed",
    "ConnectError": "cannot connect",
    "TimeoutException": "timed out",
}


def debug_requested(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    """Whether the user asked for tracebacks (``--debug`` anywhere, or ``CIOLAKE_DEBUG``)."""
    flag = environ.get(DEBUG_ENV, "").strip().lower()
    return "--debug" in argv or flag in {"1", "true", "yes", "on"}


def describe(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line that tell the user what failed."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if _is_a(exc, "UsageError"):
        return EXIT_USAGE, _usage_line(exc)
    if _is_a(exc, "ClickException"):
        clicked: Any = exc
        return clicked.exit_code or EXIT_FAILURE, _first_line(clicked.format_message())
    if isinstance(exc, (ConfigurationError, InputError)):
        return EXIT_USAGE, _first_line(str(exc))
    if isinstance(exc, CiolakeError):
        return EXIT_FAILURE, _first_line(str(exc))
    if isinstance(exc, OSError):
        return EXIT_FAILURE, _os_error_line(exc)
    if isinstance(exc, (OverflowError, UnicodeDecodeError)):
        return EXIT_USAGE, _first_line(f"{type(exc).__name__}: {exc}")
    return EXIT_FAILURE, _library_line(exc)


def is_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is typer's (or click's) request to exit with ``exc.exit_code``."""
    return _is_a(exc, "Exit")


def help_shown_for(exc: BaseException) -> str | None:
    """The help text to print for a command given without arguments, if ``exc`` asks for it."""
    if _is_a(exc, "NoArgsIsHelpError"):
        text: str = getattr(exc, "format_message")()  # noqa: B009
        return text
    return None


def is_abort(exc: BaseException) -> bool:
    """Whether ``exc`` is typer's (or click's) abort, raised for Ctrl-C at a prompt."""
    return _is_a(exc, "Abort")


def _is_a(exc: BaseException, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def _usage_line(exc: Any) -> str:
    line = _first_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "ciolake"
    return f"{line} (see '{command} --help')"


def _os_error_line(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename
    hint = {
        errno.ENOSPC: " (free some space and try again)",
        errno.EACCES: " (check the permissions)",
        errno.EROFS: " (the file system is read-only; choose another --data-dir)",
        errno.EPERM: " (check the permissions)",
    }.get(exc.errno or 0, "")
    return f"{reason}: {where}{hint}" if where else f"{reason}{hint}"


def _library_line(exc: BaseException) -> str:
    names = [cls.__name__ for cls in type(exc).__mro__]
    for name, what in _WORLD_ERRORS_BY_NAME.items():
        if name in names:
            return f"{what}: {_first_line(str(exc)) or type(exc).__name__}"
    return (
        f"unexpected {type(exc).__name__}: {_first_line(str(exc))}"
        f" (run again with --debug for the traceback)"
    )


def _first_line(text: str) -> str:
    # Rust errors carry a backtrace after the first line; the user needs the first.
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""
