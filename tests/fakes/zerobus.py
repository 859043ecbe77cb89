"""A fake Zerobus Ingest server on a loopback socket, speaking the SDK's gRPC protocol.

The service is ``databricks.zerobus.Zerobus/EphemeralStream``, a bidirectional stream: the
client's first message creates the stream (table name, record type), the next ones carry
records (one, or a batch, each with an offset id), and the server acknowledges durability up
to an offset. The messages are described here field by field (numbers and types as the
public service definition gives them; only what the SDK sends and reads is described), so
the fake needs grpcio and protobuf but no generated code.

What a test can make it do: hold acknowledgements (``hold_acks``), fail the next streams
with a retriable (``UNAVAILABLE``) or non-retriable (``PERMISSION_DENIED``) status, break a
stream after some records, and stop and start again on the same port (a restart). Every
request must carry the access token the fake workspace issued and the
``x-databricks-zerobus-table-name`` header naming a known table.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "ciolake.fake.zerobus"
_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_T = descriptor_pb2.FieldDescriptorProto
# message name -> [(field name, number, type, label, message type or None, oneof index or None)]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str | None, int | None]]] = {
    "JsonRecordBatch": [("records", 1, _T.TYPE_STRING, _REPEATED, None, None)],
    "ProtoEncodedRecordBatch": [("records", 1, _T.TYPE_BYTES, _REPEATED, None, None)],
    "CreateIngestStreamRequest": [
        ("table_name", 1, _T.TYPE_STRING, _OPTIONAL, None, None),
        ("descriptor_proto", 3, _T.TYPE_BYTES, _OPTIONAL, None, None),
        ("record_type", 4, _T.TYPE_INT32, _OPTIONAL, None, None),
    ],
    "CreateIngestStreamResponse": [("stream_id", 1, _T.TYPE_STRING, _OPTIONAL, None, None)],
    "IngestRecordRequest": [
        ("offset_id", 1, _T.TYPE_INT64, _OPTIONAL, None, None),
        ("proto_encoded_record", 2, _T.TYPE_BYTES, _OPTIONAL, None, 0),
        ("json_record", 3, _T.TYPE_STRING, _OPTIONAL, None, 0),
    ],
    "IngestRecordBatchRequest": [
        ("offset_id", 1, _T.TYPE_INT64, _OPTIONAL, None, None),
        ("proto_encoded_batch", 2, _T.TYPE_MESSAGE, _OPTIONAL, "ProtoEncodedRecordBatch", 0),
        ("json_batch", 3, _T.TYPE_MESSAGE, _OPTIONAL, "JsonRecordBatch", 0),
    ],
    "EphemeralStreamRequest": [
        ("create_stream", 1, _T.TYPE_MESSAGE, _OPTIONAL, "CreateIngestStreamRequest", 0),
        ("ingest_record", 2, _T.TYPE_MESSAGE, _OPTIONAL, "IngestRecordRequest", 0),
        ("ingest_record_batch", 3, _T.TYPE_MESSAGE, _OPTIONAL, "IngestRecordBatchRequest", 0),
    ],
    "IngestRecordResponse": [
        ("durability_ack_up_to_offset", 1, _T.TYPE_INT64, _OPTIONAL, None, None)
    ],
    "EphemeralStreamResponse": [
        ("create_stream_response", 1, _T.TYPE_MESSAGE, _OPTIONAL, "CreateIngestStreamResponse", 0),
        ("ingest_record_response", 2, _T.TYPE_MESSAGE, _OPTIONAL, "IngestRecordResponse", 0),
    ],
}
_ONEOFS = {
    "IngestRecordRequest": "record",
    "IngestRecordBatchRequest": "batch",
    "EphemeralStreamRequest": "payload",
    "EphemeralStreamResponse": "payload",
}


def _message_classes() -> dict[str, Any]:
    described = descriptor_pb2.FileDescriptorProto(
        name="ciolake_fake_zerobus.proto", package=_PACKAGE, syntax="proto2"
    )
    for name, fields in _MESSAGES.items():
        message = described.message_type.add(name=name)
        if name in _ONEOFS:
            message.oneof_decl.add(name=_ONEOFS[name])
        for field_name, number, kind, label, type_name, oneof in fields:
            added = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name is not None:
                added.type_name = f".{_PACKAGE}.{type_name}"
            if oneof is not None:
                added.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.Add(described)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _message_classes()
Request = _CLASSES["EphemeralStreamRequest"]
Response = _CLASSES["EphemeralStreamResponse"]
_SERVICE = "databricks.zerobus.Zerobus"


@dataclass
class FakeZerobus:
    """What the fake knows, saw and is told to do."""

    token: str
    tables: set[str]
    port: int = 0
    # Every record acknowledged, per table, as the JSON text received (duplicates kept).
    records: dict[str, list[str]] = field(default_factory=dict)
    streams_opened: int = 0
    # While set, records are received but not acknowledged.
    hold_acks: threading.Event = field(default_factory=threading.Event)
    # The next streams opened fail with these statuses, one each.
    fail_next: list[grpc.StatusCode] = field(default_factory=list)
    # After this many records in a stream, the stream breaks (UNAVAILABLE), unacknowledged.
    break_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The acknowledged records of ``table``, decoded."""
        with self.lock:
            return [json.loads(text) for text in self.records.get(table, [])]


