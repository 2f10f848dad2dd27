"""The bundled x-consistent-hash exchange: key affinity, spread, hash-header / hash-property."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest
from pamqp import commands

from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.plugin_api import ChannelException, Destination
from amqplite.broker.publishing import make_message
from amqplite.broker.vhost import VHost
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.properties import encode_properties
from amqplite_plugins import consistent_hash

KEYS = 10_000
MAX_SPREAD_RATIO = 1.25
"""Largest max/min share of equal-weight queues over KEYS distinct keys (10 queues: ~1.1)."""


def hash_vhost(arguments: dict[str, object] | None = None, queues: int = 3) -> VHost:
    """A vhost with exchange "h" of type x-consistent-hash bound to q0..q{queues-1} (weight 1)."""
    registry = builtin_registry()
    consistent_hash.register(registry)
    vhost = VHost("/", registry)
    vhost.declare_exchange("h", "x-consistent-hash", arguments=dict(arguments or {}))
    for i in range(queues):
        vhost.declare_queue(f"q{i}")
        vhost.bind("h", Destination.queue(f"q{i}"), "1")
    return vhost


def publish(vhost: VHost, routing_key: str = "", **properties: object) -> list[str]:
    """Publish one message to "h"; the names of the queues it reached."""
    props = encode_properties(commands.Basic.Properties(**properties))
    return [q.name for q in vhost.publish("h", make_message("h", routing_key, props, b"x"))]


@pytest.mark.parametrize("queues", [2, 3, 10])
def test_ten_thousand_keys_spread_evenly_and_each_key_keeps_its_queue(queues: int) -> None:
    vhost = hash_vhost(queues=queues)
    first = {key: publish(vhost, f"order-{key}") for key in range(KEYS)}
    assert all(len(reached) == 1 for reached in first.values())
    shares = Counter(reached[0] for reached in first.values())
    assert len(shares) == queues
    assert max(shares.values()) / min(shares.values()) <= MAX_SPREAD_RATIO, shares
    again = {key: publish(vhost, f"order-{key}") for key in range(0, KEYS, 7)}
    assert all(again[key] == first[key] for key in again)


def test_a_heavier_binding_gets_its_weighted_share() -> None:
    registry = builtin_registry()
    consistent_hash.register(registry)
    exchange_type = registry.get("x-consistent-hash")
    assert exchange_type is not None
    router = exchange_type.create_router()
    light, heavy = Destination.queue("light"), Destination.queue("heavy")
    router.bind(light, "1", {})
    router.bind(heavy, "3", {})
    shares = Counter(router.route(f"k{i}", None)[0] for i in range(KEYS))
    assert 2.7 <= shares[heavy] / shares[light] <= 3.3, shares


def test_removing_a_destination_moves_only_its_keys() -> None:
    router = consistent_hash.ConsistentHashRouter()
    q = [Destination.queue(f"q{i}") for i in range(4)]
    for destination in q:
        router.bind(destination, "1", {})
    before = {f"k{i}": router.route(f"k{i}", None) for i in range(2000)}
    router.unbind(q[1], "1", {})
    after = {key: router.route(key, None) for key in before}
    assert all(after[key] == before[key] for key in before if before[key] != [q[1]])
    assert all(after[key] != [q[1]] for key in before)


def test_hash_header_routes_on_the_header_not_the_routing_key() -> None:
    vhost = hash_vhost({"hash-header": "customer"})
    by_customer = {c: publish(vhost, "same-key", headers={"customer": f"c{c}"}) for c in range(300)}
    assert len({tuple(r) for r in by_customer.values()}) == 3  # the routing key did not decide
    for c in range(0, 300, 11):
        assert publish(vhost, f"other-{c}", headers={"customer": f"c{c}"}) == by_customer[c]


def test_a_message_without_the_hash_header_is_unroutable() -> None:
    vhost = hash_vhost({"hash-header": "customer"})
    assert publish(vhost, "k", headers={"other": "x"}) == []
    assert publish(vhost, "k") == []


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("message_id", [f"m{i}" for i in range(300)]),
        ("correlation_id", [f"c{i}" for i in range(300)]),
        (
            "timestamp",
            [datetime.datetime.fromtimestamp(1_700_000_000 + i, datetime.UTC) for i in range(300)],
        ),
    ],
)
def test_hash_property_routes_on_the_property(name: str, values: list[object]) -> None:
    vhost = hash_vhost({"hash-property": name})
    first = [publish(vhost, "same-key", **{name: v}) for v in values]
    assert all(len(reached) == 1 for reached in first)
    assert len({tuple(r) for r in first}) == 3
    assert [publish(vhost, "another-key", **{name: v}) for v in values] == first
    assert publish(vhost, "k") == []  # without the property: not routed


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"hash-header": "a", "hash-property": "message_id"}, "mutually exclusive"),
        ({"hash-property": "app_id"}, "Unsupported property: app_id"),
        ({"hash-header": ""}, "invalid arg 'hash-header'"),
        ({"hash-header": 5}, "invalid arg 'hash-header'"),
        ({"hash-property": True}, "invalid arg 'hash-property'"),
    ],
)
def test_bad_hash_arguments_are_precondition_failed(
    arguments: dict[str, object], text: str
) -> None:
    registry = builtin_registry()
    consistent_hash.register(registry)
    vhost = VHost("/", registry)
    with pytest.raises(ChannelException) as info:
        vhost.declare_exchange("h", "x-consistent-hash", arguments=arguments)
    assert info.value.reply_code == ReplyCode.PRECONDITION_FAILED
    assert text in info.value.reply_text
    assert "h" not in vhost.exchanges
