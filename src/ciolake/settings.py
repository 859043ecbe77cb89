"""Settings: one object built from the environment and command-line flags, passed down."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from ciolake.errors import ConfigurationError


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a running ciolake needs to know; built once, never read from globals."""

    host: str = "127.0.0.1"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8090
    admin_token: str | None = None
    workers: int | None = None
    data_dir: Path = Path("data")
    tables_uri: str | None = None
    signing_keys: tuple[str, ...] = ()
    timestamp_tolerance_s: int = 300
    max_body_bytes: int = 4_194_304
    flush_interval_s: float = 1.0
    batch_max_events: int = 5_000
    batch_max_bytes: int = 4 * 1024 * 1024
    max_backlog_events: int = 100_000
    max_backlog_bytes: int = 256 * 1024 * 1024
    segment_max_bytes: int = 64 * 1024 * 1024
    dedup_window_days: int = 8
    dedup_cache_mib: int = 8
    retry_after_s: int = 5
    shutdown_drain_s: float = 10.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 65_536
    max_connections: int = 1_000
    compact_interval_s: float = 3600.0
    background_nice: int = 0
    vacuum_retention_hours: int = 168
    log_level: str = "INFO"
    role: str = "all"
    receiver_id: int = 0
    sink: str = "delta"
    zerobus_endpoint: str | None = None
    zerobus_table: str | None = None
    zerobus_streams: int = 1

    @property
    def stream_base(self) -> int:
        """What this server adds to its journal streams' numbers in the tables: receivers
        sharing a lake number their streams apart (``STREAMS_PER_RECEIVER`` each)."""
        return self.receiver_id * STREAMS_PER_RECEIVER

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"

    @property
    def backfill_checkpoint_path(self) -> Path:
        """The days an interrupted ``ciolake backfill`` has done."""
        return self.state_dir / "backfill.json"

    @property
    def reconcile_summary_path(self) -> Path:
        """The last ``ciolake reconcile``'s summary (Prometheus text format)."""
        return self.state_dir / "reconcile.prom"

    @property
    def dedup_path(self) -> Path:
        """The exactly-once index (SQLite)."""
        return self.state_dir / "dedup.sqlite3"

    @property
    def run_dir(self) -> Path:
        """What lives only while a server runs: shared slots, metrics, the last failure."""
        return self.data_dir / "run"

    @property
    def shared_path(self) -> Path:
        """The int64 slots the supervisor and its workers share."""
        return self.run_dir / "shared"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess files."""
        return self.run_dir / "metrics"

    @property
    def commit_failure_path(self) -> Path:
        """The last commit failure's text, for every process's admin ``/ready``."""
        return self.run_dir / "commit-failure"

    def stream_dir(self, stream: int) -> Path:
        """Where journal ``stream`` lives."""
        return self.journal_dir / f"{STREAM_PREFIX}{stream}"

    def journal_streams(self) -> set[int]:
        """The journal streams found on disk."""
        names = (p.name.removeprefix(STREAM_PREFIX) for p in self.journal_dir.glob("stream-*"))
        return {int(name) for name in names if name.isdigit()}

    @property
    def tables_location(self) -> str:
        return self.tables_uri or str(self.data_dir / "tables")

    @property
    def dev_key_path(self) -> Path:
        return self.data_dir / "dev-signing-key"


KEYS_FILE_ENV = "CIOLAKE_SIGNING_KEYS_FILE"
STREAM_PREFIX = "stream-"
# ``serve --role``: ``all`` receives and derives the channel tables; ``receiver`` lands only
# ``raw_events`` (several may share a lake), for ``ciolake derive`` to derive from.
ROLES = ("all", "receiver")
# Journal streams (worker processes) a receiver may have: receiver r's stream k is numbered
# r * STREAMS_PER_RECEIVER + k in the tables and their app transactions.
STREAMS_PER_RECEIVER = 1000
MAX_RECEIVER_ID = 999_999
# ``serve --sink``: ``delta`` writes the Delta tables; ``zerobus`` sends raw events to a Unity
# Catalog managed table through Zerobus Ingest (``databricks/zerobus.py``).
SINKS = ("delta", "zerobus")
# Zerobus takes records of up to about 10 MB; a raw_events row holds the body, or its base64.
ZEROBUS_MAX_RECORD_BYTES = 10_000_000
_ZEROBUS_ROW_OVERHEAD = 4_096

_ENV_NAMES: dict[str, str] = {
    "CIOLAKE_HOST": "host",
    "CIOLAKE_PORT": "port",
    "CIOLAKE_ADMIN_HOST": "admin_host",
    "CIOLAKE_ADMIN_PORT": "admin_port",
    "CIOLAKE_ADMIN_TOKEN": "admin_token",
    "CIOLAKE_WORKERS": "workers",
    "CIOLAKE_DATA_DIR": "data_dir",
    "CIOLAKE_TABLES_URI": "tables_uri",
    "CIOLAKE_SIGNING_KEYS": "signing_keys",
    "CIOLAKE_TIMESTAMP_TOLERANCE_S": "timestamp_tolerance_s",
    "CIOLAKE_MAX_BODY_BYTES": "max_body_bytes",
    "CIOLAKE_FLUSH_INTERVAL_S": "flush_interval_s",
    "CIOLAKE_BATCH_MAX_EVENTS": "batch_max_events",
    "CIOLAKE_BATCH_MAX_BYTES": "batch_max_bytes",
    "CIOLAKE_MAX_BACKLOG_EVENTS": "max_backlog_events",
    "CIOLAKE_MAX_BACKLOG_BYTES": "max_backlog_bytes",
    "CIOLAKE_SEGMENT_MAX_BYTES": "segment_max_bytes",
    "CIOLAKE_DEDUP_WINDOW_DAYS": "dedup_window_days",
    "CIOLAKE_DEDUP_CACHE_MIB": "dedup_cache_mib",
    "CIOLAKE_RETRY_AFTER_S": "retry_after_s",
    "CIOLAKE_COMPACT_INTERVAL_S": "compact_interval_s",
    "CIOLAKE_BACKGROUND_NICE": "background_nice",
    "CIOLAKE_HEADER_TIMEOUT_S": "header_timeout_s",
    "CIOLAKE_BODY_TIMEOUT_S": "body_timeout_s",
    "CIOLAKE_MAX_HEADER_BYTES": "max_header_bytes",
    "CIOLAKE_MAX_CONNECTIONS": "max_connections",
    "CIOLAKE_VACUUM_RETENTION_HOURS": "vacuum_retention_hours",
    "CIOLAKE_LOG_LEVEL": "log_level",
    "CIOLAKE_ROLE": "role",
    "CIOLAKE_RECEIVER_ID": "receiver_id",
    "CIOLAKE_SINK": "sink",
    "CIOLAKE_ZEROBUS_ENDPOINT": "zerobus_endpoint",
    "CIOLAKE_ZEROBUS_TABLE": "zerobus_table",
    "CIOLAKE_ZEROBUS_STREAMS": "zerobus_streams",
}


# Read where object store requests are made (``lake/location.py``); checked here with the rest.
STORE_TIMEOUT_ENV = "CIOLAKE_STORE_TIMEOUT_S"
DEFAULT_STORE_TIMEOUT_S = 15.0
MAX_STORE_TIMEOUT_S = 600.0

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Past this, delta-rs's vacuum overflows its duration arithmetic (a Rust panic): 100 years.
MAX_RETENTION_HOURS = 100 * 366 * 24


def read_store_timeout(environ: Mapping[str, str]) -> float:
    """Seconds an object store request may go unanswered (``CIOLAKE_STORE_TIMEOUT_S``).

    Raises:
        ConfigurationError: not a number of seconds from 0.1 to 600.
    """
    raw = environ.get(STORE_TIMEOUT_ENV, "").strip()
    try:
        seconds = float(raw) if raw else DEFAULT_STORE_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= MAX_STORE_TIMEOUT_S:
        raise ConfigurationError(
            f"invalid setting {STORE_TIMEOUT_ENV}: {raw!r} is not a number of seconds from 0.1"
            f" to {MAX_STORE_TIMEOUT_S:.0f}"
        )
    return seconds


def parse_keys(raw: str) -> tuple[str, ...]:
    """Split a comma-separated key list, dropping blanks around and between keys."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from environment variables, then apply non-None flag overrides.

    Args:
        environ: the environment to read (defaults to ``os.environ``).
        **overrides: values from command-line flags; ``None`` means "not given".

    Raises:
        ConfigurationError: a value cannot be converted or is out of range.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for env_name, field in _ENV_NAMES.items():
        if env.get(env_name, "").strip():
            raw = env[env_name].strip()
            values[field] = parse_keys(raw) if field == "signing_keys" else raw
    keys_file = env.get(KEYS_FILE_ENV, "").strip()
    if keys_file:
        values["signing_keys"] = (*values.get("signing_keys", ()), *read_keys_file(keys_file))
    values.update({name: value for name, value in overrides.items() if value is not None})
    try:
        settings = msgspec.convert(values, Settings, strict=False, dec_hook=_decode_path)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(_explain(exc, values)) from exc
    _check_ranges(settings)
    read_store_timeout(env)
    return settings