class _Servicer:
    def __init__(self, fake: FakeZerobus) -> None:
        self._fake = fake

    def ephemeral_stream(
        self, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        fake = self._fake
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {fake.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no valid token")
        table = metadata.get("x-databricks-zerobus-table-name", "")
        if table not in fake.tables:
            context.abort(grpc.StatusCode.NOT_FOUND, f"table {table!r} does not exist")
        with fake.lock:
            fake.streams_opened += 1
            failure = fake.fail_next.pop(0) if fake.fail_next else None
        if failure is not None:
            context.abort(failure, f"injected {failure.name}")
        # The SDK (tonic) waits for the response headers before it sends its first message.
        context.send_initial_metadata(())
        first = next(requests)
        if not first.HasField("create_stream") or first.create_stream.table_name != table:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message must create the stream")
        yield Response(create_stream_response={"stream_id": str(uuid.uuid4())})
        yield from self._ingest(table, requests, context)

    def _ingest(
        self, table: str, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        fake = self._fake
        received = 0
        pending: list[tuple[int, list[str]]] = []
        for request in requests:
            offset, texts = _records_of(request)
            received += len(texts)
            pending.append((offset, texts))
            if fake.break_after is not None and received > fake.break_after:
                fake.break_after = None
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected stream break")
            if fake.hold_acks.is_set():
                continue
            with fake.lock:
                for _, held in pending:
                    fake.records.setdefault(table, []).extend(held)
            acked = pending[-1][0]
            pending = []
            yield Response(ingest_record_response={"durability_ack_up_to_offset": acked})


def _records_of(request: Any) -> tuple[int, list[str]]:
    if request.HasField("ingest_record_batch"):
        batch = request.ingest_record_batch
        return batch.offset_id, list(batch.json_batch.records)
    single = request.ingest_record
    return single.offset_id, [single.json_record]


class ZerobusServer:
    """The fake on a loopback port; ``restart`` stops it and starts it on the same port."""

    def __init__(self, fake: FakeZerobus) -> None:
        self.fake = fake
        self._server: grpc.Server | None = None
        self.start()

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        servicer = _Servicer(self.fake)
        handler = grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "EphemeralStream": grpc.stream_stream_rpc_method_handler(
                    servicer.ephemeral_stream,
                    request_deserializer=Request.FromString,
                    response_serializer=Response.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        self.fake.port = server.add_insecure_port(f"127.0.0.1:{self.fake.port}")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()
