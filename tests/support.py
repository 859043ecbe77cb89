"""Shared test helpers: a real `ciolake serve` process, signed posts, and an independent reader.

The reader is DuckDB's delta extension (delta-kernel), not delta-rs, so it checks what we wrote
without sharing our writer's code.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from ciolake.analytics.duck import delta_connection
from ciolake.events.decode import Typed, decode_event
from ciolake.events.samples import sample_event, schema_by_name, schema_keys
from ciolake.journal.records import JournalRecord
from ciolake.lake import maintenance, rows
from ciolake.lake.tables import CHANNEL_TABLES
from ciolake.receive.verify import Verdict, sign
from ciolake.runtime.embedded import Receiver
from ciolake.settings import Settings

TEST_KEY = "test-signing-key-0123456789abcdef"
WEBHOOK_PATH = "/webhooks/customerio"


def sample_bodies(count: int, *, seed: int, timestamp: int) -> list[bytes]:
    """``count`` unique sample bodies cycling through all 69 schemas."""
    rng = random.Random(seed)
    keys = schema_keys()
    return [
        body_of(sample_event(schema_by_name(keys[i % len(keys)][0]), rng=rng, timestamp=timestamp))
        for i in range(count)
    ]


def post_all(url: str, bodies: Sequence[bytes]) -> None:
    """POST each body, signed with ``TEST_KEY``, to ``url``; every answer must be 200."""
    with httpx.Client(timeout=10) as client:
        for body in bodies:
            answer = client.post(url, content=body, headers=signed_headers(body))
            assert answer.status_code == 200, answer.text


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def signed_headers(
    body: bytes, *, key: str = TEST_KEY, timestamp: int | None = None
) -> dict[str, str]:
    """Headers as Customer.io sends them."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "X-CIO-Timestamp": str(ts),
        "X-CIO-Signature": sign(body, key, ts),
    }


def body_of(event: Mapping[str, Any]) -> bytes:
    """The compact JSON bytes of an event."""
    return json.dumps(event, separators=(",", ":")).encode()


@dataclass
class ServerProcess:
    """A `ciolake serve` subprocess on a loopback port."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    @property
    def base(self) -> str:
        """The public listener: the webhook, /health and a bare /ready."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_base(self) -> str:
        """The admin listener: /ready with reasons, /metrics, /dashboard."""
        return f"http://127.0.0.1:{self.admin_port}"

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or power cut would."""
        self.process.kill()
        self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def start_server(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
    ready_timeout: float = 30.0,
) -> ServerProcess:
    """Start `ciolake serve` and wait until /health answers."""
    port = free_port()
    admin_port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"serve-{port}.log"
    full_env = {
        **os.environ,
        "CIOLAKE_SIGNING_KEYS": TEST_KEY,
        "CIOLAKE_FLUSH_INTERVAL_S": "0.2",
        # Two workers whatever the machine: every end-to-end test covers several journals.
        "CIOLAKE_WORKERS": "2",
        **(env or {}),
    }
    command = [*prefix, sys.executable, "-m", "ciolake", "serve"]
    command += ["--port", str(port), "--admin-port", str(admin_port)]
    command += ["--data-dir", str(data_dir), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = ServerProcess(process, port, data_dir, log_path, admin_port)
    _wait_healthy(server, ready_timeout)
    return server


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.log()}")


@contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[ServerProcess]:
    """A server for the duration of a with-block; SIGTERM (or SIGKILL if stuck) at the end."""
    server = start_server(data_dir, **kwargs)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            try:
                server.stop()
            except subprocess.TimeoutExpired:
                server.kill()


def wait_until_committed(server: ServerProcess, timeout: float = 30.0) -> None:
    """Wait until the server's backlog gauge is zero."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.admin_base}/metrics", timeout=5).text
        if metric_value(text, "ciolake_backlog_events") == 0:
            return
        time.sleep(0.1)
    raise TimeoutError("backlog did not drain")


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate`` every 0.2 s until it is true; return the seconds it took.

    Raises:
        AssertionError: not within ``timeout`` seconds, naming ``what``.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text format (0 when absent)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def delta_reader() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension loaded from the installed wheel, offline."""
    connection: duckdb.DuckDBPyConnection = delta_connection()
    return connection


_SHARED_READER: list[duckdb.DuckDBPyConnection] = []
_SHARED_READER_LOCK = threading.Lock()


def _shared_reader() -> duckdb.DuckDBPyConnection:
    """A cursor of one DuckDB database per test process, for queries that create nothing:
    loading the delta extension into every new database costs more CPU than most reads."""
    with _SHARED_READER_LOCK:
        if not _SHARED_READER:
            _SHARED_READER.append(delta_reader())
        return _SHARED_READER[0].cursor()


def table_rows(
    data_dir: Path, table: str, columns: str = "*", where: str = ""
) -> list[dict[str, Any]]:
    """Rows of a Delta table under ``data_dir``, read by DuckDB."""
    path = data_dir / "tables" / table
    query = f"SELECT {columns} FROM delta_scan('{path}') {where}"
    cursor = _shared_reader()
    try:
        cursor.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def promtool() -> str:
    """The promtool `make test-deps` unpacks into the venv, else one on PATH; skip without."""
    beside = Path(sys.executable).parent / "promtool"
    found = str(beside) if beside.exists() else shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is missing: `make test-deps` installs it")
    return found


@dataclass
class S3Server:
    """moto's S3 server on loopback, with one bucket, and the environment that points at it."""

    endpoint: str
    bucket: str
    # The credentials that may do anything (with ``iam``, an administrator's access key).
    key_id: str = "test"
    secret: str = "test"

    @property
    def env(self) -> dict[str, str]:
        """What `ciolake` (delta-rs) needs to write there: credentials, endpoint, safe commits."""
        return s3_env(self.endpoint, self.key_id, self.secret)

    @property
    def boto_credentials(self) -> dict[str, str]:
        """The administrator's credentials, as boto3 clients take them."""
        return _boto_credentials(self.key_id, self.secret)


