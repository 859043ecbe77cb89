"""The exactly-once index: persistence, the applied watermark, and pruning by day."""

from __future__ import annotations

from pathlib import Path

from ciolake.commit.dedup import DedupIndex


def make_index(tmp_path: Path, window_days: int = 8) -> DedupIndex:
    return DedupIndex(tmp_path / "dedup.sqlite3", window_days=window_days, cache_mib=1)


def test_seen_ids_survive_a_reopen_with_the_watermark(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    assert index.applied_lsn(0) == 0
    index.record([("E1", 100), ("E2", 100)], applied={0: 7})
    index.close()
    reopened = make_index(tmp_path)
    assert reopened.seen(["E1", "E3", "E2"]) == {"E1", "E2"}
    assert reopened.applied_lsn(0) == 7
    assert reopened.streams() == [0]


def test_watermark_never_moves_back(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    index.record([], applied={0: 50})
    index.record([("E", 1)], applied={0: 20})
    assert index.applied_lsn(0) == 50


def test_lookups_work_across_chunks(tmp_path: Path) -> None:
    index = make_index(tmp_path)
    ids = [f"E{i:05d}" for i in range(2500)]
    index.record([(i, 10) for i in ids[::2]], applied={0: 1})
    assert index.seen(ids) == set(ids[::2])


def test_prune_forgets_only_ids_past_the_window(tmp_path: Path) -> None:
    index = make_index(tmp_path, window_days=8)
    index.record([("old", 100), ("edge", 102), ("new", 109)], applied={0: 1})
    removed = index.prune(today=110)
    assert removed == 1
    assert index.seen(["old", "edge", "new"]) == {"edge", "new"}
    assert index.count() == 2


def test_a_later_sighting_extends_the_window(tmp_path: Path) -> None:
    index = make_index(tmp_path, window_days=8)
    index.record([("E", 100)], applied={0: 1})
    index.record([("E", 105)], applied={0: 2})
    index.prune(today=110)
    assert index.seen(["E"]) == {"E"}
