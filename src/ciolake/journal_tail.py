"""Follow a journal written by another process, and delete its segments once applied.

The supervisor tails each worker's journal. A reader may see a record half-written (``write``
is not atomic for readers), so only intact records are taken and the read position stays at
the first incomplete one. A segment is finished once a newer segment exists: the writer only
starts a new one after it has finished (or truncated) the old.
"""

from __future__ import annotations

from pathlib import Path

from ciolake.journal import JournalRecord, recover_segment, scan_segment, segment_paths


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

    def recover(self, *, applied_lsn: int) -> list[JournalRecord]:
        """At start-up, with no writer running: repair torn tails, return unapplied records.

        The read position ends after the last segment, so later reads see only new records.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        unapplied: list[JournalRecord] = []
        for path in segment_paths(self.directory):
            records = recover_segment(path, self.stream)
            unapplied.extend(r for r in records if r.lsn > applied_lsn)
            self._finish_current()
            self._segment, self._offset = path, path.stat().st_size
            self._segment_last_lsn = records[-1].lsn if records else 0
        self.retire(applied_lsn)
        return unapplied

    def read_new(self) -> list[JournalRecord]:
        """Records appended since the last call, in order."""
        records: list[JournalRecord] = []
        if self._segment is None:
            first = self._newer_segment()
            if first is None:
                return records
            self._segment = first
        while True:
            records.extend(self._read_current())
            newer = self._newer_segment()
            if newer is None:
                return records
            # Finished before the newer one was created: take what was written last.
            records.extend(self._read_current())
            self._finish_current()
            self._segment, self._offset, self._segment_last_lsn = newer, 0, 0

    def _read_current(self) -> list[JournalRecord]:
        assert self._segment is not None
        try:
            with self._segment.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        records, intact = scan_segment(data, self.stream)
        self._offset += intact
        if records:
            self._segment_last_lsn = records[-1].lsn
        return records

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
