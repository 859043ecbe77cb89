"""What ``serve --sink zerobus`` sends: raw_events rows as JSON records in requests of bounded
size, and the settings it refuses."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from ciolake.databricks.zerobus import REQUEST_BYTES, json_records, requests_of
from ciolake.errors import ConfigurationError
from ciolake.events.decode import decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import ALL_SPECS
from ciolake.settings import ZEROBUS_MAX_RECORD_BYTES, load_settings
from tests.support import make_bodies

ZEROBUS = {
    "CIOLAKE_SINK": "zerobus",
    "CIOLAKE_ZEROBUS_ENDPOINT": "https://1234.zerobus.us-west-2.cloud.databricks.com",
    "CIOLAKE_ZEROBUS_TABLE": "main.ciolake.raw_events_zerobus",
}


def raw_rows(bodies: list[bytes]) -> pa.Table:
    received_us = 1_790_000_000_123_456
    return rows.raw_table(
        [
            (JournalRecord(lsn, received_us + lsn, 1_790_000_000, 0, body), decode_event(body))
            for lsn, body in enumerate(bodies, start=1)
        ]
    )


def test_a_record_is_a_raw_events_row_with_epoch_numbers() -> None:
    table = raw_rows([*make_bodies(11, seed=5), b"\xff not utf-8"])
    records = [json.loads(text) for text in json_records(table)]
    assert [r["event_id"] for r in records] == table.column("event_id").to_pylist()
    assert [r["body"] for r in records] == table.column("body").to_pylist()
    assert records[-1]["body_base64"] is not None, "a body that is not UTF-8 keeps its bytes"
    assert records[-1]["body_base64"] == table.column("body_base64").to_pylist()[-1]
    micros = pa.compute.cast(table.column("received_at"), pa.int64()).to_pylist()
    assert [r["received_at"] for r in records] == micros
    days = pa.compute.cast(table.column("received_date"), pa.int32()).to_pylist()
    assert [r["received_date"] for r in records] == days
    assert set(records[0]) == set(ALL_SPECS["raw_events"].schema.names)


def test_requests_keep_the_order_and_stay_under_the_bound() -> None:
    records = [("x" * 700_000) + str(i) for i in range(20)]
    requests = list(requests_of(records))
    assert [r for request in requests for r in request] == records
    assert all(sum(map(len, request)) <= REQUEST_BYTES for request in requests)
    assert len(requests) == 4
    huge = "y" * (REQUEST_BYTES + 1)
    assert list(requests_of(["a", huge, "b"])) == [["a"], [huge], ["b"]]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CIOLAKE_SINK": "kafka"}, "sink must be one of delta, zerobus"),
        ({"CIOLAKE_SINK": "zerobus"}, "CIOLAKE_ZEROBUS_ENDPOINT and CIOLAKE_ZEROBUS_TABLE"),
        ({**ZEROBUS, "CIOLAKE_ZEROBUS_TABLE": "raw_events"}, "catalog.schema.table"),
        ({**ZEROBUS, "CIOLAKE_ZEROBUS_STREAMS": "0"}, "zerobus_streams must be 1 or more"),
        ({**ZEROBUS, "CIOLAKE_MAX_BODY_BYTES": str(8 * 1024 * 1024)}, "max_body_bytes must"),
    ],
)
def test_zerobus_settings_that_cannot_work_are_refused(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        load_settings(env)


def test_the_largest_body_allowed_fits_a_record() -> None:
    settings = load_settings(ZEROBUS)
    assert settings.max_body_bytes * 4 // 3 < ZEROBUS_MAX_RECORD_BYTES
