"""Fixtures: the command line (as the mistakes tests run it) and the fake App API's factory."""

from __future__ import annotations

from tests.customerio.conftest import make_fake_app_api
from tests.mistakes.conftest import run_ciolake

__all__ = ["make_fake_app_api", "run_ciolake"]
