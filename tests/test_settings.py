"""Settings handed to another process arrive as they left."""

from __future__ import annotations

from pathlib import Path

import pytest

from ciolake.errors import ConfigurationError
from ciolake.settings import decode_settings, encode_settings, load_settings
from tests.support import make_settings


def test_settings_survive_the_trip_to_a_worker_or_supervisor() -> None:
    settings = make_settings(
        Path("/srv"),
        data_dir=Path("/srv/ciolake data"),
        signing_keys=("new", "old"),
        workers=3,
        flush_interval_s=0.25,
        tables_uri=None,
    )

    assert decode_settings(encode_settings(settings)) == settings


@pytest.mark.parametrize("value", ["-1", "20"])
def test_background_nice_outside_0_to_19_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="background_nice"):
        load_settings({"CIOLAKE_BACKGROUND_NICE": value})


def test_background_nice_is_read_from_the_environment() -> None:
    assert load_settings({"CIOLAKE_BACKGROUND_NICE": "5"}).background_nice == 5
    assert load_settings({}).background_nice == 0
