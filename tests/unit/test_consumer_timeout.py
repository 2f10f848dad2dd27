"""Consumer acknowledgement timeouts in the pure core: each unacked delivery's own deadline, to the ms."""

from __future__ import annotations

import pytest
from queue_helpers import Client, FakeClock, make_broker, msg

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.policy import Policy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def consume(broker: Broker, channel: DeliveryChannel, queue: str) -> None:
    """basic.consume as the session does it: subscribe, then deliver what is ready."""
    broker.consume(broker.vhosts["/"], channel, queue, "c").queue.dispatch()


def fire_after(broker: Broker, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    broker.fire_timers()


def test_each_delivery_times_out_from_its_own_delivery(clock: FakeClock) -> None:
    broker = make_broker(clock, consumer_timeout_ms=1000)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    client = Client(broker)
    ch = client.channel()
    consume(broker, ch, "q")
    vhost.publish("", msg(b"first"))
    fire_after(broker, clock, 0.5)
    vhost.publish("", msg(b"second"))  # delivered half a second after the first
    broker.ack(ch, 1, False)
    fire_after(broker, clock, 0.5)  # the first one's deadline: acked, nothing due
    fire_after(broker, clock, 0.499)
    assert client.closed == []
    fire_after(broker, clock, 0.001)
    [(channel_id, code, text)] = client.closed
    assert (channel_id, code) == (1, 406)
    assert "1000 ms" in text
    assert vhost.queue("q").message_count == 1  # the second, requeued


def test_a_consumer_timeout_policy_applies_to_an_existing_queue(clock: FakeClock) -> None:
    broker = make_broker(clock, consumer_timeout_ms=60_000)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    broker.set_policy(Policy("/", "quick", "^q$", {"consumer-timeout": 250}))
    vhost.publish("", msg(b"m"))
    client = Client(broker)
    consume(broker, client.channel(), "q")
    fire_after(broker, clock, 0.249)
    assert client.closed == []
    fire_after(broker, clock, 0.001)
    [(_, code, text)] = client.closed
    assert code == 406
    assert "250 ms" in text


def test_a_message_got_and_not_acked_times_out_too(clock: FakeClock) -> None:
    broker = make_broker(clock, consumer_timeout_ms=1000)
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q")
    vhost.publish("", msg(b"got"))
    client = Client(broker)
    got = client.channel(2).get(queue, no_ack=False)
    assert got is not None
    fire_after(broker, clock, 0.999)
    assert client.closed == []
    fire_after(broker, clock, 0.001)
    assert [c[:2] for c in client.closed] == [(2, 406)]
    assert queue.message_count == 1
