"""The derivation run by DuckDB, in this process, over Arrow tables."""

from __future__ import annotations

import pyarrow as pa

from ciolake.analytics.duck import connect
from ciolake.derive.dialects import DuckDialect
from ciolake.derive.sql import OUTPUTS, derived_sql, output_sql
from ciolake.lake.tables import ALL_SPECS

DUCKDB = DuckDialect()


def derive_rows(raw: pa.Table, *, tolerance_s: int) -> dict[str, pa.Table]:
    """The channel rows and quarantine records of ``raw_events`` rows, by table (as
    ``derive.python.derive_rows``).

    Raises:
        ConfigurationError: DuckDB is not installed.
    """
    with connect() as lake:
        lake.register("raw", raw)
        lake.execute(f"CREATE TEMP TABLE derived AS {derived_sql(DUCKDB, tolerance_s=tolerance_s)}")
        return {
            name: lake.arrow(output_sql(DUCKDB, name)).cast(ALL_SPECS[name].schema)
            for name in OUTPUTS
        }
