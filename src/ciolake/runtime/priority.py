"""CPU priority of background threads, so that answering webhooks can come first.

The committer shares the cores with the workers, and its batches come in bursts (decode,
build, write). Linux schedules threads one by one, so the supervisor's background threads can
step back while the workers (and the supervisor's main thread, which starts them) keep the
normal priority. Threads started by a background thread inherit its priority, so the commit
threads do too. Off by default (``CIOLAKE_BACKGROUND_NICE``): it helps the latency tail when
other work shares the machine, but at saturation it starves the committer and the backlog
bound turns requests away sooner (see docs/architecture.md for the figures).
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger(__name__)


def lower_this_thread(nice: int) -> None:
    """Make the calling thread yield the CPU to normal-priority work.

    Raises the thread's nice value by ``nice`` and marks it ``SCHED_BATCH`` (no wake-up
    preemption of interactive threads). Where the platform cannot do this per thread, or a
    limit forbids it, the thread keeps its priority: this is only ever an optimisation.
    """
    if nice <= 0:
        return
    thread_id = threading.get_native_id()
    try:
        os.sched_setscheduler(thread_id, os.SCHED_BATCH, os.sched_param(0))
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, current + nice))
    except (AttributeError, OSError) as exc:
        logger.debug("thread priority unchanged", extra={"error": str(exc)})
