"""table_dataset: a table's rows as a pyarrow dataset, read through Arrow's own filesystem."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from ciolake.lake.inventory import table_dataset
from ciolake.lake.tables import RAW_EVENTS
from tests.support import make_bodies, make_settings, receive, table_rows


def test_a_local_tables_dataset_holds_what_duckdb_reads(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    receive(settings, [(body, False) for body in make_bodies(40, seed=3)])
    dataset = table_dataset(settings.tables_location, RAW_EVENTS)
    assert dataset is not None
    ours = sorted(dataset.to_table(columns=["event_id"]).column("event_id").to_pylist())
    duckdb = sorted(r["event_id"] for r in table_rows(settings.data_dir, RAW_EVENTS, "event_id"))
    assert len(ours) == 40
    assert ours == duckdb


def test_a_local_tables_dataset_needs_no_python_filesystem(tmp_path: Path) -> None:
    # A scan through a Python filesystem (delta-rs's storage handler) left the process to
    # abort at exit now and then; a local table needs none.
    settings = make_settings(tmp_path)
    receive(settings, [(body, False) for body in make_bodies(5, seed=4)])
    dataset = table_dataset(settings.tables_location, RAW_EVENTS)
    assert dataset is not None
    assert isinstance(dataset.filesystem, pafs.LocalFileSystem)


def test_a_missing_table_has_no_dataset(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    (tmp_path / "data" / "tables").mkdir(parents=True)
    assert table_dataset(settings.tables_location, RAW_EVENTS) is None
