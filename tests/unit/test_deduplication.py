"""The bundled deduplication plugin in the pure core: the window, queue and exchange level, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands
from queue_helpers import Client, FakeClock, Wall, get_all
from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.protocol.properties import decode_properties, encode_properties, read_message_id
from amqplite.server.plugin_loader import load_plugin
from amqplite.store.store import Store
from amqplite_plugins.deduplication import DedupCache

DEDUP = {"x-message-deduplication": True}


def message(
    body: bytes,
    message_id: str | None = None,
    *,
    routing_key: str = "q",
    exchange: str = "",
    persistent: bool = True,
    headers: dict[str, Any] | None = None,
) -> Message:
    props = commands.Basic.Properties(
        message_id=message_id, delivery_mode=2 if persistent else 1, headers=headers
    )
    return Message(
        exchange,
        routing_key,
        encode_properties(props),
        body,
        persistent=persistent,
        headers=headers,
    )


def new_broker(wall: Wall, clock: FakeClock | None = None) -> Broker:
    registry = builtin_registry()
    load_plugin("deduplication").register(registry)
    broker = Broker(registry, clock=clock or FakeClock(), wall_clock=wall)
    broker.add_vhost("/")
    return broker


def boot(directory: Path, wall: Wall) -> tuple[Broker, Store]:
    return recovered(directory, new_broker(wall), fsync=False)


# -- the window ------------------------------------------------------------------------------


def test_the_cache_evicts_the_oldest_key_beyond_its_size() -> None:
    cache = DedupCache(2, None)
    assert list(cache.add("a", 0.0)) == []
    assert list(cache.add("b", 0.0)) == []
    assert list(cache.add("c", 0.0)) == ["a"]
    assert not cache.seen("a", 0.0)
    assert cache.seen("b", 0.0)
    assert cache.seen("c", 0.0)
    assert len(cache) == 2


def test_the_cache_forgets_a_key_when_its_ttl_ends_on_virtual_time() -> None:
    cache = DedupCache(10, 1000)
    cache.add("a", 100.0)
    assert cache.seen("a", 100.999)
    assert not cache.seen("a", 101.0)
    cache.add("b", 100.5, ttl_ms=5000)  # a per-message TTL overrides the window's
    assert list(cache.add("c", 101.0)) == ["a"]  # expired keys at the head leave as others come
    assert cache.seen("b", 105.4)
    assert not cache.seen("b", 105.5)


def test_a_key_accepted_again_after_its_ttl_starts_a_new_window() -> None:
    cache = DedupCache(10, 1000)
    cache.add("a", 0.0)
    cache.add("a", 2.0)
    assert cache.seen("a", 2.5)
    assert list(cache.entries) == ["a"]


# -- queue level -----------------------------------------------------------------------------


def test_a_duplicate_message_id_is_taken_but_not_enqueued() -> None:
    broker = new_broker(Wall())
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", arguments=dict(DEDUP))
    first = vhost.route_message("", message(b"1", "id-1"))
    again = vhost.route_message("", message(b"2", "id-1"))
    other = vhost.route_message("", message(b"3", "id-2"))
    assert [q.name for q in first.accepted] == ["q"]
    assert [q.name for q in again.accepted] == ["q"]
    assert not again.rejected
    assert [q.name for q in other.accepted] == ["q"]
    assert get_all(broker, "q") == [b"1", b"3"]


def test_the_deduplication_header_wins_over_the_message_id_and_no_key_is_never_a_duplicate() -> (
    None
):
    broker = new_broker(Wall())
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", arguments=dict(DEDUP))
    vhost.route_message("", message(b"1", "id-1", headers={"x-deduplication-header": "k"}))
    vhost.route_message("", message(b"2", "id-2", headers={"x-deduplication-header": "k"}))
    vhost.route_message("", message(b"3", "id-1"))  # the first one's key was "k", not id-1
    vhost.route_message("", message(b"4"))
    vhost.route_message("", message(b"5"))
    assert get_all(broker, "q") == [b"1", b"3", b"4", b"5"]


def test_queue_window_size_and_ttl_come_from_the_queue_arguments() -> None:
    wall = Wall()
    broker = new_broker(wall)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", arguments={**DEDUP, "x-cache-size": 2, "x-cache-ttl": 1000})
    for i in (1, 2, 3):
        vhost.route_message("", message(f"{i}".encode(), f"id-{i}"))
    vhost.route_message("", message(b"1 again", "id-1"))  # evicted by size: new again
    vhost.route_message("", message(b"3 again", "id-3"))  # still in the window
    wall.now += 1.0
    vhost.route_message("", message(b"3 later", "id-3"))  # its TTL ended
    assert get_all(broker, "q") == [b"1", b"2", b"3", b"1 again", b"3 later"]


def test_a_ttl_header_times_a_key_in_a_queue_without_a_window_ttl() -> None:
    wall = Wall()
    broker = new_broker(wall)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", arguments=dict(DEDUP))
    short = {"x-cache-ttl": 1000}
    vhost.route_message("", message(b"1", "id-1", headers=short))
    vhost.route_message("", message(b"untimed", "id-2"))
    wall.now += 0.999
    vhost.route_message("", message(b"2", "id-1", headers=short))
    wall.now += 0.001
    vhost.route_message("", message(b"3", "id-1", headers=short))
    wall.now += 1000
    vhost.route_message("", message(b"untimed again", "id-2"))
    assert get_all(broker, "q") == [b"1", b"untimed", b"3"]


@given(
    st.builds(
        commands.Basic.Properties,
        content_type=st.none() | st.text(max_size=20),
        headers=st.none() | st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=3),
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        priority=st.none() | st.integers(0, 9),
        correlation_id=st.none() | st.text(max_size=20),
        reply_to=st.none() | st.text(max_size=20),
        expiration=st.none() | st.from_regex(r"[0-9]{1,6}", fullmatch=True),
        message_id=st.none() | st.text(max_size=60),
        app_id=st.none() | st.text(max_size=10),
    )
)
def test_message_id_read_without_decoding_matches_the_full_decode(
    props: commands.Basic.Properties,
) -> None:
    encoded = encode_properties(props)
    assert read_message_id(encoded) == decode_properties(encoded).message_id


def test_a_truncated_message_id_is_a_frame_error() -> None:
    encoded = encode_properties(commands.Basic.Properties(message_id="abcdef"))
    with pytest.raises(ConnectionException) as caught:
        read_message_id(encoded[:-2])
    assert caught.value.reply_code == 501


def test_other_queues_of_the_same_publish_are_not_affected() -> None:
    broker = new_broker(Wall())
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("fan", "fanout")
    vhost.declare_queue("q", arguments=dict(DEDUP))
    vhost.declare_queue("plain")
    for name in ("q", "plain"):
        vhost.bind("fan", Destination.queue(name), "")
    vhost.route_message("fan", message(b"1", "id-1", exchange="fan"))
    vhost.route_message("fan", message(b"2", "id-1", exchange="fan"))
    assert get_all(broker, "q") == [b"1"]
    assert get_all(broker, "plain") == [b"1", b"2"]


def test_a_message_the_queue_refused_is_not_a_duplicate_when_retried() -> None:
    broker = new_broker(Wall())
    vhost = broker.vhosts["/"]
    args = {**DEDUP, "x-max-length": 1, "x-overflow": "reject-publish"}
    vhost.declare_queue("q", arguments=args)
    vhost.route_message("", message(b"1", "id-1"))
    assert vhost.route_message("", message(b"2", "id-2")).rejected  # nacked: the queue is full
    assert get_all(broker, "q") == [b"1"]
    assert vhost.route_message("", message(b"2", "id-2")).accepted
    assert get_all(broker, "q") == [b"2"]


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-message-deduplication": "yes"},
        {**DEDUP, "x-cache-size": 0},
        {**DEDUP, "x-cache-ttl": "soon"},
    ],
)
def test_bad_queue_arguments_are_refused_with_406(arguments: dict[str, Any]) -> None:
    vhost = new_broker(Wall()).vhosts["/"]
    with pytest.raises(ChannelException) as caught:
        vhost.declare_queue("q", arguments=arguments)
    assert caught.value.reply_code == 406
    assert "q" not in vhost.queues


def test_a_queue_without_the_argument_gets_no_hooks() -> None:
    vhost = new_broker(Wall()).vhosts["/"]
    assert vhost.declare_queue("q").hooks is None
    assert vhost.declare_queue("q2", arguments={"x-message-deduplication": False}).hooks is None


# -- across restarts ------------------------------------------------------------------------


def test_a_durable_queue_keeps_its_window_across_a_restart(tmp_path: Path) -> None:
    wall = Wall()
    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True, arguments=dict(DEDUP))
    vhost.route_message("", message(b"queued", "id-1"))
    vhost.route_message("", message(b"acked", "id-2"))
    vhost.route_message("", message(b"transient", "id-3", persistent=False))
    client = Client(broker)
    channel = client.channel()
    queue = vhost.queue("q")
    got = channel.get(queue, no_ack=False)
    assert got is not None
    assert got[1].message.body == b"queued"
    got = channel.get(queue, no_ack=False)
    assert got is not None
    assert got[1].message.body == b"acked"
    broker.ack(channel, got[0], multiple=False)  # its key goes to the plugin state now
    store.commit()
    store.close()  # the unacked "queued" comes back from the queue's journal

    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    for body, key in ((b"queued again", "id-1"), (b"acked again", "id-2"), (b"t", "id-3")):
        vhost.route_message("", message(body, key))
    assert get_all(broker, "q") == [b"queued", b"t"]  # a transient message's key is not kept
    store.commit()
    store.close()


def test_the_state_of_a_deleted_queue_is_forgotten(tmp_path: Path) -> None:
    wall = Wall()
    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True, arguments=dict(DEDUP))
    vhost.route_message("", message(b"1", "id-1"))
    assert get_all(broker, "q") == [b"1"]  # auto-ack: after_ack writes the key
    assert store.plugin_state("queue:deduplication:q", "/")
    vhost.delete_queue("q")
    assert store.plugin_state("queue:deduplication:q", "/") == {}
    vhost.declare_queue("q", durable=True, arguments=dict(DEDUP))
    vhost.route_message("", message(b"1", "id-1"))
    assert get_all(broker, "q") == [b"1"]
    store.commit()
    store.close()


def test_window_records_past_their_ttl_are_dropped_at_boot(tmp_path: Path) -> None:
    wall = Wall()
    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q", durable=True, arguments={**DEDUP, "x-cache-ttl": 60_000})
    vhost.route_message("", message(b"1", "id-1"))
    assert get_all(broker, "q") == [b"1"]
    store.commit()
    store.close()
    wall.now += 61
    broker, store = boot(tmp_path, wall)
    assert store.plugin_state("queue:deduplication:q", "/") == {}
    broker.vhosts["/"].route_message("", message(b"1 again", "id-1"))
    assert get_all(broker, "q") == [b"1 again"]
    store.commit()
    store.close()


# -- exchange level --------------------------------------------------------------------------


def test_the_exchange_routes_as_fanout_and_drops_duplicates_before_routing() -> None:
    broker = new_broker(Wall())
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("dedup", "x-message-deduplication", arguments={"x-cache-size": 10})
    for name in ("a", "b"):
        vhost.declare_queue(name)
        vhost.bind("dedup", Destination.queue(name), f"ignored-{name}")
    head = {"x-deduplication-header": "order-7"}
    first = vhost.route_message("dedup", message(b"1", exchange="dedup", headers=head))
    again = vhost.route_message("dedup", message(b"2", exchange="dedup", headers=head))
    assert sorted(q.name for q in first.queues) == ["a", "b"]
    assert again.held
    assert not again.queues
    assert get_all(broker, "a") == get_all(broker, "b") == [b"1"]


def test_an_x_cache_ttl_header_overrides_the_exchange_ttl() -> None:
    wall = Wall()
    broker = new_broker(wall)
    vhost = broker.vhosts["/"]
    args = {"x-cache-size": 10, "x-cache-ttl": 10_000}
    vhost.declare_exchange("dedup", "x-message-deduplication", arguments=args)
    vhost.declare_queue("q")
    vhost.bind("dedup", Destination.queue("q"), "")
    short = {"x-deduplication-header": "k", "x-cache-ttl": 1000}
    vhost.route_message("dedup", message(b"1", exchange="dedup", headers=short))
    wall.now += 1.0
    vhost.route_message("dedup", message(b"2", exchange="dedup", headers=short))
    vhost.route_message("dedup", message(b"3", exchange="dedup", headers=short))
    assert get_all(broker, "q") == [b"1", b"2"]


@pytest.mark.parametrize(
    "arguments",
    [{}, {"x-cache-size": -1}, {"x-cache-size": 5, "x-cache-persistence": "tape"}],
)
def test_bad_exchange_arguments_are_refused_with_406(arguments: dict[str, Any]) -> None:
    vhost = new_broker(Wall()).vhosts["/"]
    with pytest.raises(ChannelException) as caught:
        vhost.declare_exchange("dedup", "x-message-deduplication", arguments=arguments)
    assert caught.value.reply_code == 406


def test_a_disk_exchange_window_survives_a_restart_and_a_memory_one_does_not(
    tmp_path: Path,
) -> None:
    wall = Wall()
    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    for name, persistence in (("disk", "disk"), ("memory", "memory")):
        args = {"x-cache-size": 10, "x-cache-persistence": persistence}
        vhost.declare_exchange(name, "x-message-deduplication", durable=True, arguments=args)
        vhost.declare_queue(f"q-{name}", durable=True)
        vhost.bind(name, Destination.queue(f"q-{name}"), "")
        vhost.route_message(name, message(b"1", "id-1", exchange=name))
    store.commit()
    store.close()
    broker, store = boot(tmp_path, wall)
    vhost = broker.vhosts["/"]
    for name in ("disk", "memory"):
        vhost.route_message(name, message(b"2", "id-1", exchange=name))
    assert get_all(broker, "q-disk") == [b"1"]
    assert get_all(broker, "q-memory") == [b"1", b"2"]
    store.commit()
    store.close()
