"""Flow control on memory streams and virtual time: pacing, backlogs, bounded output per connection."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from stream_client import StreamClient
from test_server_streams import serve_lockstep, serve_one

from amqplite.broker.queue import Queue
from amqplite.config.models import Config, Limits
from amqplite.protocol.frames import NEED_DATA, MethodFrame
from amqplite.protocol.methods import BasicAck, BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.server.connection import RECEIVE_SIZE
from amqplite.server.node import Node
from amqplite.server.pacing import STALL_AFTER, SWEEP_EVERY

BODY = 1000


def publishes(count: int, routing_key: str = "q", mandatory: bool = False) -> bytes:
    frame = encode_method(1, BasicPublish("", routing_key, mandatory, False)) + encode_content(
        1, 60, b"\x00\x00", b"x" * BODY, 131072
    )
    return frame * count


async def open_channel(client: StreamClient, queue: str = "q") -> None:
    await client.handshake(heartbeat=0)
    await client.send(1, spec.Channel.Open())
    await client.expect(spec.Channel.OpenOk)
    await client.send(1, build(spec.Queue.Declare, queue=queue))
    await client.expect(spec.Queue.DeclareOk)


def stop(node: Node, nursery: trio.Nursery) -> None:
    """End the test: drop every connection (a send to a peer not reading is shielded), then go."""
    for conn in list(node.connections):
        conn.drop()
    nursery.cancel_scope.cancel()


async def count_deliveries(client: StreamClient, total: int) -> None:
    """A consumer that reads as fast as it is written to, until `total` deliveries came."""
    seen = 0
    while seen < total:
        frame = await client.next_frame()
        assert frame is not None
        if isinstance(frame, MethodFrame) and isinstance(frame.method, spec.Basic.Deliver):
            seen += 1


async def watch_ready(queue: Queue, peak: list[int], done: trio.Event) -> None:
    """Record the queue's largest ready count, looked at on every turn of the event loop."""
    while not done.is_set():
        peak[0] = max(peak[0], queue.message_count)
        await trio.lowlevel.checkpoint()


@pytest.mark.trio
async def test_a_fast_publisher_waits_while_its_queue_is_behind_on_delivery() -> None:
    # the consumer's output bound lets a turn of its writer carry a few deliveries only, while
    # one read of the publisher's stream brings ~250: only if the broker delivers before it
    # reads more does the consumer keep up
    node = Node(Config(limits=Limits(max_outbound_bytes=4096, heartbeat=0)))
    count = 5000
    per_receive = RECEIVE_SIZE // BODY
    async with trio.open_nursery() as nursery:
        consumer = await serve_one(node, nursery)
        await open_channel(consumer)
        await consumer.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
        await consumer.expect(spec.Basic.ConsumeOk)
        queue = node.broker.vhosts["/"].queues["q"]
        publisher = await serve_one(node, nursery)
        await open_channel(publisher, "other")
        peak = [0]
        done = trio.Event()
        nursery.start_soon(watch_ready, queue, peak, done)
        nursery.start_soon(publisher.stream.send_all, publishes(count))
        await count_deliveries(consumer, count)
        done.set()
        stop(node, nursery)
    assert queue.stats.deliver_no_ack == count
    # the publisher reads again only once the queue is drained: at most one read's worth waits
    assert peak[0] <= per_receive + 10, peak[0]


async def consumer_of_q(consumer: StreamClient, prefetch: int) -> StreamClient:
    """The client consuming q with prefetch `prefetch` and manual acks."""
    await open_channel(consumer)
    await consumer.send(1, build(spec.Basic.Qos, prefetch_count=prefetch))
    await consumer.expect(spec.Basic.QosOk)
    await consumer.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c"))
    await consumer.expect(spec.Basic.ConsumeOk)
    return consumer


async def publish_confirmed(publisher: StreamClient, count: int, routing_key: str) -> None:
    """Publish `count` messages in confirm mode and wait until the broker confirmed them all."""
    await publisher.send(1, spec.Confirm.Select())
    await publisher.expect(spec.Confirm.SelectOk)
    await publisher.stream.send_all(publishes(count, routing_key))
    confirmed = 0
    while confirmed < count:
        ack = await publisher.expect(BasicAck)
        confirmed = ack.delivery_tag


