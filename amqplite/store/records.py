"""Journal records on disk: a file header with the schema version, then [len][crc32][type][payload]."""

from __future__ import annotations

import enum
import struct
import zlib
from typing import Any, Protocol

import attrs

from amqplite.protocol import codec

MAGIC = b"AQLT"
SCHEMA_VERSION = 1
FILE_HEADER = struct.Struct(">4sHBxQ")  # magic, schema version, file kind, pad, extra (u64)
RECORD_HEAD = struct.Struct(">II")  # length of type+payload, crc32 of type+payload
MAX_RECORD = 1 << 31

_ENQUEUE = struct.Struct(">QIBq")  # seq, delivery count, priority, expiration ms (-1: none)
_TYPED_ENQUEUE = struct.Struct(">BQIBq")  # the type byte, then _ENQUEUE
_TYPED_SEQ = struct.Struct(">BQ")  # the type byte and a seq (REMOVE)
_U64 = struct.Struct(">Q")
_DELIVERED = struct.Struct(">QI")
_EXPIRES = struct.Struct(">Qd")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class FileKind(enum.IntEnum):
    """What a store file holds; checked with the schema version when the file is opened."""

    SEGMENT = 1  # queue journal segment; extra = segment number
    SNAPSHOT = 2  # queue snapshot; extra = last segment number it covers
    METADATA = 3  # metadata log; extra = 0


class RecordType(enum.IntEnum):
    """The type byte of a record."""

    ENQUEUE = 1
    REMOVE = 2
    DELIVERED = 3
    EXPIRES = 4  # the message's TTL deadline as POSIX milliseconds (absolute across restarts)
    DELIVERED_ONCE = (
        5  # u64 seqs handed out (a delivery count of at least 1), one record per commit
    )
    SNAPSHOT_END = 9
    EXCHANGE = 10
    EXCHANGE_DELETED = 11
    QUEUE = 12
    QUEUE_DELETED = 13
    BINDING = 14
    BINDING_REMOVED = 15
    VHOST = 16
    VHOST_DELETED = 17
    USER = 18
    USER_DELETED = 19
    PERMISSION = 20
    PERMISSION_CLEARED = 21
    POLICY = 22
    POLICY_CLEARED = 23
    PLUGIN_STATE = 24  # a plugin's durable record: scope, vhost, key, value
    PLUGIN_STATE_DELETED = 25
    PLUGIN_SCOPE_CLEARED = 26
    TOPIC_PERMISSIONS = 27  # a user's topic permissions on a vhost, all of them (none: cleared)
    LIMITS = 28  # a user's or vhost's limits, all of them (none: cleared)
    STREAM_MESSAGE = 40  # a stream queue's message: offset, timestamp, filter hash, names, body
    STREAM_TRACK = 41  # a stream's named consumer and its last acked offset


class StoreFileError(Exception):
    """A store file has a wrong magic, kind or schema version."""


def file_header(kind: FileKind, extra: int = 0) -> bytes:
    """The header at the start of every store file."""
    return FILE_HEADER.pack(MAGIC, SCHEMA_VERSION, int(kind), extra)


def read_header(data: bytes | memoryview, kind: FileKind) -> int:
    """Check a file header and return its extra field; StoreFileError if it is not ours."""
    if len(data) < FILE_HEADER.size:
        raise StoreFileError(f"short header ({len(data)} bytes)")
    magic, version, got_kind, extra = FILE_HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise StoreFileError(f"bad magic {magic!r}")
    if version != SCHEMA_VERSION:
        raise StoreFileError(f"schema version {version}, expected {SCHEMA_VERSION}")
    if got_kind != kind:
        raise StoreFileError(f"file kind {got_kind}, expected {int(kind)}")
    return int(extra)


def frame(record_type: RecordType, payload: bytes) -> bytes:
    """One record: length and crc32 cover the type byte and the payload."""
    body = bytes((record_type,)) + payload
    return RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body


@attrs.frozen
class ScanResult:
    """Records read from a buffer: (type, payload, offset), where good data ends, and why it stopped."""

    records: list[tuple[int, memoryview, int]]
    end: int
    problem: str | None  # None: clean end of data


