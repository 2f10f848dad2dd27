"""AMQP 0-9-1 framing: a sans-I/O frame reader and fast writers for the hot frames.

`FrameReader` takes bytes as they arrive and gives back frames, or `NEED_DATA` while a frame
is incomplete (never an error). It keeps one bytearray and a read offset, and drops the
consumed prefix only once it is at least half the buffer, so reading stays O(bytes) however
the input is split.

Errors, matching RabbitMQ 3.10.8 over a raw socket:

- a frame end octet other than 0xCE, a payload larger than ``frame_max - 8``, an unknown
  frame type, a heartbeat with a payload, a method payload under 4 bytes or a content header
  under 14 bytes: ConnectionException 501 FRAME_ERROR;
- a heartbeat on a channel other than 0: 505 UNEXPECTED_FRAME (RabbitMQ's code);
- the first 8 bytes not ``AMQP\\x00\\x00\\x09\\x01``: `BadProtocolHeader`, raised at the first
  byte that differs; the server answers with its own protocol header and closes.

A bad protocol header, a bad frame end, an oversized frame or an unknown frame type leave the
stream out of step: every later `next_frame` raises the same error. Any other error refuses
one complete frame only, and the frames after it (such as connection.close-ok) still come out.
"""

from __future__ import annotations

import struct
from typing import Any, Final, TypeAlias

import attrs

from amqplite.protocol.codec import U8, U32, U64, write_reply_text
from amqplite.protocol.constants import (
    DEFAULT_FRAME_MAX,
    FRAME_END,
    FRAME_HEADER_SIZE,
    FRAME_OVERHEAD,
    PROTOCOL_HEADER,
    FrameType,
    ReplyCode,
)
from amqplite.protocol.errors import ConnectionException
from amqplite.protocol.methods import Method, decode_method


class _NeedData:
    """The type of `NEED_DATA`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by `FrameReader.next_frame` while the next frame is incomplete."""


@attrs.frozen
class ProtocolHeaderReceived:
    """The client sent the AMQP 0-9-1 protocol header."""


@attrs.frozen
class MethodFrame:
    """A method frame, decoded."""

    channel: int
    method: Method


@attrs.frozen
class HeaderFrame:
    """A content header frame; the properties stay undecoded in ``properties_bin``."""

    channel: int
    class_id: int
    body_size: int
    properties_bin: bytes


@attrs.frozen
class BodyFrame:
    """A content body frame."""

    channel: int
    payload: bytes


@attrs.frozen
class HeartbeatFrame:
    """A heartbeat frame (always on channel 0)."""

    channel: int


Frame: TypeAlias = ProtocolHeaderReceived | MethodFrame | HeaderFrame | BodyFrame | HeartbeatFrame


class BadProtocolHeader(Exception):
    """The connection did not start with ``AMQP\\x00\\x00\\x09\\x01``."""

    def __init__(self, received: bytes) -> None:
        super().__init__(f"bad protocol header {received!r}")
        self.received = received


_FRAME_HEADER: Final = struct.Struct(">BHI")
_CONTENT_HEADER: Final = struct.Struct(">HHQ")
_HEADER_FRAME_PREFIX: Final = struct.Struct(">BHIHHQ")
_END: Final = bytes([FRAME_END])
_KNOWN_TYPES: Final = frozenset(int(t) for t in FrameType)
_COMPACT_MIN: Final = 65536
_HOT_PREFIX: Final = struct.Struct(">BHII")
_TAG_BITS: Final = struct.Struct(">QB")
_PUBLISH_IDS: Final = 0x003C0028

HOT_PUBLISH: Final = 0
"""`FrameReader.peek_hot` kind: basic.publish with its content."""
HOT_ACK: Final = 1
"""`FrameReader.peek_hot` kind: basic.ack."""