@pytest.mark.trio
@pytest.mark.parametrize("prefetch", [None, 0, 4], ids=["no-consumer", "not-reading", "no-credit"])
async def test_a_backlog_is_taken_at_full_speed_when_nothing_can_be_delivered(
    autojump_clock: Any, prefetch: int | None
) -> None:
    # output bound 4096: a few deliveries of 1000 bytes fill it; the consumer reads nothing,
    # so its output stays full (prefetch 0), or fills as its credit runs out (prefetch 4)
    node = Node(Config(limits=Limits(max_outbound_bytes=4096, heartbeat=0)))
    count = 3000
    async with trio.open_nursery() as nursery:
        if prefetch is not None:
            await stuck_consumer(node, nursery, prefetch)
        publisher = await serve_one(node, nursery)
        await open_channel(publisher)
        start = trio.current_time()
        with trio.move_on_after(60):  # virtual seconds
            await publish_confirmed(publisher, count, "q")
        elapsed = trio.current_time() - start
        ready = node.broker.vhosts["/"].queues["q"].message_count
        stop(node, nursery)
    assert ready >= count - 10  # a few went to the consumer's buffer, the rest wait in the queue
    if prefetch == 0:
        # held once, until the server finds that consumer's output stalled; not per batch
        assert elapsed <= STALL_AFTER + 1.0, elapsed
    else:  # never held: no virtual time passed waiting for the queue to catch up
        assert elapsed < STALL_AFTER, elapsed


@pytest.mark.trio
async def test_a_client_that_publishes_unroutable_mandatory_messages_and_never_reads_is_not_read(
    autojump_clock: Any,
) -> None:
    bound = 64 * 1024
    node = Node(Config(limits=Limits(max_outbound_bytes=bound, heartbeat=0)))
    count = 20_000  # 20 MB of basic.return if the broker read them all
    async with trio.open_nursery() as nursery:
        client = await serve_lockstep(node, nursery)
        await client.handshake(heartbeat=0)
        await client.send(1, spec.Channel.Open())
        await client.expect(spec.Channel.OpenOk)
        (conn,) = node.connections
        nursery.start_soon(client.stream.send_all, publishes(count, "nowhere", mandatory=True))
        await trio.sleep(30)  # virtual: the broker has all the time it wants to read
        await trio.testing.wait_all_tasks_blocked()
        buffered = conn.buffered()
        stop(node, nursery)
    # one read's worth of returns beyond the bound at most, never the 20 MB it asked for
    assert 0 < buffered <= bound + RECEIVE_SIZE + 64 * 1024, buffered


async def ack_each(client: StreamClient, total: int, stop_acking_after: int | None = None) -> None:
    """A consumer that sends one basic.ack per delivery (those of a read together) until `total`
    deliveries came; past `stop_acking_after` deliveries it keeps reading but acks no more."""
    seen = 0
    while seen < total:
        acks = bytearray()
        while (frame := client.reader.next_frame()) is not NEED_DATA:
            assert frame is not None
            if isinstance(frame, MethodFrame) and isinstance(frame.method, spec.Basic.Deliver):
                seen += 1
                if stop_acking_after is None or seen <= stop_acking_after:
                    acks += encode_method(1, BasicAck(frame.method.delivery_tag, False))
        if acks:
            await client.stream.send_all(bytes(acks))
        if seen >= total:
            return
        data = await client.stream.receive_some(65536)
        assert data
        client.reader.receive_data(data)


async def stuck_consumer(node: Node, nursery: trio.Nursery, prefetch: int) -> StreamClient:
    """A consumer with prefetch `prefetch` that reads nothing once it consumes."""
    return await consumer_of_q(await serve_lockstep(node, nursery), prefetch)


async def acking_consumer(node: Node, nursery: trio.Nursery, prefetch: int) -> StreamClient:
    """A consumer of q with prefetch `prefetch` and manual acks (the caller reads and acks)."""
    return await consumer_of_q(await serve_one(node, nursery), prefetch)


async def watch_ready_steady(
    queue: Queue, peaks: list[int], done: trio.Event, steady_after: int
) -> None:
    """Record the queue's largest ready count, overall and once `steady_after` were acked."""
    while not done.is_set():
        peaks[0] = max(peaks[0], queue.message_count)
        if queue.stats.ack >= steady_after:
            peaks[1] = max(peaks[1], queue.message_count)
        await trio.lowlevel.checkpoint()