def scan(data: bytes | memoryview, start: int) -> ScanResult:
    """Read records from start until the end or the first torn or corrupt record."""
    view = memoryview(data)
    size = len(view)
    offset = start
    records: list[tuple[int, memoryview, int]] = []
    head = RECORD_HEAD.size
    while offset < size:
        if size - offset < head:
            return ScanResult(records, offset, f"torn record header ({size - offset} bytes)")
        length, crc = RECORD_HEAD.unpack_from(view, offset)
        if length == 0 or length > MAX_RECORD:
            return ScanResult(records, offset, f"bad record length {length}")
        if size - offset - head < length:
            return ScanResult(
                records, offset, f"torn record ({size - offset - head} of {length} bytes)"
            )
        body = view[offset + head : offset + head + length]
        if zlib.crc32(body) != crc:
            return ScanResult(records, offset, "checksum mismatch")
        records.append((body[0], body[1:], offset))
        offset += head + length
    return ScanResult(records, offset, None)


# -- queue records ---------------------------------------------------------------------------


@attrs.frozen
class StoredMessage:
    """A journaled message as read back: what is needed to rebuild the Message and its entry."""

    seq: int
    delivery_count: int
    priority: int
    expiration_ms: int | None
    exchange: str
    routing_key: str
    properties_bin: bytes
    body: bytes
    source: int = -1  # >= 0: the body was left in recovery source file `source` (body is b"")
    body_offset: int = 0  # where the body starts in that file
    body_length: int = 0


_NAMES: dict[tuple[str, str], bytes] = {}
_NAMES_MAX = 4096


def _names(exchange: str, routing_key: str) -> bytes:
    """The exchange and routing key as an ENQUEUE record carries them (cached: they repeat)."""
    key = (exchange, routing_key)
    names = _NAMES.get(key)
    if names is None:
        ex = exchange.encode(
            "utf-8", "surrogateescape"
        )  # shortstrs are bytes: keep any, losslessly
        rk = routing_key.encode("utf-8", "surrogateescape")
        names = _U16.pack(len(ex)) + ex + _U16.pack(len(rk)) + rk
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[key] = names
    return names


_ENQUEUE_TYPE = int(RecordType.ENQUEUE)  # a plain int: an enum member read costs on every message


def _enqueue_head(
    seq: int,
    delivery_count: int,
    priority: int,
    expiration_ms: int | None,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
) -> bytes:
    """An ENQUEUE record's type and payload up to the body."""
    return b"".join(
        (
            _TYPED_ENQUEUE.pack(
                _ENQUEUE_TYPE,
                seq,
                delivery_count,
                priority & 0xFF,
                -1 if expiration_ms is None else expiration_ms,
            ),
            _NAMES.get((exchange, routing_key)) or _names(exchange, routing_key),
            _U32.pack(len(properties_bin)),
            properties_bin,
        )
    )


def append_enqueue(
    buffer: bytearray,
    seq: int,
    delivery_count: int,
    priority: int,
    expiration_ms: int | None,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    body: bytes,
) -> int:
    """Append an ENQUEUE record carrying the whole message to `buffer`; returns its size.

    The body is copied once, into the buffer: the crc32 is chained over the head and the body
    instead of being computed over a joined copy.
    """
    head = _enqueue_head(
        seq, delivery_count, priority, expiration_ms, exchange, routing_key, properties_bin
    )
    length = len(head) + len(body)
    buffer += RECORD_HEAD.pack(length, zlib.crc32(body, zlib.crc32(head)))
    buffer += head
    buffer += body
    return RECORD_HEAD.size + length


class BodySource(Protocol):
    """A body on disk (store.bodies.BodyRef): its length, and a read for the worker thread."""

    length: int

    def read(self) -> bytes:
        """The body bytes (blocking file I/O)."""
        ...


class LateEnqueue:
    """An ENQUEUE record whose body is on disk: its bytes are made in the worker thread."""

    __slots__ = ("body", "head", "size")

    def __init__(
        self,
        seq: int,
        delivery_count: int,
        priority: int,
        expiration_ms: int | None,
        exchange: str,
        routing_key: str,
        properties_bin: bytes,
        body: BodySource,
    ) -> None:
        self.head = _enqueue_head(
            seq, delivery_count, priority, expiration_ms, exchange, routing_key, properties_bin
        )
        self.body = body
        self.size = RECORD_HEAD.size + len(self.head) + body.length

    def encode(self) -> bytes:
        """The record, its body read from disk (blocking: call it in the worker thread)."""
        body = self.body.read()
        if len(body) != self.body.length:
            raise OSError(f"body changed length: {len(body)} of {self.body.length}")
        head = self.head
        crc = zlib.crc32(body, zlib.crc32(head))
        return b"".join((RECORD_HEAD.pack(len(head) + len(body), crc), head, body))


