"""A fake Databricks workspace on a loopback socket: OAuth for a service principal and the SQL
Statement Execution API, speaking what databricks-sdk sends and reads.

- ``GET /.well-known/databricks-config``: the host's metadata, where the SDK (0.60 and later)
  finds the OIDC root;
- ``GET /oidc/.well-known/oauth-authorization-server``: the token endpoint;
- ``POST /oidc/v1/token``: client credentials (HTTP basic auth, as the SDK sends them) for an
  access token; wrong credentials get 401 ``invalid_client``;
- ``POST /api/2.0/sql/statements/``: runs the statement with the test's ``execute`` (a local
  Spark session) and answers ``SUCCEEDED`` with a ``JSON_ARRAY`` result inline, or ``FAILED``
  with the engine's error; a request without the access token gets 401, an unknown warehouse
  404.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

# Runs one statement; returns (column names, rows of text or None), or raises with a message.
Execute = Callable[[str], tuple[list[str], list[list[str | None]]]]


@dataclass
class FakeWorkspace:
    """What the fake knows and saw."""

    url: str
    client_id: str
    client_secret: str
    warehouse_id: str
    statements: list[str] = field(default_factory=list)
    tokens_issued: int = 0


@contextmanager
def fake_workspace(execute: Execute) -> Iterator[FakeWorkspace]:
    """A fake workspace on a free loopback port for the duration of the with-block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    workspace = FakeWorkspace(
        url=f"http://127.0.0.1:{port}",
        client_id="ciolake-sp",
        client_secret=secrets.token_hex(16),
        warehouse_id="fake-warehouse",
    )
    server.workspace = workspace  # type: ignore[attr-defined]
    server.execute = execute  # type: ignore[attr-defined]
    server.token = secrets.token_hex(16)  # type: ignore[attr-defined]
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
        else:
            self._json(404, {"error_code": "NOT_FOUND", "message": f"no {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/oidc/v1/token":
            self._token(body)
        elif self.path.rstrip("/") == "/api/2.0/sql/statements":
            self._statement(body)
        else:
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
        token = self.server.token  # type: ignore[attr-defined]
        self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def _statement(self, body: bytes) -> None:
        token = self.server.token  # type: ignore[attr-defined]
        if self.headers.get("Authorization") != f"Bearer {token}":
            self._json(401, {"error_code": "UNAUTHENTICATED", "message": "no valid token"})
            return
        request = json.loads(body)
        workspace = self._workspace()
        if request.get("warehouse_id") != workspace.warehouse_id:
            self._json(404, {"error_code": "NOT_FOUND", "message": "no such warehouse"})
            return
        statement = request["statement"]
        workspace.statements.append(statement)
        statement_id = secrets.token_hex(8)
        try:
            names, rows = self.server.execute(statement)  # type: ignore[attr-defined]
        except Exception as exc:  # the engine's error, as the API reports a failed statement
            error = {"error_code": "BAD_REQUEST", "message": str(exc).splitlines()[0][:2000]}
            self._json(
                200,
                {"statement_id": statement_id, "status": {"state": "FAILED", "error": error}},
            )
            return
        columns = [
            {"name": name, "position": i, "type_name": "STRING", "type_text": "STRING"}
            for i, name in enumerate(names)
        ]
        self._json(
            200,
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

    def _workspace(self) -> FakeWorkspace:
        workspace: FakeWorkspace = self.server.workspace  # type: ignore[attr-defined]
        return workspace

    def _json(self, status: int, document: dict[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
