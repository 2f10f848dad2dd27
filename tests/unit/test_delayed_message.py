"""The bundled delayed_message plugin in the pure core, on virtual time: hold, release, order."""

from __future__ import annotations

from typing import Any

import pytest
from queue_helpers import FakeClock, get_all

from amqplite.broker.broker import Broker
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.broker.vhost import VHost
from amqplite.protocol.errors import ChannelException
from amqplite.server.plugin_loader import load_plugin

DELAYED = {"x-delayed-type": "direct"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> Broker:
    registry = builtin_registry()
    load_plugin("delayed_message").register(registry)
    broker = Broker(registry, clock=clock, wall_clock=lambda: 1_700_000_000.0)
    broker.add_vhost("/")
    return broker


@pytest.fixture
def vhost(broker: Broker) -> VHost:
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("later", "x-delayed-message", arguments=dict(DELAYED))
    vhost.declare_queue("q")
    vhost.bind("later", Destination.queue("q"), "k")
    return vhost


def delayed(body: bytes, delay_ms: Any, routing_key: str = "k") -> Message:
    headers = None if delay_ms is None else {"x-delay": delay_ms}
    return Message("later", routing_key, b"\x00\x00", body, headers=headers)


def test_a_delayed_message_is_held_until_its_time(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    routed = vhost.route_message("later", delayed(b"a", 500))
    assert routed.held
    assert routed.queues == []
    assert get_all(broker, "q") == []
    clock.advance(0.499)
    broker.fire_timers()
    assert get_all(broker, "q") == []
    clock.advance(0.001)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"a"]


def test_messages_are_released_by_due_time_then_publish_order(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    for body, delay in ((b"c", 300), (b"a", 100), (b"b1", 200), (b"b2", 200)):
        vhost.route_message("later", delayed(body, delay))
    assert broker.next_deadline() == pytest.approx(clock.now + 0.1)
    clock.advance(1.0)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"a", b"b1", b"b2", b"c"]


@pytest.mark.parametrize("delay", [None, 0, -5, "100", True])
def test_without_a_positive_numeric_delay_a_message_routes_now(vhost: VHost, delay: Any) -> None:
    routed = vhost.route_message("later", delayed(b"now", delay))
    assert not routed.held
    assert [q.name for q in routed.queues] == ["q"]


def test_release_routes_with_the_inner_type_and_the_bindings_of_that_time(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.route_message("later", delayed(b"to-q2", 100, routing_key="other"))
    vhost.declare_queue("q2")
    vhost.bind(
        "later", Destination.queue("q2"), "other"
    )  # bound after the publish, before the release
    clock.advance(0.1)
    broker.fire_timers()
    assert get_all(broker, "q2") == [b"to-q2"]
    assert get_all(broker, "q") == []


def test_deleting_the_exchange_drops_its_held_messages(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    vhost.route_message("later", delayed(b"gone", 100))
    vhost.delete_exchange("later")
    clock.advance(1.0)
    broker.fire_timers()
    assert get_all(broker, "q") == []


@pytest.mark.parametrize(
    "arguments", [{}, {"x-delayed-type": "no-such-type"}, {"x-delayed-type": "x-delayed-message"}]
)
def test_declare_needs_an_existing_inner_type(broker: Broker, arguments: dict[str, Any]) -> None:
    with pytest.raises(ChannelException, match="x-delayed-type") as caught:
        broker.vhosts["/"].declare_exchange("bad", "x-delayed-message", arguments=arguments)
    assert caught.value.reply_code == 406
    assert "bad" not in broker.vhosts["/"].exchanges


def test_redeclare_with_another_inner_type_is_refused(vhost: VHost) -> None:
    with pytest.raises(ChannelException, match="inequivalent arg 'x-delayed-type'"):
        vhost.declare_exchange("later", "x-delayed-message", arguments={"x-delayed-type": "topic"})


def test_many_due_at_once_are_released_in_batches_between_turns(
    broker: Broker, vhost: VHost, clock: FakeClock
) -> None:
    for i in range(2500):
        vhost.route_message("later", delayed(str(i).encode(), 100))
    clock.advance(1.0)
    depths = []
    for _ in range(3):
        broker.fire_timers()  # one turn of the broker's timers
        depths.append(vhost.queues["q"].message_count)
        clock.advance(0.001)
    assert depths == [1000, 2000, 2500]
    assert get_all(broker, "q") == [str(i).encode() for i in range(2500)]