def encode_enqueue(
    seq: int,
    delivery_count: int,
    priority: int,
    expiration_ms: int | None,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    body: bytes,
) -> bytes:
    """An ENQUEUE record carrying the whole message, as bytes."""
    buffer = bytearray()
    append_enqueue(
        buffer,
        seq,
        delivery_count,
        priority,
        expiration_ms,
        exchange,
        routing_key,
        properties_bin,
        body,
    )
    return bytes(buffer)


def decode_enqueue(payload: memoryview, source: int = -1, payload_at: int = 0) -> StoredMessage:
    """The message of an ENQUEUE payload; with a source, the body is located (at payload_at) not copied."""
    seq, count, prio, exp, ex, rk, props, at, length = decode_enqueue_head(payload, payload_at)
    if source >= 0:  # the body stays in the source file; only its place is kept
        return StoredMessage(seq, count, prio, exp, ex, rk, props, b"", source, at, length)
    body = bytes(payload[at - payload_at :])
    return StoredMessage(seq, count, prio, exp, ex, rk, props, body)


LocatedMessage = tuple[int, int, int, int | None, str, str, bytes, int, int]
"""seq, delivery count, priority, expiration ms, exchange, routing key, properties, body offset
and body length: an ENQUEUE record read without its body."""


def decode_enqueue_head(payload: memoryview, payload_at: int) -> LocatedMessage:
    """An ENQUEUE payload's fields, its body only located (payload_at: where the payload starts)."""
    seq, count, priority, expiration = _ENQUEUE.unpack_from(payload, 0)
    offset = _ENQUEUE.size
    (n,) = _U16.unpack_from(payload, offset)
    exchange = str(payload[offset + 2 : offset + 2 + n], "utf-8", "surrogateescape")
    offset += 2 + n
    (n,) = _U16.unpack_from(payload, offset)
    routing_key = str(payload[offset + 2 : offset + 2 + n], "utf-8", "surrogateescape")
    offset += 2 + n
    (n,) = _U32.unpack_from(payload, offset)
    properties_bin = bytes(payload[offset + 4 : offset + 4 + n])
    start = offset + 4 + n
    return (
        seq,
        count,
        priority,
        None if expiration < 0 else expiration,
        exchange,
        routing_key,
        properties_bin,
        payload_at + start,
        len(payload) - start,
    )


def enqueue_seq(payload: memoryview) -> int:
    """The sequence number of an ENQUEUE payload (without decoding the rest)."""
    return int(_U64.unpack_from(payload, 0)[0])


def enqueue_body_offset(payload: memoryview) -> int:
    """Where the body starts inside an ENQUEUE payload (lazy bodies are read from there)."""
    offset: int = _ENQUEUE.size
    offset += 2 + int(_U16.unpack_from(payload, offset)[0])
    offset += 2 + int(_U16.unpack_from(payload, offset)[0])
    return offset + 4 + int(_U32.unpack_from(payload, offset)[0])


def encode_remove(seq: int) -> bytes:
    """A REMOVE record: the message left the queue for good."""
    body = _TYPED_SEQ.pack(2, seq)  # RecordType.REMOVE (a literal: once per acked message)
    return RECORD_HEAD.pack(9, zlib.crc32(body)) + body


def encode_delivered_once(seqs: list[int]) -> bytes:
    """A DELIVERED_ONCE record: these messages have been handed out (at least once)."""
    return frame(RecordType.DELIVERED_ONCE, struct.pack(f">{len(seqs)}Q", *seqs))


def decode_seqs(payload: memoryview) -> tuple[int, ...]:
    """The seqs of a DELIVERED_ONCE payload."""
    return struct.unpack(f">{len(payload) // 8}Q", payload)


