"""``ciolake databricks setup``: ciolake's tables as Unity Catalog external tables, and its views.

Idempotent: the schema is created if missing; each table is described first, created at
``<location>/<table>`` with ciolake's columns, partitioning and table properties where it does
not exist, and checked where it does (at that location, and writable by delta-rs: no deletion
vectors, row tracking, in-commit timestamps, liquid clustering or other feature delta-rs cannot
write); every view is created or replaced. A table that fails the check stops the setup before
anything is created, with the statements that would fix it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from ciolake.analytics.views import spark_statements, view_names
from ciolake.databricks.workspace import StatementFailedError, Warehouse
from ciolake.derive.spark import external_table_ddl, managed_table_ddl
from ciolake.errors import InputError, TerminalError
from ciolake.lake.tables import ALL_SPECS, RAW_EVENTS
from ciolake.lake.transactions import REFUSED_FEATURES

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_FOUND = ("TABLE_OR_VIEW_NOT_FOUND", "not found", "does not exist")


class TableSetupError(TerminalError):
    """An existing table cannot take ciolake's writes as it is."""


@dataclass(frozen=True, slots=True)
class SetupStep:
    """One thing the setup did."""

    kind: Literal["schema", "table", "view"]
    name: str
    action: Literal["ensured", "created", "checked", "replaced"]


def setup(
    warehouse: Warehouse,
    *,
    catalog: str,
    schema: str,
    location: str,
    zerobus_table: str | None = None,
) -> list[SetupStep]:
    """Create (or check) ciolake's tables and views in ``catalog.schema``, and with
    ``zerobus_table`` the managed table ``serve --sink zerobus`` lands raw events in.

    Raises:
        InputError: ``catalog`` or ``schema`` is not a plain identifier.
        TableSetupError: an existing table is elsewhere or has a feature delta-rs cannot write.
        StatementFailedError, WorkspaceUnavailableError: as ``Warehouse.execute``.
    """
    names = [("catalog", catalog), ("schema", schema)]
    if zerobus_table is not None:
        names.append(("zerobus table", zerobus_table))
    for what, name in names:
        if not _IDENTIFIER.match(name):
            raise InputError(f"{what} {name!r}: use letters, digits and underscores")
    warehouse.execute(f"CREATE SCHEMA IF NOT EXISTS {catalog}.{schema}")
    steps = [SetupStep("schema", f"{catalog}.{schema}", "ensured")]
    base = location.rstrip("/")
    existing = {
        name: detail
        for name in ALL_SPECS
        if (detail := _describe(warehouse, f"{catalog}.{schema}.{name}")) is not None
    }
    problems = [
        problem
        for name, detail in existing.items()
        for problem in _problems(f"{catalog}.{schema}.{name}", f"{base}/{name}", detail)
    ]
    if problems:
        raise TableSetupError(
            "existing tables ciolake cannot write as they are, so nothing was created: "
            + "; ".join(problems)
        )
    for name, spec in ALL_SPECS.items():
        qualified = f"{catalog}.{schema}.{name}"
        if name in existing:
            steps.append(SetupStep("table", qualified, "checked"))
            continue
        warehouse.execute(external_table_ddl(spec, name=qualified, location=f"{base}/{name}"))
        steps.append(SetupStep("table", qualified, "created"))
    for view, statement in zip(
        view_names(), spark_statements(catalog=catalog, schema=schema), strict=True
    ):
        warehouse.execute(statement)
        steps.append(SetupStep("view", f"{catalog}.{schema}.{view}", "replaced"))
    if zerobus_table is not None:
        qualified = f"{catalog}.{schema}.{zerobus_table}"
        warehouse.execute(managed_table_ddl(ALL_SPECS[RAW_EVENTS], name=qualified))
        steps.append(SetupStep("table", qualified, "ensured"))
    return steps


def _describe(warehouse: Warehouse, qualified: str) -> dict[str, str | None] | None:
    try:
        result = warehouse.execute(f"DESCRIBE DETAIL {qualified}")
    except StatementFailedError as exc:
        if any(text.lower() in str(exc).lower() for text in _NOT_FOUND):
            return None
        raise
    records = result.records()
    return records[0] if records else None


def _problems(qualified: str, location: str, detail: dict[str, str | None]) -> list[str]:
    found = []
    at = _plain_path(detail.get("location") or "")
    if at != _plain_path(location):
        found.append(f"{qualified} is at {at}, not at {location} (pass --location accordingly)")
    fixes = _fixes(qualified, detail)
    if fixes:
        found.append(f"{qualified} has features delta-rs cannot write: run {'; '.join(fixes)}")
    return found


def _fixes(qualified: str, detail: dict[str, str | None]) -> list[str]:
    features = set(_json_list(detail.get("tableFeatures")))
    properties = _json_map(detail.get("properties"))
    fixes = []
    for feature, prop in REFUSED_FEATURES.items():
        enabled = prop.startswith("delta.") and properties.get(prop, "").lower() == "true"
        if feature in features or enabled:
            if prop.startswith("delta.") and feature != "clustering":
                fixes.append(f"ALTER TABLE {qualified} SET TBLPROPERTIES ('{prop}' = 'false')")
            fixes.append(f"ALTER TABLE {qualified} DROP FEATURE {feature}")
    if _json_list(detail.get("clusteringColumns")):
        fixes.insert(0, f"ALTER TABLE {qualified} CLUSTER BY NONE")
    return fixes


def _json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else []
    return [str(v) for v in value] if isinstance(value, list) else []


def _json_map(text: str | None) -> dict[str, str]:
    value = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _plain_path(location: str) -> str:
    """A location without ``file:`` and a trailing slash, as Spark and users spell it."""
    text = location.rstrip("/")
    for prefix in ("file://", "file:"):
        if text.startswith(prefix):
            return text.removeprefix(prefix)
    return text
