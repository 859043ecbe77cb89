"""The floor: the naive design of a typical guide, one Delta commit per event.

A Flask handler verifies the HMAC signature, parses the JSON and calls
``deltalake.write_deltalake(table, one_row, mode="append")`` before answering 200. Served with
``uvicorn --interface wsgi bench.baselines.floor:app`` (uvicorn's WSGI adapter runs the handler
on a pool of 10 threads per worker), so the HTTP stack is the same as ciolake's.

Environment: ``BENCH_FLOOR_TABLE_URI`` (the table, created by the harness beforehand) and
``BENCH_SIGNING_KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake
from flask import Flask, request

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("object_type", pa.string()),
        ("metric", pa.string()),
        ("timestamp", pa.int64()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("data", pa.string()),
    ]
)

app = Flask(__name__)


@app.post("/webhooks/customerio")
def receive_webhook() -> tuple[dict[str, str], int]:
    """Verify, then append this one event to the Delta table (one commit per request)."""
    body = request.get_data()
    timestamp = request.headers.get("X-CIO-Timestamp", "")
    signature = request.headers.get("X-CIO-Signature", "")
    key = os.environ["BENCH_SIGNING_KEY"].encode()
    expected = hmac.new(key, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), signature):
        return {"error": "invalid signature"}, 401
    write_deltalake(os.environ["BENCH_FLOOR_TABLE_URI"], one_row(json.loads(body)), mode="append")
    return {"status": "accepted"}, 200


@app.get("/health")
def health() -> tuple[dict[str, str], int]:
    """Liveness, for the harness's start-up wait."""
    return {"status": "healthy"}, 200


def one_row(event: dict[str, Any]) -> pa.Table:
    """The event as a one-row Arrow table: envelope columns plus ``data`` as JSON text."""
    return pa.Table.from_pylist(
        [
            {
                "event_id": event.get("event_id"),
                "object_type": event.get("object_type"),
                "metric": event.get("metric"),
                "timestamp": event.get("timestamp"),
                "received_at": datetime.now(UTC),
                "data": json.dumps(event.get("data")),
            }
        ],
        schema=SCHEMA,
    )


def create_table(uri: str) -> None:
    """Create the empty table before the server starts, so workers do not race to create it."""
    write_deltalake(uri, SCHEMA.empty_table(), mode="overwrite")
