"""Follow a journal written by another process, and delete its segments once applied.

The supervisor tails each worker's journal. A reader may see a record half-written (``write``
is not atomic for readers), so only intact records are taken and the read position stays at
the first incomplete one. A segment is finished once a newer segment exists: the writer only
starts a new one after it has finished (or truncated) the old.
"""

from __future__ import annotations

from pathlib import Path

from ciolake.journal.records import JournalRecord, recover_segment, scan_segment, segment_paths

# Reads smaller than this would only add system calls.
_MIN_READ = 1 << 20


class JournalTail:
    """Incremental reader of one journal directory."""

    def __init__(self, directory: Path, *, stream: int) -> None:
        self.directory = directory
        self.stream = stream
        self._segment: Path | None = None
        self._offset = 0
        self._segment_last_lsn = 0
        # Segments read to the end: (path, last lsn in it, 0 if none).
        self._finished: list[tuple[Path, int]] = []
        # Records up to this lsn were applied before a restart: read past, never returned.
        self._skip_through = 0

    def recover(self, *, applied_lsn: int) -> int:
        """At start-up, with no writer running: repair torn tails, and read from the first
        record not yet applied; return how many records are not applied.

        The unapplied records stay on disk: later reads return them, in bounded chunks,
        before anything written since. A backlog journaled before a crash (up to the backlog
        bound, 256 MiB by default) need not fit in memory at once.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._skip_through = applied_lsn
        unapplied = 0
        for path in segment_paths(self.directory):
            records = recover_segment(path, self.stream)
            last = records[-1].lsn if records else 0
            unapplied += sum(1 for r in records if r.lsn > applied_lsn)
            if self._segment is not None and self._segment_last_lsn > applied_lsn:
                continue  # already reading from an earlier segment; this one comes later
            self._finish_current()
            self._segment, self._segment_last_lsn = path, last
            self._offset = 0 if last > applied_lsn else path.stat().st_size
        self.retire(applied_lsn)
        return unapplied

    def read_new(self, max_bytes: int | None = None) -> list[JournalRecord]:
        """Records appended since the last call, in order.

        Args:
            max_bytes: read about this much at most (always at least one whole record); the
                rest stays on disk for a later call, so a backlog never has to fit in memory.
        """
        records: list[JournalRecord] = []
        if self._segment is None:
            first = self._newer_segment()
            if first is None:
                return records
            self._segment = first
        budget = max_bytes
        while True:
            # Read the current segment to its end, then once more if a newer one exists: the
            # writer finished this one before creating that, so the second read sees its end.
            newer = self._newer_segment()
            chunk, at_end = self._read_current(budget)
            records.extend(chunk)
            if budget is not None:
                budget -= sum(len(r.body) for r in chunk)
                if not at_end and not chunk:
                    continue  # read only records applied before a restart: read on
                if not at_end or budget <= 0:
                    return records
            if newer is None:
                return records
            self._finish_current()
            self._segment, self._offset, self._segment_last_lsn = newer, 0, 0

    def _read_current(self, limit: int | None) -> tuple[list[JournalRecord], bool]:
        """Intact records from the read position, and whether the read reached the file's end.

        A torn record at the end is left unread: in the segment being written it is still
        being written; in a finished one (a worker died in mid-write) nothing follows it.
        """
        assert self._segment is not None
        size = -1 if limit is None else max(limit, _MIN_READ)
        try:
            with self._segment.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(size)
                records, intact = scan_segment(data, self.stream)
                while size > 0 and not records:
                    # No whole record yet (one larger than the read): read on to the end.
                    more = handle.read(size)
                    if not more:
                        break
                    data += more
                    records, intact = scan_segment(data, self.stream)
                at_end = not handle.read(1)
        except FileNotFoundError:
            return [], True
        self._offset += intact
        if records:
            self._segment_last_lsn = max(self._segment_last_lsn, records[-1].lsn)
        if records and records[0].lsn <= self._skip_through:
            records = [r for r in records if r.lsn > self._skip_through]
        return records, at_end

    def _newer_segment(self) -> Path | None:
        for path in segment_paths(self.directory):
            if self._segment is None or path > self._segment:
                return path
        return None

    def _finish_current(self) -> None:
        if self._segment is not None:
            self._finished.append((self._segment, self._segment_last_lsn))

    def retire(self, applied_lsn: int) -> int:
        """Delete finished segments whose records are all applied; return how many."""
        done = [(p, last) for p, last in self._finished if last <= applied_lsn]
        self._finished = [(p, last) for p, last in self._finished if last > applied_lsn]
        for path, _last in done:
            path.unlink(missing_ok=True)
        return len(done)
