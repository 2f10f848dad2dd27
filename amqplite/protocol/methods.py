"""AMQP 0-9-1 methods: hand-written hot methods, pamqp command objects for the long tail.

The hot methods a server receives (basic.publish, basic.ack, basic.nack, basic.reject) are
our own frozen attrs classes, decoded and encoded by hand. Every other method is a
``pamqp.commands`` object; pamqp supplies the classes and their field lists, but the bytes
are read and written by our codec (see codec.py), because pamqp's own unmarshal ignores
truncation and trailing bytes and re-slices per field, and its marshal validates names
against a stricter pattern than RabbitMQ accepts.

Errors (checked against RabbitMQ 3.10.8 over a raw socket):

- an unknown class or method id: 540 NOT_IMPLEMENTED with the ids (RabbitMQ's reader
  crashes and drops the TCP connection without a close; LavinMQ answers 540);
- a payload under 4 bytes, truncated or trailing arguments, a bad field table:
  501 FRAME_ERROR "cannot decode ..." with the ids, as RabbitMQ does;
- a short string that is not UTF-8: 501 FRAME_ERROR "Malformed UTF-8 in shortstr", except
  the exchange and routing key of basic.publish, which RabbitMQ accepts as bytes: they are
  decoded with ``surrogateescape`` and written back byte for byte;
- reserved bits in a bit octet are ignored (RabbitMQ ignores them too).

Delivery tags (longlong) are unsigned 64-bit, as in the spec; pamqp reads them as signed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, ClassVar, Final, TypeAlias

import attrs
from pamqp import base, commands

from amqplite.protocol import codec
from amqplite.protocol.codec import U8, U16, U32, U64, Buffer, DecodeError
from amqplite.protocol.constants import FRAME_END, FrameType, ReplyCode
from amqplite.protocol.errors import ConnectionException

spec = commands
"""The long-tail method classes (pamqp's), for layers above protocol to build replies with."""

PUBLISH_INDEX: Final = 0x003C0028
ACK_INDEX: Final = 0x003C0050
NACK_INDEX: Final = 0x003C0078
REJECT_INDEX: Final = 0x003C005A

CONTENT_METHOD_INDEXES: Final = frozenset(
    {
        PUBLISH_INDEX,
        commands.Basic.Return.index,
        commands.Basic.Deliver.index,
        commands.Basic.GetOk.index,
    }
)
"""Methods followed by a content header and body (RabbitMQ expects content after each)."""


@attrs.frozen
class BasicPublish:
    """basic.publish (60, 40): a message for an exchange; its content follows."""

    index: ClassVar[int] = PUBLISH_INDEX
    name: ClassVar[str] = "Basic.Publish"
    synchronous: ClassVar[bool] = False

    exchange: str = ""
    routing_key: str = ""
    mandatory: bool = False
    immediate: bool = False


@attrs.frozen
class BasicAck:
    """basic.ack (60, 80): a consumer acknowledges deliveries (or a server confirms publishes)."""

    index: ClassVar[int] = ACK_INDEX
    name: ClassVar[str] = "Basic.Ack"
    synchronous: ClassVar[bool] = False

    delivery_tag: int = 0
    multiple: bool = False


@attrs.frozen
class BasicNack:
    """basic.nack (60, 120): a consumer rejects deliveries, possibly requeueing them."""

    index: ClassVar[int] = NACK_INDEX
    name: ClassVar[str] = "Basic.Nack"
    synchronous: ClassVar[bool] = False

    delivery_tag: int = 0
    multiple: bool = False
    requeue: bool = True


@attrs.frozen
class BasicReject:
    """basic.reject (60, 90): a consumer rejects one delivery, possibly requeueing it."""

    index: ClassVar[int] = REJECT_INDEX
    name: ClassVar[str] = "Basic.Reject"
    synchronous: ClassVar[bool] = False

    delivery_tag: int = 0
    requeue: bool = True


HotMethod: TypeAlias = BasicPublish | BasicAck | BasicNack | BasicReject
Method: TypeAlias = BasicPublish | BasicAck | BasicNack | BasicReject | base.Frame

_FRAME_HEADER: Final = struct.Struct(">BHI")
_END: Final = bytes([FRAME_END])
_IDS: Final = struct.Struct(">HH")
_TAG_BITS: Final = struct.Struct(">QB")

_METHOD_CLASSES: Final[dict[int, type[base.Frame]]] = dict(commands.INDEX_MAPPING)
_FIELDS: Final[dict[int, tuple[type[base.Frame], tuple[tuple[str, str], ...]]]] = {
    index: (cls, tuple((attr, cls.amqp_type(attr)) for attr in cls.__slots__))
    for index, cls in _METHOD_CLASSES.items()
}
"""index -> (pamqp class, ((attribute, AMQP type), ...)) for every 0-9-1 method."""


def build_method(cls: Any, **fields: Any) -> Any:
    """A pamqp method with the given fields, without pamqp's name validation (RabbitMQ allows any UTF-8)."""
    method = cls()
    for name, value in fields.items():
        setattr(method, name, value)
    return method


def method_ids(method: Method) -> tuple[int, int]:
    """The (class_id, method_id) of a method, for error replies."""
    return method.index >> 16, method.index & 0xFFFF


def carries_content(method: Method) -> bool:
    """True for the methods followed by a content header and body frames."""
    return method.index in CONTENT_METHOD_INDEXES


def _frame_error(index: int, text: str) -> ConnectionException:
    return ConnectionException(ReplyCode.FRAME_ERROR, text, index >> 16, index & 0xFFFF)


# ---------------------------------------------------------------------------------------------
# decoding


def decode_method(payload: Buffer) -> Method:
    """Decode a method frame's payload (class id, method id, arguments) into a method."""
    size = len(payload)
    if size < 4:
        raise ConnectionException(
            ReplyCode.FRAME_ERROR, f"method frame payload of {size} bytes is too short"
        )
    class_id, method_id = _IDS.unpack_from(payload, 0)
    index = class_id << 16 | method_id
    hot = _HOT_DECODERS.get(index)
    try:
        if hot is not None:
            return hot(payload, size)
        entry = _FIELDS.get(index)
        if entry is None:
            raise ConnectionException(
                ReplyCode.NOT_IMPLEMENTED,
                f"unknown method {method_id} of class {class_id}",
                class_id,
                method_id,
            )
        return _decode_generic(entry[0], entry[1], payload, size)
    except DecodeError as exc:
        name = _method_name(index)
        raise _frame_error(index, f"cannot decode {name}: {exc}") from None


def _method_name(index: int) -> str:
    entry = _FIELDS.get(index)
    return entry[0].name if entry is not None else f"method {index:#010x}"


def _decode_publish(payload: Buffer, size: int) -> BasicPublish:
    # class(2) method(2) ticket(2) exchange(shortstr) routing_key(shortstr) bits(1)
    if size < 9:
        raise DecodeError("truncated arguments")
    offset = 7 + payload[6]
    if offset >= size:
        raise DecodeError("truncated arguments")
    exchange = str(payload[7:offset], "utf-8", "surrogateescape")
    end = offset + 1 + payload[offset]
    if end + 1 != size:
        raise DecodeError("truncated arguments" if end + 1 > size else "trailing bytes")
    routing_key = str(payload[offset + 1 : end], "utf-8", "surrogateescape")
    bits = payload[end]
    return BasicPublish(exchange, routing_key, bool(bits & 1), bool(bits & 2))


def _tag_and_bits(payload: Buffer, size: int) -> tuple[int, int]:
    if size != 13:
        raise DecodeError("truncated arguments" if size < 13 else "trailing bytes")
    tag, bits = _TAG_BITS.unpack_from(payload, 4)
    return tag, bits


def _decode_ack(payload: Buffer, size: int) -> BasicAck:
    tag, bits = _tag_and_bits(payload, size)
    return BasicAck(tag, bool(bits & 1))


def _decode_nack(payload: Buffer, size: int) -> BasicNack:
    tag, bits = _tag_and_bits(payload, size)
    return BasicNack(tag, bool(bits & 1), bool(bits & 2))


def _decode_reject(payload: Buffer, size: int) -> BasicReject:
    tag, bits = _tag_and_bits(payload, size)
    return BasicReject(tag, bool(bits & 1))


_HOT_DECODERS: Final[dict[int, Callable[[Buffer, int], HotMethod]]] = {
    PUBLISH_INDEX: _decode_publish,
    ACK_INDEX: _decode_ack,
    NACK_INDEX: _decode_nack,
    REJECT_INDEX: _decode_reject,
}


def _decode_generic(
    cls: type[base.Frame], fields: tuple[tuple[str, str], ...], payload: Buffer, size: int
) -> base.Frame:
    method = cls.__new__(cls)  # every slot is set below; pamqp's validate() is not wanted here
    offset = 4
    bits = 0
    bit = 8  # next bit to read from ``bits``; 8 means a new octet is needed
    value: Any
    for attr, kind in fields:
        if kind == "bit":
            if bit == 8:
                bits, offset = codec.read_octet(payload, offset)
                bit = 0
            value = bool(bits >> bit & 1)
            bit += 1
        else:
            bit = 8
            if kind == "shortstr":
                value, offset = codec.read_shortstr(payload, offset)
            elif kind == "short":
                value, offset = codec.read_short(payload, offset)
            elif kind == "table":
                value, offset = codec.read_table(payload, offset)
            elif kind == "long":
                value, offset = codec.read_long(payload, offset)
            elif kind == "longlong":
                value, offset = codec.read_longlong(payload, offset)
            elif kind == "octet":
                value, offset = codec.read_octet(payload, offset)
            elif kind == "longstr":
                value, offset = codec.read_longstr(payload, offset)
            elif kind == "timestamp":
                value, offset = codec.read_timestamp(payload, offset)
            else:  # pragma: no cover - pamqp's 0-9-1 methods use only the types above
                raise DecodeError(f"unsupported field type {kind}")
        setattr(method, attr, value)
    if offset != size:
        raise DecodeError("trailing bytes")
    return method


# ---------------------------------------------------------------------------------------------
# encoding


def encode_method(channel: int, method: Method) -> bytes:
    """Encode a complete method frame (type, channel, size, payload, frame end)."""
    payload = encode_method_payload(method)
    return _FRAME_HEADER.pack(FrameType.METHOD, channel, len(payload)) + payload + _END


def encode_method_payload(method: Method) -> bytes:
    """Encode a method frame's payload: class id, method id and arguments."""
    index = method.index
    if isinstance(method, BasicPublish):
        return b"".join(
            (
                U32.pack(index),
                b"\x00\x00",
                codec.write_shortstr(method.exchange),
                codec.write_shortstr(method.routing_key),
                U8.pack(method.mandatory | method.immediate << 1),
            )
        )
    if isinstance(method, BasicAck):
        return U32.pack(index) + _TAG_BITS.pack(method.delivery_tag, method.multiple)
    if isinstance(method, BasicNack):
        bits = method.multiple | method.requeue << 1
        return U32.pack(index) + _TAG_BITS.pack(method.delivery_tag, bits)
    if isinstance(method, BasicReject):
        return U32.pack(index) + _TAG_BITS.pack(method.delivery_tag, method.requeue)
    entry = _FIELDS.get(index)
    if entry is None or not isinstance(method, entry[0]):
        raise TypeError(f"not an AMQP 0-9-1 method: {method!r}")
    return U32.pack(index) + _encode_generic(method, entry[1])


def _encode_generic(method: base.Frame, fields: tuple[tuple[str, str], ...]) -> bytes:
    parts: list[bytes] = []
    bits = 0
    bit = 0
    for attr, kind in fields:
        value = getattr(method, attr, None)
        if kind == "bit":
            if bit == 8:
                parts.append(U8.pack(bits))
                bits = bit = 0
            bits |= bool(value) << bit
            bit += 1
            continue
        if bit:
            parts.append(U8.pack(bits))
            bits = bit = 0
        if kind == "shortstr":
            if attr == "reply_text":
                parts.append(codec.write_reply_text(value or ""))
            else:
                parts.append(codec.write_shortstr(value or ""))
        elif kind == "short":
            parts.append(U16.pack(value or 0))
        elif kind == "table":
            parts.append(codec.write_table(value))
        elif kind == "long":
            parts.append(U32.pack(value or 0))
        elif kind == "longlong":
            parts.append(U64.pack(value or 0))
        elif kind == "octet":
            parts.append(U8.pack(value or 0))
        elif kind == "longstr":
            parts.append(codec.write_longstr(value or b""))
        elif kind == "timestamp":
            parts.append(codec.write_timestamp(value or 0))
        else:  # pragma: no cover - pamqp's 0-9-1 methods use only the types above
            raise TypeError(f"unsupported field type {kind}")
    if bit:
        parts.append(U8.pack(bits))
    return b"".join(parts)
