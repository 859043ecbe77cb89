"""Several receivers, one lake: receivers land raw_events only, one deriver derives the rest.

Two embedded receivers (``role="receiver"``, ids 1 and 2) share a tables directory; the deriver
(``ciolake derive``) reads the versions they add and writes the channel tables and the
quarantine. Its rows are those of ciolake's one derivation over all of raw_events, read back
by DuckDB; a deriver that lost its state adds nothing twice. The crash test against the S3
server, with receivers killed by SIGKILL, is tests/e2e/test_receivers.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ciolake.derive import python
from ciolake.derive.python import is_stale, raw_records
from ciolake.errors import AnotherWriterError, ConfigurationError
from ciolake.lake.maintenance import compact_table
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES, QUARANTINE, RAW_SPEC
from ciolake.metrics import Metrics
from ciolake.runtime.deriver import Deriver
from ciolake.settings import Settings, load_settings
from tests.quirks import TOLERANCE_S, Rows, corpus, keyed, plain
from tests.support import NOW, make_bodies, receive, table_rows

MakeSettings = Callable[..., Settings]


def deriver_clock() -> float:
    # The deliveries' time: the dedup index forgets ids older than its window by this clock.
    return NOW + 60


def receivers(make_settings: MakeSettings, tables: Path) -> tuple[Settings, Settings]:
    def one(number: int) -> Settings:
        return make_settings(
            data_dir=tables.parent / f"receiver-{number}",
            tables_uri=str(tables),
            role="receiver",
            receiver_id=number,
            timestamp_tolerance_s=TOLERANCE_S,
        )

    return one(1), one(2)


def derive_once(make_settings: MakeSettings, tables: Path, name: str = "deriver") -> Deriver:
    settings = make_settings(
        data_dir=tables.parent / name,
        tables_uri=str(tables),
        timestamp_tolerance_s=TOLERANCE_S,
    )
    deriver = Deriver(settings, clock=deriver_clock, metrics=Metrics())
    deriver.open()
    deriver.run(until_caught_up=True, on_progress=lambda _status: None)
    assert deriver.close(deadline=time.monotonic() + 60)
    return deriver


def corpus_deliveries() -> list[tuple[bytes, bool]]:
    """Every schema and quirk of tests/quirks.py, flagged stale as a receiver would."""
    return [(r.body, is_stale(r, TOLERANCE_S)) for r in raw_records(corpus())]


def derived_rows(tables: Path) -> dict[str, Rows]:
    """The channel tables and the quarantine under ``tables``, read by DuckDB."""
    return {name: read(tables, name) for name in (*CHANNEL_TABLES, QUARANTINE)}


def read(tables: Path, name: str) -> Rows:
    found: Rows = {}
    for row in table_rows(tables.parent, name):
        key = (row["journal_stream"], row["journal_lsn"])
        assert key not in found, f"delivery {key} derived twice"
        found[key] = {column: plain(value) for column, value in row.items()}
    return found


def reference_rows(tables: Path) -> dict[str, Rows]:
    """What ciolake's one derivation makes of all of raw_events (as DuckDB reads it)."""
    raw = pa.Table.from_pylist(table_rows(tables.parent, "raw_events"))
    derived = python.derive_rows(raw.cast(RAW_SPEC.schema), tolerance_s=TOLERANCE_S)
    return {name: _maps_as_dicts(name, keyed(table)) for name, table in derived.items()}


def _maps_as_dicts(name: str, rows: Rows) -> Rows:
    # DuckDB gives a map as a dict, an empty one included; pyarrow gives pairs.
    maps = [f.name for f in ALL_SPECS[name].schema if pa.types.is_map(f.type)]
    for row in rows.values():
        for column in maps:
            row[column] = None if row[column] is None else dict(row[column])
    return rows


def channel_ids(rows: dict[str, Rows]) -> list[Any]:
    return sorted(row["event_id"] for name in CHANNEL_TABLES for row in rows[name].values())


