"""The dashboard's queries run on a Databricks SQL warehouse instead of DuckDB.

Each panel's query is written once, in DuckDB's dialect (``dashboard.queries``); here it is
transpiled to Spark SQL by sqlglot, as the views are (``analytics.views.to_spark``), with the
tables and views qualified by the Unity Catalog schema, DuckDB's ``epoch`` kept to the
microsecond, and its ``?`` placeholders turned into named parameters, which the Statement
Execution API takes typed. The answer's text values are typed back by the columns' types.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ciolake.analytics.views import BASE_TABLES, to_spark, view_names
from ciolake.dashboard.app import DashboardDataError
from ciolake.databricks.workspace import (
    Parameter,
    Result,
    StatementFailedError,
    Warehouse,
    WorkspaceUnavailableError,
)

Row = dict[str, Any]

_INTEGERS = {"BYTE", "SHORT", "INT", "LONG"}
_NUMBERS = {"FLOAT", "DOUBLE", "DECIMAL"}


def spark_query(
    sql: str, params: Sequence[Any], *, catalog: str, schema: str
) -> tuple[str, list[Parameter]]:
    """``sql`` (DuckDB, ``?`` placeholders) as Spark SQL with ``:p0``, ``:p1``, ... and the
    typed parameters that go with it."""
    return _transpiled(sql, catalog, schema), [_parameter(i, v) for i, v in enumerate(params)]


@lru_cache(maxsize=256)
def _transpiled(sql: str, catalog: str, schema: str) -> str:
    names = set(BASE_TABLES) | set(view_names())
    return to_spark(_named_placeholders(sql), names=names, catalog=catalog, schema=schema)


def _named_placeholders(sql: str) -> str:
    # By the tokenizer, so that a '?' inside a string literal stays what it is.
    from sqlglot import Dialect  # noqa: PLC0415

    tokens = Dialect.get_or_raise("duckdb").tokenize(sql)
    marks = [t for t in tokens if t.token_type.name == "PLACEHOLDER" and t.text == "?"]
    for index, token in reversed(list(enumerate(marks))):
        sql = f"{sql[: token.start]}$p{index}{sql[token.end + 1 :]}"
    return sql


def _parameter(index: int, value: Any) -> Parameter:
    name = f"p{index}"
    if value is None:
        return Parameter(name, None)
    if isinstance(value, bool):
        return Parameter(name, "true" if value else "false", "BOOLEAN")
    if isinstance(value, int):
        return Parameter(name, str(value), "BIGINT")
    if isinstance(value, float):
        return Parameter(name, repr(value), "DOUBLE")
    if isinstance(value, datetime):
        return Parameter(name, value.isoformat(), "TIMESTAMP")
    if isinstance(value, date):
        return Parameter(name, value.isoformat(), "DATE")
    return Parameter(name, str(value))


def typed_rows(result: Result) -> list[Row]:
    """The rows of an answer, each value typed by its column's type, as the dashboard sends
    them (timestamps as ``YYYY-MM-DDTHH:MM:SSZ``, dates as ``YYYY-MM-DD``)."""
    kinds = result.types or ["STRING"] * len(result.columns)
    columns = list(zip(result.columns, kinds, strict=True))
    return [
        {name: _value(text, kind) for (name, kind), text in zip(columns, row, strict=True)}
        for row in result.rows
    ]


def _value(text: str | None, kind: str) -> Any:
    if text is None:
        return None
    if kind in _INTEGERS:
        return int(text)
    if kind in _NUMBERS:
        return float(Decimal(text)) if text not in ("NaN", "Infinity", "-Infinity") else None
    if kind == "BOOLEAN":
        return text.lower() == "true"
    if kind == "TIMESTAMP":
        return datetime.fromisoformat(text.replace(" ", "T")).strftime("%Y-%m-%dT%H:%M:%SZ")
    return text


class WarehouseReader:
    """The analytics views in ``catalog.schema``, read through a SQL warehouse."""

    def __init__(self, warehouse: Warehouse, *, catalog: str, schema: str) -> None:
        self._warehouse = warehouse
        self._catalog = catalog
        self._schema = schema

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query on the warehouse; JSON-ready rows.

        Raises:
            DashboardDataError: the workspace cannot be reached (``store_unavailable``) or the
                warehouse failed the query (``tables_unreadable``).
        """
        statement, parameters = spark_query(sql, params, catalog=self._catalog, schema=self._schema)
        try:
            result = self._warehouse.execute(statement, parameters)
        except WorkspaceUnavailableError as exc:
            raise DashboardDataError(str(exc), reason="store_unavailable") from exc
        except StatementFailedError as exc:
            raise DashboardDataError(str(exc), reason="tables_unreadable") from exc
        return typed_rows(result)

    def close(self) -> None:
        """Nothing to release: each query is one request."""