def _explain(exc: msgspec.ValidationError, values: dict[str, Any]) -> str:
    """Name the setting a conversion error is about, as the user spelled it."""
    message = str(exc)
    field = message.rpartition("$.")[2].strip("`") if "$." in message else ""
    env_names = [env for env, name in _ENV_NAMES.items() if name == field]
    if not env_names or field not in values:
        return f"invalid setting: {message}"
    expected = message.partition("Expected `")[2].partition("`")[0].removesuffix(" | null")
    kind = _KINDS.get(expected, expected or "valid")
    source = env_names[0]
    if field in _FLAGGED:
        source += " or --" + field.replace("_", "-")
    return f"invalid setting {field} ({source}): {values[field]!r} is not {kind}"


# Settings that some command also takes as a flag of the same name.
_FLAGGED = {
    "host",
    "port",
    "admin_host",
    "admin_port",
    "workers",
    "data_dir",
    "tables_uri",
    "role",
    "receiver_id",
    "sink",
}
_KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false"}


def read_keys_file(path: str) -> tuple[str, ...]:
    """Signing keys from a file, one per line (blank lines and ``#`` comments skipped).

    Kubernetes secrets and systemd credentials arrive as files, so keys need not sit in the
    environment. The keys themselves never appear in an error message.

    Raises:
        ConfigurationError: the file cannot be read or holds no key.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"{KEYS_FILE_ENV}: cannot read {path}: {reason}") from exc
    lines = (line.strip() for line in text.splitlines())
    keys = tuple(line for line in lines if line and not line.startswith("#"))
    if not keys:
        raise ConfigurationError(f"{KEYS_FILE_ENV}: {path} holds no signing key")
    return keys


def encode_settings(settings: Settings) -> bytes:
    """Settings as JSON, for a process started with them (``decode_settings`` reads it)."""
    return msgspec.json.encode(settings, enc_hook=_encode_path)


def decode_settings(data: bytes) -> Settings:
    """The settings ``encode_settings`` wrote."""
    return msgspec.json.decode(data, type=Settings, dec_hook=_decode_path)


def _encode_path(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError


def _check_ranges(settings: Settings) -> None:
    positives = {
        "max_body_bytes": settings.max_body_bytes,
        "flush_interval_s": settings.flush_interval_s,
        "batch_max_events": settings.batch_max_events,
        "batch_max_bytes": settings.batch_max_bytes,
        "max_backlog_events": settings.max_backlog_events,
        "segment_max_bytes": settings.segment_max_bytes,
        "dedup_window_days": settings.dedup_window_days,
    }
    for name, value in positives.items():
        if value <= 0:
            raise ConfigurationError(f"invalid setting: {name} must be positive, got {value}")
    _check_listeners(settings)
    if settings.workers is not None and settings.workers < 1:
        raise ConfigurationError(
            f"invalid setting: workers must be 1 or more, got {settings.workers}"
        )
    _require_between("vacuum_retention_hours", settings.vacuum_retention_hours, MAX_RETENTION_HOURS)
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigurationError(
            f"invalid setting: log_level must be one of {', '.join(LOG_LEVELS)},"
            f" got {settings.log_level!r}"
        )
    if settings.timestamp_tolerance_s < 0:
        raise ConfigurationError("invalid setting: timestamp_tolerance_s must be >= 0")
    _check_role(settings)
    _check_sink(settings)
    if not 0 <= settings.background_nice <= 19:
        raise ConfigurationError(
            "invalid setting: background_nice must be 0 (off) to 19,"
            f" got {settings.background_nice}"
        )


def _require_between(name: str, value: int, highest: int) -> None:
    if not 0 <= value <= highest:
        raise ConfigurationError(f"invalid setting: {name} must be 0 to {highest}, got {value}")


def _check_sink(settings: Settings) -> None:
    if settings.sink not in SINKS:
        raise ConfigurationError(
            f"invalid setting: sink must be one of {', '.join(SINKS)}, got {settings.sink!r}"
        )
    if settings.sink != "zerobus":
        return
    missing = [
        env
        for env, value in (
            ("CIOLAKE_ZEROBUS_ENDPOINT", settings.zerobus_endpoint),
            ("CIOLAKE_ZEROBUS_TABLE", settings.zerobus_table),
        )
        if not value
    ]
    if missing:
        raise ConfigurationError(
            f"--sink zerobus needs {' and '.join(missing)} (the Zerobus endpoint of the workspace,"
            " https://<workspace-id>.zerobus.<region>.cloud.databricks.com, and the managed"
            " table, catalog.schema.table)"
        )
    if len((settings.zerobus_table or "").split(".")) != 3:
        raise ConfigurationError(
            f"invalid setting: zerobus_table must be catalog.schema.table,"
            f" got {settings.zerobus_table!r}"
        )
    if settings.zerobus_streams < 1:
        raise ConfigurationError("invalid setting: zerobus_streams must be 1 or more")
    # A body that is not UTF-8 travels as base64, a third longer.
    largest = settings.max_body_bytes * 4 // 3 + _ZEROBUS_ROW_OVERHEAD
    if largest > ZEROBUS_MAX_RECORD_BYTES:
        raise ConfigurationError(
            f"invalid setting: with --sink zerobus, max_body_bytes must leave a record under"
            f" Zerobus's {ZEROBUS_MAX_RECORD_BYTES:,} bytes: at most"
            f" {(ZEROBUS_MAX_RECORD_BYTES - _ZEROBUS_ROW_OVERHEAD) * 3 // 4:,},"
            f" got {settings.max_body_bytes:,}"
        )


def _check_role(settings: Settings) -> None:
    if settings.role not in ROLES:
        raise ConfigurationError(
            f"invalid setting: role must be one of {', '.join(ROLES)}, got {settings.role!r}"
        )
    _require_between("receiver_id", settings.receiver_id, MAX_RECEIVER_ID)
    if settings.role == "receiver" and settings.receiver_id == 0:
        # Receiver 0's streams are those of a server of role "all": an id of one's own
        # keeps a receiver's deliveries apart from any other's in the shared tables.
        raise ConfigurationError(
            "invalid setting: a receiver needs its own receiver_id (CIOLAKE_RECEIVER_ID or"
            " --receiver-id), 1 or more, different for every receiver of the lake"
        )
    if settings.role == "receiver" and (settings.workers or 1) > STREAMS_PER_RECEIVER:
        raise ConfigurationError(
            f"invalid setting: a receiver has at most {STREAMS_PER_RECEIVER} workers,"
            f" got {settings.workers}"
        )


def _check_listeners(settings: Settings) -> None:
    for name, port in (("port", settings.port), ("admin_port", settings.admin_port)):
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"invalid setting: {name} must be 0 to 65535, got {port}")
    if settings.admin_token is not None and not settings.admin_token.strip():
        raise ConfigurationError("invalid setting: admin_token is blank")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_exposure(host: str, token: str | None) -> None:
    """Refuse an admin listener reachable beyond this machine without a token.

    Raises:
        ConfigurationError: ``host`` is not loopback and no admin token is set.
    """
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"the admin listener on {host} would serve /metrics and the dashboard (campaign"
            " names, failure messages) beyond this machine: set CIOLAKE_ADMIN_TOKEN, or bind"
            " it to 127.0.0.1 with --admin-host"
        )
