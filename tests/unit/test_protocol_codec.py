"""The field-table codec: round trips, agreement with pamqp, limits; and the layer's imports."""

from __future__ import annotations

import ast
import contextlib
import datetime
import decimal
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import decode, encode

from amqplite.protocol import codec
from amqplite.protocol.codec import DecodeError, RawTimestamp

PROTOCOL_DIR = Path(codec.__file__).parent

keys = st.text(min_size=0, max_size=20).filter(lambda s: len(s.encode()) <= 255)
scalars = (
    st.text(max_size=30)
    | st.binary(max_size=10).filter(lambda b: not _is_utf8(b))
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.decimals(min_value=-200_000, max_value=200_000, places=4)
    | st.none()
    | st.integers(0, 253402300799).map(
        lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)
    )
    | st.integers(253402300800, 2**64 - 1).map(RawTimestamp)
    | st.binary(max_size=10).map(bytearray)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
tables = st.dictionaries(keys, values, max_size=6)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=100)
@given(table=tables)
def test_tables_round_trip_with_their_types(table: dict[str, object]) -> None:
    encoded = codec.write_table(table)
    decoded, end = codec.read_table(encoded, 0)
    assert end == len(encoded)
    assert codec.same_value(decoded, table)


@settings(max_examples=100)
@given(table=tables)
def test_encoding_is_stable_after_one_round_trip(table: dict[str, object]) -> None:
    encoded = codec.write_table(table)
    assert codec.write_table(codec.read_table(encoded, 0)[0]) == encoded


pamqp_scalars = (
    st.text(max_size=30)
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(width=32, allow_nan=False)
    | st.none()
    | st.integers(0, 0xFFFFFFFF).map(lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC))
    | st.binary(max_size=10).map(bytearray)
)
pamqp_tables = st.dictionaries(
    keys.filter(lambda k: len(k.encode()) <= 128),
    st.recursive(
        pamqp_scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=5,
)


@settings(max_examples=100)
@given(table=pamqp_tables)
def test_tables_written_by_pamqp_read_as_pamqp_reads_them(table: dict[str, object]) -> None:
    encoded = encode.field_table(table)
    consumed, theirs = decode.field_table(encoded)
    assert codec.read_table(encoded, 0) == (theirs, consumed)


def test_every_integer_width_reads_as_an_int() -> None:
    items = b"".join(
        bytes([len(k)]) + k + t + struct.pack(fmt, v)
        for k, t, fmt, v in [
            (b"b", b"b", ">b", -5),
            (b"B", b"B", ">B", 250),
            (b"s", b"s", ">h", -300),
            (b"u", b"u", ">H", 60000),
            (b"I", b"I", ">i", -70000),
            (b"i", b"i", ">I", 4_000_000_000),
            (b"l", b"l", ">q", -(2**40)),
        ]
    )
    table, _ = codec.read_table(struct.pack(">I", len(items)) + items, 0)
    assert table == {
        "b": -5,
        "B": 250,
        "s": -300,
        "u": 60000,
        "I": -70000,
        "i": 4_000_000_000,
        "l": -(2**40),
    }


def test_long_string_that_is_not_utf8_reads_as_bytes_and_writes_back_the_same() -> None:
    encoded = codec.write_table({"k": b"\xff\x00"})
    assert codec.read_table(encoded, 0)[0] == {"k": b"\xff\x00"}
    assert encoded == struct.pack(">I", 9) + b"\x01kS" + struct.pack(">I", 2) + b"\xff\x00"


def test_floats_are_written_as_doubles_without_losing_precision() -> None:
    assert codec.read_table(codec.write_table({"x": 0.1}), 0)[0]["x"] == 0.1


def test_keys_keep_their_order() -> None:
    encoded = codec.write_table({"b": 1, "a": 2})
    assert list(codec.read_table(encoded, 0)[0]) == ["b", "a"]


def test_decimal_keeps_its_scale() -> None:
    value = decimal.Decimal("-12.3400")
    decoded = codec.read_table(codec.write_table({"d": value}), 0)[0]["d"]
    assert isinstance(decoded, decimal.Decimal)
    assert decoded.as_tuple() == value.as_tuple()


@pytest.mark.parametrize("kind", [b"F", b"A"])
def test_nesting_deeper_than_the_limit_is_a_decode_error(kind: bytes) -> None:
    data = b""
    for _ in range(codec.MAX_NESTING + 2):
        if kind == b"F":
            data = b"F" + struct.pack(">I", len(data) + 2) + b"\x01a" + data if data else b"V"
        else:
            data = b"A" + struct.pack(">I", len(data)) + data
    table = b"\x01k" + data
    with pytest.raises(DecodeError):
        codec.read_table(struct.pack(">I", len(table)) + table, 0)


def test_nesting_within_the_limit_is_read() -> None:
    value: object = 1
    for _ in range(codec.MAX_NESTING - 2):
        value = [value]
    assert codec.read_table(codec.write_table({"k": value}), 0)[0] == {"k": value}


@settings(max_examples=300)
@given(data=st.binary(max_size=60))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        codec.read_table(struct.pack(">I", len(data)) + data, 0)


def test_unencodable_values_are_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        codec.write_shortstr("x" * 256)
    with pytest.raises(ValueError, match="64-bit"):
        codec.write_table({"big": 2**64})
    with pytest.raises(TypeError):
        codec.write_table({"set": {1}})


def test_reply_text_is_cut_to_255_bytes_on_a_character_boundary() -> None:
    encoded = codec.write_reply_text("é" * 200)
    assert encoded[0] == len(encoded) - 1 <= 255
    assert encoded[1:].decode().endswith("...")
    assert codec.write_reply_text("short") == b"\x05short"


def test_same_value_tells_bool_from_int_at_any_depth() -> None:
    assert codec.same_value({"a": [1, {"b": "c"}]}, {"a": [1, {"b": "c"}]})
    assert not codec.same_value(True, 1)
    assert not codec.same_value([1], [True])
    assert not codec.same_value({"a": 1}, {"a": 1, "b": 2})


# ---------------------------------------------------------------------------------------------
# layering: protocol imports no trio, nothing else of amqplite, and pamqp only in two modules


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(PROTOCOL_DIR.glob("*.py")), ids=lambda p: p.name)
def test_protocol_modules_import_only_what_the_layering_allows(path: Path) -> None:
    imports = _imports(path)
    assert not any(name == "trio" or name.startswith("trio.") for name in imports)
    assert all(
        name.startswith("amqplite.protocol") for name in imports if name.startswith("amqplite")
    )
    if path.name not in {"methods.py", "properties.py"}:
        assert not any(name == "pamqp" or name.startswith("pamqp.") for name in imports)
