"""The derivation as SQL, generated from ``events.definition`` for DuckDB and for Spark.

One generator writes the rules; a ``Dialect`` says how each engine spells the few JSON
primitives they need (what type a value has, its text, its elements). DuckDB reads JSON text
(``json_extract``, ``json_type``); Spark reads a ``VARIANT`` (``try_parse_json``,
``variant_get``, ``schema_of_variant``). The input is a relation named ``raw`` shaped as
``raw_events``; ``derived_sql`` gives every delivery with its target and every column any table
needs, and ``output_sql`` one table's rows from it (materialise ``derived`` once, then select).

Where the engines' JSON parsers differ on malformed bodies (docs/reference.md, "Typing"), the
rows differ too; everything else is the same row for row.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ciolake.events.definition import (
    ALL_FIELDS,
    BAD_DATA,
    BAD_EVENT_ID,
    BAD_METRIC,
    BAD_OBJECT_TYPE,
    BAD_TIMESTAMP,
    DIGITS_SQL,
    FIELDS,
    IDENTIFIER_KEYS,
    INVALID_JSON,
    MAX_DIGITS,
    MAX_TIMESTAMP,
    NOT_AN_OBJECT,
    ORIGINS,
    RECIPIENT_KEYS,
    RENAMED_OBJECT_TYPE,
    ROUTES,
    TRIGGERED_BROADCAST,
    UNKNOWN_OBJECT_TYPE,
    DataField,
    stale_detail,
)
from ciolake.events.model import OBJECT_TYPES
from ciolake.lake.tables import CHANNEL_SPECS, QUARANTINE, QUARANTINE_SPEC

JsonType = Literal["string", "integer", "boolean", "object", "array"]

OUTPUTS: tuple[str, ...] = (*CHANNEL_SPECS, QUARANTINE)
"""The tables a derivation gives rows of: every channel table, then the quarantine."""
RAW_COLUMNS = (
    "received_at",
    "received_date",
    "body",
    "body_base64",
    "x_cio_timestamp",
    "journal_stream",
    "journal_lsn",
)
"""The columns of ``raw_events`` the derivation reads."""
_ENVELOPE = ("event_id", "object_type", "object_type_type", "metric", "timestamp", "data")
_QUARANTINE_COLUMNS = {
    "event_id": "q_event_id",
    "object_type": "q_object_type",
    "metric": "q_metric",
}


def quote(text: str) -> str:
    """A SQL string literal of ciolake's own text.

    Raises:
        ValueError: the text holds a quote or a backslash, which DuckDB and Spark escape
            differently (Spark reads ``'a''b'`` as two literals, ``ab``).
    """
    if "'" in text or "\\" in text:
        raise ValueError(f"no quote or backslash in SQL text: {text!r}")
    return f"'{text}'"


class Dialect(ABC):
    """How one engine spells the JSON primitives of the derivation (one subclass per engine)."""

    name = ""

    @abstractmethod
    def parsed(self, paths: dict[str, str]) -> str:
        """SELECT over ``raw``: its columns, ``is_json``, ``is_object``, and ``j_<name>``."""

    @abstractmethod
    def is_null(self, value: str) -> str:
        """True where the value is missing or JSON null."""

    @abstractmethod
    def has_type(self, value: str, kind: JsonType) -> str:
        """True where the value is of this JSON type (integers: within 64 bits)."""

    @abstractmethod
    def text(self, value: str) -> str:
        """The string a JSON string holds."""

    @abstractmethod
    def integer(self, value: str) -> str:
        """The BIGINT a JSON integer holds (null beyond 64 bits)."""

    @abstractmethod
    def boolean(self, value: str) -> str:
        """The BOOLEAN a JSON boolean holds."""

    @abstractmethod
    def text_to_bigint(self, text: str) -> str:
        """The BIGINT a string spells, null if it spells none."""

    @abstractmethod
    def elements(self, value: str) -> str:
        """A JSON array's elements, as a list of JSON values."""

    @abstractmethod
    def members(self, value: str) -> tuple[str, str]:
        """A JSON object's keys and values, as two lists."""

    @abstractmethod
    def member(self, value: str, key: str) -> str:
        """One member of a JSON object, null where absent."""

    @abstractmethod
    def every(self, items: str, var: str, condition: str) -> str:
        """True where ``condition`` holds for every element (and for no elements)."""

    @abstractmethod
    def transform(self, items: str, var: str, expression: str) -> str:
        """Each element mapped through ``expression``."""

    @abstractmethod
    def keep(self, items: str, var: str, condition: str) -> str:
        """The elements for which ``condition`` holds."""

    @abstractmethod
    def contains(self, items: str, value: str) -> str:
        """True where the list holds the value."""

    @abstractmethod
    def texts(self, items: Sequence[str]) -> str:
        """A list of strings from expressions (possibly empty)."""

    @abstractmethod
    def concat(self, *lists: str) -> str:
        """The lists one after the other."""

    @abstractmethod
    def join(self, items: str, separator: str) -> str:
        """The strings of a list joined."""

    @abstractmethod
    def struct(self, fields: dict[str, str]) -> str:
        """A struct of named expressions."""

    @abstractmethod
    def text_map(self, keys: str, values: str) -> str:
        """A map from two lists (keys unique, the last of a repeated key kept)."""

    @abstractmethod
    def size(self, items: str) -> str:
        """The number of elements of a list."""

    @abstractmethod
    def identifier(self, name: str) -> str:
        """A quoted column name."""

    @abstractmethod
    def full_match(self, text: str, pattern: str) -> str:
        """True where the whole text matches the regular expression."""

    @abstractmethod
    def seconds(self, timestamp: str) -> str:
        """A TIMESTAMP column's instant as DOUBLE unix seconds."""

    @abstractmethod
    def event_time(self, seconds: str) -> str:
        """The UTC TIMESTAMP of BIGINT unix seconds."""

    @abstractmethod
    def event_date(self, seconds: str) -> str:
        """The UTC DATE of non-negative BIGINT unix seconds."""

    @abstractmethod
    def values(self, rows: Sequence[Sequence[str]], columns: Sequence[str], alias: str) -> str:
        """A FROM item of literal rows, named ``alias``."""


