"""Lazy bodies: beyond the memory budget, persistent bodies are read back from the journal."""

from __future__ import annotations

from pathlib import Path

from store_helpers import recovered

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage
from amqplite.broker.plugin_api import Destination
from amqplite.broker.queue import Queue
from amqplite.config.models import StoreConfig
from amqplite.server.restore import recover_into
from amqplite.store.journal import list_segments
from amqplite.store.store import Store

PERSISTENT_PROPS = b"\x10\x00\x02"


boot = recovered


def body(i: int, size: int = 1024) -> bytes:
    head = b"%06d:" % i
    return head + bytes((i + k) % 251 for k in range(size - len(head)))


def publish(
    broker: Broker, start: int, count: int, persistent: bool = True, key: str = "q"
) -> None:
    vhost = broker.vhosts["/"]
    props = PERSISTENT_PROPS if persistent else b"\x00\x00"
    for i in range(start, start + count):
        vhost.publish("", Message("", key, props, body(i), persistent=persistent))


def ready(queue: Queue) -> list[bytes]:
    return [entry.message.body for entry in queue.ready]


def paged(queue: Queue) -> int:
    return sum(type(entry.message) is PagedMessage for entry in queue.ready)


def ack(queue: Queue, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        entry = queue.take()
        assert entry is not None
        out.append(entry.message.body)
        entry.delivery_count += 1
        queue.settle(entry)
    return out


def test_under_budget_nothing_is_paged(tmp_path: Path) -> None:
    broker, store = boot(tmp_path)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 0, 50)
    store.commit()
    assert paged(queue) == 0
    assert store.resident_bytes == 50 * 1024
    ack(queue, 50)
    assert store.resident_bytes == 0


def test_beyond_budget_bodies_are_paged_and_read_back_identical(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, memory_budget_bytes=10 * 1024)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 0, 100)
    assert paged(queue) == 0  # only once the records are written
    store.commit()
    assert paged(queue) == 90
    assert store.resident_bytes == 10 * 1024
    assert ready(queue) == [body(i) for i in range(100)]
    assert [entry.message.size for entry in queue.ready] == [1024] * 100
    assert ack(queue, 100) == [body(i) for i in range(100)]
    store.commit()
    assert store.resident_bytes == 0


def test_transient_messages_and_queues_keep_their_bodies(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, memory_budget_bytes=0)
    vhost = broker.vhosts["/"]
    durable = vhost.declare_queue("q", durable=True)
    transient = vhost.declare_queue("t", durable=False)
    publish(broker, 0, 5, persistent=False)
    publish(broker, 0, 5, key="t")
    publish(broker, 5, 5)
    store.commit()
    assert [type(e.message) is PagedMessage for e in durable.ready] == [False] * 5 + [True] * 5
    assert paged(transient) == 0
    assert ready(durable) == [body(i) for i in range(10)]


def test_paged_bodies_survive_snapshots_that_delete_their_segments(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, memory_budget_bytes=0, segment_bytes=8192)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    journal = store.journals[("/", "q")]
    publish(broker, 0, 40)
    store.commit()
    first_segments = {n for n, _ in list_segments(journal.directory)}
    expected = list(range(40))
    for round_no in range(30):  # churn: 10 in, 10 out per commit, 40 live and paged throughout
        publish(broker, 40 + 10 * round_no, 10)
        ack(queue, 10)
        expected = expected[10:] + list(range(40 + 10 * round_no, 50 + 10 * round_no))
        store.commit()
    assert journal.snapshots_taken > 3
    assert not first_segments & {n for n, _ in list_segments(journal.directory)}
    assert paged(queue) == 40
    assert ready(queue) == [body(i) for i in expected]
    assert store.resident_bytes == 0
    store.close()
    broker, store = boot(tmp_path, memory_budget_bytes=0)
    assert ready(broker.vhosts["/"].queues["q"]) == [body(i) for i in expected]


def test_restart_keeps_the_budget_head_in_memory_and_pages_the_rest(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, segment_bytes=16384)
    broker.vhosts["/"].declare_queue("q", durable=True)
    publish(broker, 0, 60)
    store.commit()
    ack(broker.vhosts["/"].queues["q"], 5)
    store.close()
    broker, store = boot(tmp_path, memory_budget_bytes=20 * 1024)
    queue = broker.vhosts["/"].queues["q"]
    kinds = [type(e.message) is PagedMessage for e in queue.ready]
    assert kinds == [False] * 20 + [True] * 35
    assert store.resident_bytes == 20 * 1024
    assert ready(queue) == [body(i) for i in range(5, 60)]
    assert ack(queue, 55) == [body(i) for i in range(5, 60)]
    store.commit()
    assert store.resident_bytes == 0


