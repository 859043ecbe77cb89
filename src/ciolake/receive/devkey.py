"""The development signing key ``make run`` uses when no key is configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_dev_key(path: Path) -> tuple[str, bool]:
    """Read the development key at ``path``, creating it (mode 0600) if absent.

    Returns:
        The key, and whether it was created just now.
    """
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


def read_dev_key(path: Path) -> str | None:
    """The development key at ``path``, or None if there is none."""
    return path.read_text().strip() if path.exists() else None
