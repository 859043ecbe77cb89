"""A Databricks workspace's SQL warehouse: the one importer of ``databricks-sdk``.

OAuth machine-to-machine with a service principal (``DATABRICKS_HOST``,
``DATABRICKS_CLIENT_ID``, ``DATABRICKS_CLIENT_SECRET``): the SDK fetches and refreshes the
token. Statements run through the SQL Statement Execution API on one warehouse, waited for
until they finish; a failed statement is a ``StatementFailedError`` with the warehouse's own
message, a workspace that cannot be reached a ``WorkspaceUnavailableError``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ciolake.errors import ConfigurationError, TerminalError, TransientError

HOST_ENV = "DATABRICKS_HOST"
CLIENT_ID_ENV = "DATABRICKS_CLIENT_ID"
CLIENT_SECRET_ENV = "DATABRICKS_CLIENT_SECRET"
WAREHOUSE_ENV = "DATABRICKS_WAREHOUSE_ID"
# The API waits up to 50 s for a statement before answering; then it is polled.
_WAIT = "30s"
_POLL_S = 1.0
_DONE = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}


class StatementFailedError(TerminalError):
    """The warehouse refused or failed a statement."""


class WorkspaceUnavailableError(TransientError):
    """The workspace could not be reached, or refused the credentials."""


@dataclass(frozen=True, slots=True)
class Parameter:
    """A named parameter of a statement (``:name`` in its text), its value as text and its SQL
    type (``STRING``, ``DATE``, ``INT``, ...)."""

    name: str
    value: str | None
    type: str = "STRING"


@dataclass(frozen=True, slots=True)
class Result:
    """A statement's columns, their types (the API's ``type_name``: ``LONG``, ``DOUBLE``,
    ``DATE``, ``TIMESTAMP``, ...) and its rows (every value as text, as the API returns it)."""

    columns: list[str]
    rows: list[list[str | None]]
    types: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, str | None]]:
        """The rows as column-name mappings."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Warehouse:
    """Runs statements on one SQL warehouse of a workspace."""

    def __init__(self, client: Any, warehouse_id: str, *, timeout_s: float) -> None:
        self._client = client
        self._warehouse_id = warehouse_id
        self._timeout_s = timeout_s

    def execute(self, statement: str, parameters: Sequence[Parameter] = ()) -> Result:
        """Run ``statement`` with its named ``parameters`` and wait for it.

        Raises:
            StatementFailedError: the warehouse failed it (the message is the warehouse's).
            WorkspaceUnavailableError: the workspace cannot be reached or refused the call.
        """
        sql = _sql_module()
        try:
            response = self._client.statement_execution.execute_statement(
                statement=statement,
                parameters=[
                    sql.StatementParameterListItem(name=p.name, value=p.value, type=p.type)
                    for p in parameters
                ]
                or None,
                warehouse_id=self._warehouse_id,
                wait_timeout=_WAIT,
                on_wait_timeout=sql.ExecuteStatementRequestOnWaitTimeout.CONTINUE,
            )
            response = self._wait(response)
        except Exception as exc:
            if isinstance(exc, StatementFailedError):
                raise
            raise WorkspaceUnavailableError(_short(exc)) from exc
        return _result(statement, response)

    def _wait(self, response: Any) -> Any:
        deadline = time.monotonic() + self._timeout_s
        while response.status is None or response.status.state.value not in _DONE:
            if time.monotonic() > deadline:
                self._client.statement_execution.cancel_execution(response.statement_id)
                raise StatementFailedError(
                    f"statement still running after {self._timeout_s:.0f}s; cancelled"
                )
            time.sleep(_POLL_S)
            response = self._client.statement_execution.get_statement(response.statement_id)
        return response


def connect(
    *, host: str, client_id: str, client_secret: str, warehouse_id: str, timeout_s: float = 300
) -> Warehouse:
    """A warehouse of the workspace at ``host``, as the service principal ``client_id``.

    Raises:
        ConfigurationError: the ``databricks`` extra is not installed.
    """
    try:
        from databricks.sdk import WorkspaceClient  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            "ciolake databricks needs databricks-sdk: pip install 'ciolake[databricks]'"
        ) from exc
    client = WorkspaceClient(
        host=host, client_id=client_id, client_secret=client_secret, auth_type="oauth-m2m"
    )
    return Warehouse(client, warehouse_id, timeout_s=timeout_s)


def _sql_module() -> Any:
    from databricks.sdk.service import sql  # noqa: PLC0415

    return sql


def _result(statement: str, response: Any) -> Result:
    state = response.status.state.value
    if state != "SUCCEEDED":
        error = response.status.error
        message = error.message if error is not None and error.message else state
        first = statement.split("\n", 1)[0][:120]
        raise StatementFailedError(f"{message} (in: {first})")
    manifest = response.manifest
    described = (manifest.schema.columns or []) if manifest and manifest.schema else []
    rows = response.result.data_array if response.result and response.result.data_array else []
    types = [c.type_name.value if c.type_name else "STRING" for c in described]
    return Result([c.name for c in described], [list(row) for row in rows], types)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"cannot use the Databricks workspace: {text[0] if text else type(exc).__name__}"
