"""Stop signals turned into calls that may take locks.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds the very lock the handler needs: ``threading.Event.wait`` holds its condition's
lock on entry and exit, so a handler calling ``Event.set`` meanwhile waits on its own thread
forever (``ciolake serve`` hung on a Ctrl-C that way). Here the handler only writes a byte to
a pipe, which takes no lock, and a thread of its own makes the call.

A process that execs another interpreter holds SIGINT pending across the exec
(``hold_interrupts``): a Ctrl-C while the new interpreter initialises would otherwise abort it
with a fatal error and a traceback. ``call_on_signals`` releases what it handles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable


def call_on_signals(callback: Callable[[], None], numbers: Iterable[signal.Signals]) -> None:
    """Call ``callback`` from a watcher thread each time one of ``numbers`` arrives.

    Must be called from the main thread (as ``signal.signal``).
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    threading.Thread(
        target=_watch, args=(read_end, callback), name="ciolake-signals", daemon=True
    ).start()
    numbers = set(numbers)
    for number in numbers:
        signal.signal(number, lambda _number, _frame: _note(write_end))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, numbers)


def hold_interrupts() -> None:
    """Keep SIGINT pending, across an exec too, until ``call_on_signals`` handles it.

    Only while the process has a single thread: a signal mask is a thread's own, and a
    Ctrl-C that another thread took (a native library's, started at import) was noted for
    a Python handler the exec then discarded, and the server never stopped.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _note(write_end: int) -> None:
    # A full pipe already holds a wake-up: the watcher calls back once per byte it reads.
    with contextlib.suppress(BlockingIOError):
        os.write(write_end, b"\0")


def _watch(read_end: int, callback: Callable[[], None]) -> None:
    while os.read(read_end, 1):
        callback()
