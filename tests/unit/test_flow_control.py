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
from amqplite.protocol.frames import MethodFrame
from amqplite.protocol.methods import BasicAck, BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.server.connection import RECEIVE_SIZE
from amqplite.server.node import Node
from amqplite.server.pacing import STALL_AFTER

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


async def stuck_consumer(node: Node, nursery: trio.Nursery, prefetch: int) -> StreamClient:
    """A consumer with prefetch `prefetch` that reads nothing once it consumes."""
    consumer = await serve_lockstep(node, nursery)
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
