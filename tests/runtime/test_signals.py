"""Stop signals: a handler that takes no lock, a call in a thread that may take one, a Ctrl-C
held over a startup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from ciolake.runtime.signals import call_on_signals


@pytest.fixture
def restore_sigusr1() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("restore_sigusr1")
def test_a_callback_needing_a_lock_the_main_thread_holds_runs_once_it_is_released() -> None:
    # As Event.set from a handler while the main thread is inside Event.wait: called from the
    # handler itself, the callback would wait on its own thread for ever.
    lock = threading.Lock()
    called = threading.Event()

    def callback() -> None:
        with lock:
            called.set()

    call_on_signals(callback, [signal.SIGUSR1])
    with lock:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.2)  # the handler has run by now, in this thread, the lock held
        assert not called.is_set()
    assert called.wait(10)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("restore_sigusr1")
def test_each_signal_calls_back_once() -> None:
    calls: list[float] = []
    three = threading.Event()

    def callback() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            three.set()

    call_on_signals(callback, [signal.SIGUSR1])
    for _ in range(3):
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
    assert three.wait(10)
    time.sleep(0.2)
    assert len(calls) == 3


_HELD_CTRL_C = """
import os, signal, sys, threading, time
from ciolake.runtime.signals import call_on_signals, hold_interrupts
hold_interrupts()
os.kill(os.getpid(), signal.SIGINT)  # held: no KeyboardInterrupt here
time.sleep(0.2)
print("still running", flush=True)
stopped = threading.Event()
call_on_signals(stopped.set, [signal.SIGINT])
print("stopped" if stopped.wait(10) else "never stopped", flush=True)
"""


def test_a_ctrl_c_held_across_startup_arrives_once_it_is_handled() -> None:
    command = [sys.executable, "-c", _HELD_CTRL_C]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["still", "running", "stopped"]
    assert "Traceback" not in result.stderr
