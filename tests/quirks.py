"""Deliveries for the conformance of the three derivation engines: every schema, every quirk.

``corpus()`` is a ``raw_events`` table: every spec schema (and each with a required field gone),
the example payloads, each kind of ``data`` field given every awkward value the decoder tests
know, broken envelopes and bodies, routing edge cases, redeliveries in any order, and stale
signatures. ``KNOWN_DIFFERENCES`` are the malformed bodies whose JSON parsers disagree.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa

from ciolake.events.decode import decode_event
from ciolake.events.definition import MAX_TIMESTAMP
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.journal.records import JournalRecord
from ciolake.lake import rows
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES, QUARANTINE

Rows = dict[tuple[int, int], dict[str, Any]]

NOW = 1_790_000_000
TOLERANCE_S = 300
EXAMPLES = json.loads((Path(__file__).parent / "data" / "example-payloads.json").read_text())

INT_VALUES: list[Any] = [
    9,
    "9",
    "-0",
    "007",
    " 9",
    "9 ",
    "9\n",
    "9.0",
    9.0,
    1e3,
    "1e3",
    True,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**70,
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "",
    "-",
    {},
    [],
    None,
    "\u0661\u0662",
    "0" * 25 + "1",
]
TEXT_VALUES: list[Any] = ["x", 5, True, None, [], {}, "", 'e\u0301\u0000\n"\\', "\U0001f600", 1.5]
BOOL_VALUES: list[Any] = [True, False, 1, 0, "true", "True", None, "yes", 1.0, [], {}]
TEXT_LIST_VALUES: list[Any] = [["a", "b"], [], ["a", 1], [None], "a", None, {}, [["a"]]]
HEADER_VALUES: list[Any] = [
    {"X-Mailer": ["a"]},
    {},
    {"X": "a"},
    {"X": [1]},
    [],
    {"X": [], "Y": ["b", "c"]},
    None,
    {"X": None},
    {"": ["empty key"], "k\u00e9y": ["v"]},
]
RECIPIENT_VALUES: list[Any] = [
    [{"device_id": "d", "device_platform": "ios"}],
    [],
    [{}],
    [None],
    [{"device_id": 5}],
    [{"extra": 1, "failure_message": "gone"}],
    {},
    "x",
    None,
    [{"device_id": None}],
    [{"device_id": "a"}, "b"],
]
IDENTIFIER_VALUES: list[Any] = [
    {"id": "1"},
    {},
    {"id": 5},
    {"email": None, "cio_id": "c"},
    "x",
    [],
    None,
    {"phone": "+1", "other": 3},
]
KIND_VALUES: dict[str, tuple[str, list[Any]]] = {
    "campaign_id": ("email", INT_VALUES),
    "link_id": ("email", INT_VALUES),
    "subject": ("email", TEXT_VALUES),
    "delivery_id": ("email", TEXT_VALUES),
    "proxied": ("email", BOOL_VALUES),
    "campaign_tags": ("email", TEXT_LIST_VALUES),
    "headers": ("email", HEADER_VALUES),
    "recipients": ("push", RECIPIENT_VALUES),
    "identifiers": ("email", IDENTIFIER_VALUES),
}

BAD_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"\xff\xfe{}",
    b'{"event_id": "E",',
    b"[1, 2]",
    b'"text"',
    b"5",
    b"null",
    b"true",
    b"{}",
    b"01",
    b'{"event_id":"E\\ud800","object_type":"email","metric":"sent","timestamp":1,"data":{}}',
    b'  {"event_id":"Ews","object_type":"email","metric":"sent","timestamp":1,"data":{}}\n ',
]

KNOWN_DIFFERENCES: dict[str, bytes] = {
    # DuckDB accepts these; msgspec and Spark do not.
    "NaN": b'{"event_id":"En","object_type":"email","metric":"sent","timestamp":1,'
    b'"data":{"link_id":NaN}}',
    "trailing comma": b'{"event_id":"Ec","object_type":"email","metric":"sent","timestamp":1,'
    b'"data":{},}',
    # DuckDB keeps the first of a repeated key; msgspec and Spark (so configured) the last.
    "repeated key": b'{"event_id":"Ed","object_type":"email","metric":"sent","timestamp":1,'
    b'"data":{"subject":"first","subject":"last"}}',
    # Spark reads the first JSON value and ignores what follows it.
    "content after the value": b'{"event_id":"Et","object_type":"email","metric":"sent",'
    b'"timestamp":1,"data":{}} trailing',
    # A number beyond a double: msgspec refuses the body, DuckDB and Spark read infinity.
    "number beyond a double": b'{"event_id":"Eb","object_type":"email","metric":"sent",'
    b'"timestamp":1,"data":{"link_id":1e400}}',
}


def _base(name: str, event_id: str) -> dict[str, Any]:
    event = sample_event(schema_by_name(name), rng=random.Random(name), timestamp=NOW)
    event["event_id"] = event_id
    return event


def _schema_events() -> list[dict[str, Any]]:
    events = []
    for name, _object_type, _metric in schema_keys():
        event = _base(name, f"S-{name}")
        events.append(event)
        for field in schema_by_name(name).required:
            broken = json.loads(json.dumps(event))
            del broken["data"][field]
            broken["event_id"] = f"S-{name}-no-{field}"
            events.append(broken)
    return events


def _example_events() -> list[dict[str, Any]]:
    return [
        {**EXAMPLES[group][key], "event_id": f"X-{group}-{key}"}
        for group in ("spec_examples", "rudder_transformer_test_inputs")
        for key in EXAMPLES[group]
    ]


def _kind_events() -> list[dict[str, Any]]:
    schemas = {"email": "email_clicked", "push": "push_sent"}
    events = []
    for field, (object_type, values) in KIND_VALUES.items():
        for i, value in enumerate(values):
            event = _base(schemas[object_type], f"K-{field}-{i}")
            event["data"][field] = value
            events.append(event)
    several = _base("email_clicked", "K-several")
    several["data"].update(identifiers=5, link_id="x", campaign_id=[], subject=None)
    elsewhere = _base("email_clicked", "K-other-type-field")
    elsewhere["data"].update(recipients=5, to=7, app_id=[])
    return [*events, several, elsewhere]


def _envelope_events() -> list[dict[str, Any]]:
    base = _base("email_sent", "")
    cases: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = [
        {"event_id": ""},
        {"event_id": 5},
        {"object_type": "fax"},
        {"object_type": 5},
        {"metric": 7},
        {"timestamp": "1700000000"},
        {"timestamp": 1.7e9},
        {"timestamp": -1},
        {"timestamp": 0},
        {"timestamp": 86_399},
        {"timestamp": 86_400},
        {"timestamp": MAX_TIMESTAMP},
        {"timestamp": MAX_TIMESTAMP + 1},
        {"timestamp": True},
        {"timestamp": 2**70},
        {"data": []},
        {"data": None},
        {"data": "x"},
        {"metric": "teleported"},
        {"object_type": None, "object_type_type": "email"},
        {"object_type_type": "sms"},
        {"object_type": None, "object_type_type": 5},
        {"object_type": "fax", "event_id": "", "metric": None, "data": 1},
    ]
    for i, change in enumerate(changes):
        event = {**base, "event_id": f"V-{i}", **change}
        cases.append(event)
    for key in ("event_id", "object_type", "metric", "timestamp", "data"):
        missing = {k: v for k, v in base.items() if k != key}
        if key != "event_id":
            missing["event_id"] = f"V-no-{key}"
        cases.append(missing)
    return cases


def _routing_events() -> list[dict[str, Any]]:
    unsubscribed = _base("email_unsubscribed", "R-unsub-delivery")
    person = json.loads(json.dumps(unsubscribed))
    del person["data"]["delivery_id"]
    person["event_id"] = "R-unsub-person"
    subscribed = {**_base("email_sent", "R-subscribed"), "metric": "subscribed"}
    drafted = {**_base("email_sent", "R-email-drafted"), "metric": "drafted"}
    preferences = _base("person_cio_subscription_preferences_changed", "R-preferences")
    preferences["object_type_type"] = preferences.pop("object_type")
    return [unsubscribed, person, subscribed, drafted, preferences]


def _deliveries() -> list[tuple[bytes, int, int]]:
    """(body, received_at in microseconds, X-CIO-Timestamp) of every delivery."""
    at = (NOW + 1) * 1_000_000
    events = [
        *_schema_events(),
        *_example_events(),
        *_kind_events(),
        *_envelope_events(),
        *_routing_events(),
    ]
    deliveries = [(json.dumps(e).encode(), at, NOW) for e in events]
    deliveries += [(body, at, NOW) for body in BAD_BODIES]
    twice = json.dumps(_base("sms_delivered", "D-thrice")).encode()
    deliveries += [(twice, at + 20, NOW), (twice, at + 10, NOW), (twice, at + 30, NOW)]
    stale_first = json.dumps(_base("push_opened", "D-stale-first")).encode()
    deliveries += [(stale_first, at, NOW - 3600), (stale_first, at + 5, NOW)]
    broken_first = json.dumps({**_base("webhook_sent", "D-broken-first"), "timestamp": "x"})
    deliveries += [(broken_first.encode(), at, NOW)]
    deliveries += [(json.dumps(_base("webhook_sent", "D-broken-first")).encode(), at + 5, NOW)]
    deliveries += [(json.dumps(_base("slack_clicked", "T-stale")).encode(), at, NOW + 3600)]
    deliveries += [(b"not json", at, NOW - 3600), (b"[]", at, NOW - 3600)]
    return deliveries


def raw_table(deliveries: list[tuple[bytes, int, int]], *, stream: int = 1) -> pa.Table:
    """``raw_events`` rows of (body, received_at_us, x_cio_timestamp) deliveries, in order."""
    items = [
        (JournalRecord(lsn, received, signed, 0, body, stream), decode_event(body))
        for lsn, (body, received, signed) in enumerate(deliveries, start=1)
    ]
    return rows.raw_table(items)


def corpus() -> pa.Table:
    """Every delivery of the corpus as ``raw_events`` rows, in one stream."""
    return raw_table(_deliveries())


def known_difference(name: str) -> pa.Table:
    """One delivery whose body the engines' JSON parsers read differently."""
    return raw_table([(KNOWN_DIFFERENCES[name], (NOW + 1) * 1_000_000, NOW)])


