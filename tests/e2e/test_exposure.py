"""Safe on the internet: real `ciolake serve` processes on loopback, both listeners.

The public port serves the webhook, /health and a bare /ready, and 404 for everything else; the
admin port serves /ready with reasons, /metrics and the dashboard, behind a token when one is
set. Readiness heals by itself, with no traffic, once a full disk has room again. Neither an
answer nor the log carries a request body, a signing key or an internal error text.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import (
    TEST_KEY,
    ServerProcess,
    body_of,
    free_port,
    running_server,
    sample_bodies,
    signed_headers,
    table_rows,
    tmpfs,
    wait_for,
    wait_until_committed,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

TOKEN = "admin-token-for-the-test-7d1f"
ADMIN_ONLY = [
    "/metrics",
    "/dashboard",
    "/dashboard/data/cohorts",
    "/dashboard/data/failures",
    "/dashboard/static/dashboard.js",
    "/dashboard/static/dashboard.css",
]


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * 65_536, b"\0"):  # then the last partial page, a byte at a time
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def admin_ready(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.admin_base}/ready", timeout=5)


def test_public_port_serves_only_the_webhook_and_the_admin_port_the_rest(
    tmp_path: Path,
) -> None:
    (body,) = sample_bodies(1, seed=41, timestamp=int(time.time()))
    with running_server(tmp_path / "data") as server, httpx.Client(timeout=10) as client:
        assert client.post(server.url, content=body, headers=signed_headers(body)).is_success
        wait_until_committed(server)
        for path in ADMIN_ONLY:
            public = client.get(server.base + path)
            assert public.status_code == 404, path
            assert client.get(server.admin_base + path).status_code == 200, path
        rows = client.get(server.admin_base + "/dashboard/data/events_per_day").json()["rows"]
        assert rows, "the admin port serves the dashboard's data"
        assert client.get(server.base + "/health").json()["status"] == "healthy"
        assert client.get(server.base + "/ready").json() == {"status": "ready"}
        assert client.get(server.admin_base + "/ready").json()["reason"] == "ready"
        assert client.get(server.base + "/webhooks/customerio").status_code == 405
        assert "listening" in server.log()
        assert f":{server.admin_port}" in server.log()


def test_with_a_token_the_admin_port_asks_for_it(tmp_path: Path) -> None:
    env = {"CIOLAKE_ADMIN_TOKEN": TOKEN}
    with running_server(tmp_path / "data", env=env) as server, httpx.Client(timeout=10) as client:
        bare = client.get(server.admin_base + "/metrics")
        bearer = client.get(
            server.admin_base + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        challenge = client.get(server.admin_base + "/dashboard")
        basic = client.get(server.admin_base + "/dashboard", auth=("anyone", TOKEN))
        data = client.get(server.admin_base + "/dashboard/data/cohorts", auth=("me", TOKEN))
        wrong = client.get(server.admin_base + "/dashboard", auth=("anyone", "guess"))
        public_ready = client.get(server.base + "/ready")
    assert bare.status_code == 401
    assert bearer.status_code == 200
    assert "ciolake_requests_received_total" in bearer.text
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].lower().startswith("basic")
    assert basic.status_code == 200
    assert data.status_code == 200
    assert wrong.status_code == 401
    assert public_ready.status_code == 200
    assert TOKEN not in server.log()


@pytest.mark.parametrize("command", ["serve", "dashboard"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_admin_beyond_loopback_without_a_token_is_refused(
    tmp_path: Path, command: str, host: str
) -> None:
    flag = "--admin-host" if command == "serve" else "--host"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    env["CIOLAKE_SIGNING_KEYS"] = TEST_KEY
    result = subprocess.run(
        [sys.executable, "-m", "ciolake", command, flag, host, "--data-dir", tmp_path / "d"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "CIOLAKE_ADMIN_TOKEN" in line
    assert host in line
    assert "Traceback" not in stderr


def test_admin_on_all_interfaces_with_a_token_starts(tmp_path: Path) -> None:
    env = {"CIOLAKE_ADMIN_TOKEN": TOKEN, "CIOLAKE_ADMIN_HOST": "0.0.0.0"}
    with running_server(tmp_path / "data", env=env) as server:
        bare = httpx.get(f"{server.admin_base}/ready", timeout=5)
        authorized = httpx.get(f"{server.admin_base}/ready", timeout=5, auth=("x", TOKEN))
    assert bare.status_code == 401
    assert authorized.status_code == 200


def test_readiness_heals_without_traffic_once_the_full_disk_has_room(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with tmpfs(data_dir / "journal", size="2m") as journal:
        with running_server(data_dir) as server, httpx.Client(timeout=10) as client:
            bodies = sample_bodies(2, seed=43, timestamp=int(time.time()))
            filler = fill(journal)
            refused = client.post(server.url, content=bodies[0], headers=signed_headers(bodies[0]))
            assert refused.status_code == 503
            assert refused.json() == {"error": "journal_unavailable"}
            public = client.get(server.base + "/ready")
            assert public.status_code == 503
            assert public.json() == {"status": "unavailable"}
            reason = admin_ready(server).json()["reason"]
            assert "No space left on device" in reason

            filler.unlink()  # space comes back; no request arrives from here on
            healed_after = wait_for(
                lambda: admin_ready(server).status_code == 200, 15, "ready again"
            )
            assert client.get(server.base + "/ready").status_code == 200
            accepted = client.post(server.url, content=bodies[1], headers=signed_headers(bodies[1]))
            assert accepted.status_code == 200
            wait_until_committed(server)
        assert healed_after < 10
        stored = [row["body"].encode() for row in table_rows(data_dir, "raw_events", "body")]
        assert stored == [bodies[1]], "the refused delivery is not stored, the accepted one is"


def test_readiness_heals_when_a_failing_commit_succeeds_on_retry(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    bodies = sample_bodies(20, seed=44, timestamp=int(time.time()))
    with tmpfs(data_dir / "tables", size="24m") as tables:
        with running_server(data_dir) as server, httpx.Client(timeout=10) as client:
            filler = fill(tables)
            for body in bodies:
                assert client.post(
                    server.url, content=body, headers=signed_headers(body)
                ).is_success
            wait_for(
                lambda: "commits failing" in admin_ready(server).json()["reason"],
                30,
                "commits reported failing",
            )
            assert client.get(server.base + "/ready").json() == {"status": "unavailable"}
            filler.unlink()
            wait_for(lambda: admin_ready(server).status_code == 200, 45, "ready again")
            wait_until_committed(server)
        raw = sorted(row["body"].encode() for row in table_rows(data_dir, "raw_events", "body"))
        assert raw == sorted(bodies), "every delivery answered 200 is stored, once"


def test_no_answer_or_log_line_carries_a_body_a_key_or_an_error_text(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    keys_file = tmp_path / "signing-keys"
    old_key, new_key = "old-key-never-logged-41b2", "new-key-never-logged-77c9"
    keys_file.write_text(f"# rotated 2026-12-01\n{new_key}\n\n  {old_key}  \n")
    canary = "canary-recipient-5521@example.com"
    event = {
        "event_id": "01JCANARY00000000000000001",
        "object_type": "email",
        "metric": "sent",
        "timestamp": int(time.time()),
        "data": {"delivery_id": "RCANARY", "recipient": canary, "identifiers": {"id": "c"}},
    }
    body = body_of(event)
    stale = body_of({**event, "event_id": "01JCANARY00000000000000002"})
    not_json = f"not json {canary}".encode()
    env = {"CIOLAKE_SIGNING_KEYS": "", "CIOLAKE_SIGNING_KEYS_FILE": str(keys_file)}
    answers: dict[str, int] = {}
    with (
        tmpfs(data_dir / "journal", size="2m") as journal,
        running_server(data_dir, env=env) as server,
        httpx.Client(timeout=10) as client,
    ):

        def post(name: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
            response = client.post(server.url, content=content, headers=headers)
            answers[name] = response.status_code
            assert canary not in response.text
            assert "/" not in response.text.replace("application/json", "")
            return response

        post("new key", body, signed_headers(body, key=new_key))
        post("old key, again", body, signed_headers(body, key=old_key))
        post("stale", stale, signed_headers(stale, key=new_key, timestamp=1))
        post("not json", not_json, signed_headers(not_json, key=new_key))
        post("wrong key", body, signed_headers(body, key="wrong"))
        post("unsigned", body, {"Content-Type": "application/json"})
        big = body + b" " * (4_194_304 + 1 - len(body))
        post("too big", big, signed_headers(big, key=new_key))
        answers["404"] = client.get(server.base + "/dashboard/data/failures").status_code
        answers["405"] = client.get(server.url).status_code
        filler = fill(journal)
        # Over a page: the segment's last page may still have room for a small record.
        padded = not_json + b" " * 16_384
        post("disk full", padded, signed_headers(padded, key=new_key))
        filler.unlink()
        wait_for(lambda: admin_ready(server).status_code == 200, 15, "ready again")
        wait_until_committed(server)
        log = server.log()
    assert answers == {
        "new key": 200,
        "old key, again": 200,
        "stale": 200,
        "not json": 200,
        "wrong key": 401,
        "unsigned": 401,
        "too big": 413,
        "404": 404,
        "405": 405,
        "disk full": 503,
    }
    assert "request rejected" in log, "the rejections are logged"
    for secret in (canary, new_key, old_key, "RCANARY", "not json"):
        assert secret not in log, secret
    assert base64.b64encode(new_key.encode()).decode() not in log
    reasons = sorted(row["reason"] for row in table_rows(data_dir, "quarantine", "reason"))
    assert reasons == ["invalid_json", "stale_timestamp"]


def test_signing_keys_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    env["CIOLAKE_SIGNING_KEYS_FILE"] = str(tmp_path / "missing-keys")
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "ciolake", "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith("error: CIOLAKE_SIGNING_KEYS_FILE")
    assert "missing-keys" in stderr
    assert "Traceback" not in stderr
