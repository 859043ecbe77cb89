"""The runtime's start-up: journal numbering picks up above what the tables already hold."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from ciolake.lake.tables import RAW_EVENTS
from ciolake.settings import Settings
from tests.support import make_bodies, receive, table_rows


def test_numbering_continues_above_the_tables_after_the_journal_is_gone(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    first, second = make_bodies(40, seed=61)[:20], make_bodies(40, seed=61)[20:]
    receive(settings, [(b, False) for b in first])
    # Every segment applied and retired, or the disk replaced: no lsn is left on disk, and
    # only the tables' app transactions and the dedup index know how far the journal got.
    shutil.rmtree(settings.journal_dir)
    receive(settings, [(b, False) for b in second])
    bodies = sorted(
        row["body"].encode() for row in table_rows(settings.data_dir, RAW_EVENTS, "body")
    )
    assert bodies == sorted(first + second), "deliveries after the restart were taken as held"