def s3_env(endpoint: str, key_id: str = "test", secret: str = "test") -> dict[str, str]:
    """Credentials and settings for an S3-compatible server at ``endpoint`` (no TLS)."""
    return {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_CONDITIONAL_PUT": "etag",
    }


# The requests moto serves before it checks credentials, with ``iam``: the bucket, then an
# administrator (user, access key, policy).
_UNCHECKED_REQUESTS = 4
_ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@contextmanager
def s3_server(bucket: str = "lake", *, iam: bool = False) -> Iterator[S3Server]:
    """moto's S3 server in a process of its own on a loopback port, stopped afterwards.

    Not in the test's process: delta-rs's storage handler holds the GIL while it waits for
    the store, so a server in the same interpreter would stall until the request times out.
    With ``iam``, the server checks every request's credentials against its IAM users and
    their policies (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``), as AWS does: a key it deleted,
    or one whose policy does not cover the object, is refused.
    """
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    if iam:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(_UNCHECKED_REQUESTS)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.1)
        client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        if not iam:
            yield S3Server(endpoint, bucket)
            return
        admin = boto3.client("iam", endpoint_url=endpoint, **_boto_credentials())
        admin.create_user(UserName="admin")
        key = admin.create_access_key(UserName="admin")["AccessKey"]
        admin.put_user_policy(
            UserName="admin", PolicyName="all", PolicyDocument=json.dumps(_ADMIN_POLICY)
        )
        yield S3Server(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_client(server: S3Server) -> Any:
    """A boto3 client of the test server: to look at or change the bucket behind ciolake."""
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, **server.boto_credentials)


