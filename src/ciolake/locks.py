"""Advisory file locks (flock), released by the kernel when their process dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path


def acquire_lock(path: Path, *, wait_s: float) -> int | None:
    """Take an exclusive lock on ``path``, waiting up to ``wait_s``.

    Returns:
        The open descriptor holding the lock (close it to release), or None if it stayed
        held by another process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)
