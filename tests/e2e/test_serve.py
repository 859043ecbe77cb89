"""End to end over a real socket: `ciolake serve` as a subprocess, every schema and every answer,
SIGTERM, and the tables read back by DuckDB's delta extension."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.lake.tables import CHANNEL_TABLES
from tests.support import (
    TEST_KEY,
    ServerProcess,
    body_of,
    metric_value,
    running_server,
    signed_headers,
    table_rows,
    wait_until_committed,
)

pytestmark = pytest.mark.e2e

EXAMPLES = json.loads((Path(__file__).parents[1] / "data" / "example-payloads.json").read_text())


def expected_table(event: dict[str, Any]) -> str:
    metric = event["metric"]
    if metric in ("subscribed", "cio_subscription_preferences_changed"):
        return "customer_events"
    if metric == "unsubscribed" and "delivery_id" not in event["data"]:
        return "customer_events"
    return f"{event['object_type']}_events"


def post(client: httpx.Client, server: ServerProcess, body: bytes, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", None) or signed_headers(body, **kwargs)
    return client.post(server.url, content=body, headers=headers)


def every_schema_events(now: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    events = [
        sample_event(schema_by_name(name), rng=rng, timestamp=now - 86_400 * (i % 3))
        for i, (name, _ot, _m) in enumerate(schema_keys())
    ]
    for origin in (
        "campaign",
        "broadcast",
        "api_triggered_broadcast",
        "newsletter",
        "transactional",
    ):
        events.append(
            sample_event(schema_by_name("email_delivered"), rng=rng, timestamp=now, origin=origin)
        )
    return events


def example_events() -> list[dict[str, Any]]:
    # The examples share event ids across keys; give each its own so each lands.
    events = []
    for group in ("spec_examples", "rudder_transformer_test_inputs"):
        for key, event in EXAMPLES[group].items():
            events.append({**event, "event_id": f"EX-{group[:4]}-{key}"})
    return events


def test_every_schema_and_every_answer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    now = int(time.time())
    typed = every_schema_events(now) + example_events()
    extra_fields = typed[0] | {"event_id": "EXTRA-FIELDS", "future_top": {"a": [1, 2]}}
    extra_fields["data"] = {**typed[0]["data"], "brand_new": "kept", "template_id": 77}
    typed.append(extra_fields)
    unknown_metric = {
        **EXAMPLES["spec_examples"]["sms_sent"],
        "event_id": "UNKNOWN-METRIC",
        "metric": "beamed",
    }
    missing_fields = {
        **EXAMPLES["rudder_transformer_test_inputs"]["email_clicked_broadcast"],
        "event_id": "MISSING",
    }
    missing_fields["data"] = {
        k: v for k, v in missing_fields["data"].items() if k not in ("href", "subject")
    }
    typed += [unknown_metric, missing_fields]
    quarantined = {
        b"this is not json": "invalid_json",
        b'{"object_type":"email","metric":"sent"}': "invalid_envelope",
        body_of(
            {
                "event_id": "FAX-1",
                "object_type": "fax",
                "metric": "sent",
                "timestamp": now,
                "data": {},
            }
        ): "unknown_object_type",
    }
    stale_event = sample_event(schema_by_name("sms_delivered"), rng=random.Random(3), timestamp=now)
    log_secret_probe = "never-log-this-key"

    env = {
        "CIOLAKE_MAX_BODY_BYTES": "65536",
        "CIOLAKE_SIGNING_KEYS": f"{TEST_KEY},{log_secret_probe}",
    }
    with running_server(data_dir, env=env) as server, httpx.Client(timeout=10) as client:
        for index, event in enumerate(typed):
            response = post(
                client, server, body_of(event), key=TEST_KEY if index % 2 else log_secret_probe
            )
            assert response.status_code == 200, (event["event_id"], response.text)
            assert response.json() == {"status": "accepted"}
        # The old path works too, and a retried event is answered 200 again.
        retried = body_of(typed[0])
        assert (
            client.post(
                server.base + "/webhook/customerio",
                content=retried,
                headers=signed_headers(retried),
            ).status_code
            == 200
        )
        assert post(client, server, retried).status_code == 200
        for body in quarantined:
            assert post(client, server, body).status_code == 200
        stale_body = body_of(stale_event)
        assert post(client, server, stale_body, timestamp=now - 3600).status_code == 200
        assert post(client, server, stale_body, timestamp=now + 3600).status_code == 200

        rejected = {
            "missing_headers": post(
                client, server, b"{}", headers={"Content-Type": "application/json"}
            ),
            "malformed_signature": post(
                client, server, b"{}", headers={**signed_headers(b"{}"), "X-CIO-Signature": "nope"}
            ),
            "malformed_timestamp": post(
                client, server, b"{}", headers={**signed_headers(b"{}"), "X-CIO-Timestamp": "soon"}
            ),
            "signature_mismatch": post(client, server, b'{"x":1}', key="some-other-key"),
        }
        for reason, response in rejected.items():
            assert response.status_code == 401, reason
            assert response.json()["error"] == reason
        too_big = b'{"pad":"' + b"x" * 70_000 + b'"}'
        big_answer = post(client, server, too_big)
        assert big_answer.status_code == 413
        assert client.get(server.base + "/health").json()["status"] == "healthy"
        assert client.get(server.admin_base + "/ready").status_code == 200
        wait_until_committed(server)
        metrics = client.get(server.admin_base + "/metrics").text
        stopping = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - stopping < 15

    accepted = len(typed) + 2 + len(quarantined) + 2
    assert metric_value(metrics, "ciolake_requests_received_total") == accepted + len(rejected) + 1
    assert metric_value(metrics, "ciolake_deliveries_journaled_total") == accepted
    assert metric_value(metrics, "ciolake_events_duplicate_total") == 2
    for reason in rejected:
        assert (
            metric_value(
                metrics, "ciolake_requests_rejected_total", f'reason="{reason}",status="401"'
            )
            == 1
        )
    assert (
        metric_value(
            metrics, "ciolake_requests_rejected_total", 'reason="body_too_large",status="413"'
        )
        == 1
    )
    for reason in ("invalid_json", "invalid_envelope", "unknown_object_type"):
        assert metric_value(metrics, "ciolake_events_quarantined_total", f'reason="{reason}"') == 1
    assert (
        metric_value(metrics, "ciolake_events_quarantined_total", 'reason="stale_timestamp"') == 2
    )
    assert "ciolake_journal_fsync_seconds_count" in metrics
    assert "ciolake_freshness_seconds" in metrics

    # raw_events: every authentic delivery, duplicates included; nothing from 401/413.
    raw = table_rows(data_dir, "raw_events", "event_id, body, metric, x_cio_timestamp")
    assert len(raw) == accepted
    assert sum(1 for r in raw if r["event_id"] == typed[0]["event_id"]) == 3
    assert {r["body"] for r in raw} >= {b.decode() for b in quarantined}

    # Channel tables: one row per event id, routed, typed, payload intact.
    stored: dict[str, dict[str, Any]] = {}
    for table in CHANNEL_TABLES:
        for row in table_rows(data_dir, table, "*, CAST(event_date AS VARCHAR) AS day"):
            assert row["event_id"] not in stored
            stored[row["event_id"]] = {**row, "table": table}
    assert set(stored) == {e["event_id"] for e in typed}
    for event in typed:
        row = stored[event["event_id"]]
        assert row["table"] == expected_table(event), event["event_id"]
        assert json.loads(row["payload"]) == event
        assert row["timestamp"] == event["timestamp"]
        assert row["day"] == time.strftime("%Y-%m-%d", time.gmtime(event["timestamp"]))
        assert row["delivery_id"] == event["data"].get("delivery_id")
        assert row["campaign_id"] == event["data"].get("campaign_id")
        identifiers = event["data"].get("identifiers") or {}
        assert row["identifier_id"] == identifiers.get("id")
        assert row["identifier_email"] == identifiers.get("email")
    assert stored["UNKNOWN-METRIC"]["spec_violations"] == ["unknown_metric:beamed"]
    assert set(stored["MISSING"]["spec_violations"]) == {
        "missing_field:data.href",
        "missing_field:data.subject",
    }
    assert stored["EXTRA-FIELDS"]["template_id"] == 77
    assert json.loads(stored["EXTRA-FIELDS"]["payload"])["data"]["brand_new"] == "kept"
    assert all(stored[e["event_id"]]["spec_violations"] == [] for e in every_schema_events(now))

    email = table_rows(
        data_dir,
        "email_events",
        "subject, proxied, machine, headers, origin",
        "WHERE metric IN ('opened','clicked','sent')",
    )
    assert any(r["proxied"] is not None for r in email)
    assert any(r["subject"] for r in email)
    push = table_rows(data_dir, "push_events", "recipients", "WHERE metric = 'sent'")
    assert push[0]["recipients"][0]["device_platform"] in ("ios", "android")
    sms = table_rows(data_dir, "sms_events", '"to", inbound_event_id', "WHERE metric = 'replied'")
    assert sms[0]["to"]
    assert sms[0]["inbound_event_id"]
    customer = table_rows(
        data_dir, "customer_events", "email_address", "WHERE metric = 'subscribed'"
    )
    assert all(r["email_address"] for r in customer)
    origins = {
        r["origin"]
        for r in table_rows(data_dir, "email_events", "origin", "WHERE metric = 'delivered'")
    }
    assert origins >= {
        "campaign",
        "broadcast",
        "api_triggered_broadcast",
        "newsletter",
        "transactional",
    }

    quarantine = table_rows(data_dir, "quarantine", "reason, detail, event_id, body")
    reasons = sorted(q["reason"] for q in quarantine)
    assert reasons == sorted([*quarantined.values(), "stale_timestamp", "stale_timestamp"])
    assert all(q["detail"] for q in quarantine)
    assert [q["event_id"] for q in quarantine if q["reason"] == "unknown_object_type"] == ["FAX-1"]

    # Tables are partitioned by date only.
    assert {p.name.split("=")[0] for p in (data_dir / "tables" / "email_events").glob("*=*")} == {
        "event_date"
    }
    assert {p.name.split("=")[0] for p in (data_dir / "tables" / "raw_events").glob("*=*")} == {
        "received_date"
    }

    # One log line per rejected request, with its reason, and never a key.
    lines = server.log_lines()
    rejections = [line for line in lines if line.get("msg") == "request rejected"]
    assert sorted(line["reason"] for line in rejections) == sorted([*rejected, "body_too_large"])
    assert TEST_KEY not in server.log()
    assert log_secret_probe not in server.log()


def test_serve_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ciolake", "serve", "--data-dir", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "CIOLAKE_SIGNING_KEYS" in result.stderr


def test_dev_key_is_generated_once_and_send_test_uses_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support import start_server

    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    data_dir = tmp_path / "data"
    server = start_server(data_dir, env={**env, "CIOLAKE_SIGNING_KEYS": ""}, args=("--dev-key",))
    try:
        key_file = data_dir / "dev-signing-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert key in server.log()
        assert "send-test" in server.log()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ciolake",
                "send-test",
                "--url",
                server.url,
                "--data-dir",
                str(data_dir),
                "--all",
            ],
            env={**env, "CIOLAKE_SIGNING_KEYS": ""},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "69" in result.stderr
        wait_until_committed(server)
    finally:
        assert server.stop() == 0
    total = sum(len(table_rows(data_dir, t, "event_id")) for t in CHANNEL_TABLES)
    assert total == 69
    listing = subprocess.run(
        [sys.executable, "-m", "ciolake", "tables", "--data-dir", str(data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = {t["name"]: t for t in json.loads(listing.stdout)}
    assert summary["raw_events"]["rows"] == 69
    assert sum(summary[t]["rows"] for t in CHANNEL_TABLES) == 69
    restarted = start_server(data_dir, env={**env, "CIOLAKE_SIGNING_KEYS": ""}, args=("--dev-key",))
    try:
        assert key_file.read_text().strip() == key
    finally:
        restarted.stop()
