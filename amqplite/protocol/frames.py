"""AMQP 0-9-1 framing: a sans-I/O frame reader (the writers are in `amqplite.protocol.writers`).

`FrameReader` takes bytes as they arrive and gives back frames, or `NEED_DATA` while a frame
is incomplete (never an error). It reads a received chunk (immutable bytes) where it lies:
a message body is sliced out of it once, as its own bytes, and nothing keeps the chunk alive.
Only a frame split between two chunks is copied into a bytearray, with just enough of the next
chunk to complete it; then reading goes on in that chunk. A bytearray drops its consumed prefix
once it is at least half the buffer, so reading stays O(bytes) however the input is split.

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

import functools
import struct
from typing import Any, Final, TypeAlias

import attrs

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
from amqplite.protocol.properties import EMPTY_PROPERTIES


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
_CONTENT_TYPES: Final = frozenset((int(FrameType.HEADER), int(FrameType.BODY)))
_COMPACT_MIN: Final = 65536
_HOT_PREFIX: Final = struct.Struct(">BHII")
_TAG_BITS: Final = struct.Struct(">QB")
_PUBLISH_IDS: Final = 0x003C0028
_ACK_IDS: Final = 0x003C0050
_ACK_SIZE: Final = 21  # a whole basic.ack frame: header 7, ids 4, tag 8, bits 1, frame end 1
_ACK_TAIL_AT: Final = 19  # where its bits octet is
_ACK_TAIL: Final = bytes([0, FRAME_END])  # bits (no `multiple`) and frame end of a single ack
_MAX_ACK_RUN: Final = 256  # basic.acks `take_acks` consumes at most in one call

HOT_PUBLISH: Final = 0
"""`FrameReader.peek_hot` kind: basic.publish with its content."""
HOT_ACK: Final = 1
"""`FrameReader.peek_hot` kind: basic.ack."""
HOT_PARTIAL: Final = 2
"""`FrameReader.peek_hot` kind: a basic.publish whose content has not all arrived yet."""


class FrameReader:
    """Turn received bytes into frames: bytes in with `receive_data`, frames out of `next_frame`."""

    def __init__(self, frame_max: int = DEFAULT_FRAME_MAX) -> None:
        self.frame_max = frame_max
        self._buffer: bytes | bytearray = b""  # a received chunk, or a bytearray we own
        self._offset = 0
        self._rest = b""  # the chunk that goes on after the frame completed in `_buffer`
        self._rest_at = 0
        self._header_seen = False
        self._error: Exception | None = None
        self.copied_bytes = 0
        """Bytes copied into a buffer of the reader's own (frames split between chunks)."""

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._offset + len(self._rest) - self._rest_at

    def receive_data(self, data: bytes | bytearray) -> None:
        """Take received bytes (dropped once the reader has failed); a bytes chunk is not copied."""
        if self._error is not None or not data:
            return
        chunk = data if type(data) is bytes else bytes(data)  # slices of it must not change
        if self._offset == len(self._buffer) and not self._rest:
            self._buffer = chunk
            self._offset = 0
            return
        if not self._header_seen or self._rest:
            if self._rest:
                self._append(memoryview(self._rest)[self._rest_at :])
                self._rest = b""
                self._rest_at = 0
            self._append(chunk)
            return
        # a frame (or a publish's frames) began in the last chunk: join it with what completes it
        with memoryview(self._buffer) as view, view[self._offset :] as tail:
            split = self._split(tail, chunk)
            joined = bytearray(tail) if 0 < split < len(chunk) else None
        if joined is None:  # the chunk ends inside these frames (or they are broken): keep it all
            self._append(chunk)
            return
        joined += memoryview(chunk)[:split]
        self.copied_bytes += len(joined)
        self._buffer = joined
        self._offset = 0
        self._rest = chunk  # read in place once the joined frames are
        self._rest_at = split

    def _split(self, joined: memoryview, chunk: bytes) -> int:
        """How much of `chunk` completes the frames in `joined`, and the content frames after.

        -1 when the chunk ends first or the framing is broken (then all of it is joined).
        """
        left = len(joined)
        total = left + len(chunk)
        limit = self.frame_max - FRAME_OVERHEAD
        pos = 0
        content_frames = 0
        while True:
            head = _frame_head(joined, chunk, pos)
            if head is None:
                return -1 if pos < left else pos - left
            frame_type, _channel, size = head
            if frame_type not in _KNOWN_TYPES or size > limit:
                return -1 if pos < left else pos - left
            if pos >= left:  # the joined frames are whole: take a publish's content with them
                if frame_type not in _CONTENT_TYPES or content_frames == 2:
                    return pos - left
                content_frames += 1
            end = pos + size + FRAME_OVERHEAD
            if end > total:
                return -1 if pos < left else pos - left
            pos = end

    def _append(self, data: bytes | memoryview) -> None:
        """Add bytes after the unread ones, in a bytearray of our own."""
        buffer = self._buffer
        if type(buffer) is not bytearray:
            buffer = bytearray(memoryview(buffer)[self._offset :])
            self.copied_bytes += len(buffer)
            self._buffer = buffer
            self._offset = 0
        buffer += data
        self.copied_bytes += len(data)

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
        received = bytes(self._buffer[self._offset : self._offset + size])
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
        `skip` must consume. ``(HOT_PARTIAL, channel)`` for a publish whose method frame has
        arrived and whose content, so far, can be one header and one body frame: the caller may
        wait for the rest and take it whole. None for anything else, malformed or not hot:
        `next_frame` then reads it (and raises the precise error where there is one).
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
            if self._rest or not _starts_frame(buffer, header, 2, channel):
                return None  # the rest is in a chunk not read yet (`_rest`): next_frame goes on
            return (HOT_PARTIAL, channel)
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
            or body_size > limit
        ):
            return None
        if header_end >= total:
            return None if self._rest else (HOT_PARTIAL, channel)
        if buffer[header_end] != FRAME_END:
            return None
        body_at = header_end + 1
        if body_size:
            if total - body_at < FRAME_HEADER_SIZE:
                if self._rest or not _starts_frame(buffer, body_at, 3, channel):
                    return None
                return (HOT_PARTIAL, channel)
            body_type, body_channel, body_frame_size = _FRAME_HEADER.unpack_from(buffer, body_at)
            body_end = body_at + FRAME_HEADER_SIZE + body_frame_size
            if body_type != 3 or body_channel != channel or body_frame_size != body_size:
                return None
            if body_end >= total:
                return None if self._rest else (HOT_PARTIAL, channel)
            if buffer[body_end] != FRAME_END:
                return None
            body = (
                buffer[body_at + FRAME_HEADER_SIZE : body_end]
                if type(buffer) is bytes  # a received chunk: the slice is the one copy
                else bytes(memoryview(buffer)[body_at + FRAME_HEADER_SIZE : body_end])
            )
            stop = body_end + 1
        else:
            body = b""
            stop = body_at
        if header_size == 14 and not buffer[header + 19] and not buffer[header + 20]:
            properties = EMPTY_PROPERTIES  # the usual case: one shared object, no slice
        elif type(buffer) is bytes:
            properties = buffer[header + 19 : header_end]
        else:
            properties = bytes(memoryview(buffer)[header + 19 : header_end])
        return (
            HOT_PUBLISH,
            channel,
            stop - start,
            # the default exchange ("") is the usual one: no slice and decode for it
            buffer[at + 1 : key_at].decode("utf-8", "surrogateescape") if key_at > at + 1 else "",
            buffer[key_at + 1 : bits_at].decode("utf-8", "surrogateescape"),
            buffer[bits_at],
            properties,
            body,
        )

    def take_acks(self, channel: int) -> tuple[int, ...]:
        """Consume the run of basic.acks (no `multiple`) on `channel` at the read position.

        Their delivery tags, oldest first (empty if the next frame is not one of them), taken
        without a Python step per frame beyond one comparison of the bytes between two tags.
        """
        if self._error is not None or not self._header_seen:
            return ()
        buffer = self._buffer
        start = pos = self._offset
        head = _ack_head(channel)
        last = min(len(buffer), start + _MAX_ACK_RUN * _ACK_SIZE) - _ACK_SIZE
        if start > last or not buffer.startswith(head, start):
            return ()
        joint = _ACK_TAIL + head  # one frame's bits and frame end, the next one's head
        startswith = buffer.startswith
        while pos + _ACK_SIZE <= last and startswith(joint, pos + _ACK_TAIL_AT):
            pos += _ACK_SIZE
        if startswith(_ACK_TAIL, pos + _ACK_TAIL_AT):
            pos += _ACK_SIZE  # the last frame of the run is whole and single too
        count = (pos - start) // _ACK_SIZE
        if not count:
            return ()
        tags: tuple[int, ...] = _ack_tags(count).unpack_from(buffer, start)
        self._consume(pos - start)
        return tags

    def _check(self) -> None:
        """Assert the buffer invariants (for tests): a bytearray drops its consumed prefix in time."""
        assert 0 <= self._offset <= len(self._buffer)
        assert 0 <= self._rest_at < len(self._rest) or not self._rest
        if type(self._buffer) is bytearray:
            assert self._offset < _COMPACT_MIN or self._offset * 2 < len(self._buffer)

    def _consume(self, size: int) -> None:
        self._offset += size
        buffer = self._buffer
        if self._offset == len(buffer):
            self._buffer = self._rest  # b"" when no chunk goes on: nothing is kept alive
            self._offset = self._rest_at
            self._rest = b""
            self._rest_at = 0
        elif (
            self._offset >= _COMPACT_MIN
            and self._offset * 2 >= len(buffer)
            and type(buffer) is bytearray
        ):
            del buffer[: self._offset]
            self._offset = 0

    skip = _consume
    """Consume `size` bytes that `peek_hot` decoded (one call: the hot loop runs it per publish)."""


