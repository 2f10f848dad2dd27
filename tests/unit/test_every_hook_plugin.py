"""A test plugin using every hook of the plugin API, loaded by name, sees each hook fire (no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from pamqp import commands
from queue_helpers import Client, FakeClock, Wall, get_all
from store_helpers import recovered

from amqplite.broker import plugin_api
from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.management.resources.scheduled import scheduling_router
from amqplite.protocol.properties import encode_properties
from amqplite.server.plugin_loader import load_plugin
from amqplite.store.store import Store

PLUGIN = "tests.plugins.every_hook_plugin"
README = Path(__file__).resolve().parents[2] / "amqplite_plugins" / "README.md"


def message(
    body: bytes,
    message_id: str,
    exchange: str = "ex",
    routing_key: str = "k",
    kind: str | None = None,
    **headers: Any,
) -> Message:
    props = commands.Basic.Properties(
        message_id=message_id, delivery_mode=2, headers=headers, message_type=kind
    )
    return Message(
        exchange, routing_key, encode_properties(props), body, persistent=True, headers=headers
    )


@pytest.fixture
def plugin() -> Iterator[ModuleType]:
    module = load_plugin(PLUGIN)
    module.EVENTS.clear()
    module.USED.clear()
    yield module
    module.EVENTS.clear()
    module.USED.clear()


def boot(plugin: ModuleType, directory: Path, clock: FakeClock, wall: Wall) -> tuple[Broker, Store]:
    registry = builtin_registry()
    plugin.register(registry)
    broker = Broker(registry, clock=clock, wall_clock=wall)
    broker.add_vhost("/")
    return recovered(directory, broker, fsync=False)


def drain_events(plugin: ModuleType) -> list[str]:
    events = list(plugin.EVENTS)
    plugin.EVENTS.clear()
    return events


def api_members() -> set[str]:
    """Every hook and seam of plugin_api.__all__ as "Type.member", read from the module itself.

    Protocols give their members, the two contexts their fields, the registry its public
    methods; the seams documented in prose (Router.route_message, create_router_in) are added.
    """
    members = {"Router.route_message", "ExchangeType.create_router_in"}
    for name in plugin_api.__all__:
        value = getattr(plugin_api, name)
        if getattr(value, "_is_protocol", False) or value is plugin_api.ExchangeTypeRegistry:
            members |= {f"{name}.{m}" for m in vars(value) if not m.startswith("_")}
        elif name.endswith("Context"):
            members |= {f"{name}.{field.name}" for field in attrs.fields(value)}
    return members


def test_the_plugin_is_found_by_its_dotted_name(plugin: ModuleType) -> None:
    assert plugin.__name__ == PLUGIN
    assert callable(plugin.register)


def test_the_plugin_imports_every_name_of_the_api(plugin: ModuleType) -> None:
    missing = [
        n for n in plugin_api.__all__ if getattr(plugin, n, None) is not getattr(plugin_api, n)
    ]
    assert missing == []


def test_the_readme_table_lists_every_name_and_member_of_the_api() -> None:
    section = README.read_text().split("## The API at a glance", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            name = line.split("`")[1].split("(")[0]
            rows[name] = line
    assert sorted(set(plugin_api.__all__) - set(rows)) == []
    missing = [m for m in api_members() if f"`{m.split('.')[1]}" not in rows[m.split(".")[0]]]
    assert missing == []


def test_basic_property_reads_a_property_by_its_amqp_name() -> None:
    held = message(b"x", "m9", kind="order")
    assert plugin_api.basic_property(held, "message_id") == "m9"
    assert plugin_api.basic_property(held, "type") == "order"  # pamqp's message_type
    assert plugin_api.basic_property(held, "message_type") == "order"
    assert plugin_api.basic_property(held, "correlation_id") is None


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
        "create_router_in / ex durable=True",
        "state.load ex 0 durable=True",
        "spool.restored ex 0",
        "assert_args_equivalence",
        "attach / q durable=True messages=0",
        "validate_binding k",
        "bind q",
    ]

    # the plain type: create_router(), and the broker calls route() (no route_message there)
    vhost.declare_exchange("plain", "x-every-hook-plain")
    vhost.bind("plain", Destination.queue("q"), "k")
    assert [q.name for q in vhost.route_message("plain", message(b"p", "p1")).queues] == ["q"]
    assert get_all(broker, "q") == [b"p", b"acked:p"]
    assert drain_events(plugin)[:6] == [
        "validate",
        "create_router",
        "validate_binding k",
        "bind q",
        "route k",
        "before_enqueue accept",
    ]

    # route_message reads a basic property: type "nowhere" (the x-drop-type default) goes nowhere
    assert not vhost.route_message("ex", message(b"lost", "m0", kind="nowhere")).queues
    assert drain_events(plugin) == ["route_message k m0 nowhere"]

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
    assert drain_events(plugin) == [
        "scheduler.fire 00000000",
        "route_message k m1 None",
        "route k",
        "before_enqueue accept",
    ]

    # the spool, and the SchedulingRouter methods the management API lists and cancels with
    router = scheduling_router(vhost.exchanges["ex"])
    assert router is not None
    wall_ms = round(wall.now * 1000)
    for body, delay in ((b"s2", 2000), (b"s1", 1000), (b"s3", 4000)):
        assert vhost.route_message("ex", message(body, body.decode(), **{"x-spool-ms": delay})).held
    assert [e.split()[0] for e in drain_events(plugin)] == ["spool.add"] * 3
    assert router.scheduled_count() == 3
    assert router.next_due_ms() == wall_ms + 1000
    listed = router.scheduled(2)
    assert [(i.due_ms, i.message.message_id) for i in listed] == [
        (wall_ms + 1000, "s1"),
        (wall_ms + 2000, "s2"),
    ]
    s2 = listed[1].handle
    shown = router.scheduled_message(s2)
    assert shown is not None
    assert getattr(shown.message, "body", None) == b"s2"
    assert router.cancel(s2)
    assert not router.cancel(s2)
    assert router.scheduled_message(s2) is None
    assert router.scheduled_count() == 2
    assert drain_events(plugin) == [f"spool.cancel {s2}"]
    clock.advance(2.5)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"later", b"s1", b"acked:later", b"acked:s1"]  # not s2
    assert router.scheduled_count() == 1  # s3 stays for the restart
    drain_events(plugin)

    # before_enqueue: DROP (taken, so confirmed) and HOLD (released later by the plugin)
    dropped = vhost.route_message("ex", message(b"dropped", "m2", **{"x-verdict": "drop"}))
    assert [q.name for q in dropped.accepted] == ["q"]
    assert not dropped.rejected
    vhost.route_message(
        "ex", message(b"held", "m3", **{"x-verdict": "hold", "x-queue-hold-ms": 500})
    )
    assert drain_events(plugin) == [
        "route_message k m2 None",
        "route k",
        "before_enqueue drop",
        "route_message k m3 None",
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
    assert bodies == [b"held", b"acked:held"]
    assert drain_events(plugin) == ["after_ack m3", "after_ack m3"]

    # refused: a queue whose length limit refuses what before_enqueue accepted
    args = {"x-every-hook": True, "x-max-length": 1, "x-overflow": "reject-publish"}
    vhost.declare_queue("small", arguments=args)
    vhost.route_message("", message(b"1", "s1", exchange="", routing_key="small"))
    assert vhost.route_message("", message(b"2", "s2", exchange="", routing_key="small")).rejected
    assert drain_events(plugin)[-1] == "refused s2"

    # held persistent messages come back at boot (state and spool), their timers re-armed
    vhost.route_message("ex", message(b"after boot", "m4", **{"x-hold-ms": 5000}))
    store.commit()
    store.close()
    drain_events(plugin)
    wall.now += 2
    clock2 = FakeClock()
    broker, store = boot(plugin, tmp_path, clock2, wall)
    vhost = broker.vhosts["/"]
    events = drain_events(plugin)
    assert "state.load ex 1 durable=True" in events
    assert "spool.restored ex 1" in events
    assert "attach / q durable=True messages=0" in events  # declared before its messages return
    router = scheduling_router(vhost.exchanges["ex"])
    assert router is not None
    assert router.scheduled_count() == 1
    clock2.advance(3)
    broker.fire_timers()
    # auto-ack: after_ack copies
    assert get_all(broker, "q") == [b"s3", b"after boot", b"acked:s3", b"acked:after boot"]

    # unbind and close, of the exchange and of the queue
    vhost.unbind("ex", Destination.queue("q"), "k")
    vhost.delete_exchange("ex")
    vhost.delete_queue("q")
    assert drain_events(plugin)[-3:] == ["unbind q", "close exchange ex", "close queue q"]
    store.commit()
    store.close()

    # every hook of the API was called, and every seam the broker hands a plugin was used
    assert sorted(api_members() - plugin.USED) == []
