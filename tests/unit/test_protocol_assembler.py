"""ContentAssembler: methods, content headers and body frames into commands, per channel."""

from __future__ import annotations

import random

import pytest
from pamqp import body, commands, frame, header

from amqplite.protocol import (
    NEED_DATA,
    PROTOCOL_HEADER,
    BasicAck,
    BasicPublish,
    BodyFrame,
    ChannelException,
    Command,
    ConnectionException,
    ContentAssembler,
    FrameReader,
    HeaderFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    ReplyCode,
)

PUBLISH = BasicPublish("ex", "rk", False, False)
PROPS = b"\x10\x00\x02"  # delivery_mode 2


def publish(channel: int = 1) -> MethodFrame:
    """A basic.publish method frame."""
    return MethodFrame(channel, PUBLISH)


def head(channel: int, size: int, class_id: int = 60) -> HeaderFrame:
    """A content header frame."""
    return HeaderFrame(channel, class_id, size, PROPS)


def feed(
    assembler: ContentAssembler, *frames: MethodFrame | HeaderFrame | BodyFrame
) -> list[Command]:
    """Hand frames to the assembler and collect the commands that come out."""
    out = []
    for item in frames:
        command = assembler.handle(item)
        if command is not None:
            out.append(command)
    return out


def error(
    assembler: ContentAssembler, *frames: MethodFrame | HeaderFrame | BodyFrame
) -> ConnectionException:
    """The ConnectionException raised by the last frame (the others must be accepted)."""
    feed(assembler, *frames[:-1])
    with pytest.raises(ConnectionException) as info:
        assembler.handle(frames[-1])
    return info.value


def test_method_without_content_comes_out_at_once() -> None:
    assert feed(ContentAssembler(), MethodFrame(2, BasicAck(5, True))) == [
        Command(2, BasicAck(5, True))
    ]


def test_publish_waits_for_its_header_and_body() -> None:
    assembler = ContentAssembler()
    assert assembler.handle(publish()) is None
    assert assembler.handle(head(1, 5)) is None
    assert assembler.handle(BodyFrame(1, b"hello")) == Command(1, PUBLISH, PROPS, b"hello")
    assert assembler.pending_channels() == frozenset()


def test_body_in_many_frames_is_joined() -> None:
    parts = [bytes([i]) * 100 for i in range(30)]
    commands_out = feed(
        ContentAssembler(), publish(), head(1, 3000), *(BodyFrame(1, p) for p in parts)
    )
    assert commands_out == [Command(1, PUBLISH, PROPS, b"".join(parts))]


def test_zero_length_body_completes_at_the_header() -> None:
    assembler = ContentAssembler()
    assembler.handle(publish())
    assert assembler.handle(head(1, 0)) == Command(1, PUBLISH, PROPS, b"")


def test_empty_body_frames_in_the_middle_are_accepted() -> None:
    out = feed(ContentAssembler(), publish(), head(1, 3), BodyFrame(1, b""), BodyFrame(1, b"abc"))
    assert out == [Command(1, PUBLISH, PROPS, b"abc")]


def test_content_on_interleaved_channels_is_kept_apart() -> None:
    out = feed(
        ContentAssembler(),
        publish(1),
        publish(2),
        head(2, 4),
        MethodFrame(3, BasicAck(1, False)),
        head(1, 2),
        BodyFrame(1, b"a"),
        BodyFrame(2, b"wx"),
        BodyFrame(1, b"b"),
        BodyFrame(2, b"yz"),
    )
    assert out == [
        Command(3, BasicAck(1, False)),
        Command(1, PUBLISH, PROPS, b"ab"),
        Command(2, PUBLISH, PROPS, b"wxyz"),
    ]


def test_deliver_from_a_peer_also_carries_content() -> None:
    deliver = commands.Basic.Deliver("tag", 1, False, "", "rk")
    out = feed(ContentAssembler(), MethodFrame(1, deliver), head(1, 1), BodyFrame(1, b"x"))
    assert len(out) == 1
    assert out[0].body == b"x"


def test_header_without_publish_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), head(1, 3))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.UNEXPECTED_FRAME, 0, 0)


def test_body_without_publish_is_an_unexpected_frame() -> None:
    assert error(ContentAssembler(), BodyFrame(1, b"x")).reply_code == ReplyCode.UNEXPECTED_FRAME


def test_body_on_another_channel_than_the_publish_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(1), head(1, 3), BodyFrame(2, b"abc"))
    assert exc.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_method_instead_of_the_header_is_an_unexpected_frame_naming_the_publish() -> None:
    exc = error(ContentAssembler(), publish(), MethodFrame(1, BasicAck(1, False)))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.UNEXPECTED_FRAME, 60, 40)
    assert "content header" in exc.reply_text


def test_method_in_the_middle_of_a_body_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(), head(1, 3), BodyFrame(1, b"a"), publish())
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.UNEXPECTED_FRAME, 60, 40)
    assert "content body" in exc.reply_text


def test_body_instead_of_the_header_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(), BodyFrame(1, b"abc"))
    assert exc.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_second_header_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(), head(1, 3), head(1, 3))
    assert exc.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_header_of_another_class_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(), head(1, 3, class_id=50))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.UNEXPECTED_FRAME, 60, 40)


def test_body_after_a_zero_size_header_is_an_unexpected_frame() -> None:
    exc = error(ContentAssembler(), publish(), head(1, 0), BodyFrame(1, b""))
    assert exc.reply_code == ReplyCode.UNEXPECTED_FRAME


