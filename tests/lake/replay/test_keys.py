"""The stored-keys cache of replay: a scan of every file per chunk must not defeat it."""

from __future__ import annotations

import pyarrow as pa

from ciolake.lake.replay.keys import CombinedKeys, KeyCache


def keys_of(name: str) -> pa.Table:
    return pa.table({"event_id": pa.array([f"{name}-{i:04d}" for i in range(100)])})


def cache_for(files: int) -> KeyCache:
    """A cache with room for the keys of ``files`` files."""
    return KeyCache(files * keys_of("f0").get_total_buffer_size())


def one_chunk(cache: KeyCache, paths: list[str]) -> int:
    """Ask for each path in order, as a chunk does, holding what it had to read; return hits."""
    cache.next_chunk()
    hits = 0
    for path in paths:
        if cache.get("email_events", path) is not None:
            hits += 1
        else:
            cache.put("email_events", path, keys_of(path))
    return hits


def test_chunks_scanning_more_files_than_fit_keep_hitting_what_fits() -> None:
    cache = cache_for(3)
    paths = [f"f{i}" for i in range(5)]
    assert one_chunk(cache, paths) == 0
    # Least-recently-used eviction would miss every file here: each is dropped just before
    # it is asked for again.
    assert [one_chunk(cache, paths) for _ in range(3)] == [3, 3, 3]


def test_keys_unused_in_this_chunk_make_room() -> None:
    cache = cache_for(3)
    one_chunk(cache, ["f0", "f1", "f2"])
    # Compaction replaced f0 and f1 with g0: the next chunks ask for g0 and f2 only.
    assert one_chunk(cache, ["g0", "f2"]) == 1
    assert one_chunk(cache, ["g0", "f2"]) == 2
    assert cache.get("email_events", "f0") is None or cache.get("email_events", "f1") is None


def test_keys_larger_than_the_budget_are_not_held() -> None:
    cache = KeyCache(10)
    assert one_chunk(cache, ["f0"]) == 0
    assert one_chunk(cache, ["f0"]) == 0


def two_files() -> CombinedKeys:
    both = pa.concat_tables([keys_of("f0"), keys_of("f1")])
    held_at = pa.array([0] * 100 + [1] * 100, pa.int64())
    return both, held_at, pa.array([0, 100], pa.int64())


def test_combined_keys_are_reused_only_for_the_same_files() -> None:
    cache = cache_for(3)
    paths, combined = ("f0", "f1"), two_files()
    cache.keep_combined("email_events", paths, combined)
    assert cache.combined("email_events", paths) is combined
    assert cache.combined("email_events", ("f0", "f1", "f2")) is None
    assert cache.combined("push_events", paths) is None


def test_combined_keys_over_the_budget_are_not_kept() -> None:
    cache = cache_for(1)
    cache.keep_combined("email_events", ("f0", "f1"), two_files())
    assert cache.combined("email_events", ("f0", "f1")) is None


def test_combined_keys_of_all_tables_share_one_budget() -> None:
    cache = cache_for(3)
    cache.keep_combined("email_events", ("f0", "f1"), two_files())
    cache.keep_combined("push_events", ("f0", "f1"), two_files())
    assert cache.combined("email_events", ("f0", "f1")) is not None
    assert cache.combined("push_events", ("f0", "f1")) is None
