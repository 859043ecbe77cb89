"""Fixtures shared by the lake tests: a data directory, writers over its tables, an S3 server."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ciolake.lake.writer import DeltaWriter
from tests.support import S3Server, s3_env, s3_server

WriterFactory = Callable[[], DeltaWriter]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_writer(data_dir: Path) -> Iterator[WriterFactory]:
    """Writers over ``data_dir/tables`` with every table created; closed at teardown."""
    made: list[DeltaWriter] = []

    def make() -> DeltaWriter:
        writer = DeltaWriter(str(data_dir / "tables"))
        made.append(writer)
        writer.ensure_tables()
        return writer

    yield make
    for writer in made:
        writer.close()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's S3 server for the test, and the environment that points delta-rs and obstore
    at it."""
    with s3_server() as server:
        for name, value in s3_env(server.endpoint).items():
            monkeypatch.setenv(name, value)
        yield server


def raw_event_row(
    lsn: int, received_at: dt.datetime, received_date: dt.date | None, *, metric: str
) -> dict[str, Any]:
    """One hand-made ``raw_events`` row for journal record ``lsn`` of stream 0."""
    return {
        "received_at": received_at,
        "received_date": received_date,
        "event_id": f"01HZEVENT{lsn:017d}",
        "object_type": "email",
        "metric": metric,
        "body": json.dumps({"event_id": lsn}),
        "body_base64": None,
        "x_cio_timestamp": int(received_at.timestamp()),
        "journal_stream": 0,
        "journal_lsn": lsn,
    }
