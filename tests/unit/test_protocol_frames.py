"""FrameReader (NEED_DATA, splits, errors) and the fast frame writers against pamqp."""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import base, body, commands, frame, header, heartbeat

from amqplite.protocol import (
    HEARTBEAT_FRAME,
    NEED_DATA,
    PROTOCOL_HEADER,
    BadProtocolHeader,
    BasicAck,
    BasicPublish,
    BodyFrame,
    ConnectionException,
    FrameReader,
    HeaderFrame,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    ReplyCode,
)
from amqplite.protocol.writers import (
    Deliver,
    GetOk,
    Return,
    deliver_parts,
    encode_ack,
    encode_content,
    encode_deliver,
    encode_get_ok,
    encode_nack,
    encode_return,
    get_ok_parts,
    return_parts,
)

# ---------------------------------------------------------------------------------------------
# helpers


@attrs.frozen
class Content:
    """A message as the writers read it."""

    exchange: str
    routing_key: str
    properties_bin: bytes
    body: bytes


@contextmanager
def pamqp_unvalidated(*classes: type[base.Frame]) -> Iterator[None]:
    """Let pamqp marshal names that RabbitMQ accepts but pamqp's name pattern refuses."""
    with ExitStack() as stack:
        for cls in classes:
            stack.enter_context(mock.patch.object(cls, "validate", return_value=None))
        yield


