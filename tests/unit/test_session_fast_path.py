"""The publish/ack fast path of Session.receive_data gives what the frame-by-frame path gives."""

from __future__ import annotations

import random
import sys

import pytest
from session_helpers import Client, consuming_client, guest_broker

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.frames import HOT_ACK, HOT_PARTIAL, HOT_PUBLISH, NEED_DATA, FrameReader
from amqplite.protocol.methods import BasicAck, BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.session.connection import Session, SessionSettings


@pytest.fixture
def broker() -> Broker:
    return guest_broker()


def publish_bytes(channel: int, routing_key: str, body: bytes, frame_max: int = 131072) -> bytes:
    return encode_method(channel, BasicPublish("", routing_key, False, False)) + encode_content(
        channel, 60, b"\x10\x00\x01", body, frame_max
    )


def test_peek_hot_decodes_a_complete_publish_and_leaves_partial_ones() -> None:
    data = b"AMQP\x00\x00\x09\x01" + publish_bytes(3, "key", b"body")
    reader = FrameReader(131072)
    reader.receive_data(data[:-1])
    assert reader.next_frame() is not None  # the protocol header
    assert reader.peek_hot() == (HOT_PARTIAL, 3)  # the body frame's end octet is missing
    reader.receive_data(data[-1:])
    hot = reader.peek_hot()
    assert hot is not None
    kind, channel, length, exchange, routing_key, bits, properties_bin, body = hot
    assert (kind, channel, exchange, routing_key, bits) == (HOT_PUBLISH, 3, "", "key", 0)
    assert (properties_bin, body) == (b"\x10\x00\x01", b"body")
    assert length == len(data) - 8
    reader.skip(length)
    assert reader.buffered_bytes == 0


@pytest.mark.parametrize(
    ("exchange", "properties_bin"),
    [
        ("", b"\x00\x00"),
        ("x", b"\x00\x00"),
        ("amq.direct", b"\x10\x00\x02"),
        ("", b"\x00\x20"),  # a flag without its property: handed on as received
        ("e", b"\x80\x00\x00"),  # an empty content_type
    ],
)
def test_peek_hot_gives_exchange_and_properties_as_sent(
    exchange: str, properties_bin: bytes
) -> None:
    data = encode_method(1, BasicPublish(exchange, "k", False, False)) + encode_content(
        1, 60, properties_bin, b"b", 131072
    )
    reader = FrameReader(131072)
    reader.receive_data(b"AMQP\x00\x00\x09\x01" + data)
    reader.next_frame()
    hot = reader.peek_hot()
    assert hot is not None
    assert (hot[3], hot[4], hot[6], hot[7]) == (exchange, "k", properties_bin, b"b")


def test_peek_hot_decodes_an_ack_and_refuses_a_body_in_several_frames() -> None:
    reader = FrameReader(4096)
    reader.receive_data(b"AMQP\x00\x00\x09\x01" + encode_method(2, BasicAck(77, True)))
    reader.next_frame()
    assert reader.peek_hot() == (HOT_ACK, 2, 21, 77, True)
    reader.skip(21)
    reader.receive_data(publish_bytes(1, "q", b"x" * 5000, frame_max=4096))
    assert reader.peek_hot() is None  # two body frames: the frame-by-frame path assembles it


def test_a_publish_split_inside_its_method_frame_is_joined_whole_for_the_fast_path() -> None:
    data = publish_bytes(1, "key", b"a" * 300) + publish_bytes(1, "key", b"b" * 300)
    reader = FrameReader(131072)
    reader.receive_data(b"AMQP\x00\x00\x09\x01" + data[:10])
    reader.next_frame()
    assert reader.peek_hot() is None  # not even a frame header and method ids yet
    reader.receive_data(data[10:])
    first = reader.peek_hot()
    assert isinstance(first, tuple)
    assert (first[0], first[-1]) == (HOT_PUBLISH, b"a" * 300)
    reader.skip(first[2])
    second = reader.peek_hot()
    assert isinstance(second, tuple)
    assert second[-1] == b"b" * 300
    reader.skip(second[2])
    assert reader.buffered_bytes == 0
    assert reader.copied_bytes == len(data) // 2  # the split publish only


