"""Acks read in a run are settled one by one and delivered on once, after the run."""

from __future__ import annotations

import pytest
from session_helpers import Client, consuming_client, guest_broker

from amqplite.broker.broker import Broker
from amqplite.protocol.methods import BasicAck, encode_method, spec
from amqplite.session.connection import Session


@pytest.fixture
def broker() -> Broker:
    return guest_broker()


def prefetch_client(broker: Broker, prefetch: int, messages: int) -> Client:
    client = consuming_client(broker, prefetch)
    for i in range(messages):
        client.publish(1, "q", b"m%d" % i)
    return client


def delivered(client: Client) -> list[tuple[int, bytes]]:
    return [
        (c.method.delivery_tag, c.body)
        for c in client.received()
        if isinstance(c.method, spec.Basic.Deliver)
    ]


def test_a_run_of_single_acks_in_one_receive_frees_credit_for_as_many_deliveries(
    broker: Broker,
) -> None:
    client = prefetch_client(broker, prefetch=3, messages=8)
    assert delivered(client) == [(1, b"m0"), (2, b"m1"), (3, b"m2")]
    acks = b"".join(encode_method(1, BasicAck(tag, False)) for tag in (1, 2, 3))
    client.session.receive_data(acks)
    assert delivered(client) == [(4, b"m3"), (5, b"m4"), (6, b"m5")]
    queue = broker.vhosts["/"].queues["q"]
    assert (queue.message_count, queue.unacked_count) == (2, 3)
    assert broker.totals.ack == 3


def test_acks_and_publishes_mixed_in_one_receive_lose_and_double_nothing(
    broker: Broker,
) -> None:
    client = prefetch_client(broker, prefetch=2, messages=2)
    assert [tag for tag, _ in delivered(client)] == [1, 2]
    publisher = Client(Session(broker))
    publisher.handshake()
    publisher.open_channel(1)
    publisher.publish(1, "q", b"late")  # waits: the consumer is out of credit
    data = encode_method(1, BasicAck(1, False)) + encode_method(1, BasicAck(2, True))
    client.session.receive_data(data)
    assert delivered(client) == [(3, b"late")]
    queue = broker.vhosts["/"].queues["q"]
    assert (queue.message_count, queue.unacked_count) == (0, 1)


def outstanding(broker: Broker, client: Client) -> list[int]:
    return list(client.session.channels[1].delivery.unacked)


def test_ack_multiple_of_a_middle_tag_settles_exactly_the_tags_up_to_it(broker: Broker) -> None:
    client = prefetch_client(broker, prefetch=10, messages=6)
    assert [tag for tag, _ in delivered(client)] == [1, 2, 3, 4, 5, 6]
    client.session.receive_data(encode_method(1, BasicAck(4, True)))
    assert outstanding(broker, client) == [5, 6]
    consumer = client.session.channels[1].delivery.consumers["c"]
    queue = broker.vhosts["/"].queues["q"]
    assert (consumer.unacked, queue.unacked_count, queue.stats.ack) == (2, 2, 4)


def test_ack_multiple_over_gaps_left_by_single_acks_settles_the_rest_up_to_it(
    broker: Broker,
) -> None:
    client = prefetch_client(broker, prefetch=10, messages=7)
    assert len(delivered(client)) == 7
    acks = b"".join(encode_method(1, BasicAck(tag, False)) for tag in (2, 5))
    client.session.receive_data(acks + encode_method(1, BasicAck(6, True)))
    assert outstanding(broker, client) == [7]
    assert broker.totals.ack == 6
    client.session.receive_data(encode_method(1, BasicAck(0, True)))  # 0: every one
    assert outstanding(broker, client) == []
    assert broker.vhosts["/"].queues["q"].unacked_count == 0


def test_ack_multiple_of_a_tag_already_settled_is_a_406(broker: Broker) -> None:
    client = prefetch_client(broker, prefetch=10, messages=4)
    assert len(delivered(client)) == 4
    client.session.receive_data(encode_method(1, BasicAck(2, True)))
    client.received()
    client.session.receive_data(encode_method(1, BasicAck(1, True)))  # below the first left
    closes = [c.method for c in client.received() if isinstance(c.method, spec.Channel.Close)]
    assert [c.reply_code for c in closes] == [406]
    assert "unknown delivery tag 1" in closes[0].reply_text


def test_output_after_the_server_took_everything_notifies_it_again(broker: Broker) -> None:
    client = prefetch_client(broker, prefetch=100, messages=0)
    client.received()
    notified: list[int] = []
    session = client.session
    session.on_output = lambda: notified.append(session.output_size())
    publisher = Client(Session(broker))
    publisher.handshake()
    publisher.open_channel(1)
    for i in range(3):  # one notification for output that was waiting to be taken
        publisher.publish(1, "q", b"a%d" % i)
    assert len(notified) == 1
    assert [tag for tag, _ in delivered(client)] == [1, 2, 3]  # the server took it all
    publisher.publish(1, "q", b"b")
    assert len(notified) == 2
    assert [tag for tag, _ in delivered(client)] == [4]
