"""Factories every test package shares (helpers themselves live in ``tests/support.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from ciolake.settings import Settings
from tests import support


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: settings for a data directory under this test's tmp."""
    return functools.partial(support.make_settings, tmp_path)
