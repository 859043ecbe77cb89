"""A fake Databricks workspace on a loopback socket: OAuth for a service principal, the SQL
Statement Execution API and Unity Catalog's tables and credential vending, speaking what
databricks-sdk sends and reads.

- ``GET /.well-known/databricks-config``: the host's metadata, where the SDK (0.60 and later)
  finds the OIDC root;
- ``GET /oidc/.well-known/oauth-authorization-server``: the token endpoint;
- ``POST /oidc/v1/token``: client credentials (HTTP basic auth, as the SDK sends them) for an
  access token; wrong credentials get 401 ``invalid_client``;
- ``GET /api/2.0/sql/statements/{id}`` and ``POST .../{id}/cancel``: with ``running_polls``
  set, a statement answers ``PENDING``, then ``RUNNING`` to that many polls, then its result;
  a cancelled one is forgotten;
- ``POST /api/2.0/sql/statements/``: runs the statement, with its named ``parameters``
  (``:name`` markers, each a text value and a type), through the test's ``execute`` (a local
  Spark session: ``spark_warehouse``) and answers ``SUCCEEDED`` with a ``JSON_ARRAY`` result
  inline (every value as text, the columns' ``type_name`` in the manifest), or ``FAILED`` with
  the engine's error; a request without the access token gets 401, an unknown warehouse 404.
- ``GET /api/2.1/unity-catalog/tables/{full_name}``: a table of ``catalog_tables`` (the
  API's ``TableInfo``), else 404 ``TABLE_DOES_NOT_EXIST``;
- ``POST /api/2.0/unity-catalog/temporary-table-credentials``: the test's ``vend`` answers
  for the table id (``aws_temp_credentials`` and ``expiration_time``, in ms), else 403;
  with ``catalog_down``, both answer 503 ``TEMPORARILY_UNAVAILABLE``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import sqlglot
from sqlglot import exp


@dataclass(frozen=True)
class Answer:
    """A statement's result as the API gives it: column names and types, rows of text."""

    columns: list[str]
    types: list[str]
    rows: list[list[str | None]]


# Runs one statement with its parameters by name (typed Python values); raises with a message.
Execute = Callable[[str, Mapping[str, Any]], Answer]

_STATEMENTS = "/api/2.0/sql/statements"
_TABLES = "/api/2.1/unity-catalog/tables/"
_CREDENTIALS = "/api/2.0/unity-catalog/temporary-table-credentials"
# Vends credentials for a table id: the API's answer (``aws_temp_credentials``, ...).
Vend = Callable[[str], dict[str, Any]]


def catalog_table(
    full_name: str, storage_location: str, *, table_type: str = "EXTERNAL"
) -> dict[str, Any]:
    """A Unity Catalog table as ``GET /api/2.1/unity-catalog/tables/{full_name}`` answers it."""
    catalog, schema, name = full_name.split(".")
    return {
        "name": name,
        "catalog_name": catalog,
        "schema_name": schema,
        "full_name": full_name,
        "table_id": str(uuid.uuid5(uuid.NAMESPACE_URL, full_name)),
        "table_type": table_type,
        "data_source_format": "DELTA",
        "storage_location": storage_location,
    }


def no_warehouse(statement: str, parameters: Mapping[str, Any]) -> Answer:
    """The ``execute`` of a test that runs no statement."""
    raise AssertionError(f"this test's workspace has no warehouse: {statement[:80]}")


_SPARK_TYPE_NAMES = {"integer": "INT", "timestamp_ntz": "TIMESTAMP"}


def spark_warehouse(spark: Any) -> Execute:
    """A local Spark session as the warehouse (its ``spark_catalog`` for Unity Catalog)."""

    def execute(statement: str, parameters: Mapping[str, Any]) -> Answer:
        frame = spark.sql(_bound(statement, parameters) if parameters else statement)
        fields = frame.schema.fields
        types = [
            _SPARK_TYPE_NAMES.get(f.dataType.typeName(), f.dataType.typeName().upper())
            for f in fields
        ]
        rows = [[_text(v) for v in row] for row in frame.collect()]
        return Answer([f.name for f in fields], types, rows)

    return execute


