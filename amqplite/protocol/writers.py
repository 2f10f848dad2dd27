"""Fast writers for the frames a broker sends most, proven byte-identical with pamqp by tests.

A content-carrying method (basic.deliver, basic.get-ok, basic.return) is written as a list of
parts in which the message body appears as itself, uncopied: the caller joins the parts into
its outbound buffer, which is the one copy of the body on the way out.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol, TypeAlias

import attrs

from amqplite.protocol.codec import U8, U32, U64, write_reply_text
from amqplite.protocol.constants import FRAME_END, FRAME_OVERHEAD, FrameType

Part: TypeAlias = bytes | memoryview
"""A piece of outbound bytes; memoryviews only ever slice an immutable body."""


class Content(Protocol):
    """A message as the writers need it (the broker's Message is one)."""

    @property
    def exchange(self) -> str:
        """The exchange the message was published to."""

    @property
    def routing_key(self) -> str:
        """The routing key it was published with."""

    @property
    def properties_bin(self) -> bytes:
        """Its content header properties, encoded as received."""

    @property
    def body(self) -> bytes:
        """Its body."""


@attrs.define(slots=True, eq=False)
class Deliver:
    """The arguments of one basic.deliver (the message travels separately, as `Content`)."""

    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool


@attrs.define(slots=True, eq=False)
class GetOk:
    """The arguments of one basic.get-ok."""

    channel: int
    delivery_tag: int
    redelivered: bool
    message_count: int


@attrs.define(slots=True, eq=False)
class Return:
    """The arguments of one basic.return."""

    channel: int
    reply_code: int
    reply_text: str


# frame types as plain ints: an enum member costs a class attribute lookup on every use
_METHOD: Final = int(FrameType.METHOD)
_HEADER: Final = int(FrameType.HEADER)
_BODY: Final = int(FrameType.BODY)
_FRAME_HEADER: Final = struct.Struct(">BHI")
_HEADER_FRAME_PREFIX: Final = struct.Struct(">BHIHHQ")
_END: Final = bytes([FRAME_END])
_GET_OK_IDS: Final = U32.pack(0x003C0047)
_RETURN_IDS: Final = U32.pack(0x003C0032)
_ACK_PREFIX: Final = struct.Struct(">BHIIQB")
_ACK_IDS: Final = 0x003C0050
_NACK_IDS: Final = 0x003C0078
_SHORTSTR_CACHE: Final[dict[str, bytes]] = {}
_SHORTSTR_CACHE_SIZE: Final = 8192
_DELIVER_HEAD: Final = struct.Struct(">BHII")  # method frame header, class and method ids
_TAG_REDELIVERED: Final = struct.Struct(">QB")
_END_HEADER_PREFIX: Final = struct.Struct(">BBHIHHQ")  # frame end, then a content header's start
_END_FRAME_HEADER: Final = struct.Struct(">BBHI")  # frame end, then a frame header


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError(f"short string of {len(raw)} bytes is longer than 255")
    return U8.pack(len(raw)) + raw


def _cached_shortstr(value: str) -> bytes:
    """`_shortstr`, remembered for the consumer tags, exchanges and keys that repeat."""
    encoded = _SHORTSTR_CACHE.get(value)
    if encoded is None:
        encoded = _shortstr(value)
        if len(_SHORTSTR_CACHE) >= _SHORTSTR_CACHE_SIZE:
            _SHORTSTR_CACHE.clear()
        _SHORTSTR_CACHE[value] = encoded
    return encoded


def _method_frame(channel: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(_METHOD, channel, len(payload)) + payload + _END


def _content_parts(
    parts: list[Part],
    channel: int,
    class_id: int,
    properties_bin: bytes,
    body: bytes,
    frame_max: int,
) -> None:
    size = len(body)
    parts.append(
        _HEADER_FRAME_PREFIX.pack(_HEADER, channel, 12 + len(properties_bin), class_id, 0, size)
    )
    parts.append(properties_bin)
    parts.append(_END)
    if not size:
        return
    chunk = frame_max - FRAME_OVERHEAD if frame_max > 0 else size
    if size <= chunk:
        parts.append(_FRAME_HEADER.pack(_BODY, channel, size))
        parts.append(body)
        parts.append(_END)
        return
    view = memoryview(body)
    for start in range(0, size, chunk):
        piece = view[start : start + chunk]
        parts.append(_FRAME_HEADER.pack(_BODY, channel, len(piece)))
        parts.append(piece)
        parts.append(_END)


def encode_content(
    channel: int, class_id: int, properties_bin: bytes, body: bytes, frame_max: int
) -> bytes:
    """Encode a content header frame and the body frames (none for an empty body)."""
    parts: list[Part] = []
    _content_parts(parts, channel, class_id, properties_bin, body, frame_max)
    return b"".join(parts)


def deliver_parts(deliver: Deliver, content: Content, frame_max: int) -> list[Part]:
    """basic.deliver with its content header and body frames, as parts (the body uncopied)."""
    return deliver_parts_of(
        deliver.channel,
        deliver.consumer_tag,
        deliver.delivery_tag,
        deliver.redelivered,
        content,
        frame_max,
    )


_DELIVER_HEADS: Final[dict[int, struct.Struct]] = {}
_DELIVER_HEADS_SIZE: Final = 1024


def _deliver_head(tag: int, exchange: int, key: int, properties: int) -> struct.Struct:
    """The struct of a basic.deliver up to its body for these encoded field sizes (remembered)."""
    head = struct.Struct(f">BHII{tag}sQB{exchange}s{key}sBBHIHHQ{properties}sBBHI")
    if len(_DELIVER_HEADS) >= _DELIVER_HEADS_SIZE:
        _DELIVER_HEADS.clear()
    _DELIVER_HEADS[tag | exchange << 9 | key << 18 | properties << 27] = head
    return head


def deliver_parts_of(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    content: Content,
    frame_max: int,
) -> list[Part]:
    """`deliver_parts` from the fields of a Deliver (the hot path makes no Deliver object)."""
    cache = _SHORTSTR_CACHE
    tag = cache.get(consumer_tag) or _cached_shortstr(consumer_tag)
    exchange_bin = cache.get(content.exchange) or _cached_shortstr(content.exchange)
    key_bin = cache.get(content.routing_key) or _cached_shortstr(content.routing_key)
    properties_bin = content.properties_bin
    body = content.body
    size = len(body)
    # the method frame up to the body frame's header, in one bytes object from one pack
    if 0 < size <= frame_max - FRAME_OVERHEAD:  # the usual case: exactly one body frame
        exchange_size, key_size = len(exchange_bin), len(key_bin)
        shape = len(tag) | exchange_size << 9 | key_size << 18 | len(properties_bin) << 27
        head = _DELIVER_HEADS.get(shape) or _deliver_head(
            len(tag), exchange_size, key_size, len(properties_bin)
        )
        return [
            head.pack(
                _METHOD,
                channel,
                13 + len(tag) + exchange_size + key_size,
                0x003C003C,
                tag,
                delivery_tag,
                redelivered,
                exchange_bin,
                key_bin,
                FRAME_END,
                _HEADER,
                channel,
                12 + len(properties_bin),
                60,
                0,
                size,
                properties_bin,
                FRAME_END,
                _BODY,
                channel,
                size,
            ),
            body,
            _END,
        ]
    parts: list[Part] = [
        b"".join(
            (
                _DELIVER_HEAD.pack(
                    _METHOD,
                    channel,
                    13 + len(tag) + len(exchange_bin) + len(key_bin),
                    0x003C003C,
                ),
                tag,
                _TAG_REDELIVERED.pack(delivery_tag, redelivered),
                exchange_bin,
                key_bin,
                _END,
            )
        )
    ]
    _content_parts(parts, channel, 60, properties_bin, body, frame_max)
    return parts


@attrs.define(slots=True, eq=False)
class DeliverTail:
    """The bytes of a basic.deliver every queue of a message shares, for one channel number.

    From the exchange name to the body frame's header: a fanout to many queues encodes them
    once per message, and each delivery adds only its own method frame start.
    """

    channel: int
    frame_max: int
    names_size: int  # encoded exchange and routing key, for the method frame's size
    data: bytes


def deliver_tail(channel: int, content: Content, size: int, frame_max: int) -> DeliverTail | None:
    """The shared part of a delivery of `content` (body of `size`); None unless one body frame."""
    if not 0 < size <= frame_max - FRAME_OVERHEAD:
        return None
    names = _cached_shortstr(content.exchange) + _cached_shortstr(content.routing_key)
    properties_bin = content.properties_bin
    data = b"".join(
        (
            names,
            _END_HEADER_PREFIX.pack(
                FRAME_END, _HEADER, channel, 12 + len(properties_bin), 60, 0, size
            ),
            properties_bin,
            _END_FRAME_HEADER.pack(FRAME_END, _BODY, channel, size),
        )
    )
    return DeliverTail(channel, frame_max, len(names), data)


def deliver_parts_with_tail(
    consumer_tag: str, delivery_tag: int, redelivered: bool, tail: DeliverTail, body: bytes
) -> list[Part]:
    """basic.deliver as parts from its shared tail (see deliver_tail) and the body, uncopied."""
    tag = _cached_shortstr(consumer_tag)
    head = (
        _DELIVER_HEAD.pack(_METHOD, tail.channel, 13 + len(tag) + tail.names_size, 0x003C003C)
        + tag
        + _TAG_REDELIVERED.pack(delivery_tag, redelivered)
    )
    return [head, tail.data, body, _END]


def get_ok_parts(get_ok: GetOk, content: Content, frame_max: int) -> list[Part]:
    """basic.get-ok with its content header and body frames, as parts (the body uncopied)."""
    payload = b"".join(
        (
            _GET_OK_IDS,
            U64.pack(get_ok.delivery_tag),
            b"\x01" if get_ok.redelivered else b"\x00",
            _shortstr(content.exchange),
            _shortstr(content.routing_key),
            U32.pack(get_ok.message_count),
        )
    )
    parts: list[Part] = [_method_frame(get_ok.channel, payload)]
    _content_parts(parts, get_ok.channel, 60, content.properties_bin, content.body, frame_max)
    return parts


def return_parts(returned: Return, content: Content, frame_max: int) -> list[Part]:
    """basic.return with its content header and body frames, as parts (the body uncopied)."""
    payload = b"".join(
        (
            _RETURN_IDS,
            returned.reply_code.to_bytes(2, "big"),
            write_reply_text(returned.reply_text),
            _shortstr(content.exchange),
            _shortstr(content.routing_key),
        )
    )
    parts: list[Part] = [_method_frame(returned.channel, payload)]
    _content_parts(parts, returned.channel, 60, content.properties_bin, content.body, frame_max)
    return parts


def encode_deliver(deliver: Deliver, content: Content, frame_max: int) -> bytes:
    """Encode basic.deliver with its content header and body frames."""
    return b"".join(deliver_parts(deliver, content, frame_max))


def encode_get_ok(get_ok: GetOk, content: Content, frame_max: int) -> bytes:
    """Encode basic.get-ok with its content header and body frames."""
    return b"".join(get_ok_parts(get_ok, content, frame_max))


def encode_return(returned: Return, content: Content, frame_max: int) -> bytes:
    """Encode basic.return with its content header and body frames."""
    return b"".join(return_parts(returned, content, frame_max))


def encode_ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """Encode basic.ack (a publisher confirm)."""
    return _ACK_PREFIX.pack(_METHOD, channel, 13, _ACK_IDS, delivery_tag, multiple) + _END


def encode_nack(channel: int, delivery_tag: int, multiple: bool, requeue: bool) -> bytes:
    """Encode basic.nack (a negative publisher confirm)."""
    bits = multiple | requeue << 1
    return _ACK_PREFIX.pack(_METHOD, channel, 13, _NACK_IDS, delivery_tag, bits) + _END
