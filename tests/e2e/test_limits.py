"""Slow, oversized and flooding clients must not starve others or grow memory without bound."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ciolake.events.samples import sample_event, schema_by_name
from tests.support import ServerProcess, body_of, running_server, signed_headers, table_rows

pytestmark = pytest.mark.e2e

LIMITS = {
    "CIOLAKE_HEADER_TIMEOUT_S": "1.5",
    "CIOLAKE_BODY_TIMEOUT_S": "1.5",
    "CIOLAKE_MAX_HEADER_BYTES": "16384",
    "CIOLAKE_MAX_CONNECTIONS": "64",
}
# The flood's 150 client threads share one GIL with the test, so a thread can stall for
# seconds between sending a request's headers and its body; with the 1.5 s deadlines the
# server would rightly answer 408 to them. The flood test is about connection and memory
# bounds, so its deadlines are long enough that only the flood itself is measured.
FLOOD_LIMITS = {**LIMITS, "CIOLAKE_HEADER_TIMEOUT_S": "30", "CIOLAKE_BODY_TIMEOUT_S": "30"}


def one_event(seed: int) -> bytes:
    schema = schema_by_name("email_delivered")
    return body_of(sample_event(schema, rng=random.Random(seed), timestamp=int(time.time())))


def raw_connection(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(4096) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_slowloris_clients_are_cut_off_and_do_not_starve_others(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", env=LIMITS) as server:
        slow = [raw_connection(server) for _ in range(40)]
        for sock in slow:
            sock.sendall(b"POST /webhooks/customerio HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            for seed in range(30):
                body = one_event(seed)
                assert (
                    client.post(server.url, content=body, headers=signed_headers(body)).status_code
                    == 200
                )
        assert time.monotonic() - started < 5
        assert all(closed_by_server(sock, within_s=5) for sock in slow)
        for sock in slow:
            sock.close()
        assert "headers_timeout" in server.log()


def test_oversized_headers_get_431_and_the_server_carries_on(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", env=LIMITS) as server:
        sock = raw_connection(server)
        sock.sendall(
            b"POST /webhooks/customerio HTTP/1.1\r\nHost: x\r\nX-Pad: "
            + b"a" * 40_000
            + b"\r\n\r\n"
        )
        answer = sock.recv(4096)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 431")
        body = one_event(1)
        assert (
            httpx.post(
                server.url, content=body, headers=signed_headers(body), timeout=5
            ).status_code
            == 200
        )


def test_a_body_that_never_finishes_gets_408_and_stores_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, env=LIMITS) as server:
        body = one_event(2)
        headers = signed_headers(body)
        sock = raw_connection(server)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request_line = "POST /webhooks/customerio HTTP/1.1\r\nHost: x\r\n"
        length = f"Content-Length: {len(body)}\r\n"
        sock.sendall(f"{request_line}{length}{head}\r\n".encode() + body[:20])
        sock.settimeout(10)
        answer = sock.recv(4096)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert server.stop() == 0
    assert table_rows(data_dir, "raw_events", "event_id") == []


def test_a_flood_is_bounded_and_every_accepted_event_lands(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir, env=FLOOD_LIMITS) as server:
        workers = [
            p
            for p in psutil.Process(server.process.pid).children()
            if "ciolake.runtime.worker" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2
        rss_before = sum(p.memory_info().rss for p in workers)
        answers: dict[str, int] = {}
        lock = threading.Lock()

        def flood(seed: int) -> None:
            with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as client:
                for i in range(40):
                    body = one_event(seed * 1000 + i)
                    event_id = body.split(b'"event_id":"')[1].split(b'"')[0].decode()
                    try:
                        status = client.post(
                            server.url, content=body, headers=signed_headers(body)
                        ).status_code
                    except httpx.HTTPError:
                        status = 0
                    with lock:
                        answers[event_id] = status

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(150)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rss_after = sum(p.memory_info().rss for p in workers)
        assert server.stop() == 0
    assert set(answers.values()) <= {200, 503, 0}
    accepted = {e for e, s in answers.items() if s == 200}
    assert len(accepted) > len(answers) // 2
    assert rss_after - rss_before < 200 * 1024 * 1024
    stored = {r["event_id"] for r in table_rows(data_dir, "email_events", "event_id")}
    assert accepted <= stored