def encode_delivered(seq: int, delivery_count: int) -> bytes:
    """A DELIVERED record: the message has been handed out delivery_count times."""
    return frame(RecordType.DELIVERED, _DELIVERED.pack(seq, delivery_count))


def encode_expires(seq: int, deadline_ms: float) -> bytes:
    """An EXPIRES record: the message expires at this wall-clock time (POSIX ms)."""
    return frame(RecordType.EXPIRES, _EXPIRES.pack(seq, deadline_ms))


def decode_expires(payload: memoryview) -> tuple[int, float]:
    """(seq, deadline in POSIX ms) of an EXPIRES payload."""
    seq, deadline = _EXPIRES.unpack_from(payload, 0)
    return int(seq), float(deadline)


def decode_seq(payload: memoryview) -> int:
    """The sequence number of a REMOVE payload."""
    return int(_U64.unpack_from(payload, 0)[0])


def decode_delivered(payload: memoryview) -> tuple[int, int]:
    """(seq, delivery count) of a DELIVERED payload."""
    seq, count = _DELIVERED.unpack_from(payload, 0)
    return int(seq), int(count)


def encode_snapshot_end(count: int) -> bytes:
    """The last record of a complete snapshot: how many messages it holds."""
    return frame(RecordType.SNAPSHOT_END, _U64.pack(count))


# -- metadata records ------------------------------------------------------------------------


def _str(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return _U32.pack(len(raw)) + raw


def _read_str(payload: memoryview, offset: int) -> tuple[str, int]:
    (n,) = _U32.unpack_from(payload, offset)
    return bytes(payload[offset + 4 : offset + 4 + n]).decode(
        "utf-8", "surrogateescape"
    ), offset + 4 + n


def encode_fields(record_type: RecordType, *fields: str | bool | dict[str, Any]) -> bytes:
    """A metadata record: strings, booleans and AMQP field tables (arguments) in order."""
    parts: list[bytes] = []
    for value in fields:
        if isinstance(value, bool):
            parts.append(b"\x01" if value else b"\x00")
        elif isinstance(value, str):
            parts.append(_str(value))
        else:
            parts.append(codec.write_table(value))
    return frame(record_type, b"".join(parts))


def decode_fields(payload: memoryview, layout: str) -> list[Any]:
    """Decode a metadata record by layout: 's' string, 'b' boolean, 't' field table."""
    values: list[Any] = []
    offset = 0
    for kind in layout:
        if kind == "s":
            text, offset = _read_str(payload, offset)
            values.append(text)
        elif kind == "b":
            values.append(payload[offset] == 1)
            offset += 1
        else:
            table, offset = codec.read_table(payload, offset, "surrogateescape")
            values.append(table)
    return values


METADATA_LAYOUT: dict[RecordType, str] = {
    RecordType.EXCHANGE: "sssbbt",  # vhost, name, type, auto_delete, internal, arguments
    RecordType.EXCHANGE_DELETED: "ss",  # vhost, name
    RecordType.QUEUE: "sssbt",  # vhost, name, directory, auto_delete, arguments
    RecordType.QUEUE_DELETED: "ss",  # vhost, name
    RecordType.BINDING: "ssssst",  # vhost, source, kind, destination, routing key, arguments
    RecordType.BINDING_REMOVED: "ssssst",
    RecordType.VHOST: "s",
    RecordType.VHOST_DELETED: "s",
    RecordType.USER: "sst",  # name, password hash, {"tags": [...]}
    RecordType.USER_DELETED: "s",
    RecordType.PERMISSION: "sssss",  # user, vhost, configure, write, read
    RecordType.PERMISSION_CLEARED: "ss",
    RecordType.POLICY: "ssstt",  # vhost, name, pattern, definition, {"priority", "apply-to"}
    RecordType.POLICY_CLEARED: "ss",
    RecordType.PLUGIN_STATE: "ssst",  # scope (e.g. "exchange:x"), vhost, key, value table
    RecordType.PLUGIN_STATE_DELETED: "sss",  # scope, vhost, key
    RecordType.PLUGIN_SCOPE_CLEARED: "ss",  # scope, vhost
    RecordType.TOPIC_PERMISSIONS: "sst",  # user, vhost, {exchange: {"write": .., "read": ..}}
    RecordType.LIMITS: "sst",  # "user" or "vhost", name, {limit name: value}
}
