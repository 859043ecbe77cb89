"""The derivation run by Spark: the same SQL as DuckDB's, in Spark's dialect.

Spark is not imported here: the caller's session runs the SQL, so this module serves
``spark-submit`` and Databricks jobs alike.
"""

from __future__ import annotations

from typing import Any

from ciolake.derive.dialects import SparkDialect
from ciolake.derive.sql import derived_sql, output_sql
from ciolake.lake.tables import CHANNEL_SPECS, QUARANTINE

SPARK = SparkDialect()
OUTPUTS = (*CHANNEL_SPECS, QUARANTINE)
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