def raw_frame(frame_type: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    """A frame built by hand, for malformed input."""
    return (
        bytes([frame_type])
        + channel.to_bytes(2, "big")
        + len(payload).to_bytes(4, "big")
        + payload
        + end
    )


def normal(item: object) -> object:
    """A comparable form of a frame (pamqp method objects have no __eq__)."""
    if isinstance(item, MethodFrame) and isinstance(item.method, base.Frame):
        return ("method", item.channel, item.method.name, dict(item.method))
    return item


def read_all(reader: FrameReader) -> list[object]:
    """Every complete frame the reader has now."""
    out = []
    while (item := reader.next_frame()) is not NEED_DATA:
        out.append(normal(item))
    return out


def feed_in_chunks(data: bytes, sizes: Iterator[int]) -> list[object]:
    """Feed data in chunks of the given sizes, draining frames after each."""
    reader = FrameReader()
    frames: list[object] = []
    pos = 0
    while pos < len(data):
        step = next(sizes)
        reader.receive_data(data[pos : pos + step])
        pos += step
        frames.extend(read_all(reader))
    assert reader.buffered_bytes == 0
    return frames


def sample_stream() -> bytes:
    """A realistic client stream: header, handshake replies, publishes, acks, heartbeats."""
    props = commands.Basic.Properties(
        content_type="application/json", headers={"k": "v"}, delivery_mode=2
    )
    parts = [
        PROTOCOL_HEADER,
        frame.marshal(
            commands.Connection.StartOk(
                client_properties={"product": "test"},
                mechanism="PLAIN",
                response="\x00guest\x00guest",
                locale="en_US",
            ),
            0,
        ),
        frame.marshal(commands.Connection.TuneOk(2047, 131072, 60), 0),
        frame.marshal(commands.Connection.Open("/"), 0),
        frame.marshal(commands.Channel.Open(), 1),
        frame.marshal(commands.Queue.Declare(queue="q1", durable=True), 1),
    ]
    for i in range(20):
        payload = bytes([i]) * (i * 37)
        parts.append(frame.marshal(commands.Basic.Publish(exchange="ex", routing_key=f"rk.{i}"), 1))
        parts.append(frame.marshal(header.ContentHeader(0, len(payload), props), 1))
        if payload:
            parts.append(frame.marshal(body.ContentBody(payload[:100]), 1))
            if len(payload) > 100:
                parts.append(frame.marshal(body.ContentBody(payload[100:]), 1))
        parts.append(frame.marshal(commands.Basic.Ack(delivery_tag=i, multiple=i % 2 == 0), 1))
        parts.append(heartbeat.Heartbeat.marshal())
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# FrameReader: splitting


def test_frames_are_the_same_in_one_chunk_and_one_byte_at_a_time() -> None:
    data = sample_stream()
    whole = feed_in_chunks(data, iter(lambda: len(data), None))
    bytewise = feed_in_chunks(data, iter(lambda: 1, None))
    assert whole == bytewise
    assert whole[0] == ProtocolHeaderReceived()
    assert len(whole) == 1 + 5 + 20 * 4 + 19 + sum(1 for i in range(20) if i * 37 > 100)


@pytest.mark.parametrize("seed", range(8))
def test_frames_are_the_same_for_random_splits(seed: int) -> None:
    data = sample_stream()
    rng = random.Random(seed)
    expected = feed_in_chunks(data, iter(lambda: len(data), None))
    assert feed_in_chunks(data, iter(lambda: rng.randint(1, 300), None)) == expected


def test_decoded_frames_carry_channel_and_content_fields() -> None:
    reader = FrameReader()
    props = commands.Basic.Properties(message_id="m1")
    reader.receive_data(
        PROTOCOL_HEADER
        + frame.marshal(commands.Basic.Publish(exchange="e", routing_key="r", mandatory=True), 3)
        + frame.marshal(header.ContentHeader(0, 4, props), 3)
        + frame.marshal(body.ContentBody(b"abcd"), 3)
        + heartbeat.Heartbeat.marshal()
    )
    assert read_all(reader) == [
        ProtocolHeaderReceived(),
        MethodFrame(3, BasicPublish("e", "r", True, False)),
        HeaderFrame(3, 60, 4, props.marshal()),
        BodyFrame(3, b"abcd"),
        HeartbeatFrame(0),
    ]


def test_partial_frame_gives_need_data_until_its_last_byte() -> None:
    reader = FrameReader()
    reader.receive_data(PROTOCOL_HEADER)
    assert reader.next_frame() == ProtocolHeaderReceived()
    data = frame.marshal(commands.Basic.Ack(delivery_tag=7), 1)
    for byte in data[:-1]:
        reader.receive_data(bytes([byte]))
        assert reader.next_frame() is NEED_DATA
    reader.receive_data(data[-1:])
    assert reader.next_frame() == MethodFrame(1, BasicAck(7, False))
    assert reader.next_frame() is NEED_DATA


def test_empty_reader_needs_data() -> None:
    reader = FrameReader()
    assert reader.next_frame() is NEED_DATA
    reader.receive_data(b"")
    assert reader.next_frame() is NEED_DATA


def test_many_frames_in_one_large_chunk_all_come_out_and_the_buffer_empties() -> None:
    one = frame.marshal(commands.Basic.Ack(delivery_tag=1), 1)
    count = 50_000
    reader = FrameReader()
    reader.receive_data(PROTOCOL_HEADER + one * count)
    frames = read_all(reader)
    assert len(frames) == count + 1
    assert frames[-1] == MethodFrame(1, BasicAck(1, False))
    assert reader.buffered_bytes == 0


def test_consumed_bytes_are_dropped_while_a_partial_frame_always_remains() -> None:
    one = raw_frame(3, 1, b"x" * 1000)
    stream = one * 3000
    step = len(one) + 1  # every chunk leaves a partial frame behind
    reader = reader_after_header()
    count = 0
    for start in range(0, len(stream), step):
        reader.receive_data(stream[start : start + step])
        count += len(read_all(reader))
        reader._check()
        assert reader.buffered_bytes < len(one)
    assert count == 3000


def test_chunks_are_read_in_place_and_only_frames_split_between_them_are_copied() -> None:
    publish = (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), 1)
        + frame.marshal(header.ContentHeader(0, 1000, commands.Basic.Properties()), 1)
        + raw_frame(3, 1, b"x" * 1000)
    )
    stream = publish * 3000
    step = 16384  # every chunk ends inside a publish
    reader = reader_after_header()
    bodies = 0
    chunks = 0
    for start in range(0, len(stream), step):
        reader.receive_data(stream[start : start + step])
        chunks += 1
        frames = read_all(reader)
        bodies += sum(1 for f in frames if isinstance(f, BodyFrame))
        assert all(f.payload == b"x" * 1000 for f in frames if isinstance(f, BodyFrame))
        reader._check()
    assert bodies == 3000
    assert reader.buffered_bytes == 0
    assert reader.copied_bytes <= chunks * len(publish)  # one split publish per chunk at most
    assert reader.copied_bytes < len(stream) // 10


