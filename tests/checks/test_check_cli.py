"""``ciolake check`` end to end: a real server, its /metrics, its tables, and exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.checks.rules import (
    Status,
    Thresholds,
    http_get_text,
    metrics_findings,
    scrape_metrics,
)
from ciolake.events.samples import sample_event, schema_by_name
from tests.support import (
    body_of,
    free_port,
    running_server,
    signed_headers,
    wait_until_committed,
)

pytestmark = pytest.mark.e2e


def run_check(*args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "ciolake", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def findings_of(stdout: str) -> dict[str, dict[str, Any]]:
    payload = json.loads(stdout)
    return {f["check"] + ":" + f["subject"]: f for f in payload["findings"]}


def post_events(client: httpx.Client, url: str, *, good: int, forged: int) -> None:
    rng = random.Random(3)
    for _ in range(good):
        event = sample_event(schema_by_name("email_sent"), rng=rng, timestamp=int(time.time()))
        body = body_of(event)
        assert client.post(url, content=body, headers=signed_headers(body)).status_code == 200
    for _ in range(forged):
        body = b'{"event_id":"forged"}'
        headers = signed_headers(body, key="not-the-key")
        assert client.post(url, content=body, headers=headers).status_code == 401


def test_check_against_a_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as server, httpx.Client(timeout=10) as client:
        post_events(client, server.url, good=5, forged=20)
        wait_until_committed(server)
        metrics_url = f"{server.admin_base}/metrics"
        common = ("--data-dir", str(data_dir), "--metrics-url", metrics_url, "--json")

        # Two scrapes a second apart, with no forged request in between: nothing fires.
        code, out, err = run_check(*common, "--sample-seconds", "1")
        assert code == 0, out + err
        found = findings_of(out)
        assert json.loads(out)["fired"] is False
        assert found["signature_failures:"]["value"] == 0
        assert found["metrics_reachable:"]["status"] == "ok"
        assert found["freshness:"]["status"] == "ok"
        assert found["no_events:"]["value"] < 1
        assert found["quarantine_share:"]["value"] == 0

        # One scrape: ciolake's text format has no process start, so no rate.
        code, out, err = run_check(*common, "--sample-seconds", "0", "--no-events-minutes", "0")
        assert code == 1, out + err
        found = findings_of(out)
        assert found["signature_failures:"]["status"] == "unknown"
        assert {k for k, f in found.items() if f["status"] == "fired"} == {"no_events:"}

        # Forged requests between the two scrapes fire the signature check.
        def forge_meanwhile(seconds: float) -> None:
            post_events(client, server.url, good=0, forged=20)
            time.sleep(seconds)

        reading = scrape_metrics(
            metrics_url,
            sample_seconds=1,
            get=http_get_text,
            sleep=forge_meanwhile,
            clock=time.monotonic,
        )
        findings = metrics_findings(reading, Thresholds(), now=time.time())
        (failures,) = [f for f in findings if f.check == "signature_failures"]
        assert failures.status is Status.FIRED
        elapsed = reading.scrapes[1].at - reading.scrapes[0].at
        assert failures.value == pytest.approx(20 * 60 / elapsed, rel=0.01)


def test_unreachable_metrics_is_a_finding_not_a_crash(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    code, out, err = run_check("--data-dir", str(tmp_path), "--metrics-url", url, "--json")
    assert code == 1
    assert "Traceback" not in err
    found = findings_of(out)
    assert found["metrics_reachable:"]["status"] == "fired"
    assert url in found["metrics_reachable:"]["detail"]
    assert found["signature_failures:"]["status"] == "unknown"
    assert found["no_events:"]["status"] == "fired"  # nothing was ever stored here

    code, out, err = run_check("--data-dir", str(tmp_path), "--metrics-url", url)
    assert code == 1
    assert "FIRED" in out
    assert "metrics_reachable" in out
    assert "2 fired" in out


def test_tables_only_with_no_metrics(tmp_path: Path) -> None:
    code, out, _err = run_check(
        "--data-dir", str(tmp_path), "--no-metrics", "--json", "--no-events-minutes", "5"
    )
    assert code == 1
    found = findings_of(out)
    assert "metrics_reachable:" not in found
    assert found["no_events:"]["threshold"] == 5