class FrameReader:
    """Turn received bytes into frames: bytes in with `receive_data`, frames out of `next_frame`."""

    def __init__(self, frame_max: int = DEFAULT_FRAME_MAX) -> None:
        self.frame_max = frame_max
        self._buffer = bytearray()
        self._offset = 0
        self._header_seen = False
        self._error: Exception | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._offset

    def receive_data(self, data: bytes | bytearray) -> None:
        """Append received bytes (dropped once the reader has failed)."""
        if self._error is None:
            self._buffer += data

    def next_frame(self) -> Frame | _NeedData:
        """Return the next complete frame, or `NEED_DATA` if it has not fully arrived."""
        if self._error is not None:
            raise self._error
        if not self._header_seen:
            return self._protocol_header()
        return self._frame()

    def _fail(self, exc: Exception) -> Exception:
        """Remember an error that leaves the stream out of step; every later call raises it."""
        self._error = exc
        return exc

    def _protocol_header(self) -> ProtocolHeaderReceived | _NeedData:
        size = len(PROTOCOL_HEADER)
        received = bytes(self._buffer[:size])
        if not PROTOCOL_HEADER.startswith(received):
            raise self._fail(BadProtocolHeader(received))
        if len(received) < size:
            return NEED_DATA
        self._header_seen = True
        self._consume(size)
        return ProtocolHeaderReceived()

    def _frame(self) -> Frame | _NeedData:
        buffer = self._buffer
        start = self._offset
        available = len(buffer) - start
        if available < FRAME_HEADER_SIZE:
            return NEED_DATA
        frame_type, channel, size = _FRAME_HEADER.unpack_from(buffer, start)
        if frame_type not in _KNOWN_TYPES:
            raise self._fail(
                ConnectionException(ReplyCode.FRAME_ERROR, f"unknown frame type {frame_type}")
            )
        if size > self.frame_max - FRAME_OVERHEAD:
            raise self._fail(
                ConnectionException(
                    ReplyCode.FRAME_ERROR,
                    f"frame payload of {size} bytes is larger than frame_max {self.frame_max} allows",
                )
            )
        if available < size + FRAME_OVERHEAD:
            return NEED_DATA
        payload_start = start + FRAME_HEADER_SIZE
        payload_end = payload_start + size
        if buffer[payload_end] != FRAME_END:
            raise self._fail(
                ConnectionException(
                    ReplyCode.FRAME_ERROR,
                    f"frame end octet is {buffer[payload_end]:#04x}, expected {FRAME_END:#04x}",
                )
            )
        view = memoryview(buffer)
        payload = view[payload_start:payload_end]
        try:
            return self._decode(frame_type, channel, payload, size)
        finally:
            # the frame is consumed even when its content is refused: the framing is intact,
            # so the frames after it (connection.close-ok) can still be read
            payload.release()
            view.release()
            self._consume(size + FRAME_OVERHEAD)

    def _decode(self, frame_type: int, channel: int, payload: memoryview, size: int) -> Frame:
        if frame_type == FrameType.METHOD:
            return MethodFrame(channel, decode_method(payload))
        if frame_type == FrameType.BODY:
            return BodyFrame(channel, payload.tobytes())
        if frame_type == FrameType.HEADER:
            if size < 14:
                raise ConnectionException(
                    ReplyCode.FRAME_ERROR, f"content header frame of {size} bytes is too short"
                )
            class_id, _weight, body_size = _CONTENT_HEADER.unpack_from(payload, 0)
            return HeaderFrame(channel, class_id, body_size, payload[12:].tobytes())
        # FrameType.HEARTBEAT, the only type left
        if size:
            raise ConnectionException(
                ReplyCode.FRAME_ERROR, f"heartbeat frame with a payload of {size} bytes"
            )
        if channel:
            raise ConnectionException(
                ReplyCode.UNEXPECTED_FRAME, f"heartbeat frame on channel {channel}"
            )
        return HeartbeatFrame(channel)

    def peek_hot(self) -> tuple[Any, ...] | None:
        """Decode the next basic.publish with all its content, or basic.ack, without consuming.

        Returns ``(HOT_PUBLISH, channel, length, exchange, routing_key, bits, properties_bin,
        body)`` for a publish whose method, content header and single body frame have all
        arrived, or ``(HOT_ACK, channel, length, delivery_tag, multiple)``; ``length`` is what
        `skip` must consume. None for anything else, incomplete or malformed: `next_frame`
        then reads it (and raises the precise error where there is one).
        """
        if self._error is not None or not self._header_seen:
            return None
        buffer = self._buffer
        start = self._offset
        total = len(buffer)
        if total - start < 12:
            return None
        frame_type, channel, size, ids = _HOT_PREFIX.unpack_from(buffer, start)
        end = start + FRAME_HEADER_SIZE + size
        limit = self.frame_max - FRAME_OVERHEAD
        if frame_type != 1 or size > limit or end >= total or buffer[end] != FRAME_END:
            return None
        if ids == _ACK_IDS:
            if size != 13:
                return None
            tag, bits = _TAG_BITS.unpack_from(buffer, start + 11)
            return (HOT_ACK, channel, size + FRAME_OVERHEAD, tag, bool(bits & 1))
        if ids != _PUBLISH_IDS or size < 9:
            return None
        at = start + 13  # frame header, class and method ids, ticket
        key_at = at + 1 + buffer[at]
        if key_at >= end:
            return None
        bits_at = key_at + 1 + buffer[key_at]
        if bits_at + 1 != end:
            return None
        header = end + 1
        if total - header < 22:
            return None
        header_type, header_channel, header_size, class_id, _weight, body_size = (
            _HEADER_FRAME_PREFIX.unpack_from(buffer, header)
        )
        header_end = header + FRAME_HEADER_SIZE + header_size
        if (
            header_type != 2
            or header_channel != channel
            or header_size < 14
            or header_size > limit
            or class_id != 60
            or header_end >= total
            or buffer[header_end] != FRAME_END
        ):
            return None
        body_at = header_end + 1
        if body_size:
            if total - body_at < FRAME_HEADER_SIZE:
                return None
            body_type, body_channel, body_frame_size = _FRAME_HEADER.unpack_from(buffer, body_at)
            body_end = body_at + FRAME_HEADER_SIZE + body_frame_size
            if (
                body_type != 3
                or body_channel != channel
                or body_frame_size != body_size
                or body_size > limit
                or body_end >= total
                or buffer[body_end] != FRAME_END
            ):
                return None
            body = bytes(buffer[body_at + FRAME_HEADER_SIZE : body_end])
            stop = body_end + 1
        else:
            body = b""
            stop = body_at
        return (
            HOT_PUBLISH,
            channel,
            stop - start,
            buffer[at + 1 : key_at].decode("utf-8", "surrogateescape"),
            buffer[key_at + 1 : bits_at].decode("utf-8", "surrogateescape"),
            buffer[bits_at],
            bytes(buffer[header + 19 : header_end]),
            body,
        )

    def skip(self, size: int) -> None:
        """Consume `size` bytes that `peek_hot` decoded."""
        self._consume(size)

    def _check(self) -> None:
        """Assert the buffer invariants (for tests): the consumed prefix is dropped in time."""
        assert 0 <= self._offset <= len(self._buffer)
        assert self._offset < _COMPACT_MIN or self._offset * 2 < len(self._buffer)

    def _consume(self, size: int) -> None:
        self._offset += size
        buffer = self._buffer
        if self._offset == len(buffer):
            buffer.clear()
            self._offset = 0
        elif self._offset >= _COMPACT_MIN and self._offset * 2 >= len(buffer):
            del buffer[: self._offset]
            self._offset = 0