@dataclass(frozen=True, slots=True)
class _Typed:
    # A data field's typed value, and whether its JSON value was acceptable (null included).
    value: str
    acceptable: str


def _text_value(d: Dialect, x: str) -> _Typed:
    return _Typed(
        f"CASE WHEN {d.has_type(x, 'string')} THEN {d.text(x)} END",
        f"({d.is_null(x)} OR {d.has_type(x, 'string')})",
    )


def _int_value(d: Dialect, x: str) -> _Typed:
    spelled = d.text(x)
    value = (
        f"CASE WHEN {d.has_type(x, 'integer')} THEN {d.integer(x)}"
        f" WHEN {d.has_type(x, 'string')} AND length({spelled}) <= {MAX_DIGITS}"
        f" AND {d.full_match(spelled, DIGITS_SQL)} THEN {d.text_to_bigint(spelled)} END"
    )
    return _Typed(value, f"({d.is_null(x)} OR ({value}) IS NOT NULL)")


def _bool_value(d: Dialect, x: str) -> _Typed:
    return _Typed(
        f"CASE WHEN {d.has_type(x, 'boolean')} THEN {d.boolean(x)} END",
        f"({d.is_null(x)} OR {d.has_type(x, 'boolean')})",
    )


def _all_texts(d: Dialect, items: str, var: str) -> str:
    return d.every(items, var, d.has_type(var, "string"))


def _shaped(d: Dialect, x: str, shape: str, value: str) -> _Typed:
    return _Typed(f"CASE WHEN {shape} THEN {value} END", f"({d.is_null(x)} OR {shape})")


def _text_list_value(d: Dialect, x: str) -> _Typed:
    shape = f"({d.has_type(x, 'array')} AND {_all_texts(d, d.elements(x), 'e1')})"
    return _shaped(d, x, shape, d.transform(d.elements(x), "e1", d.text("e1")))


