"""Durable plugin state through the store's metadata log: the delayed_message plugin's messages."""

from __future__ import annotations

from pathlib import Path

from queue_helpers import FakeClock, get_all
from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.durability import is_durable
from amqplite.broker.exchange_types import builtin_registry
from amqplite.broker.message import Message
from amqplite.broker.plugin_api import Destination
from amqplite.server.plugin_loader import load_plugin
from amqplite.store.metadata import MetadataLog
from amqplite.store.records import RecordType
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"  # delivery mode 2
DELAYED = {"x-delayed-type": "direct"}


class Wall:
    """A settable POSIX clock."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def boot(directory: Path, clock: FakeClock, wall: Wall) -> tuple[Broker, Store]:
    """A broker with the delayed_message plugin over the store in `directory`."""
    registry = builtin_registry()
    load_plugin("delayed_message").register(registry)
    broker = Broker(registry, clock=clock, wall_clock=wall)
    broker.add_vhost("/")
    return recovered(directory, broker, fsync=False)


def delayed(body: bytes, delay_ms: int, props: bytes = PERSISTENT_PROPS) -> Message:
    return Message(
        "later",
        "k",
        props,
        body,
        persistent=props == PERSISTENT_PROPS,
        headers={"x-delay": delay_ms},
    )


def setup(broker: Broker, durable: bool = True) -> None:
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("later", "x-delayed-message", durable=durable, arguments=dict(DELAYED))
    vhost.declare_queue("q", durable=True)
    vhost.bind("later", Destination.queue("q"), "k")


def test_a_held_persistent_message_is_confirmed_only_after_its_record_commits(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path, FakeClock(), Wall())
    setup(broker)
    outer = store.watch()
    assert broker.vhosts["/"].route_message("later", delayed(b"a", 1000)).held
    mark = store.watched(outer)
    assert mark is not None
    assert not is_durable(mark)
    store.commit()
    assert is_durable(mark)
    store.close()


def test_held_messages_come_back_at_boot_and_route_on_wall_time(tmp_path: Path) -> None:
    clock, wall = FakeClock(), Wall()
    broker, store = boot(tmp_path, clock, wall)
    setup(broker)
    vhost = broker.vhosts["/"]
    vhost.route_message("later", delayed(b"second", 5000))
    vhost.route_message("later", delayed(b"first", 1000))
    vhost.route_message("later", delayed(b"transient", 1000, props=b"\x10\x00\x01"))
    store.commit()
    store.close()  # the broker is gone, its timers with it

    wall.now += 2.0  # "first" fell due while the broker was down
    clock2 = FakeClock()
    broker, store = boot(tmp_path, clock2, wall)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"first"]
    clock2.advance(2.999)
    broker.fire_timers()
    assert get_all(broker, "q") == []
    clock2.advance(0.001)
    broker.fire_timers()
    assert get_all(broker, "q") == [b"second"]
    store.commit()
    store.close()

    broker, store = boot(tmp_path, FakeClock(), wall)  # released messages are not held again
    broker.fire_timers()
    assert get_all(broker, "q") == []
    store.close()


def test_deleting_the_exchange_forgets_its_held_messages(tmp_path: Path) -> None:
    clock, wall = FakeClock(), Wall()
    broker, store = boot(tmp_path, clock, wall)
    setup(broker)
    broker.vhosts["/"].route_message("later", delayed(b"a", 1000))
    broker.vhosts["/"].delete_exchange("later")
    store.commit()
    store.close()
    broker, store = boot(tmp_path, clock, wall)
    setup(broker)  # the same name again: nothing of the old exchange is held
    wall.now += 10
    clock.advance(10)
    broker.fire_timers()
    assert get_all(broker, "q") == []
    store.close()


def test_a_transient_exchange_writes_nothing(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, FakeClock(), Wall())
    setup(broker, durable=False)
    outer = store.watch()
    broker.vhosts["/"].route_message("later", delayed(b"a", 1000))
    assert store.watched(outer) is None
    store.close()


def test_compaction_keeps_live_plugin_records_only(tmp_path: Path) -> None:
    path = tmp_path / "metadata.log"
    log = MetadataLog.open(path)
    value = {"due": 1, "message": {"body": bytearray(b"\xff\x00")}}
    log.append(RecordType.PLUGIN_STATE, "exchange:x", "/", "1", value)
    log.append(RecordType.PLUGIN_STATE, "exchange:x", "/", "2", value)
    log.append(RecordType.PLUGIN_STATE_DELETED, "exchange:x", "/", "2")
    log.append(RecordType.PLUGIN_STATE, "exchange:y", "/", "1", value)
    log.append(RecordType.PLUGIN_SCOPE_CLEARED, "exchange:y", "/")
    log.compact()
    log.close()
    again = MetadataLog.open(path)
    assert again.plugin_state == {("/", "exchange:x"): {"1": value}}
    assert again.record_count == 1
    again.close()


def test_held_bodies_are_paged_out_and_not_in_the_metadata_log(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, FakeClock(), Wall())
    setup(broker)
    vhost = broker.vhosts["/"]
    body = b"x" * 100_000
    for _ in range(20):
        vhost.route_message("later", delayed(body, 60_000))
    store.commit()
    router = vhost.exchanges["later"].router
    assert all(type(item[1]) is int for item in router.held)  # type: ignore[attr-defined]
    assert not store.metadata_log.plugin_state
    assert (tmp_path / "metadata.log").stat().st_size < 100_000
    spooled = sum(p.stat().st_size for p in (tmp_path / "spool").rglob("*.spool"))
    assert spooled >= 20 * len(body)
    infos = router.scheduled(1)  # type: ignore[attr-defined]
    assert bytes(infos[0].message.body) == body  # read back from disk
    store.close()


def reopen(tmp_path: Path, wall: Wall) -> tuple[Broker, list[bytes]]:
    """Boot again over the same directory (after a crash: nothing was closed) and count."""
    clock = FakeClock()
    broker, store = boot(tmp_path, clock, wall)
    queued = get_all(broker, "q")
    clock.advance(1000)
    broker.fire_timers()
    store.commit()
    return broker, queued + get_all(broker, "q")


def test_a_release_is_forgotten_only_after_the_queue_has_the_message(tmp_path: Path) -> None:
    """Crash after a release at each point of its commits: never lost, once when all are done."""
    for case in ("none", "metadata-only", "one-round", "two-rounds"):
        directory = tmp_path / case
        clock, wall = FakeClock(), Wall()
        broker, store = boot(directory, clock, wall)
        setup(broker)
        broker.vhosts["/"].route_message("later", delayed(b"m", 1000))
        store.commit()
        clock.advance(1.0)
        broker.fire_timers()  # released: enqueued in the durable queue, not committed yet
        if case == "metadata-only":  # the queue journal's job has not run when the node dies
            for job in store.flush():
                if job.domain is store.metadata_domain:
                    job.run()
                    store.complete(job)
        for _ in range({"one-round": 1, "two-rounds": 2}.get(case, 0)):
            store.commit()
        _, seen = reopen(directory, wall)  # the first store is abandoned, as by kill -9
        assert seen.count(b"m") >= 1, case
        if case == "two-rounds":
            assert seen == [b"m"]


def test_an_exchange_declared_again_after_a_delete_starts_empty(tmp_path: Path) -> None:
    clock, wall = FakeClock(), Wall()
    broker, store = boot(tmp_path, clock, wall)
    setup(broker)
    vhost = broker.vhosts["/"]
    vhost.route_message("later", delayed(b"old", 1000))
    store.commit()
    vhost.delete_exchange("later")
    setup(broker)  # same name, before the deletion's commit
    vhost.route_message("later", delayed(b"new", 1000))
    assert vhost.exchanges["later"].router.scheduled_count() == 1  # type: ignore[attr-defined]
    store.commit()
    store.commit()
    _, seen = reopen(tmp_path, wall)
    assert seen == [b"new"]
