"""Starting a worker: what the supervisor writes is what the worker reads, and the supervisor
does not load the HTTP server it starts workers for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ciolake.runtime.launch import WorkerLaunch, launch_input, read_launch_input, stream_directory
from tests.support import make_settings


def test_a_worker_reads_the_launch_record_and_settings_the_supervisor_wrote() -> None:
    settings = make_settings(
        Path("/srv"),
        data_dir=Path("/srv/ciolake"),
        signing_keys=("key\nwith newline",),
        flush_interval_s=1.0,
    )
    launch = WorkerLaunch(
        stream=1,
        next_lsn=42,
        socket_fd=7,
        admin_socket_fd=8,
        shared_path="/srv/x",
        streams=2,
        supervisor_pid=9,
    )

    assert read_launch_input(launch_input(settings, launch)) == (launch, settings)


def test_each_stream_has_its_own_journal_directory() -> None:
    settings = make_settings(
        Path("/srv"), data_dir=Path("/srv/ciolake"), signing_keys=(), flush_interval_s=1.0
    )

    assert stream_directory(settings, 0) != stream_directory(settings, 1)
    assert stream_directory(settings, 1).parent == settings.journal_dir


def test_the_supervisor_does_not_load_the_http_server() -> None:
    code = (
        "import sys, ciolake.runtime.supervisor; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'uvicorn', 'starlette', 'click'}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert loaded == "[]"