def test_crash_restart_reads_paged_bodies_from_snapshot_and_segments(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, memory_budget_bytes=0, segment_bytes=8192)
    queue = broker.vhosts["/"].declare_queue("q", durable=True)
    for round_no in range(10):
        publish(broker, 10 * round_no, 10)
        ack(queue, 8)
        store.commit()
    expected = [body(i) for i in range(80, 100)]
    assert store.journals[("/", "q")].snapshots_taken > 0
    # no close: a crash; the next boot reads the snapshot and the segments after it
    broker, store = boot(tmp_path, memory_budget_bytes=5 * 1024)
    queue = broker.vhosts["/"].queues["q"]
    assert paged(queue) == 15
    assert ready(queue) == expected
    assert all(e.redelivered for e in queue.ready)
    publish(broker, 100, 5)
    store.commit()
    assert ready(queue) == [*expected, *(body(i) for i in range(100, 105))]


def test_a_message_in_two_durable_queues_stays_readable_in_each(tmp_path: Path) -> None:
    broker, store = boot(tmp_path, memory_budget_bytes=0, segment_bytes=8192)
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("fan", "fanout", durable=True)
    a = vhost.declare_queue("a", durable=True)
    b = vhost.declare_queue("b", durable=True)
    vhost.bind("fan", Destination("queue", "a"), "")
    vhost.bind("fan", Destination("queue", "b"), "")
    for i in range(30):
        vhost.publish("fan", Message("fan", "", PERSISTENT_PROPS, body(i), persistent=True))
    store.commit()
    for _ in range(20):  # a is drained and snapshotted many times; b keeps everything
        ack(a, 1)
        store.commit()
    assert store.journals[("/", "a")].snapshots_taken > 0
    assert ready(b) == [body(i) for i in range(30)]
    assert ready(a) == [body(i) for i in range(20, 30)]


# -- metadata log compaction at run time ------------------------------------------------------


def test_metadata_log_is_compacted_while_running_and_appends_continue_in_the_new_file(
    tmp_path: Path,
) -> None:
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("keep", durable=True)
    log_path = tmp_path / "metadata.log"
    largest = 0
    for i in range(700):  # 1,400 records of which almost none stay live
        vhost.declare_exchange(f"tmp-{i}", "direct", durable=True)
        vhost.delete_exchange(f"tmp-{i}")
        store.commit()
        largest = max(largest, log_path.stat().st_size)
    assert log_path.stat().st_size < largest / 2
    assert store.metadata_log.record_count < 1000
    vhost.declare_exchange("after", "topic", durable=True)
    vhost.bind("after", Destination("queue", "keep"), "k.#")
    store.commit()  # no close: the next boot replays the compacted log plus what followed
    broker, store = boot(tmp_path)
    vhost = broker.vhosts["/"]
    assert "keep" in vhost.queues
    assert vhost.exchanges["after"].type_name == "topic"
    assert not any(name.startswith("tmp-") for name in vhost.exchanges)
    assert [b.routing_key for b in vhost.bindings() if b.source == "after"] == ["k.#"]


# -- TTL across restarts ----------------------------------------------------------------------


class Clocks:
    def __init__(self, wall: float) -> None:
        self.mono = 100.0
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def restart(self, downtime: float) -> None:
        self.mono = 5.0  # a new process: the monotonic clock starts elsewhere
        self.wall += downtime


def boot_with(directory: Path, clocks: Clocks, **store: object) -> tuple[Broker, Store]:
    broker = Broker(clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)
    broker.add_vhost("/")
    st = Store(directory, StoreConfig(**store))  # type: ignore[arg-type]
    recover_into(broker, st)
    return broker, st


def ids(queue: Queue) -> list[bytes]:
    return [entry.message.body[:6] for entry in queue.ready]


