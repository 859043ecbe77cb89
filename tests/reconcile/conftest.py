"""Fixtures: the command line (as the mistakes tests run it), the fake App API over the
scenario's deliveries, and ``reconcile`` and ``backfill`` run over its window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.customerio.conftest import MakeFake, make_fake_app_api
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi
from tests.mistakes.conftest import CliResult, RunCiolake, run_ciolake
from tests.reconcile import scenario

__all__ = ["make_fake_app_api", "run_ciolake"]

API_ENV = {"CIOLAKE_CIO_APP_API_KEY": TEST_API_KEY}


@pytest.fixture
def history() -> scenario.History:
    return scenario.build(dt.datetime.now(scenario.EASTERN).date())


@pytest.fixture
def fake(make_fake_app_api: MakeFake, history: scenario.History) -> FakeAppApi:
    api = make_fake_app_api()
    api.reporting.deliveries.extend(history.deliveries)
    return api


Command = Callable[..., CliResult]


def over_window(
    command: str, run_ciolake: RunCiolake, fake: FakeAppApi, history: scenario.History, data: Path
) -> Command:
    def run(*args: str) -> CliResult:
        window = ["--since", str(history.days[0]), "--until", str(history.days[-1])]
        api = ["--base-url", fake.base_url, "--allow-http"]
        where = ["--data-dir", str(data)]
        return run_ciolake(command, *window, *api, *where, *args, env=API_ENV, timeout=120)

    return run


@pytest.fixture
def reconcile(
    run_ciolake: RunCiolake, fake: FakeAppApi, history: scenario.History, tmp_path: Path
) -> Command:
    """``ciolake reconcile`` over the scenario's window, against the fake."""
    return over_window("reconcile", run_ciolake, fake, history, tmp_path / "data")


@pytest.fixture
def backfill(
    run_ciolake: RunCiolake, fake: FakeAppApi, history: scenario.History, tmp_path: Path
) -> Command:
    """``ciolake backfill`` over the scenario's window, against the fake."""
    return over_window("backfill", run_ciolake, fake, history, tmp_path / "data")
