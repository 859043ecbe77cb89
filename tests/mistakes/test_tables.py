"""Mistakes with the tables, and failures of the world under them, as users met them (#19).

Each test is one case: a command run as a user would, over tables that are missing, damaged,
unreachable or unwritable, or with a flag or setting that makes no sense. Each answer is one
line ``error: ...`` saying what is wrong and what to do, exit 2 for bad input and 1 for a
failure of the world, never a traceback; where data could be lost, the rows answered 200 are
read back with DuckDB (not delta-rs) afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from ciolake.dashboard.app import dashboard_app
from ciolake.lake.tables import ALL_SPECS, CHANNEL_TABLES
from ciolake.settings import MAX_RETENTION_HOURS, Settings
from tests.mistakes.conftest import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliResult,
    RunCiolake,
    assert_one_line_error,
)
from tests.support import (
    TEST_KEY,
    delete_log,
    free_port,
    make_bodies,
    make_settings,
    receive,
    running_server,
    sample_bodies,
    signed_headers,
    table_rows,
    tmpfs,
    truncate_last_commit,
    wait_until_committed,
)

EXIT_INTERRUPTED = 130
DELIVERIES = 1_500
NOW = 1_790_000_000
DAMAGES = {"log deleted": delete_log, "last commit truncated": truncate_last_commit}
REPLAY_WAY_OUT = "run `ciolake replay` to rebuild it from raw_events"
RESTORE_WAY_OUT = "restore its _delta_log from a backup"


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory the receiver filled: every channel, and a quarantine."""
    data_dir = tmp_path_factory.mktemp("landed") / "data"
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=("k",), flush_interval_s=0.05
    )
    bodies = make_bodies(DELIVERIES, seed=19)
    receive(settings, [(body, i % 25 == 0) for i, body in enumerate(bodies)])
    return data_dir


@pytest.fixture
def data_dir(landed: Path, tmp_path: Path) -> Path:
    """A copy of ``landed`` for one test to damage."""
    copy = tmp_path / "data"
    shutil.copytree(landed, copy)
    return copy


def stored_events(data_dir: Path) -> dict[str, str]:
    """Each event id in the channel tables, read by DuckDB, with its table; each once.

    A table with no directory (not created, or moved away) holds nothing.
    """
    found: dict[str, str] = {}
    for table in CHANNEL_TABLES:
        if not (data_dir / "tables" / table).exists():
            continue
        for row in table_rows(data_dir, table, "event_id"):
            assert row["event_id"] not in found, f"{row['event_id']} is stored twice"
            found[row["event_id"]] = table
    return found


