"""Arrow columns built from journaled bodies: exact text, and base64 where it is not UTF-8."""

from __future__ import annotations

import base64

from ciolake.events.decode import decode_event
from ciolake.journal.records import JournalRecord
from ciolake.lake.rows import body_columns, raw_table


def record(lsn: int, body: bytes) -> JournalRecord:
    return JournalRecord(lsn, 1_700_000_000_000_000, 1_700_000_000, 0, body, 0)


def test_utf8_bodies_are_kept_as_text_without_base64() -> None:
    bodies = [b'{"a":"caf\xc3\xa9"}', b"{}", b""]

    text, encoded = body_columns(bodies)

    assert text.to_pylist() == [b.decode() for b in bodies]
    assert encoded.to_pylist() == [None, None, None]


def test_a_body_that_is_not_utf8_keeps_its_bytes_in_base64_and_the_rest_stay_exact() -> None:
    bodies = [b'{"ok":1}', b'{"bad":"\xff\xfe"}']

    text, encoded = body_columns(bodies)

    assert text.to_pylist()[0] == '{"ok":1}'
    assert encoded.to_pylist()[0] is None
    assert "\ufffd" in text.to_pylist()[1]
    assert base64.b64decode(encoded.to_pylist()[1]) == bodies[1]


def test_raw_events_rows_carry_both_columns_per_delivery() -> None:
    bodies = [b'{"x":1}', b"\x80not json"]
    items = [(record(i + 1, body), decode_event(body)) for i, body in enumerate(bodies)]

    rows = raw_table(items).to_pylist()

    assert [r["journal_lsn"] for r in rows] == [1, 2]
    assert rows[0]["body"] == '{"x":1}'
    assert rows[0]["body_base64"] is None
    assert base64.b64decode(rows[1]["body_base64"]) == bodies[1]


def test_bodies_keep_their_order_and_bounds_over_one_shared_buffer() -> None:
    bodies = [b"", b'{"a":1}', b"", "\u00e9\u4e2d".encode(), b'{"b":[1,2]}']

    text, encoded = body_columns(bodies)

    assert text.to_pylist() == [b.decode() for b in bodies]
    assert encoded.null_count == len(bodies)
    assert body_columns([])[0].to_pylist() == []
