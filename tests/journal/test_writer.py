"""The journal: durable appends, group commit, and what recovery reads back of them.

Recovery and retirement are the supervisor's, through ``JournalTail`` (``journal/tail.py``):
these tests read back with it, as ``ciolake serve`` does after a crash.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from ciolake.errors import JournalUnavailableError
from ciolake.journal.records import JournalRecord, encode_record, scan_segment
from ciolake.journal.tail import JournalTail
from ciolake.journal.writer import Journal, write_all


def make_journal(
    directory: Path, *, segment_max_bytes: int = 1 << 20
) -> tuple[Journal, list[JournalRecord], list[float]]:
    durable: list[JournalRecord] = []
    fsyncs: list[float] = []
    journal = Journal(
        directory,
        segment_max_bytes=segment_max_bytes,
        on_durable=durable.extend,
        observe_fsync=fsyncs.append,
    )
    return journal, durable, fsyncs


def opened(journal: Journal, *, next_lsn: int = 1) -> Journal:
    journal.open_for_append(next_lsn=next_lsn)
    return journal


def recovered(directory: Path, *, applied_lsn: int = 0) -> list[JournalRecord]:
    """What the supervisor recovers from ``directory`` at start-up: torn tails repaired, the
    records after ``applied_lsn`` read back."""
    tail = JournalTail(directory, stream=0)
    tail.recover(applied_lsn=applied_lsn)
    return tail.read_new()


async def append_many(journal: Journal, bodies: list[bytes]) -> list[JournalRecord]:
    return list(
        await asyncio.gather(
            *(
                journal.append(received_at_us=i, x_cio_timestamp=1000 + i, flags=i % 2, body=b)
                for i, b in enumerate(bodies)
            )
        )
    )


def test_appends_are_durable_and_recovered_in_order(tmp_path: Path) -> None:
    bodies = [f'{{"n":{i}}}'.encode() * (i % 7 + 1) for i in range(200)]

    async def scenario() -> list[JournalRecord]:
        journal, durable, _ = make_journal(tmp_path)
        opened(journal)
        records = await append_many(journal, bodies)
        await journal.close()
        assert [r.lsn for r in durable] == [r.lsn for r in records]
        return records

    records = asyncio.run(scenario())
    assert [r.lsn for r in records] == list(range(1, 201))
    assert recovered(tmp_path) == records


def test_concurrent_appends_share_fsyncs(tmp_path: Path) -> None:
    async def scenario() -> list[float]:
        journal, _, fsyncs = make_journal(tmp_path)
        opened(journal)
        await append_many(journal, [b"x" * 100] * 500)
        await journal.close()
        return fsyncs

    fsyncs = asyncio.run(scenario())
    # 500 concurrent appends: the first flush takes one, the next all who queued meanwhile.
    assert 1 <= len(fsyncs) < 50


def test_recovery_skips_applied_records(tmp_path: Path) -> None:
    async def write(journal: Journal, count: int) -> list[JournalRecord]:
        records = await append_many(journal, [b"a"] * count)
        await journal.close()
        return records

    first, _, _ = make_journal(tmp_path)
    written = asyncio.run(write(opened(first), 10))
    assert [r.lsn for r in written] == list(range(1, 11))
    assert [r.lsn for r in recovered(tmp_path, applied_lsn=6)] == [7, 8, 9, 10]
    second, _, _ = make_journal(tmp_path)
    more = asyncio.run(write(opened(second, next_lsn=11), 3))
    assert [r.lsn for r in more] == [11, 12, 13]
    assert [r.lsn for r in recovered(tmp_path, applied_lsn=6)] == [7, 8, 9, 10, 11, 12, 13]


def _journal_with_records(tmp_path: Path, count: int) -> tuple[Path, list[JournalRecord]]:
    journal, _, _ = make_journal(tmp_path)
    opened(journal)

    async def write() -> list[JournalRecord]:
        records = await append_many(journal, [f"body-{i}".encode() * 3 for i in range(count)])
        await journal.close()
        return records

    records = asyncio.run(write())
    (segment,) = sorted(tmp_path.glob("*.seg"))
    return segment, records


def test_torn_tail_at_every_byte_offset_keeps_every_earlier_record(tmp_path: Path) -> None:
    segment, records = _journal_with_records(tmp_path, 5)
    whole = segment.read_bytes()
    last_size = len(encode_record(records[-1]))
    start_of_last = len(whole) - last_size
    for cut in range(start_of_last, len(whole)):
        segment.write_bytes(whole[:cut])
        assert recovered(tmp_path) == records[:-1], cut
        assert segment.stat().st_size == start_of_last, cut
    segment.write_bytes(whole)
    assert recovered(tmp_path) == records


def test_a_corrupt_byte_in_the_last_record_drops_only_it(tmp_path: Path) -> None:
    segment, records = _journal_with_records(tmp_path, 4)
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert recovered(tmp_path) == records[:-1]


def test_garbage_after_the_records_is_dropped(tmp_path: Path) -> None:
    segment, records = _journal_with_records(tmp_path, 3)
    with segment.open("ab") as handle:
        handle.write(b"\xff" * 5000)
    parsed, intact = scan_segment(segment.read_bytes())
    assert parsed == records
    assert intact == segment.stat().st_size - 5000


def test_segments_rotate_and_recovery_reads_across_them(tmp_path: Path) -> None:
    journal, _, _ = make_journal(tmp_path, segment_max_bytes=300)
    opened(journal)

    async def write() -> list[JournalRecord]:
        records = [
            await journal.append(received_at_us=i, x_cio_timestamp=i, flags=0, body=b"y" * 100)
            for i in range(20)
        ]
        await journal.close()
        return records

    records = asyncio.run(write())
    assert len(sorted(tmp_path.glob("*.seg"))) >= 5
    assert recovered(tmp_path) == records
    assert [r.lsn for r in recovered(tmp_path, applied_lsn=10)] == list(range(11, 21))


def test_a_failed_write_raises_keeps_earlier_records_and_recovers(tmp_path: Path) -> None:
    real_writev = os.writev
    failing = {"on": False}

    def writev(fd: int, buffers: list[bytes]) -> int:
        if failing["on"]:
            # Half the bytes reach the file, then the disk is full.
            data = b"".join(buffers)
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writev(fd, buffers)

    async def scenario() -> tuple[list[JournalRecord], Journal]:
        journal, durable, _ = make_journal(tmp_path)
        opened(journal)
        with mock.patch("ciolake.journal.writer.os.writev", side_effect=writev):
            good = await append_many(journal, [b"before"] * 3)
            failing["on"] = True
            with pytest.raises(JournalUnavailableError, match="No space left"):
                await journal.append(
                    received_at_us=9, x_cio_timestamp=9, flags=0, body=b"lost" * 50
                )
            assert not journal.healthy
            failing["on"] = False
            after = await journal.append(
                received_at_us=10, x_cio_timestamp=10, flags=0, body=b"after"
            )
            assert journal.healthy
        await journal.close()
        assert [r.body for r in durable] == [b"before"] * 3 + [b"after"]
        return [*good, after], journal

    written, _ = asyncio.run(scenario())
    assert recovered(tmp_path) == written


def test_appends_after_close_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal, _, _ = make_journal(tmp_path)
        opened(journal)
        await journal.close()
        with pytest.raises(JournalUnavailableError):
            await journal.append(received_at_us=1, x_cio_timestamp=1, flags=0, body=b"late")

    asyncio.run(scenario())


def test_a_group_beyond_one_writev_is_written_whole_and_in_order(tmp_path: Path) -> None:
    parts = [b"%06d" % i for i in range(2 * 1024 + 7)]
    path = tmp_path / "parts"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert write_all(fd, parts) == 6 * len(parts)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)


def test_a_short_writev_is_finished_byte_for_byte(tmp_path: Path) -> None:
    parts = [b"head", b"body" * 100, b"head", b"tail"]
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[bytes]) -> int:
        return real_writev(fd, [b"".join(buffers)[:10]])

    path = tmp_path / "parts"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with mock.patch("ciolake.journal.writer.os.writev", side_effect=short_writev):
            assert write_all(fd, parts) == sum(map(len, parts))
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)


def test_a_client_gone_mid_flush_cancels_only_its_own_wait(tmp_path: Path) -> None:
    real_fdatasync = os.fdatasync
    flushing = threading.Event()

    def slow_fdatasync(fd: int) -> None:
        flushing.set()
        time.sleep(0.2)
        real_fdatasync(fd)

    async def scenario() -> list[JournalRecord]:
        journal, durable, _ = make_journal(tmp_path)
        opened(journal)
        with mock.patch("ciolake.journal.writer.os.fdatasync", side_effect=slow_fdatasync):
            appends = [
                asyncio.create_task(
                    journal.append(received_at_us=i, x_cio_timestamp=i, flags=0, body=b"%d" % i)
                )
                for i in range(3)
            ]
            await asyncio.to_thread(flushing.wait, 5)
            appends[1].cancel()
            results = await asyncio.gather(*appends, return_exceptions=True)
        await journal.close()
        assert isinstance(results[1], asyncio.CancelledError)
        assert [r.body for r in results if isinstance(r, JournalRecord)] == [b"0", b"2"]
        return durable

    durable = asyncio.run(scenario())
    # The cancelled request's delivery was on its way to disk: it is kept, like the others.
    assert [r.body for r in durable] == [b"0", b"1", b"2"]
    assert [r.body for r in recovered(tmp_path)] == [b"0", b"1", b"2"]


def test_a_ctrl_c_inside_the_flush_is_not_reported_again_at_exit(tmp_path: Path) -> None:
    # As `ciolake simulate` meets it: SIGINT raises KeyboardInterrupt wherever the event loop
    # is, here inside the flush task; the program stops with it, and nothing else is printed.
    script = textwrap.dedent(
        f"""
        import asyncio, gc
        from pathlib import Path
        from ciolake.journal.writer import Journal

        def interrupted(records):
            raise KeyboardInterrupt

        async def main():
            journal = Journal(Path({str(tmp_path)!r}), segment_max_bytes=1 << 20,
                              on_durable=interrupted)
            journal.open_for_append(next_lsn=1)
            await journal.append(received_at_us=1, x_cio_timestamp=1, flags=0, body=b"x")

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            print("interrupted")
        gc.collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "interrupted", done.stderr
    assert "never retrieved" not in done.stderr
    assert "Traceback" not in done.stderr
