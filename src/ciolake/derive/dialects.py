"""How DuckDB and Spark spell the derivation's JSON primitives (see ``derive.sql``)."""

from __future__ import annotations

from collections.abc import Sequence

from ciolake.derive.sql import RAW_COLUMNS, Dialect, JsonType, quote

_OBJECT_START = "^[ \t\n\r]*[{]"
_DUCK_TYPES: dict[JsonType, str] = {
    "string": "= 'VARCHAR'",
    "integer": "IN ('BIGINT', 'UBIGINT')",
    "boolean": "= 'BOOLEAN'",
    "object": "= 'OBJECT'",
    "array": "= 'ARRAY'",
}
_SPARK_TYPES: dict[JsonType, str] = {
    "string": "= 'STRING'",
    "integer": "= 'BIGINT'",
    "boolean": "= 'BOOLEAN'",
    "object": "LIKE 'OBJECT<%'",
    "array": "LIKE 'ARRAY<%'",
}


class DuckDialect(Dialect):
    """DuckDB: JSON text, parsed once per body into a list of the values at every path.

    DuckDB's parser is laxer than msgspec's: it accepts ``NaN``, trailing commas and numbers
    beyond a double, and keeps the first of repeated keys.
    """

    name = "duckdb"

    def parsed(self, paths: dict[str, str]) -> str:
        raw = ", ".join(RAW_COLUMNS)
        listed = ", ".join(quote(p) for p in paths.values())
        picked = ", ".join(f"v[{i}] AS j_{name}" for i, name in enumerate(paths, start=1))
        # One parse of each body: TRY gives null where it is not JSON. Valid JSON is an object
        # exactly when its first character past JSON's whitespace is a brace.
        return (
            f"SELECT {raw}, v IS NOT NULL AS is_json,"
            f" COALESCE(v IS NOT NULL AND regexp_matches(body, {quote(_OBJECT_START)}), FALSE)"
            f" AS is_object, {picked} FROM ("
            f"SELECT {raw}, CASE WHEN body_base64 IS NULL"
            f" THEN TRY(json_extract(body, [{listed}])) END AS v FROM raw)"
        )

    def is_null(self, value: str) -> str:
        return f"({value} IS NULL OR json_type({value}) = 'NULL')"

    def has_type(self, value: str, kind: JsonType) -> str:
        return f"(json_type({value}) {_DUCK_TYPES[kind]})"

    def text(self, value: str) -> str:
        return f"({value} ->> '$')"

    def integer(self, value: str) -> str:
        return f"TRY_CAST(CAST({value} AS VARCHAR) AS BIGINT)"

    def boolean(self, value: str) -> str:
        return f"(CAST({value} AS VARCHAR) = 'true')"

    def text_to_bigint(self, text: str) -> str:
        return f"TRY_CAST({text} AS BIGINT)"

    def elements(self, value: str) -> str:
        return f"json_extract({value}, '$[*]')"

    def members(self, value: str) -> tuple[str, str]:
        return f"json_keys({value})", f"json_extract({value}, '$.*')"

    def member(self, value: str, key: str) -> str:
        return f"json_extract({value}, {quote('$.' + key)})"

    def every(self, items: str, var: str, condition: str) -> str:
        return f"COALESCE(list_bool_and(list_transform({items}, {var} -> {condition})), TRUE)"

    def transform(self, items: str, var: str, expression: str) -> str:
        return f"list_transform({items}, {var} -> {expression})"

    def keep(self, items: str, var: str, condition: str) -> str:
        return f"list_filter({items}, {var} -> {condition})"

    def contains(self, items: str, value: str) -> str:
        return f"list_contains({items}, {value})"

    def texts(self, items: Sequence[str]) -> str:
        return f"CAST([{', '.join(items)}] AS VARCHAR[])"

    def concat(self, *lists: str) -> str:
        result = lists[0]
        for items in lists[1:]:
            result = f"list_concat({result}, {items})"
        return result

    def join(self, items: str, separator: str) -> str:
        return f"array_to_string({items}, {quote(separator)})"

    def struct(self, fields: dict[str, str]) -> str:
        return "struct_pack(" + ", ".join(f'"{k}" := {v}' for k, v in fields.items()) + ")"

    def text_map(self, keys: str, values: str) -> str:
        # A repeated key keeps its last value, as msgspec and Spark do.
        last = f"NOT list_contains(({keys})[i + 1:], ({keys})[i])"
        return (
            f"MAP(list_filter({keys}, (k, i) -> {last}), list_filter({values}, (x, i) -> {last}))"
        )

    def size(self, items: str) -> str:
        return f"len({items})"

    def identifier(self, name: str) -> str:
        return f'"{name}"'

    def full_match(self, text: str, pattern: str) -> str:
        return f"regexp_full_match({text}, {quote(pattern)})"

    def seconds(self, timestamp: str) -> str:
        return f"(CAST(epoch_us({timestamp}) AS DOUBLE) / CAST(1000000 AS DOUBLE))"

    def event_time(self, seconds: str) -> str:
        return f"to_timestamp({seconds})"

    def event_date(self, seconds: str) -> str:
        return f"CAST(DATE '1970-01-01' + CAST({seconds} // 86400 AS INTEGER) AS DATE)"

    def values(self, rows: Sequence[Sequence[str]], columns: Sequence[str], alias: str) -> str:
        listed = ", ".join(f"({', '.join(row)})" for row in rows)
        return f"(VALUES {listed}) AS {alias}({', '.join(columns)})"


