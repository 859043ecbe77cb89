"""The journal tail: incremental, bounded reads across segments, torn tails and retirement.

Segments are written byte for byte with ``encode_record`` so every layout is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ciolake.journal.records import JournalRecord, encode_record
from ciolake.journal.tail import _MIN_READ, JournalTail

STREAM = 3
MiB = 1 << 20

RecordFactory = Callable[[int, bytes], JournalRecord]
SegmentWriter = Callable[[int, Sequence[bytes]], tuple[Path, list[JournalRecord]]]
TailFactory = Callable[[], JournalTail]


def append_bytes(path: Path, data: bytes) -> None:
    with path.open("ab") as handle:
        handle.write(data)


def body_for(lsn: int, size: int) -> bytes:
    """A body of exactly ``size`` bytes that differs from every other lsn's."""
    head = f"{lsn}:".encode()
    return head + bytes([lsn % 251]) * (size - len(head))


def lsns(records: Sequence[JournalRecord]) -> list[int]:
    return [r.lsn for r in records]


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "journal"
    directory.mkdir()
    return directory


@pytest.fixture
def make_record() -> RecordFactory:
    def make(lsn: int, body: bytes) -> JournalRecord:
        return JournalRecord(lsn, lsn * 10, 1_000 + lsn, lsn % 2, body, STREAM)

    return make


@pytest.fixture
def write_segment(journal_dir: Path, make_record: RecordFactory) -> SegmentWriter:
    """Write ``<first lsn>.seg`` holding one record per body, numbered from ``first_lsn``."""

    def write(first_lsn: int, bodies: Sequence[bytes]) -> tuple[Path, list[JournalRecord]]:
        path = journal_dir / f"{first_lsn:020d}.seg"
        records = [make_record(first_lsn + i, body) for i, body in enumerate(bodies)]
        path.write_bytes(b"".join(encode_record(r) for r in records))
        return path, records

    return write


@pytest.fixture
def make_tail(journal_dir: Path) -> TailFactory:
    def make() -> JournalTail:
        return JournalTail(journal_dir, stream=STREAM)

    return make


def drain(tail: JournalTail, max_bytes: int, max_calls: int) -> list[list[JournalRecord]]:
    """Bounded reads until one comes back empty; every call before that must make progress."""
    batches: list[list[JournalRecord]] = []
    for _ in range(max_calls):
        batch = tail.read_new(max_bytes=max_bytes)
        if not batch:
            return batches
        batches.append(batch)
    pytest.fail(f"reads still returning records after {max_calls} calls")


def test_unbounded_reads_return_every_record_once_across_segments(
    write_segment: SegmentWriter, make_tail: TailFactory, make_record: RecordFactory
) -> None:
    _, first = write_segment(1, [b"a1", b"a2", b"a3"])
    _, second = write_segment(4, [b"b4", b"b5"])
    newest, third = write_segment(6, [b"c6", b"c7", b"c8", b"c9"])
    tail = make_tail()

    returned = tail.read_new()
    assert lsns(returned) == list(range(1, 10))
    assert returned == first + second + third
    assert tail.read_new() == []

    appended = [make_record(10, b"late-10"), make_record(11, b"late-11")]
    append_bytes(newest, b"".join(encode_record(r) for r in appended))

    assert tail.read_new() == appended
    assert tail.read_new() == []


