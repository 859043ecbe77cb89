"""``ciolake check`` scrapes the server's admin listener by default, with its token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ciolake.cli.check import default_metrics_url
from tests.support import make_settings

METRICS = 'ciolake_requests_rejected_total{status="401"} 0.0\nciolake_freshness_seconds 0.5\n'


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9100/metrics"),
        ("0.0.0.0", "http://127.0.0.1:9100/metrics"),
        ("::", "http://[::1]:9100/metrics"),
        ("::1", "http://[::1]:9100/metrics"),
        ("admin.internal", "http://admin.internal:9100/metrics"),
    ],
)
def test_the_default_metrics_url_is_the_admin_listener(host: str, url: str) -> None:
    settings = make_settings(
        Path(),
        data_dir=Path("data"),
        signing_keys=(),
        flush_interval_s=1.0,
        admin_host=host,
        admin_port=9100,
    )
    assert default_metrics_url(settings) == url


@contextmanager
def metrics_server() -> Iterator[tuple[int, list[str | None]]]:
    """/metrics on loopback, remembering each request's Authorization header."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = METRICS.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("token", ["s3cret-admin-token", None])
def test_check_scrapes_the_admin_port_and_sends_the_token(
    tmp_path: Path, token: str | None
) -> None:
    with metrics_server() as (port, seen):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
        env |= {"CIOLAKE_ADMIN_HOST": "0.0.0.0", "CIOLAKE_ADMIN_PORT": str(port)}
        if token:
            env["CIOLAKE_ADMIN_TOKEN"] = token
        command = ["check", "--data-dir", str(tmp_path), "--json", "--sample-seconds", "0"]
        done = subprocess.run(
            [sys.executable, "-m", "ciolake", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    findings = {f["check"]: f for f in json.loads(done.stdout)["findings"]}
    assert findings["metrics_reachable"]["status"] == "ok", done.stderr
    assert f"http://127.0.0.1:{port}/metrics" in findings["metrics_reachable"]["detail"]
    assert seen == [f"Bearer {token}" if token else None]
