"""Options several commands share, declared once, and the checks they share."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

_P = ParamSpec("_P")
_R = TypeVar("_R")

DataDirOption = Annotated[
    Path | None, typer.Option(help="Data directory [env CIOLAKE_DATA_DIR; default ./data].")
]
TablesUriOption = Annotated[
    str | None,
    typer.Option(help="Tables location [env CIOLAKE_TABLES_URI; default <data-dir>/tables]."),
]


def check_date_range(
    since: dt.date | None, until: dt.date | None
) -> tuple[dt.date | None, dt.date | None]:
    """``--since`` and ``--until`` as dates (a datetime's date), refused if out of order.

    Raises:
        typer.BadParameter: ``--until`` is before ``--since``.
    """
    first = since.date() if isinstance(since, dt.datetime) else since
    last = until.date() if isinstance(until, dt.datetime) else until
    if first is not None and last is not None and last < first:
        raise typer.BadParameter(
            f"--until {last.isoformat()} is before --since {first.isoformat()}:"
            " the range would be empty"
        )
    return first, last
