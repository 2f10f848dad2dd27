"""Queue tails paged out as a whole, without sockets: order, priorities, TTL, purge, requeue, DLX."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import pytest
from pamqp import commands
from queue_helpers import Client, FakeClock, get_all, make_broker

from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.entry_codec import decode_entries, encode_entries
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.queue import Queue
from amqplite.protocol.properties import encode_properties, read_facts
from amqplite.server.store_link import MessagePaging
from amqplite.server.tail_pager import KEEP_HEAD, TailPager
from amqplite.store.tail_spill import TailFiles
from amqplite.store.transient import ENTRY_OVERHEAD, TransientPager

BLOCK = 1024  # sequence numbers per block of a ready list


def body(i: int, size: int = 100) -> bytes:
    return (b"%07d:" % i).ljust(size, bytes([65 + i % 26]))


def msg(i: int, *, priority: int = 0, size: int = 100) -> Message:
    return Message("", "q", b"\x00\x00", body(i, size), priority=priority)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def paging_broker(clock: FakeClock, tmp_path: Path, threshold: int = 0) -> tuple[Broker, TailPager]:
    """A broker whose transient messages page out past `threshold` bytes (0: always)."""
    broker = make_broker(clock)
    directory = tmp_path / "transient"
    bodies = TransientPager(directory, threshold, MessagePaging())
    pager = TailPager(bodies, TailFiles(directory), clock)
    broker.spill = pager
    return broker, pager


def page_out(pager: TailPager) -> int:
    """What the pager's task does while over the threshold: write blocks, drop them; bytes freed."""
    freed = 0
    for job in pager.take_page_outs():
        job.run(pager.files)  # the worker thread's part
        freed += pager.page_out_done(job)
    return freed


def page_in(pager: TailPager) -> int:
    """Read back what the pager was asked for; blocks back in memory."""
    done = 0
    for job in pager.take_page_ins():
        before = job.level.paged_blocks
        job.run()
        pager.page_in_done(job)
        done += before - job.level.paged_blocks
    return done


def publish(broker: Broker, messages: list[Message], queue: str = "q") -> None:
    vhost = broker.vhosts["/"]
    for message in messages:
        message.routing_key = queue
        vhost.publish("", message)


def drain(broker: Broker, pager: TailPager, queue: str = "q") -> list[bytes]:
    """basic.get (auto-ack) until empty, reading paged blocks back whenever the head waits."""
    channel = DeliveryChannel(7, Client())
    q = broker.vhosts["/"].queue(queue)
    out: list[bytes] = []
    while True:
        got = channel.get(q, no_ack=True)
        if got is not None:
            out.append(got[1].message.body)
            continue
        if not len(q.ready):
            return out
        assert q.ready.paged_count, "nothing to deliver, nothing paged: stuck"
        assert pager.wanted, "the head waits on a paged block nobody asked for"
        assert page_in(pager)


