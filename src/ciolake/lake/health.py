"""Whether the tables can be read, checked before anything reads or writes them.

A table whose ``_delta_log`` is gone while its data files remain must never be created again
over them: a new, empty log would hide every row it held. A table whose log is damaged (a
truncated commit, an unreadable checkpoint) cannot be read at all. Both need an operator, and
the error says what to do: a channel table is rebuilt by ``ciolake replay`` from
``raw_events``; ``raw_events`` (the audit trail) and the quarantine can only be restored from
a backup. A table directory that does not exist is fine: the receiver creates it.

delta-rs's errors are translated here, so that a user reads one line naming the table, or the
object store that cannot be reached, never a Rust backtrace.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ciolake.errors import CiolakeError, StoreUnavailableError, TableUnreadableError
from ciolake.lake.delta import DeltaError, DeltaTable, TableNotFoundError
from ciolake.lake.location import TablesLocation, parse_location, storage_options
from ciolake.lake.tables import ALL_SPECS, CHANNEL_SPECS

REBUILD = "move it aside and run `ciolake replay` to rebuild it from raw_events"
RESTORE = (
    "restore its _delta_log from a backup; raw_events is the audit trail and cannot be rebuilt"
)

_LOG_ENTRY = re.compile(r"^\d{20}\.(json|checkpoint(\.\d+\.\d+)?\.parquet)$")
_ENDPOINT = re.compile(r"https?://[^/\s\"']+")
# How delta-rs words an object store's failure it wraps in a DeltaError (a request refused,
# credentials that expired meanwhile): the store, not the log, failed.
_STORE_FAILURE = re.compile(r"Error interacting with object store")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MAX_CAUSE = 160


def way_out(table: str) -> str:
    """What an operator does about an unreadable ``table``."""
    return REBUILD if table in CHANNEL_SPECS else RESTORE


def check_tables(location: str, *, names: Iterable[str] | None = None) -> None:
    """Check that every table under ``location`` (or those ``names``) can be read.

    Raises:
        InputError: the location is malformed.
        TableUnreadableError: a table's directory holds data files but no Delta log, or its
            log is damaged.
        StoreUnavailableError: the object store holding the tables cannot be reached.
    """
    open_tables(parse_location(location), names=names)


def existing_tables(location: str, *, names: Iterable[str] | None = None) -> list[str]:
    """The tables (of ``names``, default all) that exist under ``location``, checked.

    Raises:
        InputError, TableUnreadableError, StoreUnavailableError: as ``check_tables``.
    """
    found = open_tables(parse_location(location), names=names)
    return [name for name, table in found.items() if table is not None]


def open_tables(
    location: TablesLocation, *, names: Iterable[str] | None = None
) -> dict[str, DeltaTable | None]:
    """Each table (of ``names``, default all) opened, or None where it does not exist yet.

    Raises:
        TableUnreadableError, StoreUnavailableError: as ``check_tables``.
    """
    chosen = ALL_SPECS if names is None else names
    return {name: open_table(location, name) for name in chosen}


def open_table(
    location: TablesLocation, name: str, *, version: int | None = None
) -> DeltaTable | None:
    """Table ``name`` (as of ``version``, default latest), or None if it does not exist yet.

    Raises:
        TableUnreadableError: its directory holds data files but no Delta log, or its log
            is damaged.
        StoreUnavailableError: the object store cannot be reached.
    """
    uri = location.table_uri(name)
    if location.path is not None and not _local_log_exists(location.path / name, name, uri):
        return None
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(location, name))
    except TableNotFoundError as exc:
        if location.remote:
            return None
        raise unreadable(name, uri, exc) from exc
    except (DeltaError, OSError) as exc:
        raise translated(location, name, exc, reading=True) from exc


def _local_log_exists(root: Path, name: str, uri: str) -> bool:
    """Whether a local table has a log; False if it has neither a log nor data files."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise TableUnreadableError(
            name, f"table {name} at {uri} is a file, not a table directory: {way_out(name)}"
        )
    log = root / "_delta_log"
    if log.is_dir() and any(_LOG_ENTRY.match(entry) for entry in os.listdir(log)):
        return True
    held = _data_file_count(root)
    if not held:
        return False
    what = "a _delta_log without commits" if log.is_dir() else "no _delta_log"
    raise TableUnreadableError(
        name,
        f"table {name} at {uri} has {what} but holds {held:,} data file(s), which a new table"
        f" would hide: {way_out(name)}",
    )


def _data_file_count(root: Path) -> int:
    count = 0
    for directory, subdirectories, files in os.walk(root):
        if Path(directory) == root and "_delta_log" in subdirectories:
            subdirectories.remove("_delta_log")
        count += sum(1 for f in files if not f.startswith("."))
    return count


def unreadable(name: str, uri: str, exc: BaseException) -> TableUnreadableError:
    """The error for table ``name`` whose log delta-rs could not read."""
    return TableUnreadableError(
        name, f"table {name} at {uri} cannot be read ({cause_of(exc)}): {way_out(name)}"
    )


def translated(
    location: TablesLocation, name: str, exc: BaseException, *, reading: bool = False
) -> BaseException:
    """A ciolake error for what delta-rs raised about table ``name``, or ``exc`` itself.

    An object store's failure (delta-rs raises those as OSError, or as a DeltaError that
    wraps the store's error, as for a listing the store refused) becomes a
    ``StoreUnavailableError`` naming the endpoint; with ``reading``, any other delta-rs error
    means the log could not be read (``TableUnreadableError``).
    """
    if isinstance(exc, CiolakeError):
        return exc
    if location.remote and isinstance(exc, OSError) and not isinstance(exc, DeltaError):
        return unreachable(location, name, exc)
    if location.remote and isinstance(exc, DeltaError) and _STORE_FAILURE.search(str(exc)):
        return unreachable(location, name, exc)
    if reading and isinstance(exc, (DeltaError, OSError)):
        return unreadable(name, location.table_uri(name), exc)
    return exc


def unreachable(location: TablesLocation, name: str, exc: BaseException) -> StoreUnavailableError:
    """The error for an object store that failed a request about table ``name``."""
    text = _ANSI.sub("", str(exc))
    found = _ENDPOINT.search(text)
    endpoint = found.group(0) if found else location.uri
    return StoreUnavailableError(
        f"cannot reach the table store at {endpoint} ({cause_of(exc)}) for table {name}:"
        " check the endpoint, the network and the credentials, then try again"
    )


@contextmanager
def store_errors(location: TablesLocation, name: str) -> Iterator[None]:
    """Translate an object store's failure in the block into a ``StoreUnavailableError``."""
    try:
        yield
    except (DeltaError, OSError) as exc:
        error = translated(location, name, exc)
        if error is exc:
            raise
        raise error from exc


def cause_of(exc: BaseException) -> str:
    """The innermost cause in a delta-rs error's text, on one short line.

    An object store's error is a chain of causes, one per line (``↳ tcp connect error``,
    ``↳ Connection refused (os error 111)``): the last one says what happened.
    """
    lines = [_ANSI.sub("", line).strip().lstrip("↳").strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return type(exc).__name__
    chained = len(lines) > 1 and "↳" in str(exc)
    cause = lines[-1] if chained else lines[0]
    if len(cause) > _MAX_CAUSE:
        cause = cause[: _MAX_CAUSE - 1].rstrip() + "…"
    return cause