def _frame_head(joined: memoryview, chunk: bytes, pos: int) -> tuple[int, int, int] | None:
    """(type, channel, size) of the frame at `pos` of joined + chunk, None if it is cut short."""
    left = len(joined)
    if pos + FRAME_HEADER_SIZE <= left:
        head: tuple[int, int, int] = _FRAME_HEADER.unpack_from(joined, pos)
        return head
    if pos >= left:
        if pos - left + FRAME_HEADER_SIZE > len(chunk):
            return None
        head = _FRAME_HEADER.unpack_from(chunk, pos - left)
        return head
    raw = bytes(joined[pos:]) + chunk[: pos + FRAME_HEADER_SIZE - left]
    if len(raw) < FRAME_HEADER_SIZE:
        return None
    head = _FRAME_HEADER.unpack(raw)
    return head


def _starts_frame(buffer: bytes | bytearray, at: int, frame_type: int, channel: int) -> bool:
    """True if the bytes from `at` on (maybe none yet) can begin a frame of this type and channel."""
    available = len(buffer) - at
    if available >= 1 and buffer[at] != frame_type:
        return False
    return available < 3 or buffer[at + 1] << 8 | buffer[at + 2] == channel


@functools.lru_cache(maxsize=256)
def _ack_head(channel: int) -> bytes:
    """The first 11 octets of a basic.ack frame on `channel` (frame header, class and method)."""
    return _HOT_PREFIX.pack(1, channel, 13, _ACK_IDS)


@functools.cache
def _ack_tags(count: int) -> struct.Struct:
    """Reads the delivery tags of `count` basic.ack frames in a row (at most _MAX_ACK_RUN)."""
    return struct.Struct(">" + "11xQ2x" * count)


HEARTBEAT_FRAME: Final = _FRAME_HEADER.pack(FrameType.HEARTBEAT, 0, 0) + _END
"""The heartbeat frame (the writers of the other frames are in `amqplite.protocol.writers`)."""
