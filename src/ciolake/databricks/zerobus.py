"""Raw events through Zerobus Ingest (``serve --sink zerobus``): the one importer of
``databricks-zerobus-ingest-sdk``.

The committer hands this sink what it would append to ``raw_events``; each row becomes a JSON
record of a Unity Catalog managed table with ``raw_events``' columns (timestamps as
microseconds and dates as days since the epoch, as Zerobus maps them), sent on one or more
streams (``zerobus_streams``: each stream has a rate quota) in requests of at most 4 MiB. The
call returns only once Zerobus has acknowledged every record durable, and only then does the
committer retire the journal segments, so a 200 still means durable here first.

Zerobus is at-least-once: a batch that failed part way, or was acknowledged just before a
crash, is sent again, and ``raw_events`` may hold a delivery twice. The channel tables come
from the Spark derivation job, which keeps one row per event. A failing stream is closed and
opened again at the next batch; the SDK's own recovery re-sends what a broken stream had not
acknowledged first. A refusal the SDK calls non-retriable (credentials, a missing table, a
record the table's schema refuses) is reported as a failing commit too: the deliveries wait
in the journal, ``/ready`` says why, and they go once it is fixed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ciolake.databricks.workspace import service_principal
from ciolake.errors import ConfigurationError, TableWriteError, TerminalError
from ciolake.lake.tables import RAW_EVENTS
from ciolake.settings import Settings, read_store_timeout

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

# One ingest request carries at most this much JSON (several records).
REQUEST_BYTES = 4 * 1024 * 1024
_APPLICATION = "ciolake/0.1"
_ENCODER = msgspec.json.Encoder()


class ZerobusRefusedError(TerminalError):
    """Zerobus refused the stream for good (credentials, privileges, a missing table)."""


@dataclass(frozen=True, slots=True)
class ZerobusTarget:
    """Where the raw events go and as whom."""

    endpoint: str
    workspace_url: str
    table: str
    client_id: str
    client_secret: str
    streams: int
    timeout_s: float


def target_of(settings: Settings, environ: Mapping[str, str] | None = None) -> ZerobusTarget:
    """The Zerobus target of ``settings`` (``--sink zerobus``), signed in as the service
    principal of ``DATABRICKS_HOST``, ``DATABRICKS_CLIENT_ID`` and ``DATABRICKS_CLIENT_SECRET``.

    Raises:
        ConfigurationError: a variable is missing.
    """
    env = os.environ if environ is None else environ
    principal = service_principal(env, "--sink zerobus")
    return ZerobusTarget(
        endpoint=(settings.zerobus_endpoint or "").rstrip("/"),
        workspace_url=principal.host,
        table=settings.zerobus_table or "",
        client_id=principal.client_id,
        client_secret=principal.client_secret,
        streams=settings.zerobus_streams,
        timeout_s=read_store_timeout(env),
    )


class ZerobusSink:
    """Appends ``raw_events`` rows through Zerobus, for the committer, as ``DeltaWriter`` does
    to the Delta tables."""

    def __init__(self, target: ZerobusTarget) -> None:
        self._target = target
        self._sdk: Any = None
        self._streams: list[Any] = []

    def ensure_tables(self) -> None:
        """Open the streams, so that credentials and the table are checked at start.

        A Zerobus that cannot be reached is no reason not to start: deliveries wait in the
        journal, and the streams are opened at the first batch.

        Raises:
            ZerobusRefusedError: Zerobus refuses the credentials or the table.
            ConfigurationError: the ``databricks`` extra is not installed.
        """
        try:
            self._open()
        except TableWriteError as exc:
            logger.warning("Zerobus out of reach at start", extra={"error": str(exc)})

    def committed_versions(self, streams: Iterable[int]) -> dict[str, dict[int, int]]:
        """Nothing is known to be held: Zerobus keeps no journal positions, so what the journal
        still holds at start is sent (again, at least once)."""
        return {RAW_EVENTS: dict.fromkeys(streams, 0)}

    def append_all(
        self,
        batches: Mapping[str, pa.Table],
        *,
        versions: Mapping[int, int],
        small_files: Literal["merge", "defer"] = "merge",
    ) -> dict[str, float]:
        """Send the ``raw_events`` rows of ``batches`` and wait until Zerobus holds them all.

        Returns:
            Seconds the sending took, for ``raw_events``.

        Raises:
            TableWriteError: a stream failed or was refused; nothing is known to be held (the
                batch is sent again).
        """
        started = time.monotonic()
        rows = batches.get(RAW_EVENTS)
        if rows is not None and rows.num_rows:
            self._send(json_records(rows))
        return {RAW_EVENTS: time.monotonic() - started}

    def close(self) -> None:
        """Close the streams (what they hold is acknowledged: every batch waited for it)."""
        self._discard()

    def _send(self, records: list[str]) -> None:
        try:
            streams = self._open()
            last: dict[int, int] = {}
            for index, request in enumerate(requests_of(records)):
                which = index % len(streams)
                offset = streams[which].ingest_records_offset(request)
                if offset is not None:
                    last[which] = offset
            # Each wait ends with the acknowledgement, or fails after the streams' time
            # without one (``server_lack_of_ack_timeout_ms``).
            for which, offset in last.items():
                streams[which].wait_for_offset(offset)
        except (ZerobusRefusedError, ConfigurationError) as exc:
            self._discard()
            raise TableWriteError(str(exc)) from exc
        except Exception as exc:
            self._discard()
            raise TableWriteError(_failure(exc, self._target)) from exc

    def _open(self) -> list[Any]:
        if self._streams:
            return self._streams
        sdk_module = _sdk_module()
        if self._sdk is None:
            self._sdk = _connect(sdk_module, self._target)
        try:
            self._streams = [self._create_stream(sdk_module) for _ in range(self._target.streams)]
        except sdk_module.NonRetriableException as exc:
            self._discard()
            raise ZerobusRefusedError(_failure(exc, self._target)) from exc
        except Exception as exc:
            self._discard()
            raise TableWriteError(_failure(exc, self._target)) from exc
        return self._streams

    def _create_stream(self, sdk_module: Any) -> Any:
        seconds = self._target.timeout_s
        options = sdk_module.StreamConfigurationOptions(
            recovery=True,
            recovery_timeout_ms=int(seconds * 1000),
            # The SDK's 2 s between attempts, shorter with a short time limit.
            recovery_backoff_ms=int(min(2.0, seconds / 4) * 1000),
            recovery_retries=2,
            server_lack_of_ack_timeout_ms=int(seconds * 1000),
            flush_timeout_ms=int(seconds * 1000),
        )
        return self._sdk.create_stream(
            self._target.client_id,
            self._target.client_secret,
            sdk_module.TableProperties(self._target.table),
            options,
        )

    def _discard(self) -> None:
        streams, self._streams = self._streams, []
        for stream in streams:
            try:
                stream.close()
            except Exception as exc:  # a broken stream may refuse to close; it is dropped
                logger.debug("closing a Zerobus stream failed", extra={"error": str(exc)})


def json_records(rows: pa.Table) -> list[str]:
    """``raw_events`` rows as Zerobus JSON records: timestamps in microseconds and dates in
    days since the epoch (what Zerobus maps to ``TIMESTAMP`` and ``DATE`` columns)."""
    import pyarrow as pa  # noqa: PLC0415  (not in ``serve``'s own process, which checks settings)
    import pyarrow.compute as pc  # noqa: PLC0415

    columns = {}
    for field in rows.schema:
        column = rows.column(field.name)
        if pa.types.is_timestamp(field.type):
            column = pc.cast(column, pa.int64())
        elif pa.types.is_date32(field.type):
            column = pc.cast(column, pa.int32())
        columns[field.name] = column
    plain = pa.table(columns)
    return [_ENCODER.encode(row).decode() for row in plain.to_pylist()]


def requests_of(records: list[str]) -> Iterator[list[str]]:
    """``records`` in order, grouped into requests of at most ``REQUEST_BYTES`` (a record
    larger than that alone in its request)."""
    request: list[str] = []
    size = 0
    for record in records:
        if request and size + len(record) > REQUEST_BYTES:
            yield request
            request, size = [], 0
        request.append(record)
        size += len(record)
    if request:
        yield request


def _connect(sdk_module: Any, target: ZerobusTarget) -> Any:
    sdk = sdk_module.ZerobusSdk(target.endpoint, target.workspace_url, _APPLICATION)
    if target.endpoint.startswith("http://"):
        # A local server without TLS (a test double): the SDK's Python wrapper does not
        # forward this switch of its core, so it is set there.
        sdk._inner.set_use_tls(False)
    return sdk


def _failure(exc: BaseException, target: ZerobusTarget) -> str:
    kind = "refused (non-retriable)" if type(exc).__name__ == "NonRetriableException" else "failed"
    text = str(exc).strip().splitlines()
    return f"Zerobus at {target.endpoint} {kind} for {target.table}: {text[0] if text else exc!r}"


def _sdk_module() -> Any:
    # The SDK's Rust core logs every stream it opens and closes, unless told otherwise before
    # it starts; its warnings and errors are kept.
    os.environ.setdefault("RUST_LOG", "warn")
    try:
        import zerobus  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(
            "--sink zerobus needs databricks-zerobus-ingest-sdk: pip install 'ciolake[zerobus]'"
        ) from exc
    return zerobus
