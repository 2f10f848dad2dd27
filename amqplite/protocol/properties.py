"""Basic content properties kept as raw bytes, with a fast partial reader for routing facts.

``properties_bin`` is a content header's payload after its 12-byte class/weight/body-size
part: the property flags (16-bit words; bit 0 set means another flag word follows, as the
spec says) and then the present properties in flag order. Only the first flag word names
basic properties; bits 0-1 and any continuation words are skipped, as RabbitMQ ignores them.

Strings are decoded with ``surrogateescape`` (RabbitMQ passes property bytes through without
checking their UTF-8), header tables with our codec (see codec.py). Malformed properties
raise ConnectionException 501 FRAME_ERROR, like undecodable method arguments; RabbitMQ
3.10.8 closes such a connection with 541 INTERNAL_ERROR, from a crash in its decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

import attrs
from pamqp import commands

from amqplite.protocol import codec
from amqplite.protocol.codec import U16, U32, DecodeError
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ConnectionException

EMPTY_PROPERTIES: Final = b"\x00\x00"

CONTENT_TYPE: Final = 0x8000
CONTENT_ENCODING: Final = 0x4000
HEADERS: Final = 0x2000
DELIVERY_MODE: Final = 0x1000
PRIORITY: Final = 0x0800
CORRELATION_ID: Final = 0x0400
REPLY_TO: Final = 0x0200
EXPIRATION: Final = 0x0100
MESSAGE_ID: Final = 0x0080
_FACT_FLAGS: Final = HEADERS | DELIVERY_MODE | PRIORITY | EXPIRATION

_PROPERTIES: Final[tuple[tuple[str, int, str], ...]] = tuple(
    (name, commands.Basic.Properties.flags[name], commands.Basic.Properties.amqp_type(name))
    for name in commands.Basic.Properties.__slots__
)
"""(pamqp attribute, flag bit, AMQP type) in wire order."""


@attrs.frozen
class MessageFacts:
    """The properties the broker routes and stores by, read without decoding the rest."""

    delivery_mode: int | None
    priority: int | None
    expiration: str | None
    headers: dict[str, Any] | None

    @property
    def persistent(self) -> bool:
        """True when delivery_mode is 2 (persistent)."""
        return self.delivery_mode == 2


NO_FACTS: Final = MessageFacts(None, None, None, None)


def _malformed(exc: DecodeError) -> ConnectionException:
    return ConnectionException(ReplyCode.FRAME_ERROR, f"cannot decode content properties: {exc}")


def _read_flags(properties_bin: bytes) -> tuple[int, int]:
    """Return the first flag word and the offset of the first property."""
    codec.need(properties_bin, 0, 2, "property flags")
    flags = word = U16.unpack_from(properties_bin, 0)[0]
    offset = 2
    while word & 1:
        codec.need(properties_bin, offset, 2, "property flags")
        word = U16.unpack_from(properties_bin, offset)[0]
        offset += 2
    return flags, offset


_FACTS_CACHE: Final[dict[bytes, MessageFacts]] = {}
_FACTS_CACHE_SIZE: Final = 1024
_FACTS_CACHE_BLOB: Final = 64  # longer property blobs (ids, timestamps) rarely repeat


def read_facts(properties_bin: bytes) -> MessageFacts:
    """Read delivery_mode, priority, expiration and headers, stopping after the last of them.

    Facts without headers (immutable then) are remembered per short property blob: most
    publishers repeat a few, such as delivery_mode 2 alone.
    """
    facts = _FACTS_CACHE.get(properties_bin)
    if facts is None:
        facts = _read_facts(properties_bin)
        if facts.headers is None and len(properties_bin) <= _FACTS_CACHE_BLOB:
            if len(_FACTS_CACHE) >= _FACTS_CACHE_SIZE:
                _FACTS_CACHE.clear()
            _FACTS_CACHE[bytes(properties_bin)] = facts
    return facts


def _read_facts(properties_bin: bytes) -> MessageFacts:
    try:
        flags, offset = _read_flags(properties_bin)
        if not flags & _FACT_FLAGS:
            return NO_FACTS
        if flags & CONTENT_TYPE:
            offset = codec.skip_shortstr(properties_bin, offset)
        if flags & CONTENT_ENCODING:
            offset = codec.skip_shortstr(properties_bin, offset)
        headers = None
        if flags & HEADERS:
            headers, offset = codec.read_table(properties_bin, offset, "surrogateescape")
        delivery_mode = priority = None
        if flags & DELIVERY_MODE:
            delivery_mode, offset = codec.read_octet(properties_bin, offset)
        if flags & PRIORITY:
            priority, offset = codec.read_octet(properties_bin, offset)
        expiration = None
        if flags & EXPIRATION:
            if flags & CORRELATION_ID:
                offset = codec.skip_shortstr(properties_bin, offset)
            if flags & REPLY_TO:
                offset = codec.skip_shortstr(properties_bin, offset)
            expiration, offset = codec.read_shortstr(properties_bin, offset, "surrogateescape")
    except DecodeError as exc:
        raise _malformed(exc) from None
    return MessageFacts(delivery_mode, priority, expiration, headers)


def read_message_id(properties_bin: bytes) -> str | None:
    """The message_id property, or None, skipping the properties before it without decoding."""
    try:
        flags = U16.unpack_from(properties_bin, 0)[0]
        if not flags & MESSAGE_ID:
            return None
        offset = 2
        if flags & 1:  # more flag words (no properties of 0-9-1 live there)
            flags, offset = _read_flags(properties_bin)
        if flags & CONTENT_TYPE:
            offset += 1 + properties_bin[offset]
        if flags & CONTENT_ENCODING:
            offset += 1 + properties_bin[offset]
        if flags & HEADERS:
            offset += 4 + U32.unpack_from(properties_bin, offset)[0]
        offset += bool(flags & DELIVERY_MODE) + bool(flags & PRIORITY)
        if flags & CORRELATION_ID:
            offset += 1 + properties_bin[offset]
        if flags & REPLY_TO:
            offset += 1 + properties_bin[offset]
        if flags & EXPIRATION:
            offset += 1 + properties_bin[offset]
        end = offset + 1 + properties_bin[offset]
        if end > len(properties_bin):
            raise DecodeError("message_id overruns the properties")
        return properties_bin[offset + 1 : end].decode("utf-8", "surrogateescape")
    except (IndexError, struct.error) as exc:
        raise _malformed(DecodeError(f"truncated properties: {exc}")) from None
    except DecodeError as exc:
        raise _malformed(exc) from None


def decode_properties(properties_bin: bytes) -> commands.Basic.Properties:
    """Decode every property into a pamqp Basic.Properties (absent ones stay None)."""
    props = commands.Basic.Properties()
    try:
        flags, offset = _read_flags(properties_bin)
        value: Any
        for name, flag, kind in _PROPERTIES:
            if not flags & flag:
                continue
            if kind == "shortstr":
                value, offset = codec.read_shortstr(properties_bin, offset, "surrogateescape")
            elif kind == "octet":
                value, offset = codec.read_octet(properties_bin, offset)
            elif kind == "table":
                value, offset = codec.read_table(properties_bin, offset, "surrogateescape")
            else:
                value, offset = codec.read_timestamp(properties_bin, offset)
            setattr(props, name, value)
        if offset != len(properties_bin):
            raise DecodeError("trailing bytes")
    except DecodeError as exc:
        raise _malformed(exc) from None
    return props


def encode_properties(props: commands.Basic.Properties) -> bytes:
    """Encode a pamqp Basic.Properties in properties_bin form (None and "" are left out)."""
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _PROPERTIES:
        value = getattr(props, name, None)
        if value is None or value == "":
            continue
        flags |= flag
        if kind == "shortstr":
            parts.append(codec.write_shortstr(value))
        elif kind == "octet":
            parts.append(codec.U8.pack(value))
        elif kind == "table":
            parts.append(codec.write_table(value))
        else:
            parts.append(codec.write_timestamp(value))
    return U16.pack(flags) + b"".join(parts)


def replace_headers(properties_bin: bytes, headers: Mapping[str, Any] | None) -> bytes:
    """Give the properties a new headers table (None removes it), keeping everything else."""
    # The other properties are copied byte for byte, and a header whose value is unchanged
    # (equal, and of the same types all the way down) keeps its original encoding.
    try:
        flags, offset = _read_flags(properties_bin)
        if flags & CONTENT_TYPE:
            offset = codec.skip_shortstr(properties_bin, offset)
        if flags & CONTENT_ENCODING:
            offset = codec.skip_shortstr(properties_bin, offset)
        old: dict[str, tuple[int, int, Any]] = {}
        tail = offset
        if flags & HEADERS:
            for key, start, end, value in codec.iter_table(
                properties_bin, offset, "surrogateescape"
            ):
                old[key] = (start, end, value)
            tail = codec.table_end(properties_bin, offset)
    except DecodeError as exc:
        raise _malformed(exc) from None
    if headers is None:
        table = b""
        flags &= ~HEADERS
    else:
        entries: list[bytes] = []
        for key, value in headers.items():
            entries.append(codec.write_shortstr(key))
            kept = old.get(key)
            if kept is not None and codec.same_value(kept[2], value):
                entries.append(properties_bin[kept[0] : kept[1]])
            else:
                entries.append(codec.write_field_value(value))
        body = b"".join(entries)
        table = codec.U32.pack(len(body)) + body
        flags |= HEADERS
    return b"".join((U16.pack(flags), properties_bin[2:offset], table, properties_bin[tail:]))
