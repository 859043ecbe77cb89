"""What the harness measures on the server side: CPU, memory, tables, backlog."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import psutil
from deltalake import DeltaTable

from ciolake.lake.inventory import summarize

_MIB = 1024 * 1024


class ProcessTreeMeter:
    """CPU time and resident memory of a process and all its descendants.

    CPU: user + system time of every live process in the tree, plus the time of children they
    have already reaped. Memory: RSS and PSS summed over the tree, sampled every
    ``interval_s`` in a background thread; the peaks are the highest samples. The RSS sum
    counts pages shared between processes (libraries) once per process; PSS shares them out,
    so its sum is what the tree really occupies. Anonymous memory (RSS less the pages mapped
    from files, libraries' code among them) is what the processes allocated. ``VmHWM`` (the
    kernel's exact per-process RSS peak) is read too.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self._root = psutil.Process(pid)
        self._interval_s = interval_s
        self._known: dict[int, psutil.Process] = {pid: self._root}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="rss-sampler", daemon=True)
        self.peak_rss_bytes = 0
        self.peak_pss_bytes = 0
        self.peak_anon_bytes = 0
        self.max_processes = 1
        self._hwm_bytes: dict[int, int] = {}

    def __enter__(self) -> ProcessTreeMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self._stop.set()
        self._thread.join(timeout=5)

    def processes(self) -> list[psutil.Process]:
        """The live tree (processes are cached so CPU counters stay continuous)."""
        try:
            children = self._root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self._known.setdefault(child.pid, child)
        live = [self._root, *(self._known[child.pid] for child in children)]
        self.max_processes = max(self.max_processes, len(live))
        return live

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the tree."""
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def cpu_seconds_by_kind(self) -> dict[str, float]:
        """CPU seconds so far of the root process itself (``root``) and of its descendants,
        live or exited (``children``)."""
        root = children = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            own = times.user + times.system
            if process.pid == self._root.pid:
                root += own
                children += times.children_user + times.children_system
            else:
                children += own + times.children_user + times.children_system
        return {"root": root, "children": children}

    def sample(self) -> int:
        """Sum of RSS over the tree right now; updates the peaks and the per-process HWM."""
        rss = pss = anon = 0
        for process in self.processes():
            try:
                memory = process.memory_full_info()
                # Kept at its highest: a process that has exited reads as 0.
                hwm = max(self._hwm_bytes.get(process.pid, 0), _vm_hwm_bytes(process.pid))
                self._hwm_bytes[process.pid] = hwm
            except (psutil.NoSuchProcess, OSError):
                continue
            rss += memory.rss
            pss += memory.pss
            anon += memory.rss - memory.shared
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
        self.peak_anon_bytes = max(self.peak_anon_bytes, anon)
        return rss

    @property
    def peak_rss_mib(self) -> float:
        return round(self.peak_rss_bytes / _MIB, 1)

    @property
    def peak_pss_mib(self) -> float:
        return round(self.peak_pss_bytes / _MIB, 1)

    @property
    def peak_anon_mib(self) -> float:
        return round(self.peak_anon_bytes / _MIB, 1)

    @property
    def hwm_mib(self) -> dict[int, float]:
        """Per-process kernel high-water mark of RSS, in MiB."""
        return {pid: round(value / _MIB, 1) for pid, value in self._hwm_bytes.items()}

    def _sample_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()


def _vm_hwm_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True, slots=True)
class TableTotals:
    """Delta commits, live data files and rows, summed over a set of tables."""

    commits: int
    files: int
    rows: int
    raw_rows: int
    quarantined: int = 0

    def minus(self, earlier: TableTotals) -> TableTotals:
        return TableTotals(
            self.commits - earlier.commits,
            self.files - earlier.files,
            self.rows - earlier.rows,
            self.raw_rows - earlier.raw_rows,
            self.quarantined - earlier.quarantined,
        )


def ciolake_tables(tables_uri: str) -> TableTotals:
    """Totals over every ciolake table (commits = versions after the creating one)."""
    summaries = [summary for summary in summarize(tables_uri) if summary.exists]
    rows = {summary.name: summary.rows for summary in summaries}
    return TableTotals(
        commits=sum(summary.version for summary in summaries),
        files=sum(summary.files for summary in summaries),
        rows=sum(rows.values()),
        raw_rows=rows.get("raw_events", 0),
        quarantined=rows.get("quarantine", 0),
    )


def single_table(uri: str) -> TableTotals:
    """Totals of one Delta table (the floor's)."""
    table = DeltaTable(uri)
    rows = table.count()
    return TableTotals(table.version(), len(table.file_uris()), rows, rows)


def metric_value(text: str, name: str) -> float | None:
    """One unlabelled sample from Prometheus text (None when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_drain(
    base_url: str, tables_uri: str, *, expected_raw_rows: int, timeout_s: float
) -> float:
    """Wait until everything answered 200 is committed; return the seconds waited.

    Done when ``raw_events`` holds at least ``expected_raw_rows`` rows and the server's
    ``ciolake_backlog_events`` gauge reads 0 twice in a row.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    zero_reads = 0
    while time.monotonic() < deadline:
        zero_reads = zero_reads + 1 if _backlog(base_url) == 0 else 0
        if zero_reads >= 2 and ciolake_tables(tables_uri).raw_rows >= expected_raw_rows:
            return time.monotonic() - started
        time.sleep(0.1)
    raise TimeoutError(
        f"backlog not drained after {timeout_s:.0f}s "
        f"(raw_events {ciolake_tables(tables_uri).raw_rows} of {expected_raw_rows})"
    )


def _backlog(base_url: str) -> float | None:
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    # Absent gauge: nothing to wait for but the rows.
    return metric_value(text, "ciolake_backlog_events") or 0.0