@pytest.mark.trio
async def test_a_fast_publisher_is_held_to_a_consumer_that_acks_each_message() -> None:
    # prefetch 100 and one ack per message: the consumer is out of credit almost all the time
    # (its acks are on their way), yet its credit returns, so the queue counts as behind and
    # the publisher reads again only once the queue caught up, as RabbitMQ's credit flow holds it
    node = Node(Config(limits=Limits(heartbeat=0)))
    count = 10_000
    per_receive = RECEIVE_SIZE // BODY
    async with trio.open_nursery() as nursery:
        consumer = await acking_consumer(node, nursery, 100)
        queue = node.broker.vhosts["/"].queues["q"]
        publisher = await serve_one(node, nursery)
        await open_channel(publisher, "other")
        peaks = [0, 0]
        done = trio.Event()
        nursery.start_soon(watch_ready_steady, queue, peaks, done, count // 2)
        nursery.start_soon(publisher.stream.send_all, publishes(count))
        await ack_each(consumer, count)
        done.set()
        stop(node, nursery)
    assert queue.stats.deliver == count
    # before its first ack arrives, a consumer holds nobody (one that never acks must not): the
    # few reads until then wait in the queue; once they drained, one read's worth at most
    assert peaks[0] <= 4 * per_receive, peaks
    assert peaks[1] <= per_receive + 10, peaks


@pytest.mark.trio
async def test_a_queue_whose_consumer_stops_acking_takes_the_backlog_at_full_speed(
    autojump_clock: Any,
) -> None:
    # the consumer acks its first 150 deliveries, then reads on without acking: its credit no
    # longer returns, so once a sweep finds its acks stalled the publisher is not held again
    node = Node(Config(limits=Limits(heartbeat=0)))
    node.pacer.idle_after = None  # the sweep alone lets it go (not the idle event loop)
    count = 3000
    async with trio.open_nursery() as nursery:
        consumer = await acking_consumer(node, nursery, 100)
        nursery.start_soon(ack_each, consumer, 250, 150)
        publisher = await serve_one(node, nursery)
        await open_channel(publisher)
        start = trio.current_time()
        with trio.move_on_after(60):  # virtual seconds
            await publish_confirmed(publisher, count, "q")
        elapsed = trio.current_time() - start
        queue = node.broker.vhosts["/"].queues["q"]
        unacked, ready = queue.unacked_count, queue.message_count
        stop(node, nursery)
    assert unacked == 100  # out of credit, for good
    assert ready == count - 250
    # held at most once, until a sweep finds the channel's acks stalled; not per read
    assert elapsed <= STALL_AFTER + 1.0, elapsed


@pytest.mark.trio
async def test_a_client_consuming_what_it_publishes_is_not_held_for_its_own_acks(
    autojump_clock: Any,
) -> None:
    # one connection publishes to q and acks q's deliveries: while its reader waits, its acks
    # are not read, so its own consumer must not hold it (else it waits for a sweep each time)
    node = Node(Config(limits=Limits(heartbeat=0)))
    node.pacer.idle_after = None  # not let go by the idle event loop either
    count = 2000
    async with trio.open_nursery() as nursery:
        client = await acking_consumer(node, nursery, 10)
        lock = trio.Lock()

        async def publish_in_chunks() -> None:
            for _ in range(count // 500):
                async with lock:
                    await client.stream.send_all(publishes(500))

        start = trio.current_time()
        nursery.start_soon(publish_in_chunks)
        seen = 0
        while seen < count:
            acks = bytearray()
            while (frame := client.reader.next_frame()) is not NEED_DATA:
                if isinstance(frame, MethodFrame) and isinstance(frame.method, spec.Basic.Deliver):
                    seen += 1
                    acks += encode_method(1, BasicAck(frame.method.delivery_tag, False))
            if acks:
                async with lock:
                    await client.stream.send_all(bytes(acks))
            if seen < count:
                client.reader.receive_data(await client.stream.receive_some(65536))
        elapsed = trio.current_time() - start
        stop(node, nursery)
    assert elapsed < SWEEP_EVERY, elapsed  # never held until a sweep let it go


async def ack_slowly(client: StreamClient, interval: float) -> None:
    """A consumer that acks one delivery every `interval` seconds, for ever (a slow worker)."""
    while True:
        frame = await client.next_frame()
        assert frame is not None
        if isinstance(frame, MethodFrame) and isinstance(frame.method, spec.Basic.Deliver):
            await trio.sleep(interval)
            await client.send(1, BasicAck(frame.method.delivery_tag, False))


@pytest.mark.trio
async def test_a_consumer_that_acks_slowly_does_not_hold_a_fast_publisher(
    autojump_clock: Any,
) -> None:
    # a worker that takes 50 ms a message acks all the time, yet its credit does not come back
    # within IDLE_AFTER while the broker has nothing else to do: the backlog grows at full speed
    node = Node(Config(limits=Limits(heartbeat=0)))
    count = 3000
    async with trio.open_nursery() as nursery:
        consumer = await acking_consumer(node, nursery, 10)
        nursery.start_soon(ack_slowly, consumer, 0.05)
        publisher = await serve_one(node, nursery)
        await open_channel(publisher)
        await publisher.stream.send_all(publishes(30))
        await trio.sleep(0.3)  # virtual: the worker is busy, and has acked a few
        queue = node.broker.vhosts["/"].queues["q"]
        assert queue.stats.ack >= 3
        start = trio.current_time()
        with trio.move_on_after(60):  # virtual seconds: the worker would need 150 for them all
            await publish_confirmed(publisher, count, "q")
        elapsed = trio.current_time() - start
        ready = queue.message_count
        stop(node, nursery)
    assert ready >= count - 10, ready
    assert elapsed < 1.0, elapsed  # the worker acked a handful meanwhile
