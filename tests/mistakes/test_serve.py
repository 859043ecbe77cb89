"""Mistakes with `ciolake serve` and `ciolake dashboard`, and the answers they get."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.databricks import fake_workspace
from tests.fakes.zerobus import FakeZerobus, ZerobusServer
from tests.mistakes.conftest import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliResult,
    RunCiolake,
    assert_one_line_error,
)
from tests.support import (
    TEST_KEY,
    free_port,
    running_server,
    sample_bodies,
    signed_headers,
    tmpfs,
)

KEY_ENV = {"CIOLAKE_SIGNING_KEYS": TEST_KEY}


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        pytest.param(["--port", "-1"], {}, ["port", "0 to 65535", "-1"], id="port -1"),
        pytest.param(["--port", "70000"], {}, ["port", "0 to 65535"], id="port 70000"),
        pytest.param(["--admin-port", "70000"], {}, ["admin_port"], id="admin port 70000"),
        pytest.param(["--log-level", "LOUD"], {}, ["log_level", "LOUD"], id="log level"),
        pytest.param([], {"CIOLAKE_WORKERS": "0"}, ["workers", "1 or more"], id="workers env 0"),
        pytest.param(["--workers", "0"], {}, ["--workers"], id="workers flag 0"),
        pytest.param([], {"CIOLAKE_PORT": "abc"}, ["port"], id="port env abc"),
    ],
)
def test_bad_serve_settings_are_one_line_and_exit_2(
    run_ciolake: RunCiolake,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    fragments: list[str],
) -> None:
    result = run_ciolake("serve", "--data-dir", tmp_path / "d", *args, env={**KEY_ENV, **env})
    assert_one_line_error(result, EXIT_USAGE, *fragments)


def test_a_port_in_use_is_one_line(run_ciolake: RunCiolake, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_ciolake("serve", "--data-dir", tmp_path / "d", "--port", port, env=KEY_ENV)
        admin = run_ciolake(
            "serve",
            "--data-dir",
            tmp_path / "e",
            "--port",
            free_port(),
            "--admin-port",
            port,
            env=KEY_ENV,
        )
    assert_one_line_error(result, EXIT_USAGE, f"127.0.0.1:{port}", "--port")
    assert_one_line_error(admin, EXIT_USAGE, f"127.0.0.1:{port}", "admin", "--admin-port")


@pytest.mark.parametrize(
    "data_dir",
    [
        pytest.param("file", id="a file"),
        pytest.param("/proc/ciolake-data", id="under /proc"),
        pytest.param("/sys/ciolake-data", id="under /sys"),
    ],
)
def test_an_unwritable_data_dir_is_one_line(
    run_ciolake: RunCiolake, tmp_path: Path, data_dir: str
) -> None:
    target = tmp_path / "data-file" if data_dir == "file" else Path(data_dir)
    if data_dir == "file":
        target.write_text("not a directory")
    result = run_ciolake("serve", "--data-dir", target, "--port", free_port(), env=KEY_ENV)
    assert result.code in {EXIT_USAGE, EXIT_FAILURE}
    assert_one_line_error(result, result.code, str(target))


def test_a_read_only_data_dir_is_one_line(run_ciolake: RunCiolake, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", read_only=True) as target:
        result = run_ciolake("serve", "--data-dir", target, "--port", free_port(), env=KEY_ENV)
    assert_one_line_error(result, EXIT_FAILURE, "read-only")


def test_serve_refuses_a_table_whose_log_is_gone_and_loses_nothing(
    run_ciolake: RunCiolake, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    bodies = sample_bodies(40, seed=19, timestamp=int(time.time()))
    with running_server(data_dir) as server, httpx.Client(timeout=10) as client:
        for body in bodies:
            assert client.post(server.url, content=body, headers=signed_headers(body)).is_success
    email = data_dir / "tables" / "email_events"
    files_before = sorted(p.name for p in email.rglob("*.parquet"))
    assert files_before, "the sample covers email events"
    for entry in (email / "_delta_log").iterdir():
        entry.unlink()
    (email / "_delta_log").rmdir()

    result = run_ciolake("serve", "--data-dir", data_dir, "--port", free_port(), env=KEY_ENV)

    assert_one_line_error(result, EXIT_FAILURE, "email_events", "replay")
    assert sorted(p.name for p in email.rglob("*.parquet")) == files_before
    assert not (email / "_delta_log").exists(), "no new empty table over the orphaned files"


def test_serve_on_port_0_says_which_ports_it_got(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    env.update(KEY_ENV)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "ciolake", "serve", "--port", "0", "--admin-port", "0"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--data-dir", str(tmp_path / "d")], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        line = next(line for line in log.read_text().splitlines() if "listening" in line)
        url = line.split('"webhook": "')[1].split('"')[0]
        assert not url.endswith(":0/webhooks/customerio")
        health = url.replace("/webhooks/customerio", "/health")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(health, timeout=5).json()["status"] == "healthy"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.parametrize("delay_s", [0.3, 0.8, 1.5, 3.0])
def test_ctrl_c_while_serve_starts_prints_no_traceback(tmp_path: Path, delay_s: float) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    env.update(KEY_ENV)
    command = [sys.executable, "-m", "ciolake", "serve", "--port", "0", "--admin-port", "0"]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "d")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    time.sleep(delay_s)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:  # a failed test leaves no server behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    text = output.decode(errors="replace")
    assert "Traceback" not in text, text
    # 0: it had started and stopped cleanly; 130: interrupted while starting, said in one
    # line; -SIGINT: the interpreter itself was interrupted before ciolake's code ran.
    assert process.returncode in {0, 130, -signal.SIGINT}, text
    if process.returncode == 130:
        assert [line for line in text.splitlines() if line.startswith("error: ")], text


def run_dashboard(run_ciolake: RunCiolake, tmp_path: Path, *args: str | int) -> CliResult:
    return run_ciolake("dashboard", "--data-dir", tmp_path / "d", *map(str, args), timeout=30)


def test_dashboard_on_a_port_in_use_prints_no_url_first(
    run_ciolake: RunCiolake, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_dashboard(run_ciolake, tmp_path, "--port", port)
    assert_one_line_error(result, EXIT_USAGE, f"127.0.0.1:{port}", "--port")
    assert "http://" not in result.stderr.replace(f"127.0.0.1:{port}", "")


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_dashboard_port_out_of_range_is_refused(
    run_ciolake: RunCiolake, tmp_path: Path, port: str
) -> None:
    assert_one_line_error(run_dashboard(run_ciolake, tmp_path, "--port", port), EXIT_USAGE, "port")


def test_help_texts_show_no_escaped_brackets(run_ciolake: RunCiolake) -> None:
    for command in ("serve", "dashboard", "tables", "replay", "compact", "simulate", "check"):
        result = run_ciolake(command, "--help")
        assert result.code == 0, result.stderr
        assert "\\[" not in result.stdout, command


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (("--catalog", "main"), {}, ("--catalog and --schema",)),
        (("--warehouse-id", "w1"), {}, ("--catalog and --schema",)),
        (
            ("--catalog", "main", "--schema", "ciolake"),
            {"DATABRICKS_WAREHOUSE_ID": "w1"},
            ("ciolake dashboard needs DATABRICKS_HOST",),
        ),
        (("--databricks-app",), {}, ("inside a Databricks App", "DATABRICKS_APP_PORT")),
    ],
    ids=["catalog-alone", "warehouse-alone", "no-workspace", "not-in-an-app"],
)
def test_dashboard_through_a_warehouse_says_what_is_missing(
    run_ciolake: RunCiolake,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    fragments: tuple[str, ...],
) -> None:
    clean = {k: "" for k in ("DATABRICKS_HOST", "DATABRICKS_APP_PORT", "DATABRICKS_WAREHOUSE_ID")}
    result = run_ciolake(
        "dashboard", "--data-dir", tmp_path / "d", *args, env={**clean, **env}, timeout=30
    )
    assert_one_line_error(result, EXIT_USAGE, *fragments)


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        pytest.param(
            {"CIOLAKE_SINK": "zerobus"},
            ["--sink zerobus needs CIOLAKE_ZEROBUS_ENDPOINT and CIOLAKE_ZEROBUS_TABLE"],
            id="no-endpoint",
        ),
        pytest.param(
            {
                "CIOLAKE_SINK": "zerobus",
                "CIOLAKE_ZEROBUS_ENDPOINT": "https://1.zerobus.example.com",
                "CIOLAKE_ZEROBUS_TABLE": "main.ciolake.raw",
                "DATABRICKS_HOST": "",
            },
            ["service principal", "DATABRICKS_HOST"],
            id="not-signed-in",
        ),
    ],
)
def test_zerobus_sink_settings_are_one_line_and_exit_2(
    run_ciolake: RunCiolake, tmp_path: Path, env: dict[str, str], fragments: list[str]
) -> None:
    result = run_ciolake("serve", "--data-dir", tmp_path / "d", env={**KEY_ENV, **env})
    assert_one_line_error(result, EXIT_USAGE, *fragments)


@pytest.mark.parametrize(
    ("secret", "table", "fragment"),
    [
        ("not-the-secret", "main.ciolake.raw", "invalid_client"),
        (None, "main.ciolake.missing", "does not exist"),
    ],
    ids=["wrong-secret", "missing-table"],
)
def test_a_zerobus_that_refuses_at_start_is_one_line_and_exit_1(
    run_ciolake: RunCiolake, tmp_path: Path, secret: str | None, table: str, fragment: str
) -> None:
    with fake_workspace() as workspace:
        zerobus = ZerobusServer(FakeZerobus(workspace.access_token, {"main.ciolake.raw"}))
        try:
            env = {
                **KEY_ENV,
                "CIOLAKE_SINK": "zerobus",
                "CIOLAKE_ZEROBUS_ENDPOINT": zerobus.fake.endpoint,
                "CIOLAKE_ZEROBUS_TABLE": table,
                "DATABRICKS_HOST": workspace.url,
                "DATABRICKS_CLIENT_ID": workspace.client_id,
                "DATABRICKS_CLIENT_SECRET": secret or workspace.client_secret,
            }
            ports = ("--port", "0", "--admin-port", "0")
            result = run_ciolake("serve", "--data-dir", tmp_path / "d", *ports, env=env)
        finally:
            zerobus.stop()
    assert_one_line_error(result, EXIT_FAILURE, "refused (non-retriable)", table, fragment)