# ---------------------------------------------------------------------------------------------
# fast writers for the frames a broker sends most

HEARTBEAT_FRAME: Final = _FRAME_HEADER.pack(FrameType.HEARTBEAT, 0, 0) + _END

_DELIVER_IDS: Final = U32.pack(0x003C003C)
_GET_OK_IDS: Final = U32.pack(0x003C0047)
_RETURN_IDS: Final = U32.pack(0x003C0032)
_ACK_PREFIX: Final = struct.Struct(">BHIIQB")
_ACK_IDS: Final = 0x003C0050
_NACK_IDS: Final = 0x003C0078


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes is longer than 255")
    return U8.pack(len(raw)) + raw


def _method_frame(channel: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(FrameType.METHOD, channel, len(payload)) + payload + _END


def _content_parts(
    parts: list[bytes | memoryview],
    channel: int,
    class_id: int,
    properties_bin: bytes,
    body: bytes,
    frame_max: int,
) -> None:
    size = len(body)
    parts.append(
        _HEADER_FRAME_PREFIX.pack(
            FrameType.HEADER, channel, 12 + len(properties_bin), class_id, 0, size
        )
    )
    parts.append(properties_bin)
    parts.append(_END)
    if not size:
        return
    chunk = frame_max - FRAME_OVERHEAD if frame_max > 0 else size
    if size <= chunk:
        parts.append(_FRAME_HEADER.pack(FrameType.BODY, channel, size))
        parts.append(body)
        parts.append(_END)
        return
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        parts.append(_FRAME_HEADER.pack(FrameType.BODY, channel, len(piece)))
        parts.append(piece)
        parts.append(_END)


def encode_content(
    channel: int, class_id: int, properties_bin: bytes, body: bytes, frame_max: int
) -> bytes:
    """Encode a content header frame and the body frames (none for an empty body)."""
    parts: list[bytes | memoryview] = []
    _content_parts(parts, channel, class_id, properties_bin, body, frame_max)
    return b"".join(parts)


_SHORTSTR_CACHE: Final[dict[str, bytes]] = {}
_SHORTSTR_CACHE_SIZE: Final = 8192
_DELIVER_HEAD: Final = struct.Struct(">BHII")  # method frame header, class and method ids
_TAG_REDELIVERED: Final = struct.Struct(">QB")
_END_HEADER_PREFIX: Final = struct.Struct(">BBHIHHQ")  # frame end, then a content header's start
_END_FRAME_HEADER: Final = struct.Struct(">BBHI")  # frame end, then a frame header


def _cached_shortstr(value: str) -> bytes:
    """`_shortstr`, remembered for the consumer tags, exchanges and keys that repeat."""
    encoded = _SHORTSTR_CACHE.get(value)
    if encoded is None:
        encoded = _shortstr(value)
        if len(_SHORTSTR_CACHE) >= _SHORTSTR_CACHE_SIZE:
            _SHORTSTR_CACHE.clear()
        _SHORTSTR_CACHE[value] = encoded
    return encoded


def encode_deliver(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """Encode basic.deliver with its content header and body frames."""
    tag = _cached_shortstr(consumer_tag)
    exchange_bin = _cached_shortstr(exchange)
    key_bin = _cached_shortstr(routing_key)
    size = len(body)
    head = _DELIVER_HEAD.pack(
        FrameType.METHOD, channel, 13 + len(tag) + len(exchange_bin) + len(key_bin), 0x003C003C
    )
    if not 0 < size <= frame_max - FRAME_OVERHEAD:  # no body, or several body frames
        payload = b"".join((tag, _TAG_REDELIVERED.pack(delivery_tag, redelivered), exchange_bin))
        parts: list[bytes | memoryview] = [head, payload, key_bin, _END]
        _content_parts(parts, channel, 60, properties_bin, body, frame_max)
        return b"".join(parts)
    return b"".join(
        (
            head,
            tag,
            _TAG_REDELIVERED.pack(delivery_tag, redelivered),
            exchange_bin,
            key_bin,
            _END_HEADER_PREFIX.pack(
                FRAME_END, FrameType.HEADER, channel, 12 + len(properties_bin), 60, 0, size
            ),
            properties_bin,
            _END_FRAME_HEADER.pack(FRAME_END, FrameType.BODY, channel, size),
            body,
            _END,
        )
    )


def encode_get_ok(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
    properties_bin: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """Encode basic.get-ok with its content header and body frames."""
    payload = b"".join(
        (
            _GET_OK_IDS,
            U64.pack(delivery_tag),
            b"\x01" if redelivered else b"\x00",
            _shortstr(exchange),
            _shortstr(routing_key),
            U32.pack(message_count),
        )
    )
    parts: list[bytes | memoryview] = [_method_frame(channel, payload)]
    _content_parts(parts, channel, 60, properties_bin, body, frame_max)
    return b"".join(parts)


def encode_return(
    channel: int,
    reply_code: int,
    reply_text: str,
    exchange: str,
    routing_key: str,
    properties_bin: bytes,
    body: bytes,
    frame_max: int,
) -> bytes:
    """Encode basic.return with its content header and body frames."""
    payload = b"".join(
        (
            _RETURN_IDS,
            reply_code.to_bytes(2, "big"),
            write_reply_text(reply_text),
            _shortstr(exchange),
            _shortstr(routing_key),
        )
    )
    parts: list[bytes | memoryview] = [_method_frame(channel, payload)]
    _content_parts(parts, channel, 60, properties_bin, body, frame_max)
    return b"".join(parts)


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Encode basic.ack (a publisher confirm)."""
    return _ACK_PREFIX.pack(FrameType.METHOD, channel, 13, _ACK_IDS, delivery_tag, multiple) + _END


def encode_nack(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """Encode basic.nack (a negative publisher confirm)."""
    bits = multiple | requeue << 1
    return _ACK_PREFIX.pack(FrameType.METHOD, channel, 13, _NACK_IDS, delivery_tag, bits) + _END
