"""AMQP 0-9-1 primitive codec over a buffer and an offset: strings, field tables and arrays.

Decoders take ``(buf, offset)`` and return ``(value, new_offset)``; they never slice more
than the value they read, so a whole frame is decoded in O(bytes). They raise `DecodeError`
(never struct.error or UnicodeDecodeError); methods.py and properties.py turn it into a
ConnectionException with the reply code RabbitMQ uses (501 FRAME_ERROR).

Field tables are our own code, not pamqp's, so that re-encoding keeps meaning:

- decoded types: ``t`` bool; ``b B s u I i l L`` int; ``f d`` float; ``D`` Decimal;
  ``S`` str when valid UTF-8 else bytes (as pamqp); ``x`` bytearray (as pamqp); ``A`` list;
  ``F`` dict; ``V`` (and ``\\x00``, seen in the wild) None; ``T`` an aware UTC datetime when
  Python can hold it, else a `RawTimestamp` (an int of seconds; RabbitMQ accepts any value).
- encoded types: bool ``t``; int ``l`` (signed 64-bit, as RabbitMQ writes x-death counts,
  where Java clients expect a Long); float ``d`` (pamqp writes ``f`` and loses precision);
  Decimal ``D``; str and bytes ``S``; bytearray ``x``; datetime ``T``; dict ``F``;
  list/tuple ``A``; None ``V``; RawTimestamp ``T``. Keys keep their insertion order (pamqp
  sorts them).
- table keys: decoded strictly as UTF-8 in method arguments (RabbitMQ answers 501) but with
  ``surrogateescape`` in message headers (RabbitMQ passes any bytes through), so that
  re-encoding gives back the same bytes.
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, TypeAlias

FieldValue: TypeAlias = (
    bool
    | int
    | float
    | decimal.Decimal
    | str
    | bytes
    | bytearray
    | datetime.datetime
    | list["FieldValue"]
    | dict[str, "FieldValue"]
    | None
)
FieldTable: TypeAlias = dict[str, FieldValue]
Buffer: TypeAlias = bytes | bytearray | memoryview

MAX_NESTING: Final = 64
"""Deepest nesting of tables and arrays accepted, so hostile input cannot exhaust the stack."""

SHORTSTR_MAX: Final = 255
REPLY_TEXT_ELLIPSIS: Final = b"..."

U8: Final = struct.Struct(">B")
I8: Final = struct.Struct(">b")
U16: Final = struct.Struct(">H")
I16: Final = struct.Struct(">h")
U32: Final = struct.Struct(">I")
I32: Final = struct.Struct(">i")
U64: Final = struct.Struct(">Q")
I64: Final = struct.Struct(">q")
F32: Final = struct.Struct(">f")
F64: Final = struct.Struct(">d")
DECIMAL: Final = struct.Struct(">Bi")

_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MAX_DATETIME_SECONDS: Final = int(
    (datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC) - _EPOCH).total_seconds()
)


class DecodeError(ValueError):
    """Bytes that cannot be decoded as the AMQP type that was expected."""


class RawTimestamp(int):
    """A timestamp beyond Python's datetime (after 9999), kept as POSIX seconds; encodes as T."""

    __slots__ = ()


# ---------------------------------------------------------------------------------------------
# decoding


def need(buf: Buffer, offset: int, size: int, what: str) -> None:
    """Raise DecodeError unless ``size`` bytes of ``what`` are available at ``offset``."""
    if offset + size > len(buf):
        raise DecodeError(f"truncated {what}")


def read_octet(buf: Buffer, offset: int) -> tuple[int, int]:
    """Read an unsigned 8-bit integer."""
    need(buf, offset, 1, "octet")
    return buf[offset], offset + 1


def read_short(buf: Buffer, offset: int) -> tuple[int, int]:
    """Read an unsigned 16-bit integer."""
    need(buf, offset, 2, "short")
    return U16.unpack_from(buf, offset)[0], offset + 2


