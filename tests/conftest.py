"""Factories every test package shares (helpers themselves live in ``tests/support.py``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ciolake.settings import Settings
from tests import spark_session, support

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: settings for a data directory under this test's tmp."""
    return functools.partial(support.make_settings, tmp_path)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One local Spark session with Delta per test process (see ``tests/spark_session.py``)."""
    session = spark_session.start_spark(tmp_path_factory.mktemp("spark"))
    yield session
    session.stop()
