"""Acks read in a run are settled one by one and delivered on once, after the run."""

from __future__ import annotations

import pytest
from session_helpers import Client, guest_broker

from amqplite.broker.broker import Broker
from amqplite.protocol.methods import BasicAck, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.session.connection import Session


@pytest.fixture
def broker() -> Broker:
    return guest_broker()


def prefetch_client(broker: Broker, prefetch: int, messages: int) -> Client:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    client.send(1, build(spec.Basic.Qos, prefetch_count=prefetch))
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c"))
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