def _bound(statement: str, parameters: Mapping[str, Any]) -> str:
    """``statement`` with each ``:name`` marker replaced by its value as a typed literal, as the
    warehouse binds them (Spark 4.2's own ``sql(args=...)`` leaves them unbound next to Delta's
    session extension)."""

    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.name in parameters:
            return _literal(parameters[node.name])
        return node

    tree = sqlglot.parse_one(statement, read="databricks")
    return tree.transform(bind).sql(dialect="databricks")


def _literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    if isinstance(value, dt.datetime):
        return exp.cast(exp.Literal.string(value.isoformat()), "TIMESTAMP")
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    return exp.Literal.string(str(value))


def _text(value: Any) -> str | None:
    """A value as the API's ``JSON_ARRAY`` format gives it: text; complex values as JSON."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    return str(value)


def _typed(parameter: Mapping[str, Any]) -> Any:
    """A parameter's text value as its declared type (what the warehouse binds)."""
    value, kind = parameter.get("value"), str(parameter.get("type") or "STRING").upper()
    if value is None:
        return None
    if kind in {"INT", "BIGINT", "LONG", "SMALLINT", "TINYINT"}:
        return int(value)
    if kind in {"DOUBLE", "FLOAT"}:
        return float(value)
    if kind == "BOOLEAN":
        return value.lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(value)
    if kind == "TIMESTAMP":
        return dt.datetime.fromisoformat(value)
    return str(value)


@dataclass
class FakeWorkspace:
    """What the fake knows and saw."""

    url: str
    client_id: str
    client_secret: str
    warehouse_id: str
    # The one access token the token endpoint issues (other fakes of the workspace check it).
    access_token: str
    statements: list[str] = field(default_factory=list)
    tokens_issued: int = 0
    # Polls a statement answers RUNNING to before its result, as a busy warehouse does.
    running_polls: int = 0
    cancelled: list[str] = field(default_factory=list)
    pending: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    # Unity Catalog: tables by full name, and the credentials vended (table ids, in order).
    catalog_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    vend: Vend | None = None
    vended: list[str] = field(default_factory=list)
    catalog_down: bool = False


