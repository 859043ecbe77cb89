"""Counters shared by the supervisor and its workers, through one mapped file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ciolake.runtime.shared import SharedState

WRITER = """
import sys
from pathlib import Path
from ciolake.runtime.shared import SharedState
shared = SharedState.attach(Path(sys.argv[1]), 3)
shared.durable[2] = 41
shared.pending_bytes[2] = 7000
shared.journal_failing[1] = 28
print(shared.applied[0], shared.commit_failures[0])
"""


def test_another_process_sees_and_writes_the_same_slots(tmp_path: Path) -> None:
    shared = SharedState.create(tmp_path / "run" / "shared", 3)
    shared.applied[0] = 12
    shared.commit_failures[0] = 2

    child = subprocess.run(
        [sys.executable, "-c", WRITER, str(shared.path)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert child.stdout.split() == ["12", "2"]
    assert list(shared.durable) == [0, 0, 41]
    assert shared.backlog() == (41, 7000)
    assert shared.failing_journals() == {1: 28}


def test_a_new_state_starts_at_zero_and_apart_from_an_old_one(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    old = SharedState.create(path, 2)
    old.durable[0] = 99
    old.commit_failures[0] = 5

    fresh = SharedState.create(path, 2)

    assert list(fresh.durable) == [0, 0]
    assert fresh.commit_failures[0] == 0
    old.durable[1] = 7  # a process of the previous server, still running
    assert fresh.backlog() == (0, 0)
