"""Content properties: read_facts, decode/encode and replace_headers against pamqp."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, encode

from amqplite.protocol import (
    EMPTY_PROPERTIES,
    ConnectionException,
    MessageFacts,
    ReplyCode,
    decode_properties,
    encode_properties,
    read_facts,
    replace_headers,
)


def _fit(text: str, limit: int = 255) -> str:
    """Cut text to at most ``limit`` UTF-8 bytes on a character boundary."""
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


shortstrs = st.text(min_size=1, max_size=255).map(_fit)  # "" means absent, as in pamqp
keys = st.text(min_size=1, max_size=12).map(lambda s: _fit(s, 128))
scalars = (
    st.text(max_size=20)
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(width=32, allow_nan=False)
    | st.decimals(min_value=-1000, max_value=1000, places=3)
    | st.none()
    | st.integers(0, 0xFFFFFFFF).map(lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC))
    | st.binary(max_size=8).map(bytearray)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
header_tables = st.dictionaries(keys, values, max_size=5)


@st.composite
def pamqp_properties(draw: st.DrawFn) -> commands.Basic.Properties:
    """Random basic properties (every field present or absent)."""
    fields: dict[str, Any] = {}
    for name in (
        "content_type",
        "content_encoding",
        "correlation_id",
        "reply_to",
        "message_id",
        "message_type",
        "user_id",
        "app_id",
    ):
        fields[name] = draw(st.none() | shortstrs)
    fields["expiration"] = draw(st.none() | st.integers(0, 10**9).map(str))
    fields["headers"] = draw(st.none() | header_tables)
    fields["delivery_mode"] = draw(st.none() | st.sampled_from([1, 2]))
    fields["priority"] = draw(st.none() | st.integers(0, 255))
    fields["timestamp"] = draw(
        st.none()
        | st.integers(0, 0xFFFFFFFF).map(
            lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)
        )
    )
    return commands.Basic.Properties(**fields)


def pamqp_decode(properties_bin: bytes) -> commands.Basic.Properties:
    """pamqp's own reading of properties_bin (through a content header)."""
    from pamqp import header

    content = header.ContentHeader()
    content.unmarshal(struct.pack(">HHQ", 60, 0, 0) + properties_bin)
    return content.properties


# ---------------------------------------------------------------------------------------------
# against pamqp


@settings(max_examples=100)
@given(props=pamqp_properties())
def test_read_facts_agrees_with_pamqp(props: commands.Basic.Properties) -> None:
    facts = read_facts(props.marshal())
    theirs = pamqp_decode(props.marshal())
    assert facts == MessageFacts(
        theirs.delivery_mode, theirs.priority, theirs.expiration, theirs.headers
    )


@settings(max_examples=100)
@given(props=pamqp_properties())
def test_decode_properties_agrees_with_pamqp(props: commands.Basic.Properties) -> None:
    assert decode_properties(props.marshal()) == pamqp_decode(props.marshal())


@settings(max_examples=100)
@given(props=pamqp_properties())
def test_encode_then_decode_gives_the_same_properties(props: commands.Basic.Properties) -> None:
    assert decode_properties(encode_properties(props)) == props


@given(props=pamqp_properties())
def test_encode_properties_without_headers_is_byte_identical_to_pamqp(
    props: commands.Basic.Properties,
) -> None:
    props.headers = None
    assert encode_properties(props) == props.marshal()


@given(props=pamqp_properties())
def test_decode_then_encode_gives_back_the_same_bytes_when_headers_are_strings(
    props: commands.Basic.Properties,
) -> None:
    if props.headers is not None:
        props.headers = {k: str(v) for k, v in sorted(props.headers.items())}
    properties_bin = props.marshal()
    assert encode_properties(decode_properties(properties_bin)) == properties_bin


def test_empty_properties_have_no_facts() -> None:
    assert EMPTY_PROPERTIES == b"\x00\x00"
    assert read_facts(EMPTY_PROPERTIES) == MessageFacts(None, None, None, None)
    assert decode_properties(EMPTY_PROPERTIES) == commands.Basic.Properties()
    assert encode_properties(commands.Basic.Properties()) == EMPTY_PROPERTIES


def test_persistent_fact_follows_delivery_mode() -> None:
    assert read_facts(commands.Basic.Properties(delivery_mode=2).marshal()).persistent
    assert not read_facts(commands.Basic.Properties(delivery_mode=1).marshal()).persistent
    assert not read_facts(EMPTY_PROPERTIES).persistent


# ---------------------------------------------------------------------------------------------
# lenient where RabbitMQ is lenient