def corpus_and_differences() -> tuple[pa.Table, dict[int, str]]:
    """The corpus with every known difference after it, and the difference at each lsn."""
    deliveries = _deliveries()
    at = {len(deliveries) + i: name for i, name in enumerate(KNOWN_DIFFERENCES, start=1)}
    known = [(KNOWN_DIFFERENCES[name], (NOW + 1) * 1_000_000, NOW) for name in at.values()]
    return raw_table([*deliveries, *known]), at


def plain(value: Any) -> Any:
    """A cell comparable across engines: maps as dicts (their order is no part of a map)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return dict(value)
    return value


def keyed(table: pa.Table) -> Rows:
    """A table's rows by delivery (journal stream and position), each delivery once."""
    found: Rows = {}
    for row in table.to_pylist():
        key = (row["journal_stream"], row["journal_lsn"])
        assert key not in found, f"delivery {key} derived twice"
        found[key] = {name: plain(value) for name, value in row.items()}
    return found


def differences(
    expected: dict[str, pa.Table], actual: dict[str, pa.Table], *, engine: str
) -> list[str]:
    """Every cell, row or schema where ``engine``'s derivation differs from Python's."""
    found = []
    for name in (*CHANNEL_TABLES, QUARANTINE):
        if actual[name].schema != ALL_SPECS[name].schema:
            found.append(f"{name}: schema {actual[name].schema}")
        want, got = keyed(expected[name]), keyed(actual[name])
        for key in want.keys() ^ got.keys():
            found.append(f"{name} {key}: only in {'python' if key in want else engine}")
        for key in want.keys() & got.keys():
            for column, value in want[key].items():
                if got[key][column] != value:
                    found.append(f"{name} {key} {column}: {value!r} != {got[key][column]!r}")
    return found