def read_long(buf: Buffer, offset: int) -> tuple[int, int]:
    """Read an unsigned 32-bit integer."""
    need(buf, offset, 4, "long")
    return U32.unpack_from(buf, offset)[0], offset + 4


def read_longlong(buf: Buffer, offset: int) -> tuple[int, int]:
    """Read an unsigned 64-bit integer (delivery tags are unsigned on the wire)."""
    need(buf, offset, 8, "longlong")
    return U64.unpack_from(buf, offset)[0], offset + 8


def read_shortstr(buf: Buffer, offset: int, errors: str = "strict") -> tuple[str, int]:
    """Read a short string; ``errors="surrogateescape"`` keeps bytes that are not UTF-8."""
    need(buf, offset, 1, "shortstr")
    end = offset + 1 + buf[offset]
    need(buf, end, 0, "shortstr")
    try:
        return str(buf[offset + 1 : end], "utf-8", errors), end
    except UnicodeDecodeError:
        raise DecodeError("Malformed UTF-8 in shortstr") from None


def skip_shortstr(buf: Buffer, offset: int) -> int:
    """Return the offset after a short string without decoding it."""
    need(buf, offset, 1, "shortstr")
    end = offset + 1 + buf[offset]
    need(buf, end, 0, "shortstr")
    return end


def read_longstr(buf: Buffer, offset: int) -> tuple[str | bytes, int]:
    """Read a long string: str when it is valid UTF-8, else bytes (as pamqp does)."""
    need(buf, offset, 4, "longstr")
    start = offset + 4
    end = start + U32.unpack_from(buf, offset)[0]
    need(buf, end, 0, "longstr")
    raw = bytes(buf[start:end])
    try:
        return raw.decode("utf-8"), end
    except UnicodeDecodeError:
        return raw, end


def read_timestamp(buf: Buffer, offset: int) -> tuple[datetime.datetime | RawTimestamp, int]:
    """Read a 64-bit POSIX time in seconds as an aware UTC datetime (RawTimestamp past 9999)."""
    need(buf, offset, 8, "timestamp")
    seconds = U64.unpack_from(buf, offset)[0]
    return timestamp_value(seconds), offset + 8


def timestamp_value(seconds: int) -> datetime.datetime | RawTimestamp:
    """Turn POSIX seconds into an aware UTC datetime, or a RawTimestamp if datetime cannot hold it."""
    if seconds > _MAX_DATETIME_SECONDS:
        return RawTimestamp(seconds)
    return _EPOCH + datetime.timedelta(seconds=seconds)


