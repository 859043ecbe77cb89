"""Options several commands share, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DataDirOption = Annotated[
    Path | None, typer.Option(help="Data directory [env CIOLAKE_DATA_DIR; default ./data].")
]
TablesUriOption = Annotated[
    str | None,
    typer.Option(help="Tables location [env CIOLAKE_TABLES_URI; default <data-dir>/tables]."),
]
