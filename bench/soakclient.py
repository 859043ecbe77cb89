"""The soak test's load generator: open-loop asyncio client that retries until it gets a 200.

It behaves as Customer.io does towards an endpoint that crashes: every event is delivered
until it is answered 200 (connection refused, reset, timed out or 5xx: try again), each attempt
signed afresh. It records every event answered 200, and every attempt whose request went out
but whose answer never came back (the server may have journaled it before dying).

Bodies come from a pool of templates drawn from the benchmark's traffic mix; each event gets a
unique ``event_id`` written into a template, which keeps the client cheap enough to share the
machine with the server.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.mix import EventSource, body_of
from bench.reqfiles import raw_request

_EVENT_ID_PREFIX = "01SOAK"
_MAX_BACKOFF_S = 1.0
_REQUEST_TIMEOUT_S = 10.0


@dataclass
class Ledger:
    """What the client sent and what it was answered."""

    generated: int = 0
    answered: dict[str, int] = field(default_factory=dict)  # event_id -> number of 200s
    attempts: int = 0
    ambiguous: int = 0  # request sent, connection lost before the answer
    refused: int = 0  # could not connect
    statuses: Counter[int] = field(default_factory=Counter)
    rejected: dict[str, int] = field(default_factory=dict)  # event_id -> 4xx status

    @property
    def deliveries_200(self) -> int:
        return sum(self.answered.values())


class TemplateBodies:
    """Bodies from the traffic mix, each re-used with a fresh ``event_id``."""

    def __init__(self, source: EventSource, count: int, timestamp: int) -> None:
        self._templates: list[tuple[bytes, bytes]] = []
        for _ in range(count):
            event = source.event(timestamp)
            self._templates.append((event["event_id"].encode(), body_of(event)))

    def body(self, index: int, event_id: str) -> bytes:
        old_id, template = self._templates[index % len(self._templates)]
        return template.replace(old_id, event_id.encode(), 1)


def event_id(index: int) -> str:
    """The soak's ``index``-th event id (26 characters, like a ULID)."""
    return f"{_EVENT_ID_PREFIX}{index:020d}"


class SoakClient:
    """Deliver ``rate`` new events per second over ``connections`` keep-alive connections."""

    def __init__(
        self,
        port: int,
        key: str,
        *,
        rate: float,
        connections: int,
        bodies: TemplateBodies,
        ledger: Ledger,
    ) -> None:
        self._port = port
        self._key = key
        self._rate = rate
        self._connections = connections
        self._bodies = bodies
        self.ledger = ledger
        self.stop_producing = threading.Event()
        self.unfinished = 0

    async def run(self, finish_timeout_s: float) -> None:
        """Produce until ``stop_producing``, then deliver what is queued (bounded wait)."""
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        workers = [asyncio.create_task(self._work(queue)) for _ in range(self._connections)]
        await self._produce(queue)
        try:
            await asyncio.wait_for(queue.join(), finish_timeout_s)
        except TimeoutError:
            self.unfinished = queue.qsize()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _produce(self, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        started = time.monotonic()
        while not self.stop_producing.is_set():
            due = int((time.monotonic() - started) * self._rate)
            while self.ledger.generated < due:
                index = self.ledger.generated
                identifier = event_id(index)
                queue.put_nowait((identifier, self._bodies.body(index, identifier)))
                self.ledger.generated += 1
            await asyncio.sleep(0.002)

    async def _work(self, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        connection: _Connection | None = None
        while True:
            identifier, body = await queue.get()
            try:
                connection = await self._deliver(connection, identifier, body)
            finally:
                queue.task_done()

    async def _deliver(
        self, connection: _Connection | None, identifier: str, body: bytes
    ) -> _Connection | None:
        """Attempt until answered 200 (or 4xx); return the connection if it is still usable."""
        backoff = 0.05
        while True:
            if connection is None:
                connection = await self._connect()
            status = None if connection is None else await self._attempt(connection, body)
            if connection is not None and (status is None or connection.closing):
                connection.close()
                connection = None
            if status == 200:
                self.ledger.answered[identifier] = self.ledger.answered.get(identifier, 0) + 1
                return connection
            if status is not None and 400 <= status < 500:
                self.ledger.rejected[identifier] = status
                return connection
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _connect(self) -> _Connection | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
        except OSError:
            self.ledger.refused += 1
            return None
        return _Connection(reader, writer)

    async def _attempt(self, connection: _Connection, body: bytes) -> int | None:
        """One signed attempt; its status, or None when the connection failed."""
        self.ledger.attempts += 1
        request = raw_request(body, self._key, int(time.time()))
        try:
            status = await asyncio.wait_for(connection.exchange(request), _REQUEST_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            self.ledger.ambiguous += 1
            return None
        self.ledger.statuses[status] += 1
        return status


class _Connection:
    """One HTTP/1.1 keep-alive connection, speaking just enough HTTP for this client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closing = False  # the server said "Connection: close"

    async def exchange(self, request: bytes) -> int:
        self._writer.write(request)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        headers = _headers(head)
        await self._reader.readexactly(int(headers.get(b"content-length", b"0")))
        self.closing = headers.get(b"connection", b"").lower() == b"close"
        return status

    def close(self) -> None:
        self._writer.close()


def _headers(head: bytes) -> dict[bytes, bytes]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return headers