def s3_keys(server: S3Server, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the test server's bucket, read with boto3."""
    pages = (
        s3_client(server)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=server.bucket, Prefix=prefix)
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _boto_credentials(key_id: str = "test", secret: str = "test") -> dict[str, str]:
    return {
        "aws_access_key_id": key_id,
        "aws_secret_access_key": secret,
        "region_name": "us-east-1",
    }


_S3_READERS: dict[str, duckdb.DuckDBPyConnection] = {}


def s3_table_rows(server: S3Server | str, uri: str, columns: str = "*") -> list[dict[str, Any]]:
    """Rows of a Delta table on the S3 test server, read by DuckDB (httpfs + delta), through
    one database per server and test process (see ``_shared_reader``)."""
    endpoint = server if isinstance(server, str) else server.endpoint
    with _SHARED_READER_LOCK:
        if endpoint not in _S3_READERS:
            _S3_READERS[endpoint] = s3_reader(server)
        cursor = _S3_READERS[endpoint].cursor()
    try:
        cursor.execute(f"SELECT {columns} FROM delta_scan('{uri}')")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def s3_reader(server: S3Server | str) -> duckdb.DuckDBPyConnection:
    """DuckDB with its delta and httpfs extensions, pointed at the S3 test server."""
    endpoint, key_id, secret = (
        (server, "test", "test")
        if isinstance(server, str)
        else (server.endpoint, server.key_id, server.secret)
    )
    connection = delta_reader()
    connection.execute("LOAD httpfs")
    host = endpoint.removeprefix("http://")
    connection.execute(
        f"CREATE SECRET test_s3 (TYPE S3, KEY_ID '{key_id}', SECRET '{secret}',"
        f" REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    return connection


class StallingProxy:
    """A TCP forwarder on loopback that can stall: accept connections and never answer.

    Stands between ciolake and a test server to make a store "go away" the way a hung
    endpoint does, then come back, without restarting the server behind it.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stall(self) -> None:
        """From now on, accept and never answer; cut the connections open now."""
        self._stalled.set()
        self._close_open()

    def resume(self) -> None:
        """Forward again; drop the connections held while stalled."""
        self._stalled.clear()
        self._close_open()

    def close(self) -> None:
        self._listener.close()
        self._close_open()

    def _close_open(self) -> None:
        with self._lock:
            connections, self._open = self._open, []
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(client)
            if not self._stalled.is_set():
                threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.append(upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, target: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65_536):
            target.sendall(data)
    with suppress(OSError):
        target.shutdown(socket.SHUT_WR)


# --- Data landed through the embedded receiver, and tables damaged on purpose --------------

NOW = 1_790_000_000
"""The fixed "now" of the tests that land data through the embedded receiver."""


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a data directory under ``tmp_path`` (``conftest.make_settings`` binds it)."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "signing_keys": (TEST_KEY,),
        "flush_interval_s": 0.05,
        **overrides,
    }
    return Settings(**values)


def make_bodies(count: int, seed: int = 1) -> list[bytes]:
    """``count`` unique sample bodies signed at ``NOW``."""
    return sample_bodies(count, seed=seed, timestamp=NOW)


def receive(
    settings: Settings,
    deliveries: list[tuple[bytes, bool]],
    *,
    at: float = NOW + 5.0,
    signed_at: int = NOW,
) -> None:
    """Land ``(body, stale)`` deliveries through the embedded receiver at unix time ``at``.

    A stale delivery is signed an hour before ``signed_at``.
    """
    receiver = Receiver(settings, clock=lambda: at)
    receiver.open()

    async def go() -> None:
        for body, stale in deliveries:
            verdict = Verdict(timestamp=signed_at - (3600 if stale else 0), stale=stale)
            await receiver.accept(body, verdict)
        deadline = time.monotonic() + 30
        while receiver.backlog()[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await receiver.close()

    asyncio.run(go())


def receive_at(settings: Settings, bodies: list[bytes], *, at: float) -> None:
    """Receive ``bodies`` at unix time ``at``, signed then (none stale), all at once: they
    share group commits, as a burst of requests does."""
    receiver = Receiver(settings, clock=lambda: at)
    receiver.open()

    async def go() -> None:
        verdict = Verdict(timestamp=int(at), stale=False)
        await asyncio.gather(*(receiver.accept(body, verdict) for body in bodies))
        deadline = time.monotonic() + 30
        while receiver.backlog()[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await receiver.close()

    asyncio.run(go())


def channel_rows(settings: Settings, columns: str = "*") -> dict[str, dict[str, Any]]:
    """Every channel row by event id (asserting none is there twice), with its table."""
    found: dict[str, dict[str, Any]] = {}
    wanted = columns if columns == "*" or "event_id" in columns else f"event_id, {columns}"
    for table in CHANNEL_TABLES:
        for row in table_rows(settings.data_dir, table, wanted):
            assert row["event_id"] not in found, f"{row['event_id']} is stored twice"
            found[row["event_id"]] = {**row, "table": table}
    return found


def delete_log(table: Path) -> None:
    """Lose a table's whole ``_delta_log``, its data files left behind."""
    shutil.rmtree(table / "_delta_log")


def truncate_last_commit(table: Path) -> None:
    """Cut a table's last commit file short, as a torn write would.

    A checkpoint of a version is written only after its commit is whole, so a torn commit has
    none: one of the last version (every tenth version has one) goes too, or readers would start
    from it and never read the torn file.
    """
    log = table / "_delta_log"
    last = sorted(log.glob("*.json"))[-1]
    checkpoints = list(log.glob(f"{last.stem}.checkpoint*.parquet"))
    for checkpoint in checkpoints:
        checkpoint.unlink()
    if checkpoints:
        (log / "_last_checkpoint").unlink(missing_ok=True)
    last.write_bytes(last.read_bytes()[:200])


def email_batch(count: int, *, seed: int) -> pa.Table:
    """``email_events`` rows of the sample deliveries among ``count`` that type as email."""
    items = [
        (JournalRecord(i, NOW * 1_000_000, NOW, 0, b, 0), decode_event(b))
        for i, b in enumerate(sample_bodies(count, seed=seed, timestamp=NOW), start=1)
    ]
    email = [(r, t) for r, t in items if isinstance(t, Typed) and t.table == "email_events"]
    return rows.channel_table("email_events", email)


def email_events(settings: Settings) -> DeltaTable:
    """The ``email_events`` table, opened with delta-rs (to damage or inspect it)."""
    return DeltaTable(str(settings.data_dir / "tables" / "email_events"))


def received_and_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, seed: int
) -> tuple[Settings, str]:
    """300 deliveries in three commits, then compacted into files of 16-row row groups; the
    settings, and the one file of ``raw_events``."""
    monkeypatch.setattr(maintenance, "ROW_GROUP_ROWS", 16)
    settings = make_settings(tmp_path)
    bodies = sample_bodies(300, seed=seed, timestamp=NOW)
    for start in range(0, 300, 100):  # three commits: files for compaction to merge
        receive_at(settings, bodies[start : start + 100], at=NOW + 5)
    maintenance.compact_all(settings.tables_location, tables=None, before=None, retention_hours=0)
    (raw_file,) = DeltaTable(str(settings.data_dir / "tables" / "raw_events")).file_uris()
    return settings, raw_file


@contextmanager
def tmpfs(path: Path, *, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (made if missing): a real file system that fills up
    (ENOSPC) or refuses every write (read-only), which permission bits cannot do for root.

    Skips the test where mounting is not allowed.
    """
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
