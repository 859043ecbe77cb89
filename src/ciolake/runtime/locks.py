"""Advisory file locks (flock), released by the kernel when their process dies."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ciolake.errors import ConfigurationError, DataDirBusyError

LOCK_NAME = ".lock"


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


class FileLock:
    """A blocking exclusive flock usable as a context manager, held across processes.

    The committer holds it while it applies a batch and ``replay`` while it rewrites a chunk,
    so their dedup checks and commits never interleave.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> FileLock:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Release the descriptor."""
        os.close(self._fd)


def commit_lock_path(state_dir: Path) -> Path:
    """Where the commit lock of a data directory lives."""
    return state_dir / "commit.lock"


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory's owner lock, or refuse at once.

    ``ciolake serve`` and every command that writes the journal or the dedup state (the
    embedded receiver of ``simulate``) hold it, so two of them never share a data directory.

    Returns:
        The descriptor holding the lock; close it to release.

    Raises:
        DataDirBusyError: another process holds it.
    """
    fd = acquire_lock(data_dir / LOCK_NAME, wait_s=0)
    if fd is None:
        raise DataDirBusyError(
            f"another ciolake serve is using {data_dir}; one server per data directory"
            " (stop it first, or choose another --data-dir)"
        )
    return fd


def lock_stream(directory: Path) -> int:
    """Take a journal stream's writer lock, waiting a moment for a dying process to let go.

    Returns:
        The descriptor holding the lock; close it to release.

    Raises:
        ConfigurationError: another process still holds it.
    """
    # A worker of a crashed server may take a moment to die (PR_SET_PDEATHSIG).
    fd = acquire_lock(directory / LOCK_NAME, wait_s=10.0)
    if fd is None:
        raise ConfigurationError(f"another process writes the journal in {directory}")
    return fd