def test_unbounded_read_follows_a_segment_created_later(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    _, first = write_segment(1, [b"x1", b"x2"])
    tail = make_tail()
    assert tail.read_new() == first

    _, later = write_segment(3, [b"y3", b"y4"])
    assert tail.read_new() == later
    assert tail.read_new() == []


def test_read_of_an_empty_directory_returns_nothing(make_tail: TailFactory) -> None:
    tail = make_tail()
    assert tail.read_new() == []
    assert tail.read_new(max_bytes=1000) == []


def test_bounded_reads_stay_within_budget_and_return_everything_once_in_order(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    body_size = 200_000
    per_segment, segments = 10, 5  # 50 records, about 10 MB of bodies
    expected: list[JournalRecord] = []
    for s in range(segments):
        first_lsn = 1 + s * per_segment
        bodies = [body_for(first_lsn + i, body_size) for i in range(per_segment)]
        expected += write_segment(first_lsn, bodies)[1]
    total_body = sum(len(r.body) for r in expected)
    max_bytes = 2 * MiB
    # A call reads max(budget left, _MIN_READ) bytes from a segment and only goes on to the
    # next while budget is left, so its bodies stay under max_bytes + _MIN_READ; the brief's
    # looser allowance adds one whole record on top.
    bound = max_bytes + _MIN_READ + body_size

    batches = drain(make_tail(), max_bytes, max_calls=50)

    assert all(batches)
    for batch in batches:
        assert sum(len(r.body) for r in batch) <= bound
    # The budget really splits the backlog.
    assert len(batches) >= total_body // bound
    assert len(batches) > 1
    returned = [r for batch in batches for r in batch]
    assert lsns(returned) == list(range(1, segments * per_segment + 1))
    assert returned == expected


def test_bounded_read_leaves_the_rest_for_later_and_sees_new_appends(
    write_segment: SegmentWriter, make_tail: TailFactory, make_record: RecordFactory
) -> None:
    body_size = 300_000
    path, records = write_segment(1, [body_for(i, body_size) for i in range(1, 11)])
    tail = make_tail()

    first = tail.read_new(max_bytes=1)
    # At least one record, no more than one _MIN_READ worth.
    assert first
    assert len(first) <= _MIN_READ // body_size
    assert first == records[: len(first)]

    rest = drain(tail, 1, max_calls=20)
    assert [r for b in rest for r in b] == records[len(first) :]

    late = make_record(11, b"late")
    append_bytes(path, encode_record(late))
    assert tail.read_new(max_bytes=1) == [late]


def test_a_record_larger_than_the_budget_and_the_minimum_read_is_returned_whole(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    # Between one and two _MIN_READ: needs the "read further" path in _read_current.
    big_size = _MIN_READ + _MIN_READ // 2
    _, records = write_segment(1, [b"small-1", body_for(2, big_size), b"small-3"])
    tail = make_tail()

    returned = drain(tail, 1000, max_calls=5)
    flat = [r for b in returned for r in b]
    assert flat == records
    assert any(len(r.body) == big_size for r in flat)


def test_a_large_record_first_in_a_bounded_read_is_returned_whole(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    big_size = _MIN_READ + 1
    _, records = write_segment(1, [body_for(1, big_size)])
    tail = make_tail()

    assert tail.read_new(max_bytes=1000) == records
    assert tail.read_new(max_bytes=1000) == []


@pytest.mark.parametrize("max_bytes", [None, 1000])
def test_a_torn_record_in_the_newest_segment_waits_until_complete(
    write_segment: SegmentWriter,
    make_tail: TailFactory,
    make_record: RecordFactory,
    max_bytes: int | None,
) -> None:
    path, records = write_segment(1, [b"one", b"two"])
    torn = make_record(3, body_for(3, 5_000))
    encoded = encode_record(torn)
    half = len(encoded) // 2
    append_bytes(path, encoded[:half])
    tail = make_tail()

    assert tail.read_new(max_bytes=max_bytes) == records
    assert tail.read_new(max_bytes=max_bytes) == []

    append_bytes(path, encoded[half:])
    assert tail.read_new(max_bytes=max_bytes) == [torn]
    assert tail.read_new(max_bytes=max_bytes) == []


def test_a_torn_header_in_the_newest_segment_waits_until_complete(
    write_segment: SegmentWriter, make_tail: TailFactory, make_record: RecordFactory
) -> None:
    path, records = write_segment(1, [b"one"])
    torn = make_record(2, b"two")
    encoded = encode_record(torn)
    append_bytes(path, encoded[:3])  # not even a whole length+crc header
    tail = make_tail()

    assert tail.read_new() == records
    append_bytes(path, encoded[3:])
    assert tail.read_new() == [torn]


@pytest.mark.parametrize("torn_body_size", [5_000, _MIN_READ * 2 + _MIN_READ // 4])
@pytest.mark.parametrize("max_bytes", [None, 300_000])
def test_a_finished_segment_with_a_torn_tail_is_skipped(
    write_segment: SegmentWriter,
    make_tail: TailFactory,
    make_record: RecordFactory,
    torn_body_size: int,
    max_bytes: int | None,
) -> None:
    body_size = 200_000
    old, old_records = write_segment(1, [body_for(i, body_size) for i in range(1, 11)])
    # The worker died mid-write: half of record 11 (for the large case, over one _MIN_READ).
    encoded = encode_record(make_record(11, body_for(11, torn_body_size)))
    append_bytes(old, encoded[: len(encoded) // 2])
    _, new_records = write_segment(11, [body_for(i, body_size) for i in range(11, 21)])
    tail = make_tail()

    if max_bytes is None:
        assert tail.read_new() == old_records + new_records
        assert tail.read_new() == []
        return
    batches = drain(tail, max_bytes, max_calls=40)
    assert all(batches)
    assert [r for b in batches for r in b] == old_records + new_records
    # Nothing is left pending behind the garbage.
    assert tail.read_new(max_bytes=max_bytes) == []


@pytest.mark.parametrize("max_bytes", [None, 1000])
def test_torn_tail_read_while_newest_is_skipped_once_a_newer_segment_appears(
    write_segment: SegmentWriter,
    make_tail: TailFactory,
    make_record: RecordFactory,
    max_bytes: int | None,
) -> None:
    old, old_records = write_segment(1, [b"one", b"two"])
    encoded = encode_record(make_record(3, b"never finished"))
    append_bytes(old, encoded[: len(encoded) // 2])
    tail = make_tail()
    assert tail.read_new(max_bytes=max_bytes) == old_records
    assert tail.read_new(max_bytes=max_bytes) == []

    # The restarted worker starts a new segment; the torn bytes never complete.
    _, new_records = write_segment(3, [b"three", b"four"])
    returned: list[JournalRecord] = []
    for _ in range(3):
        returned += tail.read_new(max_bytes=max_bytes)
    assert returned == new_records


def test_retire_deletes_only_finished_applied_segments(
    write_segment: SegmentWriter, make_tail: TailFactory, make_record: RecordFactory
) -> None:
    first, _ = write_segment(1, [b"1", b"2", b"3"])
    second, _ = write_segment(4, [b"4", b"5", b"6"])
    third, _ = write_segment(7, [b"7", b"8", b"9"])
    tail = make_tail()
    assert lsns(tail.read_new()) == list(range(1, 10))

    # Segment 1 ends at lsn 3, segment 2 at 6: only the first is applied.
    assert tail.retire(5) == 1
    assert not first.exists()
    assert second.exists()
    assert third.exists()

    assert tail.retire(6) == 1
    assert not second.exists()
    # The segment being read is never deleted, however far the tables have got.
    assert tail.retire(10**9) == 0
    assert third.exists()

    # Reading carries on in it.
    late = make_record(10, b"10")
    append_bytes(third, encode_record(late))
    assert tail.read_new() == [late]


def test_retire_keeps_a_partly_read_segment(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    body_size = 300_000
    first, first_records = write_segment(1, [b"a", b"b"])
    second, second_records = write_segment(3, [body_for(i, body_size) for i in range(3, 13)])
    third, third_records = write_segment(13, [b"c"])
    tail = make_tail()

    # The first read ends at segment 1's end: still the current segment, so not retired.
    assert tail.read_new(max_bytes=1) == first_records
    assert tail.retire(10**9) == 0
    assert first.exists()

    batch = tail.read_new(max_bytes=1)
    assert batch
    assert batch == second_records[: len(batch)]
    assert len(batch) < len(second_records)

    # Segment 2 is being read (and 3 not yet started): neither may go.
    assert tail.retire(10**9) == 1
    assert not first.exists()
    assert second.exists()
    assert third.exists()

    rest = [r for b in drain(tail, 1, max_calls=20) for r in b]
    assert batch + rest == second_records + third_records
    assert tail.retire(12) == 1
    assert not second.exists()
    assert third.exists()


def test_retire_before_any_read_deletes_nothing(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    first, _ = write_segment(1, [b"1"])
    second, _ = write_segment(2, [b"2"])
    tail = make_tail()
    assert tail.retire(10**9) == 0
    assert first.exists()
    assert second.exists()


# --- Start-up recovery ---------------------------------------------------------------------------


def test_recovery_reads_unapplied_records_from_disk_in_bounded_chunks_before_new_ones(
    journal_dir: Path,
    write_segment: SegmentWriter,
    make_tail: TailFactory,
    make_record: RecordFactory,
) -> None:
    body_size = 300_000
    applied_segment, _applied = write_segment(1, [body_for(n, body_size) for n in range(1, 6)])
    half_path, half = write_segment(6, [body_for(n, body_size) for n in range(6, 16)])
    _, rest = write_segment(16, [body_for(n, body_size) for n in range(16, 26)])
    # A crash left a torn record at the end of the newest segment.
    newest = journal_dir / f"{16:020d}.seg"
    append_bytes(newest, encode_record(make_record(26, b"torn"))[:-3])
    tail = make_tail()

    unapplied = tail.recover(applied_lsn=10)

    assert unapplied == 15
    assert not applied_segment.exists()  # wholly applied, retired at once
    assert half_path.exists()
    chunks = drain(tail, max_bytes=MiB, max_calls=50)
    assert len(chunks) > 3
    assert all(sum(len(r.body) for r in c) <= MiB + _MIN_READ + body_size for c in chunks)
    assert [r for c in chunks for r in c] == half[5:] + rest

    appended = make_record(26, b"after-restart")
    append_bytes(newest, encode_record(appended))
    assert tail.read_new(max_bytes=MiB) == [appended]


def test_recovery_with_everything_applied_reads_only_what_comes_next(
    write_segment: SegmentWriter, make_tail: TailFactory, make_record: RecordFactory
) -> None:
    newest, _records = write_segment(1, [b"a1", b"a2", b"a3"])
    tail = make_tail()

    assert tail.recover(applied_lsn=3) == 0
    assert tail.read_new(max_bytes=MiB) == []

    later = make_record(4, b"a4")
    append_bytes(newest, encode_record(later))
    assert tail.read_new(max_bytes=MiB) == [later]


def test_segments_read_after_recovery_are_retired_once_applied(
    write_segment: SegmentWriter, make_tail: TailFactory
) -> None:
    first, _ = write_segment(1, [b"a1", b"a2"])
    second, _ = write_segment(3, [b"b3", b"b4"])
    tail = make_tail()
    tail.recover(applied_lsn=1)

    assert lsns(tail.read_new(max_bytes=MiB)) == [2, 3, 4]
    assert tail.retire(2) == 1
    assert not first.exists()
    assert second.exists()