class SparkDialect(Dialect):
    """Spark SQL: each body parsed once into a ``VARIANT``.

    Run with ``spark.sql.variant.allowDuplicateKeys=true`` so that a repeated key keeps its last
    value, as msgspec does (by default Spark refuses such a body). Spark's parser ignores
    whatever follows the first JSON value of a body.
    """

    name = "spark"

    def parsed(self, paths: dict[str, str]) -> str:
        raw = ", ".join(RAW_COLUMNS)
        picked = ", ".join(
            f"CASE WHEN is_object THEN variant_get(doc, {quote(p)}) END AS j_{name}"
            for name, p in paths.items()
        )
        return (
            f"SELECT {raw}, is_json, is_object, {picked} FROM ("
            f"SELECT {raw}, doc, doc IS NOT NULL AS is_json,"
            " COALESCE(schema_of_variant(doc) LIKE 'OBJECT<%', FALSE) AS is_object FROM ("
            f"SELECT {raw}, CASE WHEN body_base64 IS NULL THEN try_parse_json(body) END AS doc"
            " FROM raw))"
        )

    def is_null(self, value: str) -> str:
        return f"({value} IS NULL OR is_variant_null({value}))"

    def has_type(self, value: str, kind: JsonType) -> str:
        return f"(schema_of_variant({value}) {_SPARK_TYPES[kind]})"

    def text(self, value: str) -> str:
        return f"variant_get({value}, '$', 'string')"

    def integer(self, value: str) -> str:
        return f"variant_get({value}, '$', 'bigint')"

    def boolean(self, value: str) -> str:
        return f"variant_get({value}, '$', 'boolean')"

    def text_to_bigint(self, text: str) -> str:
        return f"TRY_CAST({text} AS BIGINT)"

    def elements(self, value: str) -> str:
        return f"CAST({value} AS ARRAY<VARIANT>)"

    def members(self, value: str) -> tuple[str, str]:
        as_map = f"CAST({value} AS MAP<STRING, VARIANT>)"
        return f"map_keys({as_map})", f"map_values({as_map})"

    def member(self, value: str, key: str) -> str:
        return f"variant_get({value}, {quote('$.' + key)})"

    def every(self, items: str, var: str, condition: str) -> str:
        return f"forall({items}, {var} -> {condition})"

    def transform(self, items: str, var: str, expression: str) -> str:
        return f"transform({items}, {var} -> {expression})"

    def keep(self, items: str, var: str, condition: str) -> str:
        return f"filter({items}, {var} -> {condition})"

    def contains(self, items: str, value: str) -> str:
        return f"array_contains({items}, {value})"

    def texts(self, items: Sequence[str]) -> str:
        return f"CAST(array({', '.join(items)}) AS ARRAY<STRING>)"

    def concat(self, *lists: str) -> str:
        return f"concat({', '.join(lists)})"

    def join(self, items: str, separator: str) -> str:
        return f"array_join({items}, {quote(separator)})"

    def struct(self, fields: dict[str, str]) -> str:
        return "named_struct(" + ", ".join(f"{quote(k)}, {v}" for k, v in fields.items()) + ")"

    def text_map(self, keys: str, values: str) -> str:
        return f"map_from_arrays({keys}, {values})"

    def size(self, items: str) -> str:
        return f"size({items})"

    def identifier(self, name: str) -> str:
        return f"`{name}`"

    def full_match(self, text: str, pattern: str) -> str:
        # Java's ``$`` also matches before a final line break; ``\\z`` only at the very end
        # (written ``\\\\z`` in the literal: Spark unescapes backslashes in string literals).
        anchored = quote(f"^(?:{pattern})").removesuffix("'")
        return f"regexp_like({text}, {anchored}\\\\z')"

    def seconds(self, timestamp: str) -> str:
        return f"(CAST(unix_micros({timestamp}) AS DOUBLE) / CAST(1000000 AS DOUBLE))"

    def event_time(self, seconds: str) -> str:
        return f"timestamp_seconds({seconds})"

    def event_date(self, seconds: str) -> str:
        return f"date_from_unix_date(CAST({seconds} DIV 86400 AS INT))"

    def values(self, rows: Sequence[Sequence[str]], columns: Sequence[str], alias: str) -> str:
        listed = ", ".join(f"({', '.join(row)})" for row in rows)
        return f"(SELECT * FROM VALUES {listed} AS v({', '.join(columns)})) AS {alias}"