def tail_files(directory: Path) -> list[str]:
    """Unlinked tail spill files of `directory` this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith(".tail (deleted)"):
            found.append(target)
    return found


def close_retired(pager: TailPager) -> None:
    gc.collect()
    for fd in pager.files.take_retired():
        os.close(fd)


def test_a_paged_tail_is_delivered_in_order_and_intact(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    count = 12 * BLOCK + 300
    publish(broker, [msg(i) for i in range(count)])
    assert page_out(pager) > 0
    ready = queue.ready.levels[0]
    # the head's blocks and the block still filling stay; every full block between pages out
    assert ready.paged_blocks == 12 - KEEP_HEAD
    assert ready.paged_count == (12 - KEEP_HEAD) * BLOCK
    assert len(queue.ready) == count == queue.message_count
    queue._check()
    assert list((tmp_path / "transient").iterdir()) == []  # unlinked at once
    assert tail_files(tmp_path)
    assert drain(broker, pager) == [body(i) for i in range(count)]
    assert queue.ready.paged_count == 0
    queue._check()


def test_a_paged_message_keeps_a_few_bytes_of_memory(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    count = 24 * BLOCK
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        publish(broker, [msg(i, size=10) for i in range(count)])
        page_out(pager)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    paged = queue.ready.paged_count
    resident = count - paged
    assert paged == (24 - KEEP_HEAD - 1) * BLOCK
    # a resident entry costs some hundreds of bytes (entry, message, properties, body); a paged
    # one shares its block's handle: the old per-message paging kept ~320 B each
    assert held < resident * 400 + paged * 16, (held, resident, paged)


def test_a_short_queue_never_pages(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    publish(broker, [msg(i) for i in range((KEEP_HEAD + 1) * BLOCK)])
    assert page_out(pager) == 0
    assert queue.ready.paged_count == 0


def test_under_the_threshold_nothing_pages(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path, threshold=2**40)
    queue = broker.vhosts["/"].declare_queue("q")
    publish(broker, [msg(i) for i in range(20 * BLOCK)])
    assert pager.take_page_outs() == []
    assert queue.ready.paged_count == 0


def test_the_tail_pages_out_from_the_first_message_past_the_threshold(
    clock: FakeClock, tmp_path: Path
) -> None:
    count = 20 * BLOCK  # each counted with its body and ENTRY_OVERHEAD
    broker, pager = paging_broker(clock, tmp_path, threshold=count * (100 + ENTRY_OVERHEAD))
    queue = broker.vhosts["/"].declare_queue("q")
    publish(broker, [msg(i) for i in range(count)])
    assert not pager.over
    assert pager.take_page_outs() == []
    publish(broker, [msg(count)])
    assert pager.over
    assert page_out(pager) > 0
    assert queue.ready.paged_count > 0
    pager.observe(0)  # memory measured again: room under the threshold again
    assert not pager.over


def test_durable_queues_page_only_bodies_past_the_threshold(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path, threshold=5 * (100 + ENTRY_OVERHEAD))
    queue = broker.vhosts["/"].declare_queue("q")
    queue.journal = object()  # type: ignore[assignment]  # as the store sets on durable queues
    publish(broker, [msg(i) for i in range(8)])
    assert pager.bodies.pending_bytes == 3 * 100  # the first five fit under the threshold


def test_priority_levels_page_their_tails_and_stay_highest_first(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q", arguments={"x-max-priority": 2})
    count = 30 * BLOCK
    publish(broker, [msg(i, priority=i % 3) for i in range(count)])
    page_out(pager)
    assert all(level.paged_count for level in queue.ready.levels)
    queue._check()
    expected = [body(i) for p in (2, 1, 0) for i in range(count) if i % 3 == p]
    assert drain(broker, pager) == expected


def test_paged_entries_expire_on_time_and_are_dead_lettered_in_order(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    vhost = broker.vhosts["/"]
    vhost.declare_queue("dead")
    queue = vhost.declare_queue(
        "q",
        arguments={
            "x-message-ttl": 5000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dead",
        },
    )
    count = 10 * BLOCK
    publish(broker, [msg(i) for i in range(count)])
    page_out(pager)
    assert queue.ready.paged_count
    assert len(queue.deadlines) == count - queue.ready.paged_count  # the index let go of them
    clock.advance(4)
    assert page_in(pager) == 0  # nothing due yet, and no consumer near the head
    clock.advance(2)
    assert page_in(pager) > 0  # due: read back so that they expire
    while len(queue.ready):
        assert broker.fire_timers() or page_in(pager)
    queue._check()
    assert queue.stats.expired == count
    pager.growing.clear()  # the dead-letter queue took them while over: leave it in memory
    assert get_all(broker, "dead") == [body(i) for i in range(count)]


def test_purge_and_delete_drop_paged_runs_and_their_files(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q")
    other = vhost.declare_queue("other")
    count = 10 * BLOCK
    publish(broker, [msg(i) for i in range(count)])
    publish(broker, [msg(i) for i in range(count)], "other")
    page_out(pager)
    assert queue.ready.paged_count
    assert other.ready.paged_count
    assert queue.purge() == count
    assert len(queue.ready) == 0
    assert queue.ready_bytes == 0
    queue._check()
    assert vhost.delete_queue("other") == count
    pager.files.close()  # the write descriptor; the read ones go with their last run
    close_retired(pager)
    assert tail_files(tmp_path) == []
    assert page_in(pager) == 0


def test_requeued_messages_go_back_to_the_head_before_paged_ones(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    count = 10 * BLOCK
    publish(broker, [msg(i) for i in range(count)])
    channel = DeliveryChannel(1, Client())
    taken = [channel.get(queue, no_ack=False) for _ in range(5)]
    assert all(t is not None for t in taken)
    page_out(pager)
    assert queue.ready.paged_count
    broker.reject(channel, 5, multiple=True, requeue=True)
    queue._check()
    assert len(queue.ready) == count
    assert drain(broker, pager) == [body(i) for i in range(count)]


def test_a_consumer_reaching_the_paged_blocks_gets_them_all_in_order(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    vhost = broker.vhosts["/"]
    queue = vhost.declare_queue("q")
    count = 10 * BLOCK
    publish(broker, [msg(i) for i in range(count)])
    page_out(pager)
    client = Client(broker)
    channel = client.channel()
    broker.consume(vhost, channel, "q", "c", no_ack=True)
    queue.dispatch()
    assert len(client.delivered) == KEEP_HEAD * BLOCK  # up to the first paged block
    while page_in(pager):  # each block read back is dispatched at once
        pass
    assert client.bodies() == [body(i) for i in range(count)]
    queue._check()


def test_a_block_that_changes_while_being_written_stays_in_memory(
    clock: FakeClock, tmp_path: Path
) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    count = 10 * BLOCK
    publish(broker, [msg(i) for i in range(count)])
    jobs = pager.take_page_outs()
    assert jobs
    channel = DeliveryChannel(1, Client())
    got = [channel.get(queue, no_ack=True) for _ in range(KEEP_HEAD * BLOCK + 1)]
    assert all(g is not None for g in got)  # the head moved into the first block being written
    freed = 0
    for job in jobs:
        job.run(pager.files)
        freed += pager.page_out_done(job)
    first = queue.ready.levels[0]
    assert first.paged_count == (10 - KEEP_HEAD - 2) * BLOCK  # all but the block that changed
    queue._check()
    rest = drain(broker, pager)
    assert rest == [body(i) for i in range(KEEP_HEAD * BLOCK + 1, count)]


def test_durable_queues_page_bodies_not_tails(clock: FakeClock, tmp_path: Path) -> None:
    broker, pager = paging_broker(clock, tmp_path)
    queue = broker.vhosts["/"].declare_queue("q")
    queue.journal = object()  # type: ignore[assignment]  # as the store sets on durable queues
    publish(broker, [msg(i) for i in range(10 * BLOCK)])
    assert pager.growing == {}
    assert pager.bodies.pending_bytes == 10 * BLOCK * 100


def test_entries_round_trip_through_the_codec() -> None:
    properties = encode_properties(
        commands.Basic.Properties(
            headers={"x-a": 1, "k": "v"}, priority=3, expiration="9000", delivery_mode=2
        )
    )
    message = Message(
        "ex-é",
        "rk.ü",
        properties,
        b"\x00payload\xff",
        persistent=True,
        priority=3,
        expiration_ms=9000,
        headers=read_facts(properties).headers,
    )
    plain = Message("", "q", b"\x00\x00", b"")
    entries = [
        QueueEntry(7, message, delivery_count=2, level=1, expires_at=123.5),
        QueueEntry(2**40, plain),
    ]
    back = decode_entries(encode_entries(entries))
    assert [(e.seq, e.delivery_count, e.level, e.expires_at, e.ready) for e in back] == [
        (7, 2, 1, 123.5, True),
        (2**40, 0, 0, None, True),
    ]
    for old, new in zip(entries, back, strict=True):
        for field in (
            "exchange",
            "routing_key",
            "properties_bin",
            "body",
            "persistent",
            "priority",
            "expiration_ms",
            "headers",
        ):
            assert getattr(new.message, field) == getattr(old.message, field), field


def test_queue_without_spill_is_unchanged(clock: FakeClock) -> None:
    broker = make_broker(clock)
    queue: Queue = broker.vhosts["/"].declare_queue("q")
    publish(broker, [msg(i) for i in range(3 * BLOCK)])
    assert queue.ready.paged_count == 0
    assert get_all(broker, "q") == [body(i) for i in range(3 * BLOCK)]