def test_property_strings_that_are_not_utf8_pass_through_byte_for_byte() -> None:
    properties_bin = b"\x80\x00" + b"\x02\xff\xfe"  # content_type
    props = decode_properties(properties_bin)
    assert encode_properties(props) == properties_bin


def test_header_keys_that_are_not_utf8_pass_through_byte_for_byte() -> None:
    table = b"\x02\xff\xfet\x01"
    properties_bin = b"\x20\x00" + struct.pack(">I", len(table)) + table
    facts = read_facts(properties_bin)
    assert facts.headers is not None
    assert replace_headers(properties_bin, facts.headers) == properties_bin


def test_timestamp_beyond_python_datetimes_is_kept_as_seconds() -> None:
    table = b"\x01tT" + struct.pack(">Q", 2**64 - 1)
    properties_bin = b"\x20\x40" + struct.pack(">I", len(table)) + table + struct.pack(">Q", 2**63)
    props = decode_properties(properties_bin)
    assert props.headers == {"t": 2**64 - 1}
    assert encode_properties(props) == properties_bin
    assert props.timestamp == 2**63
    assert encode_properties(props)[-8:] == struct.pack(">Q", 2**63)


def test_continuation_flag_words_are_skipped() -> None:
    properties_bin = b"\x80\x01" + b"\x00\x00" + b"\x04text"
    assert decode_properties(properties_bin).content_type == "text"
    assert read_facts(b"\x09\x01\x00\x00" + b"\x02" + b"\x012").expiration == "2"


def test_read_facts_stops_after_expiration() -> None:
    # message_id is flagged but its bytes are garbage: read_facts never looks at them
    properties_bin = b"\x01\x80" + b"\x0260" + b"\xff"
    assert read_facts(properties_bin).expiration == "60"
    with pytest.raises(ConnectionException):
        decode_properties(properties_bin)


# ---------------------------------------------------------------------------------------------
# malformed properties: 501, never another exception


def test_every_truncation_of_properties_is_a_frame_error() -> None:
    props = commands.Basic.Properties(
        content_type="t",
        headers={"a": 1, "b": [1, "x"]},
        delivery_mode=2,
        priority=1,
        expiration="5",
        app_id="a",
    )
    properties_bin = props.marshal()
    for cut in range(len(properties_bin)):
        with pytest.raises(ConnectionException) as info:
            decode_properties(properties_bin[:cut])
        assert info.value.reply_code == ReplyCode.FRAME_ERROR
    cut_in_facts = properties_bin.index(b"\x015")  # before the expiration's last byte
    for cut in range(cut_in_facts + 1):
        with pytest.raises(ConnectionException):
            read_facts(properties_bin[:cut])


def test_trailing_bytes_after_the_properties_are_a_frame_error() -> None:
    with pytest.raises(ConnectionException) as info:
        decode_properties(b"\x00\x00xyz")
    assert info.value.reply_code == ReplyCode.FRAME_ERROR


@pytest.mark.parametrize("table", [b"\x01aZ\x00", b"\x01at", b"\x05a"])
def test_bad_header_table_is_a_frame_error(table: bytes) -> None:
    properties_bin = b"\x20\x00" + struct.pack(">I", len(table)) + table
    for reader in (read_facts, decode_properties):
        with pytest.raises(ConnectionException) as info:
            reader(properties_bin)
        assert info.value.reply_code == ReplyCode.FRAME_ERROR


@settings(max_examples=300)
@given(properties_bin=st.binary(max_size=40))
def test_random_properties_raise_only_connection_exceptions(properties_bin: bytes) -> None:
    for call in (read_facts, decode_properties, lambda b: replace_headers(b, {"x": 1})):
        with contextlib.suppress(ConnectionException):
            call(properties_bin)


# ---------------------------------------------------------------------------------------------
# replace_headers


def _without_headers(props: commands.Basic.Properties) -> dict[str, Any]:
    return {k: v for k, v in dict(props).items() if k != "headers"}


@settings(max_examples=100)
@given(props=pamqp_properties(), new=st.none() | header_tables)
def test_replace_headers_changes_only_the_headers(
    props: commands.Basic.Properties, new: dict[str, Any] | None
) -> None:
    before = props.marshal()
    after = replace_headers(before, new)
    assert _without_headers(decode_properties(after)) == _without_headers(decode_properties(before))
    assert decode_properties(after).headers == new
    assert read_facts(after).headers == new


