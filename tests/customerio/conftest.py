"""Fixtures: a fake App API on a loopback port, a fake clock, and a client wired to both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ciolake.customerio.client import AppApiClient
from tests.customerio.fake_app_api import TEST_API_KEY, FakeAppApi, FakeClock

MakeFake = Callable[..., FakeAppApi]


@pytest.fixture
def make_fake_app_api() -> Iterator[MakeFake]:
    """A factory of started fakes (keyword arguments go to ``FakeAppApi``), stopped at teardown."""
    started: list[FakeAppApi] = []

    def make(**kwargs: Any) -> FakeAppApi:
        fake = FakeAppApi(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock shared by the client (sleeps advance it) and the fake (rate limit reads it)."""
    return FakeClock()


@pytest.fixture
def app_api(make_fake_app_api: MakeFake, fake_clock: FakeClock) -> FakeAppApi:
    """A fake App API that measures its rate limit on ``fake_clock``."""
    return make_fake_app_api(clock=fake_clock.now)


@pytest.fixture
def client(app_api: FakeAppApi, fake_clock: FakeClock) -> Iterator[AppApiClient]:
    """A client pointed at ``app_api``, sleeping on ``fake_clock``."""
    with AppApiClient(
        TEST_API_KEY, base_url=app_api.base_url, clock=fake_clock.now, sleep=fake_clock.sleep
    ) as api:
        yield api