@pytest.mark.parametrize("frames", [[b"abcd"], [b"ab", b"cd"], [b"a", b"", b"bcd"]])
def test_body_longer_than_announced_is_a_frame_error(frames: list[bytes]) -> None:
    exc = error(ContentAssembler(), publish(), head(1, 3), *(BodyFrame(1, p) for p in frames))
    assert (exc.reply_code, exc.class_id, exc.method_id) == (ReplyCode.FRAME_ERROR, 60, 40)


def test_body_over_the_limit_is_refused_at_the_header_as_a_channel_error() -> None:
    assembler = ContentAssembler(max_body_size=10)
    assembler.handle(publish())
    with pytest.raises(ChannelException) as info:
        assembler.handle(head(1, 11))
    assert (info.value.reply_code, info.value.class_id, info.value.method_id) == (
        ReplyCode.PRECONDITION_FAILED,
        60,
        40,
    )
    assert "11" in info.value.reply_text


def test_body_frames_of_a_refused_message_are_swallowed() -> None:
    assembler = ContentAssembler(max_body_size=10)
    assembler.handle(publish())
    with pytest.raises(ChannelException):
        assembler.handle(head(1, 25))
    assert feed(assembler, BodyFrame(1, b"x" * 10), BodyFrame(1, b"x" * 15)) == []
    assert assembler.pending_channels() == frozenset()
    assert feed(assembler, publish(), head(1, 1), BodyFrame(1, b"y")) == [
        Command(1, PUBLISH, PROPS, b"y")
    ]


def test_body_exactly_at_the_limit_is_accepted() -> None:
    out = feed(ContentAssembler(max_body_size=10), publish(), head(1, 10), BodyFrame(1, b"z" * 10))
    assert out == [Command(1, PUBLISH, PROPS, b"z" * 10)]


def test_reset_drops_partial_content_of_that_channel_only() -> None:
    assembler = ContentAssembler()
    feed(assembler, publish(1), head(1, 5), BodyFrame(1, b"ab"), publish(2), head(2, 1))
    assembler.reset(1)
    assert assembler.pending_channels() == frozenset({2})
    assert feed(assembler, BodyFrame(2, b"q")) == [Command(2, PUBLISH, PROPS, b"q")]
    assert feed(assembler, publish(1), head(1, 1), BodyFrame(1, b"n")) == [
        Command(1, PUBLISH, PROPS, b"n")
    ]


def test_body_frame_after_reset_is_an_unexpected_frame() -> None:
    assembler = ContentAssembler()
    feed(assembler, publish(1), head(1, 5), BodyFrame(1, b"ab"))
    assembler.reset(1)
    assert error(assembler, BodyFrame(1, b"cde")).reply_code == ReplyCode.UNEXPECTED_FRAME


def test_reset_of_an_idle_channel_is_harmless() -> None:
    assembler = ContentAssembler()
    assembler.reset(7)
    assert assembler.pending_channels() == frozenset()


@pytest.mark.parametrize("seed", range(5))
def test_frame_reader_and_assembler_rebuild_pamqp_messages_from_any_split(seed: int) -> None:
    rng = random.Random(seed)
    messages = [
        (ch, rng.randbytes(rng.choice([0, 1, 100, 5000, 20000])))
        for ch in (1, 2, 3)
        for _ in range(5)
    ]
    rng.shuffle(messages)
    props = commands.Basic.Properties(content_type="text/plain", priority=4)
    data = [PROTOCOL_HEADER]
    for channel, payload in messages:
        data.append(
            frame.marshal(commands.Basic.Publish(exchange="e", routing_key=f"k{channel}"), channel)
        )
        data.append(frame.marshal(header.ContentHeader(0, len(payload), props), channel))
        for start in range(0, len(payload), 4088):
            data.append(frame.marshal(body.ContentBody(payload[start : start + 4088]), channel))
    stream = b"".join(data)

    reader = FrameReader(frame_max=4096)
    assembler = ContentAssembler()
    got = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 9000)
        reader.receive_data(stream[pos : pos + step])
        pos += step
        while (item := reader.next_frame()) is not NEED_DATA:
            if isinstance(item, ProtocolHeaderReceived):
                continue
            assert isinstance(item, MethodFrame | HeaderFrame | BodyFrame)
            command = assembler.handle(item)
            if command is not None:
                got.append(command)
    assert [(c.channel, c.body) for c in got] == messages
    assert all(c.properties_bin == props.marshal() for c in got)
    assert all(c.method == BasicPublish("e", f"k{c.channel}", False, False) for c in got)


def test_unfinished_content_is_bounded_per_connection_and_counted_back() -> None:
    assembler = ContentAssembler(max_body_size=1000, max_pending_bytes=1500)
    feed(assembler, publish(1), head(1, 1000), BodyFrame(1, b"a" * 700))
    feed(assembler, publish(2), head(2, 1000), BodyFrame(2, b"b" * 700))
    assert assembler.pending_bytes == 1400
    done = feed(assembler, BodyFrame(1, b"a" * 300))  # completing frees channel 1's bytes
    assert [c.body for c in done] == [b"a" * 1000]
    assert assembler.pending_bytes == 700
    assembler.reset(2)  # so does a channel closing
    assert assembler.pending_bytes == 0
    feed(assembler, publish(1), head(1, 1000), BodyFrame(1, b"a" * 800))
    feed(assembler, publish(2), head(2, 1000))
    with pytest.raises(ConnectionException) as err:
        feed(assembler, BodyFrame(2, b"b" * 701))
    assert err.value.reply_code is ReplyCode.NOT_ALLOWED
    assert "limits.max_unfinished_content_bytes" in err.value.reply_text
