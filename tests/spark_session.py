"""One local Spark session with Delta Lake, to read ciolake's tables with a third engine.

Spark (delta-spark) is the reference Delta implementation: what it reads, every Delta reader
should. Its jars are fetched from Maven Central by Ivy on the first start, into
``.cache/spark-ivy`` at the repository root (``CIOLAKE_SPARK_IVY`` to put them elsewhere), and
reused afterwards. pyspark is imported only when a session starts, so importing this module
(conftest.py does) costs a test process nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
IVY_ENV = "CIOLAKE_SPARK_IVY"
# Spark's S3 filesystem (s3a), for tables on the S3 test server. hadoop-aws must match the
# Hadoop that pyspark 4.2.0 ships (3.5.0), and its AWS SDK version (2.35.4). Its declared SDK
# dependency is the SDK's 640 MB bundle of every service; s3a needs only the S3 client and
# its transfer manager (~40 MB with their dependencies), and Spark brings its own netty.
S3A_PACKAGES = (
    "org.apache.hadoop:hadoop-aws:3.5.0",
    "software.amazon.awssdk:s3:2.35.4",
    "software.amazon.awssdk:s3-transfer-manager:2.35.4",
)
S3A_EXCLUDES = ("software.amazon.awssdk:bundle", "software.amazon.awssdk:netty-nio-client")
DEFAULT_IVY = REPO / ".cache" / "spark-ivy"
_COMMIT_FILE = re.compile(r"^\d{20}\.json$")


def ivy_dir() -> Path:
    """Where Ivy keeps Delta's jars between runs."""
    return Path(os.environ.get(IVY_ENV) or DEFAULT_IVY)


def java_binary() -> str | None:
    """The ``java`` pyspark will launch: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def start_spark(work_dir: Path) -> SparkSession:
    """A local Spark session with Delta, its warehouse and metastore under ``work_dir``.

    Skips the calling test (or every test of a session fixture) when Java or pyspark is
    missing; fails with the Ivy directory named when Delta's jars cannot be fetched.
    """
    if java_binary() is None:
        pytest.skip("Spark needs Java (17 or later): no JAVA_HOME and no java on PATH")
    pytest.importorskip("pyspark", reason="pyspark is missing: `make install` installs it")
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    work_dir.mkdir(parents=True, exist_ok=True)
    ivy = ivy_dir()
    ivy.mkdir(parents=True, exist_ok=True)
    # The JIT's first tier only and the serial collector: the tests run many small queries,
    # each compiled once, on a 1 GiB heap, and the optimising compiler's and G1's threads
    # cost a fifth of the JVM's CPU time for no faster run.
    java_options = (
        f"-Dderby.system.home={work_dir / 'derby'} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    )
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("ciolake-tests")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.jars.ivy", str(ivy))
        .config("spark.jars.excludes", ",".join(S3A_EXCLUDES))
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Shuffles keep two partitions, so that what the tests check holds across partitions.
        .config("spark.sql.shuffle.partitions", "2")
        # One task where Spark plans several for the tests' tiny inputs: VACUUM's listing
        # (default 10,000 tasks: most of its time on a small table), scans, and the rebuild of
        # a Delta table's state (snapshotPartitions, below) each time a test opens a table.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", "1")
        .config("spark.default.parallelism", "1")
        # Small tables, many distinct queries: adaptive planning and whole-stage code
        # generation cost more than they save.
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.databricks.delta.snapshotPartitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.catalogImplementation", "in-memory")
        .config("spark.sql.warehouse.dir", str(work_dir / "warehouse"))
    )
    try:
        # One session per test process, and `make test` runs two: the first to start fetches
        # the jars, the other waits for it (Ivy does not lock its cache for writers).
        with open(ivy / ".ciolake-start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            spark = configure_spark_with_delta_pip(
                builder, extra_packages=list(S3A_PACKAGES)
            ).getOrCreate()
    except Exception as error:
        raise RuntimeError(
            f"could not start Spark with Delta (its jars come from Maven Central into {ivy};"
            f" set {IVY_ENV} to use another cache): {error}"
        ) from error
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def s3a_uri(spark: SparkSession, endpoint: str, bucket: str, key: str) -> str:
    """The ``s3a://`` URI of ``key`` in ``bucket`` on the S3 test server at ``endpoint``.

    The server is set for that bucket alone (``fs.s3a.bucket.<bucket>.*``): Hadoop caches one
    filesystem per bucket, so a bucket already read keeps the settings it was first read with.
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    settings = {
        "endpoint": endpoint,
        "endpoint.region": "us-east-1",
        "path.style.access": "true",
        "connection.ssl.enabled": "false",
        "access.key": "test",
        "secret.key": "test",
    }
    for name, value in settings.items():
        conf.set(f"fs.s3a.bucket.{bucket}.{name}", value)
    return f"s3a://{bucket}/{key}"


def spark_rows(
    spark: SparkSession,
    table_path: Path | str,
    columns: Sequence[str] = ("*",),
    order_by: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows of the Delta table at ``table_path`` as Spark reads them (``columns`` are SQL
    expressions); timestamps as aware UTC datetimes, as DuckDB gives them."""
    frame = spark.read.format("delta").load(str(table_path)).selectExpr(*columns)
    if order_by:
        frame = frame.orderBy(*order_by)
    return [_utc(row.asDict(recursive=True)) for row in frame.collect()]


def _utc(value: Any) -> Any:
    """pyspark collects a TIMESTAMP as a naive datetime in the process's local time."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.astimezone(UTC)
    if isinstance(value, dict):
        return {key: _utc(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_utc(item) for item in value]
    return value


def table_ref(table_path: Path | str) -> str:
    """``delta.`<path>``` in Spark SQL."""
    path = str(table_path).replace("`", "``")
    return f"delta.`{path}`"


def enable_feature(spark: SparkSession, table_path: Path | str, property: str) -> None:
    """Set a boolean table property to true, e.g. ``delta.enableDeletionVectors`` (this
    upgrades the table's protocol to the feature's)."""
    key = property.replace("'", "\\'")
    spark.sql(f"ALTER TABLE {table_ref(table_path)} SET TBLPROPERTIES ('{key}' = true)")


def latest_commit(table_path: Path | str) -> list[dict[str, Any]]:
    """The actions of the table's newest commit file in ``_delta_log``."""
    log = Path(table_path) / "_delta_log"
    newest = max(p for p in log.iterdir() if _COMMIT_FILE.match(p.name))
    lines = newest.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def delete_with_deletion_vectors(
    spark: SparkSession, table_path: Path | str, where_sql: str
) -> int:
    """``DELETE ... WHERE where_sql`` with deletion vectors on; the number of rows deleted.

    Asserts the commit really wrote deletion vectors: a predicate that removes whole files
    (every row of a file, or a partition) rewrites nothing and would not exercise them.
    """
    enable_feature(spark, table_path, "delta.enableDeletionVectors")
    (result,) = spark.sql(f"DELETE FROM {table_ref(table_path)} WHERE {where_sql}").collect()
    deleted = int(result["num_affected_rows"])
    actions = latest_commit(table_path)
    operation = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    assert operation.get("operation") == "DELETE", f"newest commit is not the DELETE: {operation}"
    with_vectors = [
        a["add"] for a in actions if "add" in a and a["add"].get("deletionVector") is not None
    ]
    assert with_vectors, (
        f"DELETE WHERE {where_sql} deleted {deleted} rows without a deletion vector"
        f" (it removed whole files): {operation.get('operationMetrics')}"
    )
    return deleted