def _headers_value(d: Dialect, x: str) -> _Typed:
    keys, values = d.members(x)
    each = f"{d.has_type('e1', 'array')} AND {_all_texts(d, d.elements('e1'), 'e2')}"
    shape = f"({d.has_type(x, 'object')} AND {d.every(values, 'e1', each)})"
    lists = d.transform(values, "e1", d.transform(d.elements("e1"), "e2", d.text("e2")))
    return _shaped(d, x, shape, d.text_map(keys, lists))


def _texts_only(d: Dialect, x: str, keys: Sequence[str]) -> str:
    # An object whose members ``keys`` are strings or null where present.
    members = [d.member(x, k) for k in keys]
    checks = " AND ".join(f"({d.is_null(m)} OR {d.has_type(m, 'string')})" for m in members)
    return f"({d.has_type(x, 'object')} AND {checks})"


def _member_text(d: Dialect, x: str, key: str) -> str:
    member = d.member(x, key)
    return f"CASE WHEN {d.has_type(member, 'string')} THEN {d.text(member)} END"


def _recipients_value(d: Dialect, x: str) -> _Typed:
    each = _texts_only(d, "e1", RECIPIENT_KEYS)
    shape = f"({d.has_type(x, 'array')} AND {d.every(d.elements(x), 'e1', each)})"
    struct = d.struct({k: _member_text(d, "e1", k) for k in RECIPIENT_KEYS})
    return _shaped(d, x, shape, d.transform(d.elements(x), "e1", struct))


def _identifiers_shape(d: Dialect, x: str) -> str:
    return _texts_only(d, x, IDENTIFIER_KEYS)


_TYPERS = {
    "text": _text_value,
    "int": _int_value,
    "bool": _bool_value,
    "text_list": _text_list_value,
    "headers": _headers_value,
    "recipients": _recipients_value,
}


def _field_columns(d: Dialect, field: DataField) -> list[str]:
    x = f"j_{field.name}"
    if field.kind == "identifiers":
        shape = _identifiers_shape(d, x)
        ids = [
            f"CASE WHEN {shape} THEN {_member_text(d, x, k)} END AS id_{k}" for k in IDENTIFIER_KEYS
        ]
        present = f"CASE WHEN {shape} THEN TRUE END AS v_{field.name}"
        return [*ids, present, f"({d.is_null(x)} OR {shape}) AS ok_{field.name}"]
    typed = _TYPERS[field.kind](d, x)
    return [f"{typed.value} AS v_{field.name}", f"{typed.acceptable} AS ok_{field.name}"]


def _typed_sql(d: Dialect) -> str:
    """Every delivery with its envelope read and each data field typed."""
    object_type_absent = d.is_null("j_object_type")
    renamed = f"({object_type_absent} AND j_object_type_type IS NOT NULL)"
    object_type = f"CASE WHEN {renamed} THEN j_object_type_type ELSE j_object_type END"
    # The parsed JSON values stop here: a VARIANT column in Spark's cache takes the heap.
    columns = [
        *RAW_COLUMNS,
        "is_json",
        "is_object",
        f"COALESCE({renamed}, FALSE) AS renamed",
        f"CASE WHEN {d.has_type('j_event_id', 'string')} THEN {d.text('j_event_id')} END"
        " AS event_id",
        f"CASE WHEN {d.has_type(object_type, 'string')} THEN {d.text(object_type)} END"
        " AS object_type",
        f"CASE WHEN {d.has_type('j_metric', 'string')} THEN {d.text('j_metric')} END AS metric",
        f"CASE WHEN {d.has_type('j_timestamp', 'integer')} THEN {d.integer('j_timestamp')} END"
        " AS ts",
        f"COALESCE({d.has_type('j_data', 'object')}, FALSE) AS data_is_object",
    ]
    for field in ALL_FIELDS:
        columns += _field_columns(d, field)
    return f"SELECT {', '.join(columns)} FROM ({d.parsed(_paths())}) AS p"


def _paths() -> dict[str, str]:
    paths = {name: f"$.{name}" for name in _ENVELOPE}
    paths.update({f.name: f"$.data.{f.name}" for f in ALL_FIELDS})
    return paths


