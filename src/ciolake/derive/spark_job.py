"""``ciolake-spark derive``: the channel tables and the quarantine, derived by Spark from
``raw_events``, exactly once (the one module that imports pyspark).

A Structured Streaming query reads ``raw_events`` incrementally (``--every`` for a query that
keeps running, else ``availableNow``: everything new, then stop, as a scheduled job does). Each
micro-batch is derived by ``derive.spark`` (the SQL DuckDB runs, in Spark's dialect) and
written so that a batch run twice changes nothing: channel rows by an insert-only ``MERGE`` on
``event_id`` (an event already in the table keeps its row, which came from an earlier
delivery), quarantine records by an append with Delta's idempotent-write options
(``txnAppId``, ``txnVersion`` = the batch id). Run it with ``spark-submit`` or as a Databricks
job; missing target tables are created with ciolake's schemas, writable by delta-rs (no
deletion vectors, no row tracking, no in-commit timestamps).

``ciolake-spark views`` creates (or replaces) the analytics views in a catalog's schema, and
``ciolake-spark maintain`` compacts (``OPTIMIZE``) and vacuums ciolake's tables there: the
other two jobs of the Databricks bundle (``deploy/databricks``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ciolake.analytics.views import spark_statements, view_names
from ciolake.derive.spark import add_columns_ddl, delta_path, derive_frames, table_ddl
from ciolake.derive.sql import OUTPUTS
from ciolake.lake.tables import ALL_SPECS, QUARANTINE, RAW_EVENTS

APP_ID = "ciolake-derive"
_MISSING = (
    "ciolake-spark needs pyspark and delta-spark: install the spark extra"
    " (pip install 'ciolake[spark]'), or run it with spark-submit or on Databricks"
)


@dataclass
class DeriveResult:
    """What one run derived: micro-batches, and rows written per table."""

    batches: int = 0
    deliveries: int = 0
    written: Counter[str] = field(default_factory=Counter)


def _pyspark() -> Any:
    try:
        return importlib.import_module("pyspark.sql")
    except ImportError as exc:
        raise SystemExit(f"error: {_MISSING}") from exc


def table_path(tables_uri: str, name: str) -> str:
    """Where table ``name`` lives under ``tables_uri``."""
    return f"{tables_uri.rstrip('/')}/{name}"


def ensure_targets(spark: Any, tables_uri: str) -> None:
    """Create every channel table and the quarantine under ``tables_uri`` that is missing, and
    add to those that exist the columns a later ciolake added (``INSERT *`` needs them)."""
    statements = [table_ddl(ALL_SPECS[name], table_path(tables_uri, name)) for name in OUTPUTS]
    _at_once(spark.sql, statements)
    for name in OUTPUTS:
        path = table_path(tables_uri, name)
        present = spark.read.format("delta").load(path).columns
        if (alter := add_columns_ddl(ALL_SPECS[name], path, present)) is not None:
            spark.sql(alter)


def _at_once(work: Any, items: Sequence[Any]) -> None:
    # Each table is its own Spark job and its own Delta commit: none waits for another.
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        for done in [pool.submit(work, item) for item in items]:
            done.result()


def _is_path(raw_events: str) -> bool:
    # Else a catalog table, e.g. Unity Catalog's catalog.schema.raw_events.
    return "/" in raw_events or ":" in raw_events


def _source(spark: Any, raw_events: str) -> Any:
    reader = spark.readStream.format("delta")
    return reader.load(raw_events) if _is_path(raw_events) else reader.table(raw_events)


def _check_source(spark: Any, raw_events: str) -> None:
    # Read its columns now: a missing table fails here, before any target table is created.
    reader = spark.read.format("delta")
    frame = reader.load(raw_events) if _is_path(raw_events) else reader.table(raw_events)
    if "body" not in frame.columns:
        raise ValueError(f"{raw_events} is not a raw_events table (it has no body column)")


def _merge(session: Any, frame: Any, target: str, view: str) -> None:
    frame.createOrReplaceTempView(view)
    session.sql(
        f"MERGE INTO {delta_path(target)} AS t USING {view} AS s ON t.event_id = s.event_id"
        " WHEN NOT MATCHED THEN INSERT *"
    )


def _apply(
    session: Any, batch: Any, batch_id: int, *, tables_uri: str, tolerance_s: int
) -> Counter[str]:
    frames = derive_frames(session, batch, tolerance_s=tolerance_s)
    try:
        counted = session.sql("SELECT target, count(*) AS n FROM derived GROUP BY target")
        written = Counter({r["target"]: r["n"] for r in counted.collect() if r["target"]})

        def write(name: str) -> None:
            target = table_path(tables_uri, name)
            if name == QUARANTINE:
                (
                    frames[name]
                    .write.format("delta")
                    .mode("append")
                    .option("txnAppId", APP_ID)
                    .option("txnVersion", batch_id)
                    .save(target)
                )
            else:
                _merge(session, frames[name], target, f"ciolake_derived_{name}")

        _at_once(write, list(written))
    finally:
        session.catalog.uncacheTable("derived")
        session.catalog.dropTempView("derived")
    return written


def run_derive(
    spark: Any,
    *,
    tables_uri: str,
    checkpoint: str,
    raw_events: str | None = None,
    tolerance_s: int = 300,
    every_s: float | None = None,
    report: Any = None,
) -> DeriveResult:
    """Derive everything new in ``raw_events`` into the tables under ``tables_uri``.

    Args:
        spark: a ``SparkSession`` with Delta Lake.
        tables_uri: where the channel tables and the quarantine are (created if missing).
        checkpoint: the streaming query's checkpoint location (its position in ``raw_events``).
        raw_events: a Delta path or a catalog table name (default: under ``tables_uri``).
        tolerance_s: how far a signed timestamp may be from its receipt (as the receiver's).
        every_s: run for ever, a micro-batch every this many seconds (default: once).
        report: called with ``(batch_id, deliveries, written)`` after each micro-batch.
    """
    source = raw_events or table_path(tables_uri, RAW_EVENTS)
    _check_source(spark, source)
    ensure_targets(spark, tables_uri)
    result = DeriveResult()

    def each(batch: Any, batch_id: int) -> None:
        deliveries = batch.count()
        written = _apply(
            batch.sparkSession, batch, batch_id, tables_uri=tables_uri, tolerance_s=tolerance_s
        )
        result.batches += 1
        result.deliveries += deliveries
        result.written.update(written)
        if report is not None:
            report(batch_id, deliveries, written)

    stream = _source(spark, source).writeStream.foreachBatch(each)
    writer = stream.option("checkpointLocation", checkpoint)
    if every_s is None:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{every_s} seconds")
    writer.start().awaitTermination()
    return result


def _schema_options(command: Any) -> None:
    command.add_argument(
        "--catalog", metavar="NAME", help="the tables' catalog (Unity Catalog's, on Databricks)"
    )
    command.add_argument("--schema", required=True, metavar="NAME", help="the tables' schema")


def _views_parser(commands: Any) -> None:
    views = commands.add_parser(
        "views", help="create or replace the analytics views", allow_abbrev=False
    )
    _schema_options(views)


def _maintain_parser(commands: Any) -> None:
    maintain_ = commands.add_parser(
        "maintain", help="OPTIMIZE and VACUUM ciolake's tables", allow_abbrev=False
    )
    _schema_options(maintain_)
    maintain_.add_argument(
        "--table",
        action="append",
        choices=list(ALL_SPECS),
        default=[],
        metavar="NAME",
        help="only this table (repeat for several; default: every ciolake table)",
    )
    maintain_.add_argument(
        "--retain-hours",
        type=int,
        default=168,
        metavar="H",
        help="history VACUUM keeps, in hours (default 168, Delta's 7 days; at least 1)",
    )


def _run_views(args: argparse.Namespace) -> int:
    spark = _session()
    failures = importlib.import_module("pyspark.errors").PySparkException
    try:
        names = create_views(spark, catalog=args.catalog, schema=args.schema)
    except failures as exc:
        print(f"error: cannot create the views: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    print(f"created or replaced {len(names)} views: {', '.join(names)}")
    return 0


def _run_maintain(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.retain_hours < 1:
        parser.error("--retain-hours must be >= 1")
    spark = _session()
    failures = importlib.import_module("pyspark.errors").PySparkException
    try:
        maintain(
            spark,
            catalog=args.catalog,
            schema=args.schema,
            retain_hours=args.retain_hours,
            tables=args.table,
            report=lambda name: print(f"{name}: optimized, vacuumed", flush=True),
        )
    except failures as exc:
        print(f"error: cannot maintain the tables: {_first_line(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _session() -> Any:
    sql = _pyspark()
    active = sql.SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = (
        sql.SparkSession.builder.appName(APP_ID)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
        .config("spark.sql.session.timeZone", "UTC")
    )
    if os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        # A Databricks job: the cluster's own session, with its Delta and its logging.
        return builder.getOrCreate()
    try:
        delta = importlib.import_module("delta")
    except ImportError:
        session = builder.getOrCreate()  # spark-submit --packages io.delta:... brings the jars
    else:
        session = delta.configure_spark_with_delta_pip(builder).getOrCreate()
    # Spark's INFO lines (tens of thousands a run) would bury the job's own.
    session.sparkContext.setLogLevel("WARN")
    return session


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "Spark failed")


def _print_batch(batch_id: int, deliveries: int, written: Counter[str]) -> None:
    rows = ", ".join(f"{name} {count:,}" for name, count in written.items() if count)
    print(f"batch {batch_id}: {deliveries:,} deliveries -> {rows or 'nothing new'}", flush=True)


def create_views(spark: Any, *, catalog: str | None, schema: str) -> list[str]:
    """Create or replace every analytics view in ``catalog.schema``; return their names."""
    for statement in spark_statements(catalog=catalog, schema=schema):
        spark.sql(statement)
    return list(view_names())


def maintain(
    spark: Any,
    *,
    catalog: str | None,
    schema: str,
    retain_hours: int,
    tables: Sequence[str] = (),
    report: Any = None,
) -> None:
    """Compact and vacuum ciolake's tables in ``catalog.schema`` (``tables``, else all).

    ``OPTIMIZE`` rewrites small files without changing data (ciolake's writers keep
    appending meanwhile); ``VACUUM`` deletes files no version younger than ``retain_hours``
    needs, so time travel, ``ciolake derive`` and streaming readers keep that much history.
    """

    def each(name: str) -> None:
        qualified = ".".join(part for part in (catalog, schema, name) if part)
        spark.sql(f"OPTIMIZE {qualified}")
        spark.sql(f"VACUUM {qualified} RETAIN {retain_hours} HOURS")
        if report is not None:
            report(qualified)

    _at_once(each, list(tables or ALL_SPECS))


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``ciolake-spark``: ``derive``, ``views`` and ``maintain``."""
    parser = argparse.ArgumentParser(prog="ciolake-spark", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    _derive_parser(commands)
    _views_parser(commands)
    _maintain_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``ciolake-spark derive|views|maintain``: see each command's ``--help``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "views":
        return _run_views(args)
    if args.command == "maintain":
        return _run_maintain(parser, args)
    return _run_derive(parser, args)


def _derive_parser(commands: Any) -> None:
    derive = commands.add_parser(
        "derive", help="derive the channel tables from raw_events", allow_abbrev=False
    )
    derive.add_argument(
        "--tables-uri", required=True, metavar="URI", help="where the derived tables are"
    )
    derive.add_argument(
        "--checkpoint",
        metavar="URI",
        help="the query's checkpoint location (default: <tables-uri>/_checkpoints/derive)",
    )
    derive.add_argument(
        "--raw-events",
        metavar="PATH_OR_TABLE",
        help="raw_events: a Delta path or a catalog table name (default: under --tables-uri)",
    )
    derive.add_argument(
        "--timestamp-tolerance-s",
        type=int,
        default=300,
        metavar="S",
        help="how far X-CIO-Timestamp may be from the receipt (default 300, the receiver's)",
    )
    derive.add_argument(
        "--every", type=float, metavar="SECONDS", help="keep running, a micro-batch every N s"
    )


def _run_derive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.timestamp_tolerance_s < 0:
        parser.error("--timestamp-tolerance-s must be >= 0")
    if args.every is not None and args.every <= 0:
        parser.error("--every must be > 0")
    spark = _session()
    failures = importlib.import_module("pyspark.errors").PySparkException
    raw_events = args.raw_events or table_path(args.tables_uri, RAW_EVENTS)
    try:
        result = run_derive(
            spark,
            tables_uri=args.tables_uri,
            checkpoint=args.checkpoint or table_path(args.tables_uri, "_checkpoints/derive"),
            raw_events=raw_events,
            tolerance_s=args.timestamp_tolerance_s,
            every_s=args.every,
            report=_print_batch,
        )
    except (failures, ValueError) as exc:
        said = _first_line(str(exc))
        print(
            f"error: cannot derive from {raw_events} into {args.tables_uri}: {said}",
            file=sys.stderr,
        )
        return 1
    batches = "micro-batch" if result.batches == 1 else "micro-batches"
    print(f"derived {result.deliveries:,} deliveries in {result.batches} {batches}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