def test_a_publish_followed_by_other_than_its_content_is_answered_without_waiting(
    broker: Broker,
) -> None:
    client = consuming_client(broker)
    client.session.receive_data(
        encode_method(1, BasicPublish("", "q", False, False))
        + encode_method(1, BasicAck(1, False))  # shorter than a content header frame
    )
    close = client.received()[-1].method
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_a_publish_where_content_is_still_due_is_refused_without_waiting(broker: Broker) -> None:
    client = consuming_client(broker)
    header = encode_content(1, 60, b"\x00\x00", b"1234567890", 131072)[:22]  # announces 10
    short_body = header + b"\x03\x00\x01\x00\x00\x00\x05" + b"12345" + b"\xce"  # brings 5
    client.session.receive_data(
        encode_method(1, BasicPublish("", "q", False, False))
        + short_body
        + encode_method(1, BasicPublish("", "q", False, False))
    )
    close = client.received()[-1].method
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == ReplyCode.UNEXPECTED_FRAME


def test_many_publishes_in_one_receive_equal_byte_by_byte_delivery(broker: Broker) -> None:
    bodies = [b"m%d" % i * (i + 1) for i in range(50)] + [b""]
    data = b"".join(publish_bytes(1, "q", body) for body in bodies)
    whole = consuming_client(broker)
    whole.session.receive_data(data)
    at_once = [(c.method.delivery_tag, c.body) for c in whole.received()]
    broker2 = Broker()
    broker2.add_vhost("/")
    broker2.add_user("guest", "guest")
    broker2.set_permissions("guest", "/", Permission())
    split = consuming_client(broker2)
    for i in range(len(data)):
        split.session.receive_data(data[i : i + 1])
    one_by_one = [(c.method.delivery_tag, c.body) for c in split.received()]
    assert at_once == one_by_one == [(i + 1, body) for i, body in enumerate(bodies)]


@pytest.mark.parametrize("seed", range(5))
def test_publishes_split_at_random_between_receives_arrive_whole_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    bodies = [bytes([i % 256]) * rng.randrange(0, 3000) for i in range(300)]
    data = b"".join(publish_bytes(1, "q", body, frame_max=4096) for body in bodies)
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest")
    broker.set_permissions("guest", "/", Permission())
    client = consuming_client(broker)
    pos = 0
    while pos < len(data):
        step = rng.choice((1, 7, 100, 1500, 4096, 20000))
        client.session.receive_data(data[pos : pos + step])
        pos += step
    got = [(c.method.delivery_tag, c.body) for c in client.received()]
    assert got == [(i + 1, body) for i, body in enumerate(bodies)]


def test_a_fast_path_body_is_its_own_bytes_and_the_received_chunk_is_let_go(
    broker: Broker,
) -> None:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    client.received()
    chunk = publish_bytes(1, "q", b"hello")
    client.session.receive_data(chunk)
    entry = broker.vhosts["/"].queues["q"].take()
    assert entry is not None
    assert type(entry.message.body) is bytes
    assert entry.message.body == b"hello"
    assert client.session.reader.buffered_bytes == 0
    assert sys.getrefcount(chunk) == 2  # this test's name and getrefcount's argument only


def test_fast_ack_of_an_unknown_tag_closes_the_channel_with_406(broker: Broker) -> None:
    client = consuming_client(broker)
    client.publish(1, "q", b"one")
    client.received()
    client.session.receive_data(
        encode_method(1, BasicAck(1, False)) + encode_method(1, BasicAck(9, False))
    )
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.PRECONDITION_FAILED
    assert (close.class_id, close.method_id) == (60, 80)
    assert broker.vhosts["/"].queues["q"].unacked_count == 0


