"""Making files and directory entries survive a power cut."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush ``path`` to disk: a file's contents, or a directory's entries (so that files
    created or renamed in it stay after a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Flush ``directory``'s entries, so files created or renamed in it stay after a crash."""
    fsync_path(directory)