def test_replace_headers_keeps_the_encoding_of_unchanged_values() -> None:
    # "n" as a signed 32-bit 'I' and "f" as a 32-bit float, as pika and pamqp write them
    table = b"\x01nI" + struct.pack(">i", 7) + b"\x01ff" + struct.pack(">f", 0.5)
    properties_bin = b"\x30\x00" + struct.pack(">I", len(table)) + table + b"\x02"
    headers = read_facts(properties_bin).headers
    assert headers == {"n": 7, "f": 0.5}
    death = [
        {
            "count": 1,
            "reason": "rejected",
            "queue": "q",
            "time": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
        }
    ]
    after = replace_headers(properties_bin, {**headers, "x-death": death})
    assert table in after
    assert after.endswith(b"\x02")  # delivery_mode untouched
    assert read_facts(after).headers == {"n": 7, "f": 0.5, "x-death": death}


def test_x_death_count_is_a_signed_64_bit_long_as_rabbitmq_writes_it() -> None:
    after = replace_headers(EMPTY_PROPERTIES, {"x-death": [{"count": 1}]})
    assert b"\x05countl" + struct.pack(">q", 1) in after


def test_replace_headers_adds_a_table_to_properties_that_had_none() -> None:
    properties_bin = commands.Basic.Properties(
        content_type="a", delivery_mode=2, app_id="z"
    ).marshal()
    after = replace_headers(properties_bin, {"k": "v"})
    props = decode_properties(after)
    assert (props.content_type, props.headers, props.delivery_mode, props.app_id) == (
        "a",
        {"k": "v"},
        2,
        "z",
    )


def test_replace_headers_with_none_removes_the_table() -> None:
    properties_bin = commands.Basic.Properties(headers={"k": "v"}, priority=3).marshal()
    assert replace_headers(properties_bin, None) == commands.Basic.Properties(priority=3).marshal()


def test_replace_headers_keeps_continuation_flag_words() -> None:
    properties_bin = b"\x80\x01\x00\x00\x01a"
    after = replace_headers(properties_bin, {"k": True})
    assert after == b"\xa0\x01\x00\x00\x01a" + struct.pack(">I", 4) + b"\x01kt\x01"


def test_changed_value_of_another_type_is_re_encoded() -> None:
    table = b"\x01at\x01"  # a = True
    properties_bin = b"\x20\x00" + struct.pack(">I", len(table)) + table
    after = replace_headers(properties_bin, {"a": 1})
    assert read_facts(after).headers == {"a": 1}
    assert isinstance(read_facts(after).headers["a"], int)  # type: ignore[index]
    assert not isinstance(read_facts(after).headers["a"], bool)  # type: ignore[index]


def test_decimal_and_double_headers_keep_their_value() -> None:
    headers = {"d": decimal.Decimal("12.345"), "x": 0.1, "b": bytearray(b"\x00\x01"), "s": b"\xff"}
    after = replace_headers(EMPTY_PROPERTIES, headers)
    assert read_facts(after).headers == headers


def test_pamqp_encodes_tables_as_we_read_them() -> None:
    table = {"a": 1, "b": [1, 2.5, "s"], "c": {"d": None}, "e": decimal.Decimal("1.5")}
    properties_bin = b"\x20\x00" + encode.field_table(table)
    assert read_facts(properties_bin).headers == table


# ---------------------------------------------------------------------------------------------
# what real clients write


def test_properties_written_by_pika_are_read_and_rewritten_unchanged() -> None:
    import pika.frame
    import pika.spec

    headers = {"a": 1, "big": 2**40, "b": b"x\xff", "c": [1, "s"], "d": True, "n": None}
    props = pika.spec.BasicProperties(
        content_type="t", headers=headers, delivery_mode=2, timestamp=1700000000, expiration="60000"
    )
    properties_bin = pika.frame.Header(1, 5, props).marshal()[19:-1]
    facts = read_facts(properties_bin)
    assert (facts.delivery_mode, facts.expiration) == (2, "60000")
    assert facts.headers == {**headers, "b": bytearray(b"x\xff")}  # pika writes bytes as 'x'
    assert replace_headers(properties_bin, facts.headers) == properties_bin


def test_properties_written_by_py_amqp_for_kombu_are_read_and_rewritten_unchanged() -> None:
    import amqp

    headers = {
        "a": 1,
        "c": [1, "s"],
        "f": 1.5,
        "dt": datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC),
    }
    message = amqp.Message(
        b"hi", application_headers=headers, delivery_mode=2, priority=5, expiration="10"
    )
    properties_bin = message._serialize_properties()
    assert read_facts(properties_bin) == MessageFacts(2, 5, "10", headers)
    assert replace_headers(properties_bin, headers) == properties_bin