def test_two_receivers_and_a_deriver_derive_what_one_derivation_of_raw_events_gives(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    first, second = receivers(make_settings, tables)
    deliveries = corpus_deliveries()
    third = len(deliveries) // 3
    # The middle third reaches both receivers, as Customer.io's retries of a request that
    # timed out at one reach another.
    receive(first, deliveries[: 2 * third], at=NOW + 1)
    receive(second, deliveries[third:], at=NOW + 1)
    assert not (tables / "email_events").exists()

    derive_once(make_settings, tables)
    derived = derived_rows(tables)
    assert derived == reference_rows(tables)
    ids = channel_ids(derived)
    assert len(ids) == len(set(ids)) > 60
    streams = {key[0] for rows in derived.values() for key in rows}
    assert streams == {1000, 2000}
    # The quarantine keeps every delivery it gets, a retry included.
    assert len(derived[QUARANTINE]) > len({row["event_id"] for row in derived[QUARANTINE].values()})


def test_a_deriver_that_lost_its_state_adds_nothing_twice(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    first, second = receivers(make_settings, tables)
    bodies = make_bodies(120, seed=3)
    receive(first, [(b, False) for b in bodies[:80]])
    derive_once(make_settings, tables)
    before = derived_rows(tables)
    assert len(channel_ids(before)) == 80

    # A second deriver, with a new data directory: no index, no position. The tables' app
    # transactions say what they hold; only the new deliveries are added.
    receive(second, [(b, False) for b in bodies[40:]])
    fresh = derive_once(make_settings, tables, name="another-deriver")
    after = derived_rows(tables)
    assert channel_ids(after) == sorted({*channel_ids(before), *channel_ids(after)})
    assert len(channel_ids(after)) == 120
    assert fresh.status().derived_version == fresh.status().latest_version


def test_compaction_of_raw_events_is_not_derived_again(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    first, _second = receivers(make_settings, tables)
    bodies = make_bodies(90, seed=4)
    for part in range(3):
        receive(first, [(b, False) for b in bodies[part * 20 : part * 20 + 20]])
    derive_once(make_settings, tables)
    result = compact_table(str(tables), "raw_events", before=None, retention_hours=168)
    assert result.files_removed > 1
    receive(first, [(b, False) for b in bodies[60:]])
    deriver = derive_once(make_settings, tables)
    assert len(channel_ids(derived_rows(tables))) == 90
    assert deriver.status().derived_version == deriver.status().latest_version


def test_a_receiver_needs_an_id_of_its_own() -> None:
    with pytest.raises(ConfigurationError, match="a receiver needs its own receiver_id"):
        load_settings({"CIOLAKE_ROLE": "receiver"})
    with pytest.raises(ConfigurationError, match="role must be one of all, receiver"):
        load_settings({"CIOLAKE_ROLE": "deriver"})
    third = load_settings({"CIOLAKE_ROLE": "receiver", "CIOLAKE_RECEIVER_ID": "3"})
    assert third.stream_base == 3000


def test_derive_without_raw_events_is_one_line_and_exit_2(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ciolake", "derive", "--once"]
    command += ["--data-dir", str(tmp_path / "deriver"), "--tables-uri", str(tmp_path / "lake")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    # A wrong location, as every command answers a wrong --data-dir.
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: no raw_events table under ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lake").exists()


def test_versions_vacuumed_before_they_were_derived_stop_the_deriver_in_one_line(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    first, _second = receivers(make_settings, tables)
    bodies = make_bodies(40, seed=5)
    receive(first, [(b, False) for b in bodies[:20]])
    derive_once(make_settings, tables)
    receive(first, [(b, False) for b in bodies[20:]])
    # Compaction rewrites the new deliveries' files, and a vacuum without retention deletes
    # the files the versions not derived yet name.
    assert compact_table(str(tables), "raw_events", before=None, retention_hours=0).vacuumed
    command = [sys.executable, "-m", "ciolake", "derive", "--once"]
    command += ["--data-dir", str(tmp_path / "deriver"), "--tables-uri", str(tables)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "name data files that are gone" in errors[0]
    assert "ciolake replay" in errors[0]
    assert "Traceback" not in result.stderr


def test_a_second_deriver_on_the_same_tables_stops_the_first_and_nothing_is_stored_twice(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    tables = tmp_path / "tables"
    first, second = receivers(make_settings, tables)
    bodies = make_bodies(90, seed=6)

    def open_deriver(name: str) -> Deriver:
        settings = make_settings(data_dir=tmp_path / name, tables_uri=str(tables))
        deriver = Deriver(settings, clock=deriver_clock, metrics=Metrics())
        deriver.open()
        return deriver

    def derive(deriver: Deriver) -> None:
        deriver.run(until_caught_up=True, on_progress=lambda _status: None)

    receive(first, [(b, False) for b in bodies[:30]])
    older = open_deriver("older")
    derive(older)
    # A second deriver, by mistake, while the first still runs; it commits in its turn.
    receive(second, [(b, False) for b in [*bodies[30:60], *bodies[:10]]])
    newer = open_deriver("newer")
    derive(newer)
    # The first one's next commit meets the second one's: it stops, naming the mistake.
    receive(first, [(b, False) for b in [*bodies[60:], *bodies[30:40]]])
    with pytest.raises(AnotherWriterError, match="run one ciolake derive per lake"):
        derive(older)
    older.close(deadline=time.monotonic() + 10)
    derive(newer)
    assert newer.close(deadline=time.monotonic() + 60)
    ids = channel_ids(derived_rows(tables))
    assert len(ids) == len(set(ids)) == 90
