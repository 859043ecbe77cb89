"""Progress lines on stdout, stamped with the seconds since the harness started."""

from __future__ import annotations

import time

_STARTED = time.monotonic()


def say(message: str) -> None:
    """Print ``[+  12.3s] message`` and flush."""
    print(f"[+{time.monotonic() - _STARTED:6.1f}s] {message}", flush=True)
