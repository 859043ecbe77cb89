"""Replay in several processes, each over its own slice of ``raw_events``.

Decoding and comparing is Python work, so one process uses one core. ``Replayer.split`` cuts the
range, as of one version of ``raw_events`` and the quarantine, into contiguous slices of about
as many deliveries; each process replays one. They plan without the commit lock and write under
it, each checking what the others committed meanwhile (see ``replay``), so an event delivered
in two slices is still stored once, from its first delivery.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from multiprocessing.process import BaseProcess
from typing import Any

from ciolake.errors import CiolakeError, TerminalError
from ciolake.lake.replay.replayer import RawSlice, Replayer, ReplayRange, ReplayResult
from ciolake.runtime.memory import use_system_allocator
from ciolake.settings import Settings

# How often the parent looks for a process that died without a word (killed, out of memory).
_POLL_S = 0.5

# A process takes about a second to start (spawn, imports) and replays some 15,000 deliveries
# a second: with fewer deliveries each, more processes only take longer (50 processes took
# 38 s over 619 deliveries, one 0.4 s).
DELIVERIES_PER_PROCESS = 20_000
# Past any machine's cores: a larger --workers is a mistake, refused rather than clamped.
MAX_PROCESSES = 256


def process_count(requested: int | None, deliveries: int, *, cores: int | None = None) -> int:
    """How many processes to replay ``deliveries`` in: as ``requested`` (default: one per
    core), but never more than the cores, nor than one per ``DELIVERIES_PER_PROCESS``.
    """
    available = cores or os.cpu_count() or 1
    wanted = available if requested is None else requested
    by_work = math.ceil(max(deliveries, 1) / DELIVERIES_PER_PROCESS)
    return max(1, min(wanted, available, by_work))


class ReplayProcessError(TerminalError):
    """A replay process failed; what the others committed stays (replay can run again)."""


@dataclass(frozen=True)
class _Job:
    settings: Settings
    selection: ReplayRange
    part: RawSlice
    include_quarantine: bool
    chunk_bytes: int | None


def replay_in_processes(
    settings: Settings,
    selection: ReplayRange,
    *,
    processes: int,
    include_quarantine: bool,
    progress: Callable[[int], None] = lambda _rows: None,
    chunk_bytes: int | None = None,
) -> ReplayResult:
    """Replay ``selection`` in up to ``processes`` processes (in this one if one is enough).

    Args:
        settings: where the tables and the state are.
        selection: which received dates to replay.
        processes: at most this many processes.
        include_quarantine: also move quarantined deliveries that now decode.
        progress: told how many deliveries each chunk of any process held.
        chunk_bytes: bodies per chunk in each process (None: ``Replayer``'s default).

    Raises:
        ReplayProcessError: a process failed or died; the others are stopped.
    """
    options = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
    replayer = Replayer(settings, **options)
    slices = replayer.split(selection, processes)
    if len(slices) == 1:
        return replayer.run(
            selection, include_quarantine=include_quarantine, progress=progress, part=slices[0]
        )
    del replayer  # each process opens the tables itself
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    messages: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
    workers = [
        context.Process(
            target=_replay_part,
            args=(_Job(settings, selection, part, include_quarantine, chunk_bytes), n, messages),
            name=f"ciolake-replay-{n}",
            daemon=True,
        )
        for n, part in enumerate(slices)
    ]
    try:
        with _sigint_held():
            for worker in workers:
                worker.start()
        results = _collect(workers, messages, progress)
    finally:
        for worker in workers:
            if worker.pid is None:
                continue
            if worker.is_alive():
                worker.terminate()
            worker.join()
    merged = _merged(results)
    merged.seconds = time.monotonic() - started
    return merged


@contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold Ctrl-C while replay processes start, and take it once they have started.

    Ignoring it here lost a Ctrl-C pressed meanwhile (the replay ran to its end); taking it
    at once can stop a start half-way, leaving a process without its instructions (it printed
    an ``EOFError`` traceback). So a Ctrl-C is noted, and raised after the starts. The signal
    is also blocked in this thread, and a replay process inherits that across ``exec``: one
    pressed while it imports waits until it ignores Ctrl-C (``_replay_part``), and never
    prints a traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, _frame: pressed.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        # Unblocking runs the noting handler for a Ctrl-C held in this thread.
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler)
    if pressed:
        raise KeyboardInterrupt


def _replay_part(job: _Job, number: int, messages: multiprocessing.Queue[Any]) -> None:
    """A replay process: replay one slice, telling the parent each chunk and the result."""
    # Ctrl-C reaches the whole process group: the parent stops the replay processes itself,
    # rather than each one dying with a traceback of its own. One held since the start
    # (``_sigint_held``) is dropped by the ignoring.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    use_system_allocator()
    options = {} if job.chunk_bytes is None else {"chunk_bytes": job.chunk_bytes}
    try:
        result = Replayer(job.settings, **options).run(
            job.selection,
            include_quarantine=job.include_quarantine,
            progress=lambda rows: messages.put(("progress", number, rows)),
            part=job.part,
        )
    except Exception as exc:
        # Told to the parent, which says it in one line; not printed here as a traceback.
        messages.put(("failed", number, (_summary(exc), traceback.format_exc())))
        sys.exit(1)
    messages.put(("done", number, result))


def _summary(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(exc, CiolakeError) and first else f"{type(exc).__name__}: {first}"


def _collect(
    workers: Sequence[BaseProcess],
    messages: multiprocessing.Queue[tuple[str, int, Any]],
    progress: Callable[[int], None],
) -> list[ReplayResult]:
    results: dict[int, ReplayResult] = {}
    quiet_since_death = 0
    while len(results) < len(workers):
        try:
            kind, number, value = messages.get(timeout=_POLL_S)
        except queue.Empty:
            # A process flushes its last message before it ends, but the message may still be
            # in the pipe when its end is seen: a dead process is believed after a quiet poll.
            quiet_since_death = quiet_since_death + 1 if _dead(workers, results) else 0
            if quiet_since_death > 1:
                _check_alive(workers, results)
            continue
        if kind == "progress":
            progress(value)
        elif kind == "done":
            results[number] = value
        else:
            summary, details = value
            # The first line is what a user reads; the traceback follows for --debug.
            raise ReplayProcessError(f"replay process {number} failed: {summary}\n{details}")
    return [results[n] for n in sorted(results)]


def _dead(workers: Sequence[BaseProcess], results: dict[int, ReplayResult]) -> list[int]:
    """The processes that ended without a result."""
    return [n for n, worker in enumerate(workers) if n not in results and not worker.is_alive()]


def _check_alive(workers: Sequence[BaseProcess], results: dict[int, ReplayResult]) -> None:
    for number in _dead(workers, results):
        raise ReplayProcessError(
            f"replay process {number} ended without a result (exit code {workers[number].exitcode})"
        )


def _merged(results: list[ReplayResult]) -> ReplayResult:
    merged = ReplayResult()
    for result in results:
        for item in fields(ReplayResult):
            mine, theirs = getattr(merged, item.name), getattr(result, item.name)
            if isinstance(mine, dict):
                for table, count in theirs.items():
                    merged.count(mine, table, count)
            else:
                setattr(merged, item.name, mine + theirs)
    return merged
