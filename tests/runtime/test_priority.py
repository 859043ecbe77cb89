"""Background threads step back so that answering webhooks comes first."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ciolake.runtime.priority import lower_this_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")

SCHED_BATCH = 3


def scheduling(thread_id: int) -> tuple[int, int]:
    """(nice, policy) of one thread, as the kernel reports them."""
    stat = Path(f"/proc/self/task/{thread_id}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[16]), int(fields[38])


def in_thread(work: object) -> dict[str, tuple[int, int]]:
    seen: dict[str, tuple[int, int]] = {}

    def run() -> None:
        assert callable(work)
        work()
        seen["thread"] = scheduling(threading.get_native_id())
        with ThreadPoolExecutor(1) as pool:
            seen["started_by_it"] = pool.submit(
                lambda: scheduling(threading.get_native_id())
            ).result()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen


def test_a_lowered_thread_and_the_threads_it_starts_yield_to_the_others() -> None:
    main_before = scheduling(threading.get_native_id())

    seen = in_thread(lambda: lower_this_thread(5))

    base_nice = main_before[0]
    assert seen["thread"] == (min(19, base_nice + 5), SCHED_BATCH)
    assert seen["started_by_it"] == (min(19, base_nice + 5), SCHED_BATCH)
    assert scheduling(threading.get_native_id()) == main_before


def test_zero_leaves_the_thread_as_it_was() -> None:
    main = scheduling(threading.get_native_id())

    seen = in_thread(lambda: lower_this_thread(0))

    assert seen["thread"] == main


def test_the_nice_value_stops_at_the_lowest_priority() -> None:
    def twice() -> None:
        lower_this_thread(15)
        lower_this_thread(15)

    seen = in_thread(twice)

    assert seen["thread"][0] == 19


def test_a_refusal_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)

    seen = in_thread(lambda: lower_this_thread(5))

    assert seen["thread"] == scheduling(threading.get_native_id())
