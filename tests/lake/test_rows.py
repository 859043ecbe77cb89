"""Arrow columns built from journaled bodies: exact text, and base64 where it is not UTF-8."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ciolake.events.decode import Typed, decode_event
from ciolake.events.model import DATA_TYPES, OBJECT_TYPES
from ciolake.journal.records import JournalRecord
from ciolake.lake.rows import body_columns, channel_table, quarantine_table, raw_table

_DATA_FIELDS = sorted({f for t in DATA_TYPES.values() for f in t.__struct_fields__})
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
_EVENTS = st.fixed_dictionaries(
    {
        "event_id": st.just("E1"),
        "object_type": st.sampled_from(OBJECT_TYPES),
        "metric": st.sampled_from(["sent", "opened", "unsubscribed", "x"]),
        "timestamp": st.integers(min_value=0, max_value=2_000_000_000),
        "data": st.dictionaries(st.sampled_from(_DATA_FIELDS), _VALUES | st.integers()),
    }
)


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


@given(event=_EVENTS)
def test_every_body_the_decoder_answers_becomes_rows(event: dict[str, Any]) -> None:
    # A value no column can hold (an integer beyond 64 bits) once stopped the committer: every
    # batch holding it failed to build and was retried for ever.
    body = json.dumps(event).encode()
    decoded, delivery = decode_event(body), record(1, body)
    if isinstance(decoded, Typed):
        assert channel_table(decoded.table, [(delivery, decoded)]).num_rows == 1
    else:
        assert quarantine_table([(delivery, decoded)]).num_rows == 1
    assert raw_table([(delivery, decoded)]).num_rows == 1


def test_an_integer_beyond_64_bits_is_dropped_and_listed() -> None:
    body = json.dumps(
        {
            "event_id": "E1",
            "object_type": "email",
            "metric": "clicked",
            "timestamp": 1_700_000_000,
            "data": {"campaign_id": 2**63, "link_id": -(2**63), "delivery_id": "d"},
        }
    ).encode()
    decoded = decode_event(body)
    assert isinstance(decoded, Typed)
    row = channel_table("email_events", [(record(1, body), decoded)]).to_pylist()[0]
    assert row["campaign_id"] is None
    assert row["link_id"] == -(2**63)
    assert "wrong_type:data.campaign_id" in row["spec_violations"]
    assert json.loads(row["payload"])["data"]["campaign_id"] == 2**63