def test_frames_read_from_a_bytearray_do_not_change_when_the_caller_reuses_it() -> None:
    second = raw_frame(3, 1, b"second")
    received = bytearray(raw_frame(3, 1, b"first") + second[:-3])
    reader = reader_after_header()
    reader.receive_data(received)
    received[:] = b"\x00" * len(received)  # the caller reads its next input into the same buffer
    reader.receive_data(second[-3:])
    assert read_all(reader) == [BodyFrame(1, b"first"), BodyFrame(1, b"second")]


def test_max_size_payload_is_accepted_and_one_more_byte_is_a_frame_error() -> None:
    reader = FrameReader(frame_max=4096)
    reader.receive_data(PROTOCOL_HEADER + raw_frame(3, 1, b"a" * (4096 - 8)))
    assert read_all(reader)[-1] == BodyFrame(1, b"a" * 4088)
    reader.receive_data(raw_frame(3, 1, b"a" * 4089))
    with pytest.raises(ConnectionException) as info:
        reader.next_frame()
    assert info.value.reply_code == ReplyCode.FRAME_ERROR


def test_frame_max_set_after_tune_applies_to_following_frames() -> None:
    reader = FrameReader()
    reader.receive_data(PROTOCOL_HEADER + raw_frame(3, 1, b"a" * 5000))
    assert read_all(reader)[-1] == BodyFrame(1, b"a" * 5000)
    reader.frame_max = 4096
    reader.receive_data(raw_frame(3, 1, b"a" * 5000))
    with pytest.raises(ConnectionException) as info:
        reader.next_frame()
    assert info.value.reply_code == ReplyCode.FRAME_ERROR


def test_oversized_frame_is_refused_from_its_header_before_the_payload_arrives() -> None:
    reader = FrameReader(frame_max=4096)
    reader.receive_data(PROTOCOL_HEADER + raw_frame(3, 1, b"a" * 10_000)[:7])
    reader.next_frame()
    with pytest.raises(ConnectionException) as info:
        reader.next_frame()
    assert info.value.reply_code == ReplyCode.FRAME_ERROR


# ---------------------------------------------------------------------------------------------
# FrameReader: the protocol header


def test_wrong_protocol_header_is_refused_at_the_first_wrong_byte() -> None:
    reader = FrameReader()
    reader.receive_data(b"G")
    with pytest.raises(BadProtocolHeader) as info:
        reader.next_frame()
    assert info.value.received == b"G"


@pytest.mark.parametrize(
    "received",
    [
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x00\x00\x09\x00",
        b"AMQP\x00\x00\x08\x00",
        b"GET / HTTP/1.1\r\n",
    ],
)
def test_other_protocol_versions_are_bad_protocol_headers(received: bytes) -> None:
    reader = FrameReader()
    reader.receive_data(received)
    with pytest.raises(BadProtocolHeader):
        reader.next_frame()


def test_partial_correct_protocol_header_needs_data() -> None:
    reader = FrameReader()
    reader.receive_data(b"AMQP\x00\x00")
    assert reader.next_frame() is NEED_DATA
    reader.receive_data(b"\x09\x01")
    assert reader.next_frame() == ProtocolHeaderReceived()


# ---------------------------------------------------------------------------------------------
# FrameReader: errors (codes as RabbitMQ 3.10 answers them)


def reader_after_header() -> FrameReader:
    """A reader that has taken the protocol header."""
    reader = FrameReader()
    reader.receive_data(PROTOCOL_HEADER)
    assert reader.next_frame() == ProtocolHeaderReceived()
    return reader


def error_for(data: bytes) -> ConnectionException:
    """The ConnectionException the reader raises for data after the protocol header."""
    reader = reader_after_header()
    reader.receive_data(data)
    with pytest.raises(ConnectionException) as info:
        reader.next_frame()
    return info.value


def test_bad_frame_end_octet_is_a_frame_error() -> None:
    exc = error_for(raw_frame(1, 1, b"\x00\x3c\x00\x50" + bytes(9), end=b"\x00"))
    assert exc.reply_code == ReplyCode.FRAME_ERROR