def _one_of(column: str, names: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(quote(n) for n in names)})"


def _reason_sql(d: Dialect) -> tuple[str, str, str]:
    """The quarantine problems, reason and detail of a delivery before the stale check."""
    problems = d.keep(
        d.texts(
            [
                f"CASE WHEN event_id IS NULL OR event_id = '' THEN {quote(BAD_EVENT_ID)} END",
                f"CASE WHEN object_type IS NULL THEN {quote(BAD_OBJECT_TYPE)} END",
                f"CASE WHEN metric IS NULL THEN {quote(BAD_METRIC)} END",
                f"CASE WHEN ts IS NULL OR ts < 0 OR ts > {MAX_TIMESTAMP}"
                f" THEN {quote(BAD_TIMESTAMP)} END",
                f"CASE WHEN NOT data_is_object THEN {quote(BAD_DATA)} END",
            ]
        ),
        "p1",
        "p1 IS NOT NULL",
    )
    reason = (
        "CASE WHEN NOT is_json THEN 'invalid_json'"
        " WHEN NOT is_object THEN 'invalid_envelope'"
        f" WHEN {d.size('problems')} > 0 THEN 'invalid_envelope'"
        f" WHEN NOT {_one_of('object_type', OBJECT_TYPES)} THEN 'unknown_object_type' END"
    )
    detail = (
        f"CASE WHEN NOT is_json THEN {quote(INVALID_JSON)}"
        f" WHEN NOT is_object THEN {quote(NOT_AN_OBJECT)}"
        f" WHEN {d.size('problems')} > 0 THEN {d.join('problems', '; ')}"
        f" WHEN NOT {_one_of('object_type', OBJECT_TYPES)} THEN {quote(UNKNOWN_OBJECT_TYPE)} END"
    )
    return problems, reason, detail


def _in_type(field: DataField) -> str:
    # Whether the event's object type has this field (only then does it count).
    having = [t for t, fields in FIELDS.items() if field in fields]
    return "TRUE" if len(having) == len(FIELDS) else _one_of("object_type", having)


def _violations_sql(d: Dialect) -> str:
    wrong = [f"({_in_type(f)} AND NOT ok_{f.name})" for f in ALL_FIELDS]
    listed = [f"CASE WHEN renamed THEN {quote(RENAMED_OBJECT_TYPE)} END"]
    listed += [
        f"CASE WHEN {w} THEN {quote('wrong_type:data.' + f.name)} END"
        for f, w in zip(ALL_FIELDS, wrong, strict=True)
    ]
    listed.append("CASE WHEN route_schema IS NULL THEN 'unknown_metric:' || metric END")
    # Most events break no rule: the list is built only for those that do.
    any_listed = " OR ".join(["renamed", "route_schema IS NULL", *wrong])
    listed_sql = (
        f"CASE WHEN {any_listed} THEN {d.keep(d.texts(listed), 'p4', 'p4 IS NOT NULL')}"
        f" ELSE {d.texts([])} END"
    )
    required = sorted({name for route in ROUTES for name in route.required})
    absent = " ".join(f"WHEN {quote(n)} THEN v_{n} IS NULL" for n in required)
    missing = d.keep(f"COALESCE(route_required, {d.texts([])})", "p3", f"CASE p3 {absent} END")
    return d.concat(listed_sql, d.transform(missing, "p5", "'missing_field:data.' || p5"))


def _origin_sql() -> str:
    cases = []
    for name, origin in ORIGINS:
        label = quote(origin)
        if origin == "broadcast":
            label = (
                f"CASE WHEN v_trigger_id IS NOT NULL THEN {quote(TRIGGERED_BROADCAST)}"
                f" ELSE {label} END"
            )
        cases.append(f"WHEN v_{name} IS NOT NULL THEN {label}")
    return f"CASE {' '.join(cases)} END"