def test_message_ttl_keeps_its_absolute_deadline_across_restarts(tmp_path: Path) -> None:
    clocks = Clocks(wall=1_700_000_000.0)
    broker, store = boot_with(tmp_path, clocks, segment_bytes=4096)
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 10_000})
    vhost.publish("", Message("", "q", PERSISTENT_PROPS, body(0), persistent=True))
    own = Message("", "q", PERSISTENT_PROPS, body(1), persistent=True, expiration_ms=5_000)
    vhost.publish("", own)
    clocks.advance(3)
    vhost.publish("", Message("", "q", PERSISTENT_PROPS, body(2), persistent=True))
    store.commit()
    clocks.advance(1)  # wall +4 s: deadlines at +10 s, +5 s and +13 s
    store.close()

    clocks.restart(downtime=2)  # back at wall +6 s: message 1 is already past its deadline
    broker, store = boot_with(tmp_path, clocks, segment_bytes=4096)
    queue = broker.vhosts["/"].queues["q"]
    broker.fire_timers()
    assert ids(queue) == [b"000000", b"000002"]
    assert [e.message.expiration_ms for e in queue.ready] == [None, None]
    clocks.advance(3.9)  # wall +9.9 s
    broker.fire_timers()
    assert ids(queue) == [b"000000", b"000002"]
    clocks.advance(0.2)  # wall +10.1 s
    broker.fire_timers()
    assert ids(queue) == [b"000002"]
    for _ in range(40):  # churn so that a snapshot carries the deadline of message 2
        vhost = broker.vhosts["/"]
        vhost.publish("", Message("", "q", PERSISTENT_PROPS, body(9), persistent=True))
        head, churn = queue.take(), queue.take()
        assert head is not None
        assert churn is not None
        queue.settle(churn)
        queue.requeue(head)
        store.commit()
    assert store.journals[("/", "q")].snapshots_taken > 0
    store.close()

    clocks.restart(downtime=2.5)  # wall +12.6 s
    broker, store = boot_with(tmp_path, clocks)
    queue = broker.vhosts["/"].queues["q"]
    broker.fire_timers()
    assert ids(queue) == [b"000002"]
    clocks.advance(0.5)  # wall +13.1 s
    broker.fire_timers()
    assert ids(queue) == []


# -- vhosts, users, permissions and policies set at run time ------------------------------------


def boot_like_the_server(directory: Path) -> tuple[Broker, Store]:
    """As build_broker: the configured vhost and user exist before recovery."""
    from amqplite.broker.auth import FULL_ACCESS

    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest", ("administrator",))
    broker.set_permissions("guest", "/", FULL_ACCESS)
    st = Store(directory, StoreConfig())
    recover_into(broker, st)
    return broker, st


def test_runtime_users_permissions_policies_and_vhosts_survive_a_restart(tmp_path: Path) -> None:
    from amqplite.broker.auth import Permission
    from amqplite.broker.policy import Policy

    broker, store = boot_like_the_server(tmp_path)
    broker.add_vhost("v2")
    broker.add_user("alice", "s3cret", ("monitoring",))
    broker.set_permissions("alice", "v2", Permission("^a", ".*", "^$"))
    broker.set_permissions("alice", "/", Permission())
    broker.clear_permissions("alice", "/")
    broker.add_user("bob", "pw")
    broker.delete_user("bob")
    broker.delete_user("guest")  # configured, yet deleted at run time: stays deleted
    broker.set_policy(Policy("v2", "ttl", "^q", {"message-ttl": 5000}, 3, "queues"))
    broker.set_policy(Policy("/", "gone", ".*", {"max-length": 1}))
    broker.clear_policy("/", "gone")
    store.commit()  # no close: a crash

    broker, store = boot_like_the_server(tmp_path)
    assert set(broker.users) == {"alice"}
    assert broker.authenticate("alice", "s3cret") is not None
    assert broker.users["alice"].tags == ("monitoring",)
    assert broker.permissions_of("alice", "v2") == Permission("^a", ".*", "^$")
    assert broker.permissions_of("alice", "/") is None
    assert [(p.vhost, p.name, p.priority) for p in broker.list_policies()] == [("v2", "ttl", 3)]
    queue = broker.vhosts["v2"].declare_queue("q1")
    assert queue.settings.message_ttl == 5000
    broker.add_user("guest", "guest")  # created again at run time: back for good
    broker.delete_vhost("v2")
    store.close()

    broker, store = boot_like_the_server(tmp_path)
    assert set(broker.users) == {"alice", "guest"}
    assert "v2" not in broker.vhosts
    assert broker.list_policies() == []
