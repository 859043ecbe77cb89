"""A Databricks workspace's SQL warehouse and Unity Catalog: the one importer of
``databricks-sdk``.

OAuth machine-to-machine with a service principal (``DATABRICKS_HOST``,
``DATABRICKS_CLIENT_ID``, ``DATABRICKS_CLIENT_SECRET``): the SDK fetches and refreshes the
token. Statements run through the SQL Statement Execution API on one warehouse, waited for
until they finish; a failed statement is a ``StatementFailedError`` with the warehouse's own
message, a workspace that cannot be reached a ``WorkspaceUnavailableError``. Unity Catalog
gives a table's storage location and, through credential vending, short-lived credentials
for it (``Catalog``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ciolake.errors import ConfigurationError, TerminalError, TransientError

HOST_ENV = "DATABRICKS_HOST"
CLIENT_ID_ENV = "DATABRICKS_CLIENT_ID"
CLIENT_SECRET_ENV = "DATABRICKS_CLIENT_SECRET"
WAREHOUSE_ENV = "DATABRICKS_WAREHOUSE_ID"
SIGN_IN_ENV = (HOST_ENV, CLIENT_ID_ENV, CLIENT_SECRET_ENV)
# The API waits up to 50 s for a statement before answering; then it is polled.
_WAIT = "30s"
_POLL_S = 1.0
_DONE = {"SUCCEEDED", "FAILED", "CANCELED", "CLOSED"}


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """Where to sign in and as whom (OAuth machine-to-machine)."""

    host: str
    client_id: str
    client_secret: str


def service_principal(environ: Mapping[str, str], purpose: str) -> ServicePrincipal:
    """The service principal of ``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID`` and
    ``DATABRICKS_CLIENT_SECRET`` in ``environ``.

    Raises:
        ConfigurationError: some are missing (named, after ``purpose``).
    """
    missing = [name for name in SIGN_IN_ENV if not environ.get(name, "").strip()]
    if missing:
        raise ConfigurationError(
            f"{purpose} signs in to Databricks as a service principal: set {', '.join(missing)}"
        )
    host, client_id, secret = (environ[name].strip() for name in SIGN_IN_ENV)
    return ServicePrincipal(host.rstrip("/"), client_id, secret)


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
    client = _client(host=host, client_id=client_id, client_secret=client_secret)
    return Warehouse(client, warehouse_id, timeout_s=timeout_s)


def connect_catalog(*, host: str, client_id: str, client_secret: str, timeout_s: float) -> Catalog:
    """The Unity Catalog of the workspace at ``host``, as the service principal ``client_id``;
    a call that gets no answer, or keeps failing, gives up after ``timeout_s`` (the SDK's
    own default retries for five minutes, a stall the committer cannot afford).

    Raises:
        ConfigurationError: the ``databricks`` extra is not installed.
        WorkspaceUnavailableError: the workspace cannot be reached or refused to sign in.
    """
    try:
        client = _client(
            host=host, client_id=client_id, client_secret=client_secret, timeout_s=timeout_s
        )
    except ConfigurationError:
        raise
    except Exception as exc:  # the SDK signs in at once, raising ValueError and others
        raise WorkspaceUnavailableError(_short(exc)) from exc
    return Catalog(client)


def _client(
    *, host: str, client_id: str, client_secret: str, timeout_s: float | None = None
) -> Any:
    try:
        from databricks.sdk import WorkspaceClient  # noqa: PLC0415
        from databricks.sdk.config import Config  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            "ciolake in Databricks needs databricks-sdk: pip install 'ciolake[databricks]'"
        ) from exc
    config = Config(
        host=host,
        client_id=client_id,
        client_secret=client_secret,
        auth_type="oauth-m2m",
        http_timeout_seconds=timeout_s,
        retry_timeout_seconds=None if timeout_s is None else max(int(timeout_s), 1),
    )
    return WorkspaceClient(config=config)


class TableNotInCatalogError(TerminalError):
    """Unity Catalog has no such table, or refuses to say (no privilege on it)."""


@dataclass(frozen=True, slots=True)
class CatalogTable:
    """What Unity Catalog says of a table: its id, kind (``EXTERNAL``, ``MANAGED``, ...),
    format (``DELTA``, ...) and storage location."""

    full_name: str
    table_id: str
    table_type: str
    data_source_format: str
    storage_location: str


@dataclass(frozen=True, slots=True)
class VendedCredentials:
    """Short-lived credentials for one table's storage, as object_store configuration keys
    (``aws_access_key_id``, ..., or ``azure_storage_sas_token``), and when they expire
    (seconds since the epoch)."""

    options: dict[str, str]
    expires_at: float


class Catalog:
    """Tables and their credentials, from a workspace's Unity Catalog."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def table(self, full_name: str) -> CatalogTable:
        """Table ``full_name`` (``catalog.schema.table``).

        Raises:
            TableNotInCatalogError: there is no such table (or no privilege to see it).
            WorkspaceUnavailableError: the workspace cannot be reached or refused the call.
        """
        from databricks.sdk.errors import NotFound, PermissionDenied  # noqa: PLC0415

        try:
            info = self._client.tables.get(full_name)
        except (NotFound, PermissionDenied) as exc:
            raise TableNotInCatalogError(f"{full_name}: {_short_cause(exc)}") from exc
        except Exception as exc:
            raise WorkspaceUnavailableError(_short(exc)) from exc
        return CatalogTable(
            full_name=full_name,
            table_id=info.table_id or "",
            table_type=info.table_type.value if info.table_type else "",
            data_source_format=info.data_source_format.value if info.data_source_format else "",
            storage_location=info.storage_location or "",
        )

    def credentials(self, table_id: str) -> VendedCredentials:
        """Read-and-write credentials for table ``table_id``'s storage (credential vending).

        Raises:
            TableNotInCatalogError: Unity Catalog refuses to vend them (no ``EXTERNAL USE
                SCHEMA`` privilege, external data access off in the metastore), or vends
                a kind of credential ciolake cannot use.
            WorkspaceUnavailableError: the workspace cannot be reached or refused the call.
        """
        from databricks.sdk.errors import NotFound, PermissionDenied  # noqa: PLC0415
        from databricks.sdk.service.catalog import TableOperation  # noqa: PLC0415

        try:
            vended = self._client.temporary_table_credentials.generate_temporary_table_credentials(
                operation=TableOperation.READ_WRITE, table_id=table_id
            )
        except (NotFound, PermissionDenied) as exc:
            raise TableNotInCatalogError(
                f"no credentials for table {table_id}: {_short_cause(exc)}"
            ) from exc
        except Exception as exc:
            raise WorkspaceUnavailableError(_short(exc)) from exc
        return VendedCredentials(_store_options(vended), (vended.expiration_time or 0) / 1000)


def _store_options(vended: Any) -> dict[str, str]:
    aws = vended.aws_temp_credentials
    if aws is not None and aws.access_key_id and aws.secret_access_key:
        options = {
            "aws_access_key_id": aws.access_key_id,
            "aws_secret_access_key": aws.secret_access_key,
        }
        if aws.session_token:
            options["aws_session_token"] = aws.session_token
        return options
    azure = vended.azure_user_delegation_sas
    if azure is not None and azure.sas_token:
        return {"azure_storage_sas_token": azure.sas_token}
    kinds = [k for k in ("gcp_oauth_token", "r2_temp_credentials") if getattr(vended, k, None)]
    raise TableNotInCatalogError(
        f"Unity Catalog vended {', '.join(kinds) or 'no credentials'}; ciolake writes through"
        " vended credentials to S3 and ADLS only: pass the tables' storage location as"
        " --tables-uri with credentials of its own instead"
    )


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
    return f"cannot use the Databricks workspace: {_short_cause(exc)}"


def _short_cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    # The SDK appends its whole configuration ("... . Config: host=..., Env: ...").
    return text[0].partition(". Config: ")[0] if text else type(exc).__name__