@pytest.mark.parametrize("frame_type", [0, 4, 9, 65, 255])
def test_unknown_frame_type_is_a_frame_error(frame_type: int) -> None:
    assert error_for(raw_frame(frame_type, 1, b"abc")).reply_code == ReplyCode.FRAME_ERROR


def test_heartbeat_on_a_channel_other_than_zero_is_an_unexpected_frame() -> None:
    assert error_for(raw_frame(8, 1, b"")).reply_code == ReplyCode.UNEXPECTED_FRAME


def test_heartbeat_with_a_payload_is_a_frame_error() -> None:
    assert error_for(raw_frame(8, 0, b"ab")).reply_code == ReplyCode.FRAME_ERROR


@pytest.mark.parametrize("payload", [b"", b"\x00", b"\x00\x3c", b"\x00\x3c\x00"])
def test_method_payload_shorter_than_its_ids_is_a_frame_error(payload: bytes) -> None:
    assert error_for(raw_frame(1, 1, payload)).reply_code == ReplyCode.FRAME_ERROR


@pytest.mark.parametrize("size", [0, 3, 12, 13])
def test_content_header_shorter_than_fourteen_bytes_is_a_frame_error(size: int) -> None:
    payload = (b"\x00\x3c\x00\x00" + (5).to_bytes(8, "big") + b"\x00\x00")[:size]
    assert error_for(raw_frame(2, 1, payload)).reply_code == ReplyCode.FRAME_ERROR


def test_undecodable_method_in_a_frame_is_a_frame_error_with_its_ids() -> None:
    exc = error_for(raw_frame(1, 1, b"\x00\x32\x00\x0a\x00\x00\x05ab"))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.FRAME_ERROR, 50, 10)


@pytest.mark.parametrize(
    "data",
    [raw_frame(9, 0, b""), raw_frame(3, 1, b"x" * 200_000), raw_frame(8, 0, b"", end=b"\x00")],
    ids=["unknown-type", "oversized", "bad-frame-end"],
)
def test_error_that_loses_the_framing_is_final(data: bytes) -> None:
    reader = reader_after_header()
    reader.receive_data(data)
    with pytest.raises(ConnectionException):
        reader.next_frame()
    reader.receive_data(heartbeat.Heartbeat.marshal())
    with pytest.raises(ConnectionException):
        reader.next_frame()


@pytest.mark.parametrize(
    "data",
    [
        raw_frame(1, 0, b"\x00\x0a\x00\x63"),  # unknown method
        raw_frame(1, 1, b"\x00\x32\x00\x0a\x00"),  # truncated arguments
        raw_frame(8, 1, b""),  # heartbeat on channel 1
        raw_frame(2, 1, b"\x00\x3c"),  # short content header
    ],
    ids=["unknown-method", "truncated-arguments", "heartbeat-channel", "short-header"],
)
def test_error_in_one_whole_frame_lets_the_next_frames_be_read(data: bytes) -> None:
    reader = reader_after_header()
    reader.receive_data(data + frame.marshal(commands.Connection.CloseOk(), 0))
    with pytest.raises(ConnectionException):
        reader.next_frame()
    closed = reader.next_frame()
    assert isinstance(closed, MethodFrame)
    assert isinstance(closed.method, commands.Connection.CloseOk)
    assert reader.buffered_bytes == 0


# ---------------------------------------------------------------------------------------------
# fast writers, byte for byte against pamqp


def _fit(text: str, limit: int = 255) -> str:
    """Cut text to at most ``limit`` UTF-8 bytes on a character boundary."""
    while len(text.encode()) > limit:
        text = text[:-1]
    return text


shortstrs = st.text(max_size=255).map(_fit)
tags = st.integers(min_value=0, max_value=2**63 - 1)  # pamqp packs longlong signed
frame_maxes = st.sampled_from([4096, 4097, 5000, 131072])
scalar_values = (
    st.text(max_size=20)
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.none()
)
header_tables = st.dictionaries(
    st.text(min_size=1, max_size=10).map(lambda s: _fit(s, 128)),
    scalar_values
    | st.lists(scalar_values, max_size=3)
    | st.dictionaries(st.text(max_size=5), scalar_values, max_size=3),
    max_size=5,
)
timestamps = st.integers(min_value=0, max_value=0xFFFFFFFF).map(
    lambda s: datetime.datetime.fromtimestamp(s, tz=datetime.UTC)
)