def s3_env(port: int) -> dict[str, str]:
    """An S3 endpoint on loopback, with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }


@contextlib.contextmanager
def silent_endpoint() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# 1. serve over a table whose log is gone used to create a new, empty table over its files.


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("table", "way_out"), [("email_events", REPLAY_WAY_OUT), ("raw_events", RESTORE_WAY_OUT)]
)
def test_serve_refuses_a_table_whose_log_is_lost_and_nothing_answered_200_is_lost(
    tmp_path: Path, run_ciolake: RunCiolake, table: str, way_out: str
) -> None:
    data = tmp_path / "data"
    bodies = sample_bodies(80, seed=191, timestamp=int(time.time()))
    with running_server(data) as server, httpx.Client(timeout=30) as http:
        for body in bodies:
            answer = http.post(server.url, content=body, headers=signed_headers(body))
            assert answer.status_code == 200
        wait_until_committed(server)
    answered = {json.loads(body)["event_id"] for body in bodies}
    assert set(stored_events(data)) == answered
    log = data / "tables" / table / "_delta_log"
    log.rename(tmp_path / "lost-log")

    result = run_ciolake(
        "serve",
        "--data-dir", data,
        "--port", str(free_port()),
        env={"CIOLAKE_SIGNING_KEYS": TEST_KEY, "CIOLAKE_ADMIN_PORT": str(free_port())},
    )  # fmt: skip

    assert_one_line_error(result, EXIT_FAILURE, f"table {table} at {log.parent}", way_out)
    assert not log.exists(), "a new, empty table was created over the rows"
    if table == "raw_events":
        (tmp_path / "lost-log").rename(log)  # restored from the backup
    else:
        log.parent.rename(tmp_path / f"{table}.damaged")  # the way out the line gave
        assert run_ciolake("replay", "--data-dir", data).code == 0
    assert set(stored_events(data)) == answered
    raw = table_rows(data, "raw_events", "event_id")
    assert sorted(r["event_id"] for r in raw) == sorted(answered)


# 2. A damaged table (log gone, commit truncated) ended commands in a Rust backtrace.

READING_COMMANDS = [
    ("tables",),
    ("compact",),
    ("replay",),
    ("report",),
    ("views", "--apply"),
    ("check", "--no-metrics"),
]


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_a_damaged_table_is_named_with_the_way_out(
    data_dir: Path, run_ciolake: RunCiolake, command: tuple[str, ...], damage: str
) -> None:
    email = data_dir / "tables" / "email_events"
    DAMAGES[damage](email)
    files = listing(email)
    result = run_ciolake(*command, "--data-dir", data_dir)
    assert_one_line_error(result, EXIT_FAILURE, f"table email_events at {email}", REPLAY_WAY_OUT)
    assert listing(email) == files
    assert not (data_dir / "analytics.duckdb").exists()


# 3. compact and replay over a data directory that is missing, a file, or empty.


@pytest.mark.parametrize("command", ["compact", "replay"])
@pytest.mark.parametrize(
    ("shape", "fragment"),
    [("missing", "no data directory at"), ("a file", "is a file"), ("empty", "nothing to")],
)
def test_compact_and_replay_need_a_data_directory_with_tables(
    tmp_path: Path, run_ciolake: RunCiolake, command: str, shape: str, fragment: str
) -> None:
    where = tmp_path / "somewhere"
    if shape == "a file":
        where.write_text("not a data directory")
    elif shape == "empty":
        where.mkdir()
    result = run_ciolake(command, "--data-dir", where)
    assert_one_line_error(result, EXIT_USAGE, fragment, str(where))
    if shape == "empty":
        assert list(where.iterdir()) == []
    else:
        assert where.exists() == (shape == "a file")


# 4. replay, when a channel table's directory was deleted, failed with a traceback.


def test_replay_rebuilds_a_channel_table_that_was_deleted(
    data_dir: Path, run_ciolake: RunCiolake
) -> None:
    before = stored_events(data_dir)
    assert "email_events" in before.values()
    shutil.rmtree(data_dir / "tables" / "email_events")
    result = run_ciolake("replay", "--data-dir", data_dir)
    assert result.code == 0, result.stderr
    assert stored_events(data_dir) == before


# 5. views --apply into a data directory nothing can be written to.


@contextlib.contextmanager
def read_only_mount(path: Path) -> Iterator[Path]:
    with tmpfs(path, read_only=True) as mounted:
        yield mounted


@pytest.mark.parametrize(
    ("shape", "code", "fragment"),
    [
        ("a file", EXIT_USAGE, "is a file"),
        ("under a file", EXIT_USAGE, "is a file"),
        ("under /proc", EXIT_FAILURE, "/proc/ciolake-mistakes"),
        ("/sys", EXIT_FAILURE, "/sys/analytics.duckdb"),
        ("read-only mount", EXIT_FAILURE, "read-only file system"),
    ],
)
def test_views_apply_names_a_data_directory_it_cannot_write(
    *, landed: Path, tmp_path: Path, run_ciolake: RunCiolake, shape: str, code: int, fragment: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    with contextlib.ExitStack() as stack:
        target = {
            "a file": afile,
            "under a file": afile / "data",
            "under /proc": Path("/proc/ciolake-mistakes"),
            "/sys": Path("/sys"),
            "read-only mount": tmp_path / "ro",
        }[shape]
        if shape == "read-only mount":
            stack.enter_context(read_only_mount(target))
        tables = landed / "tables"
        result = run_ciolake("views", "--apply", "--data-dir", target, "--tables-uri", tables)
        assert_one_line_error(result, code, fragment)
        assert not (target / "analytics.duckdb").exists()
    assert afile.read_text() == "not a directory"
    assert not Path("/proc/ciolake-mistakes").exists()


# 6. --tables-uri malformed, or naming a store that refuses connections.

URI_COMMANDS = ["tables", "compact", "replay", "report"]


@pytest.mark.parametrize("command", [*URI_COMMANDS, "serve"])
@pytest.mark.parametrize(
    ("uri", "fragment"),
    [("s3://", "names no bucket"), ("foo://x", "unsupported scheme foo://")],
)
def test_a_malformed_tables_uri_is_refused(
    run_ciolake: RunCiolake, command: str, uri: str, fragment: str
) -> None:
    result = run_ciolake(command, "--tables-uri", uri)
    assert_one_line_error(result, EXIT_USAGE, fragment, "s3://bucket/path")


@pytest.mark.parametrize("command", URI_COMMANDS)
def test_a_store_refusing_connections_is_one_line(run_ciolake: RunCiolake, command: str) -> None:
    port = free_port()
    result = run_ciolake(command, "--tables-uri", "s3://bucket/tables", env=s3_env(port))
    assert_one_line_error(
        result, EXIT_FAILURE, f"cannot reach the table store at http://127.0.0.1:{port}", "refused"
    )


# 7. A store that accepts connections and never answers used to hang tables and compact.


def test_a_store_that_never_answers_is_given_up_on_in_one_line(run_ciolake: RunCiolake) -> None:
    with silent_endpoint() as port, ThreadPoolExecutor(len(URI_COMMANDS)) as pool:
        # Requests give up after 3 s instead of 15 (tests/lake/test_location.py has the default).
        short = {**s3_env(port), "CIOLAKE_STORE_TIMEOUT_S": "3"}
        started = time.monotonic()
        results = list(
            pool.map(
                lambda command: run_ciolake(
                    command, "--tables-uri", "s3://bucket/tables", env=short, timeout=90
                ),
                URI_COMMANDS,
            )
        )
        took = time.monotonic() - started
    for result in results:
        assert_one_line_error(
            result, EXIT_FAILURE, f"table store at http://127.0.0.1:{port}", "timed out"
        )
    assert took < 40


# 8. Settings and flags out of range for tables and compact.


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("tables",), {"CIOLAKE_PORT": "abc"}, "port"),
        (("compact",), {"CIOLAKE_DEDUP_WINDOW_DAYS": "0"}, "dedup_window_days"),
        (("compact", "--retention-hours", "99999999999999"), {}, "--retention-hours"),
        (("compact",), {"CIOLAKE_VACUUM_RETENTION_HOURS": "-3"}, "vacuum_retention_hours"),
        (
            ("compact",),
            {"CIOLAKE_VACUUM_RETENTION_HOURS": str(MAX_RETENTION_HOURS + 1)},
            "vacuum_retention_hours",
        ),
    ],
    ids=["port abc", "dedup window 0", "retention flag huge", "retention -3", "retention huge"],
)
def test_settings_out_of_range_are_refused_before_any_work(
    data_dir: Path,
    run_ciolake: RunCiolake,
    args: tuple[str, ...],
    env: dict[str, str],
    fragment: str,
) -> None:
    files = listing(data_dir / "tables")
    result = run_ciolake(*args, "--data-dir", data_dir, env=env)
    assert_one_line_error(result, EXIT_USAGE, fragment)
    assert listing(data_dir / "tables") == files


# 9. replay --workers: absurd values hung, and more processes than work made it slower.


@pytest.mark.parametrize("workers", ["100000", "0"])
def test_replay_refuses_absurd_workers(
    data_dir: Path, run_ciolake: RunCiolake, workers: str
) -> None:
    result = run_ciolake("replay", "--workers", workers, "--data-dir", data_dir)
    assert_one_line_error(result, EXIT_USAGE, "--workers")


def test_replay_starts_no_more_processes_than_the_work_needs(
    data_dir: Path, run_ciolake: RunCiolake
) -> None:
    before = stored_events(data_dir)
    started = time.monotonic()
    result = run_ciolake(
        "replay", "--workers", "50", "--data-dir", data_dir, env={"COLUMNS": "200"}
    )
    assert result.code == 0, result.stderr
    assert f"{DELIVERIES:,} deliveries" in result.stderr
    assert "1 process)" in result.stderr
    assert time.monotonic() - started < 30
    assert stored_events(data_dir) == before


# 10. tables answered "not created yet", exit 0, where there is no data directory at all.


@pytest.mark.parametrize(
    ("shape", "code", "fragment"),
    [
        ("missing data dir", EXIT_USAGE, "no data directory at"),
        ("data dir is a file", EXIT_USAGE, "is a file"),
        ("log missing, files kept", EXIT_FAILURE, "table email_events at"),
        ("unknown scheme", EXIT_USAGE, "unsupported scheme foo://"),
    ],
)
def test_tables_tells_a_missing_data_directory_from_tables_not_created(
    *, data_dir: Path, tmp_path: Path, run_ciolake: RunCiolake, shape: str, code: int, fragment: str
) -> None:
    where: tuple[str, str | Path] = ("--data-dir", tmp_path / "nope")
    if shape == "data dir is a file":
        (tmp_path / "afile").write_text("")
        where = ("--data-dir", tmp_path / "afile")
    elif shape == "log missing, files kept":
        delete_log(data_dir / "tables" / "email_events")
        where = ("--data-dir", data_dir)
    elif shape == "unknown scheme":
        where = ("--tables-uri", "foo://x")
    result = run_ciolake("tables", *where)
    assert_one_line_error(result, code, fragment)
    assert "not created yet" not in result.stdout


def test_tables_not_created_yet_only_in_an_existing_data_directory(
    tmp_path: Path, run_ciolake: RunCiolake
) -> None:
    (tmp_path / "fresh").mkdir()
    result = run_ciolake("tables", "--data-dir", tmp_path / "fresh", "--json")
    assert result.code == 0, result.stderr
    summaries = json.loads(result.stdout)
    assert [s["name"] for s in summaries] == list(ALL_SPECS)
    assert not any(s["exists"] for s in summaries)


# 11. check answered "0 fired" over a missing log (case 2 covers it) and crashed on a huge
# baseline.


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--volume-baseline-days", "100000000"),
        ("--volume-window-minutes", "100000000"),
        ("--quarantine-window-minutes", "100000000"),
        ("--sample-seconds", "100000000"),
    ],
)
def test_check_bounds_its_windows(
    data_dir: Path, run_ciolake: RunCiolake, flag: str, value: str
) -> None:
    result = run_ciolake("check", "--no-metrics", flag, value, "--data-dir", data_dir)
    assert_one_line_error(result, EXIT_USAGE, flag)


# 12. --until before --since gave exit 0 and nothing.


@pytest.mark.parametrize("command", ["report", "replay"])
def test_until_before_since_is_refused(
    data_dir: Path, run_ciolake: RunCiolake, command: str
) -> None:
    args = ("--since", "2026-02-01", "--until", "2026-01-01", "--data-dir", data_dir)
    result = run_ciolake(command, *args)
    assert_one_line_error(result, EXIT_USAGE, "--until 2026-01-01 is before --since 2026-02-01")


# 13. views --apply --data-dir nope refused, but left nope/analytics.duckdb behind.


def test_views_apply_creates_nothing_when_it_refuses(
    tmp_path: Path, run_ciolake: RunCiolake
) -> None:
    result = run_ciolake("views", "--apply", "--data-dir", "nope")
    assert_one_line_error(result, EXIT_USAGE, "no data directory at nope")
    assert not (tmp_path / "nope").exists()


# 14. The dashboard answered 500, with tracebacks in its log, over unreadable tables.


def dashboard_over(settings: Settings) -> TestClient:
    return TestClient(dashboard_app(settings, clock=lambda: NOW))


@pytest.mark.parametrize(
    ("shape", "reason", "fragment"),
    [
        ("log deleted", "tables_unreadable", "table email_events at"),
        ("last commit truncated", "tables_unreadable", "table email_events at"),
        ("unknown scheme", "tables_location_invalid", "unsupported scheme foo://"),
        ("no bucket", "tables_location_invalid", "names no bucket"),
    ],
)
def test_the_dashboard_answers_503_with_a_reason_and_logs_one_line(
    data_dir: Path, caplog: pytest.LogCaptureFixture, shape: str, reason: str, fragment: str
) -> None:
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=1.0
    )
    if shape in DAMAGES:
        DAMAGES[shape](data_dir / "tables" / "email_events")
    else:
        uri = {"unknown scheme": "foo://x", "no bucket": "s3://"}[shape]
        settings = make_settings(
            data_dir.parent,
            data_dir=data_dir,
            signing_keys=(),
            flush_interval_s=1.0,
            tables_uri=uri,
        )
    caplog.set_level(logging.INFO)
    with dashboard_over(settings) as client:
        for panel in ("events_per_day", "funnel", "events_per_day"):
            answer = client.get(f"/dashboard/data/{panel}")
            assert answer.status_code == 503, answer.text
            assert answer.json()["reason"] == reason
            assert fragment in answer.json()["error"]
        assert client.get("/dashboard").status_code == 200
    logged = [r for r in caplog.records if r.name.startswith("ciolake")]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].exc_info is None
    assert getattr(logged[0], "reason", None) == reason


def test_the_dashboard_answers_400_to_an_impossible_date(data_dir: Path) -> None:
    delete_log(data_dir / "tables" / "email_events")  # a bad date is told first, all the same
    settings = make_settings(
        data_dir.parent, data_dir=data_dir, signing_keys=(), flush_interval_s=1.0
    )
    with dashboard_over(settings) as client:
        for path in ("/dashboard/data/funnel", "/dashboard"):
            answer = client.get(path, params={"since": "2026-13-45"})
            assert answer.status_code == 400
            assert answer.json()["reason"] == "bad_filter"
            assert "since must be a date like 2026-01-31" in answer.json()["error"]


# 15. Ctrl-C in replay: exit 130 in one line, and the tables stay consistent.


def holds_open(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file called ``name`` open."""
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name):
                    return True
    return False


