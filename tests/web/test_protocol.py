"""The transport that sends a response's head and body in one write (``web/protocol.py``)."""

from __future__ import annotations

import asyncio

from ciolake.web.protocol import CoalescingTransport


class RecordingTransport:
    """The parts of an asyncio transport ``CoalescingTransport`` uses, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def run(scenario: object) -> None:
    asyncio.run(scenario)  # type: ignore[arg-type]


def test_the_writes_of_one_loop_step_leave_as_one_in_order() -> None:
    inner = RecordingTransport()

    async def scenario() -> None:
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert inner.calls == []  # nothing leaves before the step ends
        await asyncio.sleep(0)
        assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
        transport.write(b"next")
        await asyncio.sleep(0)
        assert inner.calls[-1] == ("write", b"next")

    run(scenario())


def test_close_sends_what_waits_first_and_abort_drops_it() -> None:
    closed, aborted = RecordingTransport(), RecordingTransport()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        transport = CoalescingTransport(closed, loop)  # type: ignore[arg-type]
        transport.write(b"last words")
        transport.close()
        other = CoalescingTransport(aborted, loop)  # type: ignore[arg-type]
        other.write(b"never sent")
        other.abort()
        await asyncio.sleep(0)

    run(scenario())
    assert closed.calls == [("write", b"last words"), ("close", b"")]
    assert aborted.calls == [("abort", b"")]


def test_everything_else_is_the_transports_own() -> None:
    inner = RecordingTransport()

    async def scenario() -> None:
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        assert transport.get_extra_info("peername") == "info:peername"
        assert not transport.is_closing()

    run(scenario())
