"""One derivation, run by the committer's Python and by DuckDB: the same rows, column for column.

The corpus (tests/quirks.py) holds every spec schema and every quirk the decoder tests know;
random documents add what nobody thought of. The Spark run of the same corpus is in
tests/interop/test_spark_derive.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ciolake.derive import duck, python
from ciolake.events.definition import ALL_FIELDS
from ciolake.events.model import OBJECT_TYPES
from ciolake.lake.tables import CHANNEL_TABLES, QUARANTINE
from tests.quirks import (
    KIND_VALUES,
    KNOWN_DIFFERENCES,
    NOW,
    TOLERANCE_S,
    corpus,
    differences,
    known_difference,
    raw_table,
)


def test_duckdb_derives_the_corpus_as_python_does() -> None:
    raw = corpus()
    expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
    actual = duck.derive_rows(raw, tolerance_s=TOLERANCE_S)
    assert differences(expected, actual, engine="duckdb") == []
    # The corpus reaches every table, every quarantine reason and every kind of violation.
    assert all(expected[name].num_rows for name in (*CHANNEL_TABLES, QUARANTINE))
    reasons = set(expected[QUARANTINE].column("reason").to_pylist())
    assert reasons == {"invalid_json", "invalid_envelope", "unknown_object_type", "stale_timestamp"}
    listed = {
        v.partition(":")[0]
        for name in CHANNEL_TABLES
        for vs in expected[name].column("spec_violations").to_pylist()
        for v in vs
    }
    assert listed == {"wrong_type", "missing_field", "unknown_metric", "renamed_field"}


def test_the_earliest_typed_delivery_of_an_event_wins_in_both() -> None:
    raw = corpus()
    for derived in (python, duck):
        tables = derived.derive_rows(raw, tolerance_s=TOLERANCE_S)
        sms = {r["event_id"]: r for r in tables["sms_events"].to_pylist()}
        assert sms["D-thrice"]["received_at"].timestamp() == NOW + 1 + 10e-6
        webhook = {r["event_id"]: r for r in tables["webhook_events"].to_pylist()}
        assert webhook["D-broken-first"]["journal_lsn"] > 1


def test_every_data_field_is_typed_by_the_definition() -> None:
    # The corpus's fields stand for their kinds; each kind has one (or more) of them.
    kinds = {f.kind for f in ALL_FIELDS if f.name in KIND_VALUES}
    assert kinds == {f.kind for f in ALL_FIELDS}


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=8,
)
DOCUMENTS = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["A", "B", "C", ""]),
        "object_type": st.sampled_from([*OBJECT_TYPES, "fax"]),
        "metric": st.sampled_from(["sent", "opened", "unsubscribed", "subscribed", "drafted", "x"]),
        "timestamp": st.integers(min_value=-5, max_value=2_000_000_000) | JSON_VALUES,
        "data": st.dictionaries(
            st.sampled_from([f.name for f in ALL_FIELDS]),
            JSON_VALUES
            | st.integers()
            | st.dictionaries(st.sampled_from(["id", "email"]), JSON_VALUES),
        )
        | JSON_VALUES,
    }
)


@settings(max_examples=15, deadline=None)
@given(documents=st.lists(DOCUMENTS | JSON_VALUES, min_size=1, max_size=40))
def test_duckdb_derives_random_documents_as_python_does(documents: list[Any]) -> None:
    at = (NOW + 1) * 1_000_000
    raw = raw_table([(json.dumps(d).encode(), at + i, NOW) for i, d in enumerate(documents)])
    expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
    actual = duck.derive_rows(raw, tolerance_s=TOLERANCE_S)
    assert differences(expected, actual, engine="duckdb") == []


def test_the_known_differences_are_only_where_duckdbs_parser_is_laxer() -> None:
    # Pinned so that a change in either parser is noticed (docs/reference.md lists them).
    for name in KNOWN_DIFFERENCES:
        raw = known_difference(name)
        expected = python.derive_rows(raw, tolerance_s=TOLERANCE_S)
        actual = duck.derive_rows(raw, tolerance_s=TOLERANCE_S)
        found = differences(expected, actual, engine="duckdb")
        lax = name in ("NaN", "trailing comma", "repeated key", "number beyond a double")
        assert bool(found) == lax, (name, found)