@contextmanager
def fake_workspace(execute: Execute = no_warehouse) -> Iterator[FakeWorkspace]:
    """A fake workspace on a free loopback port for the duration of the with-block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    workspace = FakeWorkspace(
        url=f"http://127.0.0.1:{port}",
        client_id="ciolake-sp",
        client_secret=secrets.token_hex(16),
        warehouse_id="fake-warehouse",
        access_token=secrets.token_hex(16),
    )
    server.workspace = workspace  # type: ignore[attr-defined]
    server.execute = execute  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield workspace
    finally:
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._responded = False
        if self.path == "/.well-known/databricks-config":
            self._json(200, {"oidc_endpoint": f"{self._workspace().url}/oidc"})
        elif self.path == "/oidc/.well-known/oauth-authorization-server":
            base = self._workspace().url
            self._json(
                200,
                {
                    "issuer": f"{base}/oidc",
                    "authorization_endpoint": f"{base}/oidc/v1/authorize",
                    "token_endpoint": f"{base}/oidc/v1/token",
                },
            )
        elif self.path.startswith(_STATEMENTS) and self._authorized():
            self._poll(self.path.removeprefix(_STATEMENTS).strip("/"))
        elif self.path.startswith(_TABLES) and self._authorized() and self._catalog_up():
            self._table(unquote(self.path.removeprefix(_TABLES).split("?")[0]))
        elif not self._responded:
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no {self.path}"})

    def do_POST(self) -> None:
        self._responded = False
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/oidc/v1/token":
            self._token(body)
        elif self.path.rstrip("/") == _STATEMENTS and self._authorized():
            self._statement(body)
        elif self.path == _CREDENTIALS and self._authorized() and self._catalog_up():
            self._credentials(json.loads(body))
        elif self.path.endswith("/cancel") and self._authorized():
            statement_id = self.path.removeprefix(_STATEMENTS).removesuffix("/cancel").strip("/")
            self._workspace().cancelled.append(statement_id)
            self._workspace().pending.pop(statement_id, None)
            self._json(200, {})
        elif not self._responded:
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no {self.path}"})

    def _token(self, body: bytes) -> None:
        workspace = self._workspace()
        form = parse_qs(body.decode())
        expected = f"{workspace.client_id}:{workspace.client_secret}".encode()
        basic = "Basic " + base64.b64encode(expected).decode()
        if self.headers.get("Authorization") != basic or form.get("grant_type") != [
            "client_credentials"
        ]:
            self._json(401, {"error": "invalid_client", "error_description": "bad credentials"})
            return
        workspace.tokens_issued += 1
        token = self._workspace().access_token
        self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _authorized(self) -> bool:
        token = self._workspace().access_token
        if self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._json(401, {"error_code": "UNAUTHENTICATED", "message": "no valid token"})
        return False

    def _poll(self, statement_id: str) -> None:
        workspace = self._workspace()
        if statement_id not in workspace.pending:
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no statement {statement_id}"})
            return
        polls, document = workspace.pending[statement_id]
        if polls > 0:
            workspace.pending[statement_id] = (polls - 1, document)
            self._json(200, {"statement_id": statement_id, "status": {"state": "RUNNING"}})
            return
        del workspace.pending[statement_id]
        self._json(200, document)

    def _answer(self, statement_id: str, document: dict[str, Any]) -> None:
        # Answered at once, or PENDING and then RUNNING to ``running_polls`` polls first.
        workspace = self._workspace()
        if workspace.running_polls <= 0:
            self._json(200, document)
            return
        workspace.pending[statement_id] = (workspace.running_polls, document)
        self._json(200, {"statement_id": statement_id, "status": {"state": "PENDING"}})

    def _statement(self, body: bytes) -> None:
        request = json.loads(body)
        workspace = self._workspace()
        if request.get("warehouse_id") != workspace.warehouse_id:
            self._json(404, {"error_code": "NOT_FOUND", "message": "no such warehouse"})
            return
        statement = request["statement"]
        workspace.statements.append(statement)
        statement_id = secrets.token_hex(8)
        parameters = {p["name"]: _typed(p) for p in request.get("parameters") or []}
        try:
            answer = self.server.execute(statement, parameters)  # type: ignore[attr-defined]
        except Exception as exc:  # the engine's error, as the API reports a failed statement
            error = {"error_code": "BAD_REQUEST", "message": str(exc).splitlines()[0][:2000]}
            self._answer(
                statement_id,
                {"statement_id": statement_id, "status": {"state": "FAILED", "error": error}},
            )
            return
        names, rows = answer.columns, answer.rows
        columns = [
            {"name": name, "position": i, "type_name": kind, "type_text": kind}
            for i, (name, kind) in enumerate(zip(names, answer.types, strict=True))
        ]
        self._answer(
            statement_id,
            {
                "statement_id": statement_id,
                "status": {"state": "SUCCEEDED"},
                "manifest": {
                    "format": "JSON_ARRAY",
                    "schema": {"column_count": len(names), "columns": columns},
                    "total_chunk_count": 1,
                    "total_row_count": len(rows),
                    "chunks": [{"chunk_index": 0, "row_offset": 0, "row_count": len(rows)}],
                },
                "result": {
                    "chunk_index": 0,
                    "row_offset": 0,
                    "row_count": len(rows),
                    "data_array": rows,
                },
            },
        )

    def _catalog_up(self) -> bool:
        if not self._workspace().catalog_down:
            return True
        self._json(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try again"})
        return False

    def _table(self, full_name: str) -> None:
        table = self._workspace().catalog_tables.get(full_name)
        if table is None:
            message = f"Table '{full_name}' does not exist."
            self._json(404, {"error_code": "TABLE_DOES_NOT_EXIST", "message": message})
            return
        self._json(200, table)

    def _credentials(self, request: dict[str, Any]) -> None:
        workspace = self._workspace()
        table_id = request.get("table_id", "")
        known = {t["table_id"] for t in workspace.catalog_tables.values()}
        if workspace.vend is None or table_id not in known:
            message = "EXTERNAL USE SCHEMA is required to access this table's storage"
            self._json(403, {"error_code": "PERMISSION_DENIED", "message": message})
            return
        workspace.vended.append(table_id)
        self._json(200, workspace.vend(table_id))

    def _workspace(self) -> FakeWorkspace:
        workspace: FakeWorkspace = self.server.workspace  # type: ignore[attr-defined]
        return workspace

    _responded = False

    def _json(self, status: int, document: dict[str, Any]) -> None:
        self._responded = True
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