def test_fast_publish_over_max_message_size_is_refused_with_406(broker: Broker) -> None:
    client = consuming_client(broker, settings=SessionSettings(max_message_size=10))
    client.session.receive_data(publish_bytes(1, "q", b"x" * 11) + publish_bytes(1, "q", b"y"))
    commands = client.received()
    close = commands[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.PRECONDITION_FAILED
    assert broker.vhosts["/"].queues["q"].message_count == 0
    assert not any(isinstance(c.method, spec.Basic.Deliver) for c in commands)


def test_fast_publish_to_a_missing_exchange_names_basic_publish(broker: Broker) -> None:
    client = consuming_client(broker)
    client.session.receive_data(
        encode_method(1, BasicPublish("nope", "q", False, False))
        + encode_content(1, 60, b"\x00\x00", b"b", 131072)
    )
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.NOT_FOUND
    assert (close.class_id, close.method_id) == (60, 40)


def acks(channel: int, *tags: int, multiple: bool = False) -> bytes:
    return b"".join(encode_method(channel, BasicAck(tag, multiple)) for tag in tags)


def test_take_acks_consumes_the_run_of_single_acks_on_one_channel_and_no_further() -> None:
    reader = FrameReader(4096)
    reader.receive_data(
        b"AMQP\x00\x00\x09\x01" + acks(2, 1, 2, 3) + acks(2, 4, multiple=True) + acks(3, 5)
    )
    reader.next_frame()
    assert reader.take_acks(2) == (1, 2, 3)
    assert reader.peek_hot() == (HOT_ACK, 2, 21, 4, True)  # a multiple ack ends the run
    assert reader.take_acks(2) == ()
    reader.skip(21)
    assert reader.take_acks(2) == ()  # another channel's ack ends it too
    assert reader.peek_hot() == (HOT_ACK, 3, 21, 5, False)


def test_take_acks_stops_before_an_ack_cut_short_or_with_reserved_bits() -> None:
    reader = FrameReader(4096)
    odd = bytearray(acks(1, 3))
    odd[19] = 2  # a reserved bit: not an ack of the run (the slow path reads it)
    reader.receive_data(b"AMQP\x00\x00\x09\x01" + acks(1, 1, 2) + odd + acks(1, 4)[:20])
    reader.next_frame()
    assert reader.take_acks(1) == (1, 2)
    assert reader.take_acks(1) == ()
    reader.skip(21)
    assert reader.take_acks(1) == ()  # its frame end is still to come
    reader.receive_data(acks(1, 4)[20:] + acks(1, 5))
    assert reader.take_acks(1) + reader.take_acks(1) == (4, 5)  # the joined frame, then the rest
    assert reader.peek_hot() is None


def test_take_acks_takes_a_long_run_in_bounded_parts_and_loses_none() -> None:
    reader = FrameReader(131072)
    reader.receive_data(b"AMQP\x00\x00\x09\x01" + acks(7, *range(1, 1001)))
    reader.next_frame()
    taken: list[int] = []
    while part := reader.take_acks(7):
        assert len(part) <= 256
        taken += part
    assert taken == list(range(1, 1001))
    assert reader.next_frame() is NEED_DATA


def test_single_acks_with_reserved_bits_are_settled_one_by_one(broker: Broker) -> None:
    client = consuming_client(broker, 3)
    for i in range(5):
        client.publish(1, "q", b"m%d" % i)
    assert delivered_tags(client) == [1, 2, 3]
    odd = bytearray(acks(1, 2))
    odd[19] = 4  # reserved bits set, `multiple` not: a single ack all the same
    client.session.receive_data(acks(1, 1) + odd + acks(1, 3))
    assert delivered_tags(client) == [4, 5]
    assert broker.vhosts["/"].queues["q"].unacked_count == 2


def delivered_tags(client: Client) -> list[int]:
    return [
        c.method.delivery_tag for c in client.received() if isinstance(c.method, spec.Basic.Deliver)
    ]


def test_single_acks_read_together_settle_each_and_deliver_on_the_freed_credit(
    broker: Broker,
) -> None:
    client = consuming_client(broker, 3)
    for i in range(7):
        client.publish(1, "q", b"m%d" % i)
    assert delivered_tags(client) == [1, 2, 3]
    client.session.receive_data(acks(1, 2, 1, 3))  # out of order, one receive
    assert delivered_tags(client) == [4, 5, 6]
    queue = broker.vhosts["/"].queues["q"]
    assert (queue.stats.ack, queue.unacked_count, queue.message_count) == (3, 3, 1)
    consumer = client.session.channels[1].delivery.consumers["c"]
    assert consumer.unacked == 3
    queue._check()


def test_an_unknown_tag_among_single_acks_read_together_settles_those_before_it(
    broker: Broker,
) -> None:
    client = consuming_client(broker, 3)
    for i in range(3):
        client.publish(1, "q", b"m%d" % i)
    client.received()
    client.session.receive_data(acks(1, 1, 9, 2))
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "unknown delivery tag 9" in close.reply_text
    queue = broker.vhosts["/"].queues["q"]
    assert queue.stats.ack == 1  # tag 1; tag 2 came after the error, on a closing channel
    client.send(1, spec.Channel.CloseOk())
    assert (queue.unacked_count, queue.message_count) == (0, 2)  # 2 and 3 requeued


def test_single_acks_read_together_in_a_transaction_wait_for_the_commit(broker: Broker) -> None:
    client = consuming_client(broker, 3)
    client.send(1, spec.Tx.Select())
    for i in range(3):
        client.publish(1, "q", b"m%d" % i)
    client.received()
    queue = broker.vhosts["/"].queues["q"]
    assert queue.unacked_count == 0  # the publishes wait for the commit too
    client.send(1, spec.Tx.Commit())
    assert delivered_tags(client) == [1, 2, 3]
    client.session.receive_data(acks(1, 1, 2, 3))
    assert queue.unacked_count == 3
    client.send(1, spec.Tx.Commit())
    assert (queue.stats.ack, queue.unacked_count) == (3, 0)


def test_a_channel_whose_credit_returned_is_forgotten_by_pacing_when_it_closes(
    broker: Broker,
) -> None:
    client = consuming_client(broker, 3)
    client.publish(1, "q", b"m")
    client.received()
    client.session.receive_data(acks(1, 1))
    assert broker.flow.returning_count() == 1  # its credit counts as returning
    client.send(1, spec.Channel.Close())
    assert broker.flow.returning_count() == 0  # not kept until a sweep that may never come


def test_a_run_of_publishes_checks_write_access_to_each_exchange_it_names(broker: Broker) -> None:
    broker.set_permissions("guest", "/", Permission(write="^amq\\.(default|direct)$"))
    client = consuming_client(broker)
    client.open_channel(2)
    allowed = publish_bytes(2, "q", b"a") + encode_method(
        2, BasicPublish("amq.direct", "q", False, False)
    )
    allowed += encode_content(2, 60, b"\x00\x00", b"b", 131072)
    refused = encode_method(2, BasicPublish("amq.topic", "q", False, False))
    refused += encode_content(2, 60, b"\x00\x00", b"c", 131072)
    client.session.receive_data(allowed + publish_bytes(2, "q", b"d") + refused)
    replies = client.received()
    assert [c.body for c in replies if isinstance(c.method, spec.Basic.Deliver)] == [b"a", b"d"]
    close = replies[-1]
    assert (close.channel, type(close.method)) == (2, spec.Channel.Close)
    assert close.method.reply_code == ReplyCode.ACCESS_REFUSED
    assert "amq.topic" in close.method.reply_text
