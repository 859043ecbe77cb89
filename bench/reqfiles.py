"""Pre-signed raw HTTP requests on disk, the form the wrk Lua script streams them in.

Each record is an 8-digit decimal length, then that many bytes: a complete
``POST /webhooks/customerio`` request (headers and body), signed as Customer.io signs.
Records are dealt round-robin into one file per wrk thread, so no two threads send the same
event.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ciolake.receive.verify import sign

WEBHOOK_PATH = "/webhooks/customerio"
_LENGTH_DIGITS = 8


@dataclass(frozen=True, slots=True)
class RequestPool:
    """Request files for one phase."""

    paths: tuple[Path, ...]
    count: int
    body_bytes: int

    @property
    def mean_body_bytes(self) -> float:
        return self.body_bytes / self.count if self.count else 0.0


def raw_request(body: bytes, key: str, timestamp: int) -> bytes:
    """A complete HTTP/1.1 request for ``body``, with Customer.io's signature headers."""
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\n"
        "Host: bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-CIO-Timestamp: {timestamp}\r\n"
        f"X-CIO-Signature: {sign(body, key, timestamp)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def write_pool(
    bodies: Iterable[bytes], directory: Path, files: int, *, key: str, timestamp: int
) -> RequestPool:
    """Sign every body with ``timestamp`` and deal the requests into ``files`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = tuple(directory / f"requests-{index + 1}.bin" for index in range(files))
    count = body_bytes = 0
    with ExitStack() as stack:
        outputs = [stack.enter_context(path.open("wb", buffering=1 << 20)) for path in paths]
        for body in bodies:
            request = raw_request(body, key, timestamp)
            output = outputs[count % files]
            output.write(b"%0*d" % (_LENGTH_DIGITS, len(request)))
            output.write(request)
            count += 1
            body_bytes += len(body)
    return RequestPool(paths, count, body_bytes)