@st.composite
def pamqp_properties(draw: st.DrawFn) -> commands.Basic.Properties:
    """Random basic properties (every field present or absent)."""
    values: dict[str, Any] = {}
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
        values[name] = draw(st.none() | shortstrs)
    values["expiration"] = draw(st.none() | st.integers(0, 10**9).map(str))
    values["headers"] = draw(st.none() | header_tables)
    values["delivery_mode"] = draw(st.none() | st.sampled_from([1, 2]))
    values["priority"] = draw(st.none() | st.integers(0, 255))
    values["timestamp"] = draw(st.none() | timestamps)
    return commands.Basic.Properties(**values)


bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([4087, 4088, 4089, 8176, 8177, 20000]).map(
        lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256)
    ),
)


def pamqp_content(
    channel: int, props: commands.Basic.Properties, payload: bytes, frame_max: int
) -> bytes:
    """Content header and body frames as pamqp marshals them, split at frame_max - 8."""
    out = [frame.marshal(header.ContentHeader(0, len(payload), props), channel)]
    step = frame_max - 8
    for start in range(0, len(payload), step):
        out.append(frame.marshal(body.ContentBody(payload[start : start + step]), channel))
    return b"".join(out)


@settings(max_examples=100)
@given(
    channel=st.integers(1, 65535),
    consumer_tag=shortstrs,
    delivery_tag=tags,
    redelivered=st.booleans(),
    exchange=shortstrs,
    routing_key=shortstrs,
    props=pamqp_properties(),
    payload=bodies,
    frame_max=frame_maxes,
)
def test_encode_deliver_is_byte_identical_to_pamqp(
    channel: int,
    consumer_tag: str,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    props: commands.Basic.Properties,
    payload: bytes,
    frame_max: int,
) -> None:
    with pamqp_unvalidated(commands.Basic.Deliver):
        expected = frame.marshal(
            commands.Basic.Deliver(consumer_tag, delivery_tag, redelivered, exchange, routing_key),
            channel,
        ) + pamqp_content(channel, props, payload, frame_max)
    got = encode_deliver(
        Deliver(channel, consumer_tag, delivery_tag, redelivered),
        Content(exchange, routing_key, props.marshal(), payload),
        frame_max,
    )
    assert got == expected


@settings(max_examples=100)
@given(
    channel=st.integers(1, 65535),
    delivery_tag=tags,
    redelivered=st.booleans(),
    exchange=shortstrs,
    routing_key=shortstrs,
    message_count=st.integers(0, 2**32 - 1),
    props=pamqp_properties(),
    payload=bodies,
    frame_max=frame_maxes,
)
def test_encode_get_ok_is_byte_identical_to_pamqp(
    channel: int,
    delivery_tag: int,
    redelivered: bool,
    exchange: str,
    routing_key: str,
    message_count: int,
    props: commands.Basic.Properties,
    payload: bytes,
    frame_max: int,
) -> None:
    with pamqp_unvalidated(commands.Basic.GetOk):
        expected = frame.marshal(
            commands.Basic.GetOk(delivery_tag, redelivered, exchange, routing_key, message_count),
            channel,
        ) + pamqp_content(channel, props, payload, frame_max)
    got = encode_get_ok(
        GetOk(channel, delivery_tag, redelivered, message_count),
        Content(exchange, routing_key, props.marshal(), payload),
        frame_max,
    )
    assert got == expected


@settings(max_examples=100)
@given(
    channel=st.integers(1, 65535),
    reply_code=st.sampled_from([312, 313]),
    reply_text=shortstrs,
    exchange=shortstrs,
    routing_key=shortstrs,
    props=pamqp_properties(),
    payload=bodies,
    frame_max=frame_maxes,
)
def test_encode_return_is_byte_identical_to_pamqp(
    channel: int,
    reply_code: int,
    reply_text: str,
    exchange: str,
    routing_key: str,
    props: commands.Basic.Properties,
    payload: bytes,
    frame_max: int,
) -> None:
    with pamqp_unvalidated(commands.Basic.Return):
        expected = frame.marshal(
            commands.Basic.Return(reply_code, reply_text, exchange, routing_key), channel
        ) + pamqp_content(channel, props, payload, frame_max)
    got = encode_return(
        Return(channel, reply_code, reply_text),
        Content(exchange, routing_key, props.marshal(), payload),
        frame_max,
    )
    assert got == expected


