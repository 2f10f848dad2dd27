"""A test plugin using every hook of the plugin API, loaded by name, sees each hook fire (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pamqp import commands
from queue_helpers import Client, FakeClock, get_all

from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.config.models import StoreConfig
from amqplite.protocol.properties import encode_properties
from amqplite.server.plugin_loader import load_plugin
from amqplite.server.restore import recover_into
from amqplite.store.store import Store

PLUGIN = "tests.plugins.every_hook_plugin"


class Wall:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def message(
    body: bytes, message_id: str, exchange: str = "ex", routing_key: str = "k", **headers: Any
) -> Message:
    props = commands.Basic.Properties(message_id=message_id, delivery_mode=2, headers=headers)
    return Message(
        exchange, routing_key, encode_properties(props), body, persistent=True, headers=headers
    )


@pytest.fixture
def plugin() -> Iterator[ModuleType]:
    module = load_plugin(PLUGIN)
    module.EVENTS.clear()
    yield module
    module.EVENTS.clear()


def boot(plugin: ModuleType, directory: Path, clock: FakeClock, wall: Wall) -> tuple[Broker, Store]:
    registry = builtin_registry()
    plugin.register(registry)
    broker = Broker(registry, clock=clock, wall_clock=wall)
    broker.add_vhost("/")
    store = Store(directory, StoreConfig(fsync=False))
    recover_into(broker, store)
    return broker, store


def drain_events(plugin: ModuleType) -> list[str]:
    events = list(plugin.EVENTS)
    plugin.EVENTS.clear()
    return events


def test_the_plugin_is_found_by_its_dotted_name(plugin: ModuleType) -> None:
    assert plugin.__name__ == PLUGIN
    assert callable(plugin.register)


def test_every_hook_fires(plugin: ModuleType, tmp_path: Path) -> None:
    clock, wall = FakeClock(), Wall()
    broker, store = boot(plugin, tmp_path, clock, wall)
    assert drain_events(plugin) == ["register"]
    vhost = broker.vhosts["/"]

    # exchange type: validate, create_router_in (with the durable state), equivalence, bindings
    vhost.declare_exchange("ex", "x-every-hook", durable=True)
    vhost.declare_exchange("ex", "x-every-hook", durable=True)
    vhost.declare_queue("q", durable=True, arguments={"x-every-hook": True})
    vhost.bind("ex", Destination.queue("q"), "k")
    assert drain_events(plugin) == [
        "validate",
        "create_router_in ex durable=True",
        "state.load ex 0",
        "assert_args_equivalence",
        "attach q messages=0",
        "validate_binding k",
        "bind q",
    ]

    # hold + durable state + scheduler + release: the publish's confirm waits for the state
    outer = store.watch()
    assert vhost.route_message("ex", message(b"later", "m1", **{"x-hold-ms": 1000})).held
    mark = store.watched(outer)
    assert mark is not None
    assert not is_durable(mark)
    store.commit()
    assert is_durable(mark)
    assert drain_events(plugin) == ["state.put 00000000", "hold k"]
    clock.advance(0.999)
    broker.fire_timers()
    assert get_all(broker, "q") == []
    clock.advance(0.001)
    broker.fire_timers()
    assert drain_events(plugin) == ["scheduler.fire 00000000", "route k", "before_enqueue accept"]

    # before_enqueue: DROP (taken, so confirmed) and HOLD (released later by the plugin)
    dropped = vhost.route_message("ex", message(b"dropped", "m2", **{"x-verdict": "drop"}))
    assert [q.name for q in dropped.accepted] == ["q"]
    assert not dropped.rejected
    vhost.route_message(
        "ex", message(b"held", "m3", **{"x-verdict": "hold", "x-queue-hold-ms": 500})
    )
    assert drain_events(plugin) == [
        "route k",
        "before_enqueue drop",
        "route k",
        "before_enqueue hold",
    ]
    clock.advance(0.5)
    broker.fire_timers()
    assert drain_events(plugin) == ["queue release"]

    # after_ack: the plugin enqueues an "acked:" copy of each acknowledged message
    client = Client(broker)
    channel = client.channel()
    queue = vhost.queue("q")
    bodies = []
    while (got := channel.get(queue, no_ack=False)) is not None:
        bodies.append(got[1].message.body)
        broker.ack(channel, got[0], multiple=False)
    assert bodies == [b"later", b"held", b"acked:later", b"acked:held"]
    assert drain_events(plugin) == ["after_ack m1", "after_ack m3", "after_ack m1", "after_ack m3"]

    # refused: a queue whose length limit refuses what before_enqueue accepted
    args = {"x-every-hook": True, "x-max-length": 1, "x-overflow": "reject-publish"}
    vhost.declare_queue("small", arguments=args)
    vhost.route_message("", message(b"1", "s1", exchange="", routing_key="small"))
    assert vhost.route_message("", message(b"2", "s2", exchange="", routing_key="small")).rejected
    assert drain_events(plugin)[-1] == "refused s2"

    # a held persistent message comes back from the state at boot, its timer re-armed
    vhost.route_message("ex", message(b"after boot", "m4", **{"x-hold-ms": 5000}))
    store.commit()
    store.close()
    drain_events(plugin)
    wall.now += 2
    clock2 = FakeClock()
    broker, store = boot(plugin, tmp_path, clock2, wall)
    vhost = broker.vhosts["/"]
    events = drain_events(plugin)
    assert "state.load ex 1" in events
    assert "attach q messages=0" in events  # the queue is declared before its messages return
    clock2.advance(3)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"after boot", b"acked:after boot"]  # auto-ack: after_ack

    # unbind and close, of the exchange and of the queue
    vhost.unbind("ex", Destination.queue("q"), "k")
    vhost.delete_exchange("ex")
    vhost.delete_queue("q")
    assert drain_events(plugin)[-3:] == ["unbind q", "close exchange ex", "close queue q"]
    store.commit()
    store.close()