def _routes_sql(d: Dialect) -> str:
    rows = [
        [
            quote(r.object_type),
            quote(r.metric),
            "TRUE" if r.has_delivery_id else "FALSE",
            quote(r.table),
            "CAST(NULL AS STRING)" if r.schema is None else quote(r.schema),
            d.texts([quote(n) for n in r.required]),
        ]
        for r in ROUTES
    ]
    columns = [
        "route_object_type",
        "route_metric",
        "route_has_delivery_id",
        "route_target",
        "route_schema",
        "route_required",
    ]
    return d.values(rows, columns, "r")


def derived_sql(dialect: Dialect, *, tolerance_s: int) -> str:
    """Every delivery of ``raw`` with where it goes (``target``) and every column it needs.

    ``target`` is a channel table, ``quarantine``, or null for a later delivery of an event
    already derived from an earlier one (smallest ``received_at``, then journal position).
    """
    d = dialect
    problems, reason, detail = _reason_sql(d)
    stale = (
        f"abs({d.seconds('received_at')} - CAST(x_cio_timestamp AS DOUBLE))"
        f" > CAST({tolerance_s} AS DOUBLE)"
    )
    also = "'; also ' || reason0 || ': ' || detail0"
    checked = (
        f"SELECT t.*, {reason} AS reason0, {detail} AS detail0,"
        f" COALESCE({stale}, FALSE) AS stale FROM (SELECT *, {problems} AS problems"
        f" FROM ({_typed_sql(d)}) AS t0) AS t"
    )
    routed = (
        f"SELECT c.*, route_target, route_schema AS spec_schema, {_violations_sql(d)}"
        f" AS spec_violations, {_origin_sql()} AS origin"
        f" FROM ({checked}) AS c LEFT JOIN {_routes_sql(d)}"
        " ON c.reason0 IS NULL AND route_object_type = c.object_type AND route_metric = c.metric"
        " AND route_has_delivery_id = (c.v_delivery_id IS NOT NULL)"
    )
    quarantined = "stale OR reason0 IS NOT NULL"
    earliest = (
        "row_number() OVER (PARTITION BY CASE WHEN NOT (stale OR reason0 IS NOT NULL)"
        " THEN event_id END ORDER BY received_at, journal_stream, journal_lsn)"
    )
    return (
        "SELECT *,"
        f" CASE WHEN {quarantined} THEN 'quarantine' WHEN rank_in_event = 1"
        " THEN COALESCE(route_target, object_type || '_events') END AS target,"
        f" CASE WHEN stale THEN 'stale_timestamp' ELSE reason0 END AS reason,"
        f" CASE WHEN stale THEN {quote(stale_detail(tolerance_s))} ||"
        f" CASE WHEN reason0 IS NULL THEN '' ELSE {also} END ELSE detail0 END AS detail,"
        " CASE WHEN is_object THEN event_id END AS q_event_id,"
        " CASE WHEN is_object THEN object_type END AS q_object_type,"
        " CASE WHEN is_object THEN metric END AS q_metric"
        f" FROM (SELECT *, {earliest} AS rank_in_event FROM ({routed}) AS r0) AS r1"
    )


def _channel_expression(d: Dialect, column: str) -> str:
    envelope = {
        "timestamp": "ts",
        "event_time": d.event_time("ts"),
        "event_date": d.event_date("ts"),
        "payload": "body",
        # The derivation types webhook deliveries: their rows have no source.
        "source": "CAST(NULL AS STRING)",
    }
    if column in envelope:
        return envelope[column]
    if column.startswith("identifier_"):
        return f"id_{column.removeprefix('identifier_')}"
    if column in {f.name for f in ALL_FIELDS}:
        return f"v_{column}"
    return column


def output_sql(dialect: Dialect, table: str, *, source: str = "derived") -> str:
    """One table's rows (a channel table or the quarantine), from ``derived`` materialised."""
    if table == QUARANTINE_SPEC.name:
        names = QUARANTINE_SPEC.schema.names
        columns = [f"{_QUARANTINE_COLUMNS.get(n, n)} AS {dialect.identifier(n)}" for n in names]
    else:
        names = CHANNEL_SPECS[table].schema.names
        columns = [f"{_channel_expression(dialect, n)} AS {dialect.identifier(n)}" for n in names]
    return f"SELECT {', '.join(columns)} FROM {source} WHERE target = {quote(table)}"