def _read_fixed(
    fmt: struct.Struct, what: str
) -> Callable[[Buffer, int, int, str], tuple[FieldValue, int]]:
    """Build a field-value reader for a fixed-size number."""
    size = fmt.size

    def reader(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
        need(buf, offset, size, what)
        return fmt.unpack_from(buf, offset)[0], offset + size

    return reader


def _read_bool(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    need(buf, offset, 1, "boolean")
    return buf[offset] != 0, offset + 1


def _read_decimal(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    need(buf, offset, 5, "decimal")
    scale, raw = DECIMAL.unpack_from(buf, offset)
    return decimal.Decimal(raw).scaleb(-scale), offset + 5


def _read_longstr_value(
    buf: Buffer, offset: int, depth: int, errors: str
) -> tuple[FieldValue, int]:
    return read_longstr(buf, offset)


def _read_bytearray(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    need(buf, offset, 4, "byte array")
    start = offset + 4
    end = start + U32.unpack_from(buf, offset)[0]
    need(buf, end, 0, "byte array")
    return bytearray(buf[start:end]), end


def _read_timestamp_value(
    buf: Buffer, offset: int, depth: int, errors: str
) -> tuple[FieldValue, int]:
    return read_timestamp(buf, offset)


def _read_void(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    return None, offset


def _read_table_value(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    return _read_table(buf, offset, depth + 1, errors)


def _read_array_value(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldValue, int]:
    if depth >= MAX_NESTING:
        raise DecodeError("field array nested too deeply")
    need(buf, offset, 4, "field array")
    start = offset + 4
    end = start + U32.unpack_from(buf, offset)[0]
    need(buf, end, 0, "field array")
    items: list[FieldValue] = []
    offset = start
    while offset < end:
        value, offset = read_field_value(buf, offset, depth + 1, errors)
        items.append(value)
    if offset != end:
        raise DecodeError("field array value overruns the array")
    return items, end


_FIELD_READERS: Final[dict[int, Callable[[Buffer, int, int, str], tuple[FieldValue, int]]]] = {
    ord("t"): _read_bool,
    ord("b"): _read_fixed(I8, "short-short int"),
    ord("B"): _read_fixed(U8, "short-short uint"),
    ord("s"): _read_fixed(I16, "short int"),
    ord("u"): _read_fixed(U16, "short uint"),
    ord("I"): _read_fixed(I32, "long int"),
    ord("i"): _read_fixed(U32, "long uint"),
    ord("l"): _read_fixed(I64, "long-long int"),
    ord("L"): _read_fixed(I64, "long-long int"),
    ord("f"): _read_fixed(F32, "float"),
    ord("d"): _read_fixed(F64, "double"),
    ord("D"): _read_decimal,
    ord("S"): _read_longstr_value,
    ord("x"): _read_bytearray,
    ord("A"): _read_array_value,
    ord("T"): _read_timestamp_value,
    ord("F"): _read_table_value,
    ord("V"): _read_void,
    0: _read_void,
}


def read_field_value(
    buf: Buffer, offset: int, depth: int = 0, errors: str = "strict"
) -> tuple[FieldValue, int]:
    """Read one type-tagged field value (of a table or an array)."""
    need(buf, offset, 1, "field value type")
    reader = _FIELD_READERS.get(buf[offset])
    if reader is None:
        raise DecodeError(f"unknown field value type {bytes([buf[offset]])!r}")
    return reader(buf, offset + 1, depth, errors)


def iter_table(
    buf: Buffer, offset: int, errors: str = "strict", depth: int = 0
) -> Iterator[tuple[str, int, int, FieldValue]]:
    """Yield ``(key, value_start, value_end, value)`` for each entry of the table at ``offset``."""
    if depth >= MAX_NESTING:
        raise DecodeError("field table nested too deeply")
    need(buf, offset, 4, "field table")
    offset += 4
    end = offset + U32.unpack_from(buf, offset - 4)[0]
    need(buf, end, 0, "field table")
    while offset < end:
        key, offset = read_shortstr(buf, offset, errors)
        start = offset
        value, offset = read_field_value(buf, offset, depth, errors)
        if offset > end:
            raise DecodeError("field table value overruns the table")
        yield key, start, offset, value


def table_end(buf: Buffer, offset: int) -> int:
    """Return the offset after the table at ``offset`` without decoding it."""
    need(buf, offset, 4, "field table")
    end: int = offset + 4 + U32.unpack_from(buf, offset)[0]
    need(buf, end, 0, "field table")
    return end


def _read_table(buf: Buffer, offset: int, depth: int, errors: str) -> tuple[FieldTable, int]:
    table: FieldTable = {}
    for key, _start, _end, value in iter_table(buf, offset, errors, depth):
        table[key] = value
    return table, table_end(buf, offset)


def read_table(buf: Buffer, offset: int, errors: str = "strict") -> tuple[FieldTable, int]:
    """Read a field table into a dict; ``errors`` applies to the UTF-8 of its keys."""
    return _read_table(buf, offset, 0, errors)


# ---------------------------------------------------------------------------------------------
# encoding


def write_shortstr(value: str | bytes) -> bytes:
    """Encode a short string (``surrogateescape`` gives back bytes kept by the decoder)."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    if len(raw) > SHORTSTR_MAX:
        raise ValueError(f"short string of {len(raw)} bytes is longer than 255")
    return U8.pack(len(raw)) + raw


def write_reply_text(value: str) -> bytes:
    """Encode a reply text as a short string, cut to 255 bytes with "..." as RabbitMQ does."""
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > SHORTSTR_MAX:
        cut = raw[: SHORTSTR_MAX - len(REPLY_TEXT_ELLIPSIS)]
        cut = cut.decode("utf-8", "ignore").encode("utf-8")  # drop a split character
        raw = cut + REPLY_TEXT_ELLIPSIS
    return U8.pack(len(raw)) + raw


def write_longstr(value: str | bytes | bytearray) -> bytes:
    """Encode a long string from str (UTF-8) or bytes."""
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    return U32.pack(len(raw)) + raw


def write_timestamp(value: datetime.datetime | int) -> bytes:
    """Encode a timestamp from a datetime (naive means UTC) or POSIX seconds."""
    return U64.pack(timestamp_seconds(value))


def timestamp_seconds(value: datetime.datetime | int) -> int:
    """POSIX seconds of a datetime (naive means UTC) or of an int."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=datetime.UTC)
        return int(value.timestamp())
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"timestamp must be a datetime or an int, not {type(value).__name__}")


def _write_decimal(value: decimal.Decimal) -> bytes:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"cannot encode {value} as an AMQP decimal")
    if exponent > 0:
        scale, mantissa = 0, int(value)
    else:
        scale, mantissa = -exponent, int(value.scaleb(-exponent))
    if not 0 <= scale <= 255 or not -(2**31) <= mantissa < 2**31:
        raise ValueError(f"decimal {value} is out of the AMQP decimal range")
    return DECIMAL.pack(scale, mantissa)


def write_field_value(value: object, depth: int = 0) -> bytes:
    """Encode one value with its type tag (see the module docstring for the mapping)."""
    if depth > MAX_NESTING:
        raise ValueError("field value nested too deeply")
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, RawTimestamp):
        return b"T" + U64.pack(value)
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"integer {value} does not fit a signed 64-bit field value")
        return b"l" + I64.pack(value)
    if isinstance(value, str | bytes):
        return b"S" + write_longstr(value)
    if isinstance(value, float):
        return b"d" + F64.pack(value)
    if isinstance(value, dict):
        return b"F" + _write_table(value, depth + 1)
    if isinstance(value, list | tuple):
        return b"A" + _write_array(value, depth + 1)
    if value is None:
        return b"V"
    if isinstance(value, bytearray):
        return b"x" + U32.pack(len(value)) + bytes(value)
    if isinstance(value, decimal.Decimal):
        return b"D" + _write_decimal(value)
    if isinstance(value, datetime.datetime):
        return b"T" + write_timestamp(value)
    raise TypeError(f"cannot encode {type(value).__name__} as an AMQP field value")


def _write_array(values: Sequence[object], depth: int) -> bytes:
    body = b"".join(write_field_value(item, depth) for item in values)
    return U32.pack(len(body)) + body


def _write_table(table: Mapping[str, object], depth: int) -> bytes:
    if not table:
        return b"\x00\x00\x00\x00"
    body = b"".join(
        write_shortstr(key) + write_field_value(value, depth) for key, value in table.items()
    )
    return U32.pack(len(body)) + body


def write_table(table: Mapping[str, object] | None) -> bytes:
    """Encode a field table (None and {} give the empty table), keys in insertion order."""
    return _write_table(table or {}, 0)


def write_array(values: Sequence[object]) -> bytes:
    """Encode a field array."""
    return _write_array(values, 0)


def same_value(a: object, b: object) -> bool:
    """True when two decoded values are equal and of the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return a == b