@given(
    channel=st.integers(0, 65535), props=pamqp_properties(), payload=bodies, frame_max=frame_maxes
)
def test_encode_content_is_byte_identical_to_pamqp(
    channel: int, props: commands.Basic.Properties, payload: bytes, frame_max: int
) -> None:
    got = encode_content(channel, 60, props.marshal(), payload, frame_max)
    assert got == pamqp_content(channel, props, payload, frame_max)


@given(channel=st.integers(0, 65535), tag=tags, multiple=st.booleans(), requeue=st.booleans())
def test_encode_ack_and_nack_are_byte_identical_to_pamqp(
    channel: int, tag: int, multiple: bool, requeue: bool
) -> None:
    assert encode_ack(channel, tag, multiple) == frame.marshal(
        commands.Basic.Ack(tag, multiple), channel
    )
    assert encode_nack(channel, tag, multiple, requeue) == frame.marshal(
        commands.Basic.Nack(tag, multiple, requeue), channel
    )


@pytest.mark.parametrize("size", [1, 4088, 4089])
def test_writers_hand_the_body_over_uncopied(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    content = Content("ex", "rk", b"\x00\x00", body)
    for parts in (
        deliver_parts(Deliver(1, "c", 1, False), content, 4096),
        get_ok_parts(GetOk(1, 1, False, 0), content, 4096),
        return_parts(Return(1, 312, "NO_ROUTE"), content, 4096),
    ):
        pieces = [p for p in parts if p is body or (isinstance(p, memoryview) and p.obj is body)]
        assert sum(len(p) for p in pieces) == size


def test_heartbeat_frame_is_pamqps_heartbeat() -> None:
    assert heartbeat.Heartbeat.marshal() == HEARTBEAT_FRAME


def test_empty_body_has_a_header_frame_and_no_body_frame() -> None:
    data = encode_content(1, 60, b"\x00\x00", b"", 4096)
    assert data == raw_frame(2, 1, b"\x00\x3c\x00\x00" + bytes(8) + b"\x00\x00")


@pytest.mark.parametrize(
    ("size", "frames"), [(4088, 1), (4089, 2), (3 * 4088, 3), (3 * 4088 + 1, 4)]
)
def test_body_is_split_into_frames_of_frame_max_less_eight(size: int, frames: int) -> None:
    data = encode_deliver(
        Deliver(1, "ctag", 1, False), Content("", "q", b"\x00\x00", b"z" * size), 4096
    )
    reader = reader_after_header()
    reader.frame_max = 4096
    reader.receive_data(data)
    got = read_all(reader)
    body_frames = [f for f in got if isinstance(f, BodyFrame)]
    assert len(body_frames) == frames
    assert b"".join(f.payload for f in body_frames) == b"z" * size
    assert all(len(f.payload) <= 4088 for f in body_frames)


def test_names_that_are_not_utf8_are_written_back_byte_for_byte() -> None:
    routing_key = b"\xff\xfe".decode("utf-8", "surrogateescape")
    data = encode_deliver(
        Deliver(1, "c", 1, False), Content("", routing_key, b"\x00\x00", b""), 4096
    )
    payload = (
        b"\x00\x3c\x00\x3c\x01c" + (1).to_bytes(8, "big") + b"\x00" + b"\x00" + b"\x02\xff\xfe"
    )
    assert data.startswith(raw_frame(1, 1, payload))


def test_overlong_reply_text_in_basic_return_is_cut_to_255_bytes() -> None:
    data = encode_return(Return(1, 312, "x" * 300), Content("", "rk", b"\x00\x00", b""), 4096)
    reader = reader_after_header()
    reader.receive_data(data)
    method = reader.next_frame()
    assert isinstance(method, MethodFrame)
    assert isinstance(method.method, commands.Basic.Return)
    assert len(method.method.reply_text) == 255
    assert method.method.reply_text.endswith("...")
