"""The derivation run by Spark: the same SQL as DuckDB's, in Spark's dialect.

Spark is not imported here: the caller's session runs the SQL, so this module serves
``spark-submit`` and Databricks jobs alike.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pyarrow as pa

from ciolake.derive.dialects import SparkDialect
from ciolake.derive.sql import OUTPUTS, derived_sql, output_sql, quote
from ciolake.lake.tables import TableSpec

SPARK = SparkDialect()
# A repeated key keeps its last value, as in msgspec; Spark's default refuses the body.
SESSION_SETTINGS = {"spark.sql.variant.allowDuplicateKeys": "true"}


def derive_frames(spark: Any, raw: Any, *, tolerance_s: int) -> dict[str, Any]:
    """DataFrames of the channel rows and quarantine records of ``raw`` (rows shaped as
    ``raw_events``), by table; ``derived`` is cached until the caller unpersists it.

    Args:
        spark: a ``SparkSession``.
        raw: a ``DataFrame`` of ``raw_events`` rows.
        tolerance_s: how far a signed timestamp may be from its receipt.
    """
    for key, value in SESSION_SETTINGS.items():
        spark.conf.set(key, value)
    raw.createOrReplaceTempView("raw")
    derived = spark.sql(derived_sql(SPARK, tolerance_s=tolerance_s)).cache()
    derived.createOrReplaceTempView("derived")
    return {name: spark.sql(output_sql(SPARK, name)) for name in OUTPUTS}


# Written by ciolake and delta-rs too: the features delta-rs cannot write stay off.
TABLE_PROPERTIES = {
    "delta.checkpointInterval": "10",
    "delta.enableDeletionVectors": "false",
    "delta.enableRowTracking": "false",
    "delta.enableInCommitTimestamps": "false",
}


def spark_type(kind: pa.DataType) -> str:
    """The Spark SQL type of an Arrow type of ciolake's tables."""
    if pa.types.is_string(kind):
        return "STRING"
    if pa.types.is_int64(kind):
        return "BIGINT"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_date32(kind):
        return "DATE"
    if pa.types.is_map(kind):
        return f"MAP<{spark_type(kind.key_type)}, {spark_type(kind.item_type)}>"
    if pa.types.is_list(kind):
        return f"ARRAY<{spark_type(kind.value_type)}>"
    if pa.types.is_struct(kind):
        fields = ", ".join(f"`{f.name}`: {spark_type(f.type)}" for f in kind)
        return f"STRUCT<{fields}>"
    raise ValueError(f"no Spark type for {kind}")


def delta_path(location: str) -> str:
    """A Delta table named by its path in Spark SQL (``delta.`path```)."""
    return "delta.`" + location.replace("`", "``") + "`"


def table_ddl(spec: TableSpec, location: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a ciolake table at ``location`` (a Delta path)."""
    return f"CREATE TABLE IF NOT EXISTS {delta_path(location)} {_definition(spec)}"


def add_columns_ddl(spec: TableSpec, location: str, present: Collection[str]) -> str | None:
    """``ALTER TABLE ... ADD COLUMNS`` of the columns of ``spec`` a table at ``location``
    lacks (added to ciolake's schema after the table was created), or None."""
    missing = [f for f in spec.schema if f.name not in present]
    if not missing:
        return None
    columns = ", ".join(f"`{f.name}` {spark_type(f.type)}" for f in missing)
    return f"ALTER TABLE {delta_path(location)} ADD COLUMNS ({columns})"


def external_table_ddl(spec: TableSpec, *, name: str, location: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a ciolake table registered as ``name`` (an external
    table of a catalog, e.g. Unity Catalog's ``catalog.schema.table``) at ``location``."""
    return f"CREATE TABLE IF NOT EXISTS {name} {_definition(spec)} LOCATION {quote(location)}"


def managed_table_ddl(spec: TableSpec, *, name: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of a managed table ``name`` with ``spec``'s columns: the
    table Zerobus lands raw events in (``serve --sink zerobus``). Databricks manages its
    layout (no partitioning: Databricks advises none below a terabyte)."""
    columns = ", ".join(f"`{f.name}` {spark_type(f.type)}" for f in spec.schema)
    return f"CREATE TABLE IF NOT EXISTS {name} ({columns}) USING DELTA"


def _definition(spec: TableSpec) -> str:
    columns = ", ".join(f"`{f.name}` {spark_type(f.type)}" for f in spec.schema)
    properties = ", ".join(f"'{k}' = '{v}'" for k, v in TABLE_PROPERTIES.items())
    return (
        f"({columns}) USING DELTA PARTITIONED BY (`{spec.partition_by}`)"
        f" TBLPROPERTIES ({properties})"
    )
