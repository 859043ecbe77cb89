"""How ciolake's processes start: the supervisor in place of ``ciolake serve``, and each
worker with its command, its standard input and its stream.

Apart from ``worker.py`` so that the supervisor does not load the HTTP server (uvicorn,
starlette, click: 5.5 MiB of its resident memory) just to start the processes that run it, and
apart from ``supervisor.py`` so that ``ciolake serve`` does not load the committer (Arrow,
delta-rs) in the process it is about to replace.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import msgspec

from ciolake.runtime.signals import hold_interrupts
from ciolake.settings import Settings, decode_settings, encode_settings

# Not ``-m ciolake.runtime.supervisor``: run as __main__, the module would log as "__main__".
# SIGINT is held pending from the exec until the supervisor handles it (``Supervisor.run``):
# a Ctrl-C while the modules load stops the server once it can stop cleanly.
_SUPERVISOR_MAIN = (
    "import sys\nfrom ciolake.runtime.supervisor import main\nsys.exit(main(sys.argv))"
)


class WorkerLaunch(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker process is started with (as JSON on its standard input: the settings
    hold the signing keys, which must not show in the process list)."""

    stream: int
    next_lsn: int
    socket_fd: int
    admin_socket_fd: int
    shared_path: str
    streams: int
    supervisor_pid: int


def stream_directory(settings: Settings, stream: int) -> Path:
    """Where journal ``stream`` lives."""
    return settings.stream_dir(stream)


def worker_command() -> list[str]:
    """The command that starts a worker; it reads ``launch_input`` on standard input."""
    # Not ``-m ciolake.runtime.worker``: run as __main__, the module would log as "__main__". SIGINT
    # is ignored while it imports, though a worker runs in a process group of its own (see
    # ``Supervisor._spawn``): the supervisor, not the worker, decides how to stop.
    return [sys.executable, "-c", _WORKER_MAIN]


_WORKER_MAIN = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "from ciolake.runtime.worker import main; main()"
)


def launch_input(settings: Settings, launch: WorkerLaunch) -> bytes:
    """A worker's standard input: its launch record, a newline, and the settings."""
    return msgspec.json.encode(launch) + b"\n" + encode_settings(settings)


def read_launch_input(data: bytes) -> tuple[WorkerLaunch, Settings]:
    """The launch record and the settings from what ``launch_input`` wrote."""
    head, _newline, settings = data.partition(b"\n")
    return msgspec.json.decode(head, type=WorkerLaunch), decode_settings(settings)


def exec_supervisor(settings: Settings) -> NoReturn:
    """Replace this process with a supervisor serving ``settings`` (it keeps the pid).

    The command line has loaded its own libraries (typer, click) that serving does not use;
    a fresh interpreter leaves them out for the lifetime of the server. The settings travel
    through a pipe: they hold the signing keys, which must not show in the process list or
    the environment.
    """
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as pipe:
        pipe.write(encode_settings(settings))  # far below a pipe's buffer, so no reader needed
    os.set_inheritable(read_end, True)
    hold_interrupts()
    command = [sys.executable, "-c", _SUPERVISOR_MAIN, "--settings-fd", str(read_end)]
    os.execv(sys.executable, command)