def test_ctrl_c_in_replay_exits_130_and_leaves_the_tables_consistent(
    data_dir: Path, tmp_path: Path, run_ciolake: RunCiolake
) -> None:
    before = stored_events(data_dir)
    # Lost, so that replay writes: the interrupt may land before, between or after commits.
    (data_dir / "tables" / "email_events").rename(tmp_path / "email_events.damaged")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIOLAKE_")}
    replay = subprocess.Popen(
        [sys.executable, "-m", "ciolake", "replay", "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    # The commit lock is open from the split of the range to the end of the replay.
    while not holds_open(replay.pid, "commit.lock"):
        assert replay.poll() is None, replay.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(replay.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = replay.communicate(timeout=60)
    result = CliResult(replay.returncode, out.decode(), err.decode())
    assert_one_line_error(result, EXIT_INTERRUPTED, "interrupted")

    for table in ALL_SPECS:
        if (data_dir / "tables" / table).exists():
            table_rows(data_dir, table, "count(*)")
    partial = stored_events(data_dir)
    assert partial.items() <= before.items()
    again = run_ciolake("replay", "--data-dir", data_dir)
    assert again.code == 0, again.stderr
    assert stored_events(data_dir) == before


_NO_WORKSPACE = {"DATABRICKS_HOST": "", "DATABRICKS_CLIENT_ID": "", "DATABRICKS_CLIENT_SECRET": ""}


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(
            ("serve", "uc://main"), {}, (EXIT_USAGE, ["uc://catalog.schema"]), id="no-schema"
        ),
        pytest.param(
            ("tables", "uc://main.ciolake.raw_events"),
            {},
            (EXIT_USAGE, ["uc://catalog.schema"]),
            id="a-table-not-a-schema",
        ),
        pytest.param(
            ("serve", "uc://main.ciolake"),
            {},
            (EXIT_USAGE, ["service principal", "DATABRICKS_HOST, DATABRICKS_CLIENT_ID"]),
            id="not-signed-in",
        ),
        pytest.param(
            ("serve", "uc://main.ciolake"),
            {
                "DATABRICKS_HOST": "http://127.0.0.1:9",
                "DATABRICKS_CLIENT_ID": "sp",
                "DATABRICKS_CLIENT_SECRET": "secret",
                "CIOLAKE_STORE_TIMEOUT_S": "1",
            },
            (
                EXIT_FAILURE,
                ["Unity Catalog at http://127.0.0.1:9 cannot be reached", "needs its tables once"],
            ),
            id="workspace-away",
        ),
        pytest.param(
            ("report", "uc://main.ciolake"),
            {},
            (EXIT_USAGE, ["DuckDB does not read tables through Unity Catalog", "--catalog main"]),
            id="report",
        ),
        pytest.param(
            ("check", "uc://main.ciolake"),
            {},
            (EXIT_USAGE, ["DuckDB does not read tables through Unity Catalog"]),
            id="check",
        ),
    ],
)
def test_tables_in_unity_catalog_mistakes_are_one_line(
    run_ciolake: RunCiolake,
    tmp_path: Path,
    args: tuple[str, str],
    env: dict[str, str],
    expected: tuple[int, list[str]],
) -> None:
    command, uri = args
    ports = ["--port", "0", "--admin-port", "0"] if command == "serve" else []
    result = run_ciolake(
        command,
        "--data-dir",
        tmp_path / "d",
        "--tables-uri",
        uri,
        *ports,
        env={"CIOLAKE_SIGNING_KEYS": "k", **_NO_WORKSPACE, **env},
        timeout=60,
    )
    code, fragments = expected
    assert_one_line_error(result, code, *fragments)
