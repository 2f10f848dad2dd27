"""Byte-rate quotas: the token bucket on a clock we move, and connections over memory streams on
trio's virtual time (no sockets): a publisher and a consumer held to their rate, never closed."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from stream_client import StreamClient
from test_server_streams import serve_one

from amqplite.broker.broker import Broker
from amqplite.config.definitions import DELIVER_RATE, PUBLISH_RATE
from amqplite.config.models import Config
from amqplite.protocol.frames import BodyFrame
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import encode_method, spec
from amqplite.protocol.writers import encode_content
from amqplite.server.node import Node
from amqplite.server.quota import QuotaBook, TokenBucket

RATE = 100_000  # bytes/s
BODY = 50_000
COUNT = 10  # 500 kB: five seconds at RATE


def test_bucket_debt_is_paid_by_waiting() -> None:
    bucket = TokenBucket(RATE, now=0.0)
    assert bucket.burst == RATE / 4
    bucket.take(125_000, now=0.0)  # 25 kB of burst, then 100 kB of debt
    assert bucket.delay(0.0) == pytest.approx(1.0)
    assert bucket.delay(0.5) == pytest.approx(0.5)
    assert bucket.delay(1.0) == 0.0
    assert bucket.delay(60.0) == 0.0
    assert bucket.tokens == bucket.burst  # a quiet minute saves no more than the burst


def test_bucket_rate_change_keeps_the_debt() -> None:
    bucket = TokenBucket(RATE, now=0.0)
    bucket.take(RATE // 4 + 50_000, now=0.0)
    bucket.set_rate(10_000, now=0.0)
    assert bucket.delay(0.0) == pytest.approx(5.0)
    assert bucket.delay(5.0) == 0.0


def test_a_small_rate_still_admits_a_minimum_chunk() -> None:
    bucket = TokenBucket(10, now=0.0)
    assert bucket.burst == 4096
    bucket.take(4096 + 10, now=0.0)
    assert bucket.delay(0.0) == pytest.approx(1.0)


def test_book_reads_rates_live_from_user_and_vhost_limits() -> None:
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("alice", "pw")
    now = [0.0]
    book = QuotaBook(broker, lambda: now[0])
    assert book.buckets_for("alice", "/", PUBLISH_RATE) == []
    broker.set_limit("user", "alice", PUBLISH_RATE, RATE)
    broker.set_limit("vhost", "/", PUBLISH_RATE, 2 * RATE)
    user_bucket, vhost_bucket = book.buckets_for("alice", "/", PUBLISH_RATE)
    assert (user_bucket.rate, vhost_bucket.rate) == (RATE, 2 * RATE)
    assert book.buckets_for("alice", "/", DELIVER_RATE) == []
    broker.set_limit("user", "alice", PUBLISH_RATE, -1)  # negative: no limit, as RabbitMQ
    assert book.buckets_for("alice", "/", PUBLISH_RATE) == [vhost_bucket]
    broker.clear_limit("vhost", "/", PUBLISH_RATE)
    assert book.buckets_for("alice", "/", PUBLISH_RATE) == []
    assert not book.buckets


async def _open_channel(client: StreamClient) -> None:
    await client.handshake(heartbeat=0)
    await client.send(1, spec.Channel.Open())
    await client.expect(spec.Channel.OpenOk)
    await client.send(1, build(spec.Queue.Declare, queue="q"))
    await client.expect(spec.Queue.DeclareOk)


async def _publish_all(client: StreamClient) -> None:
    frames = b""
    for _ in range(COUNT):
        method = build(spec.Basic.Publish, exchange="", routing_key="q")
        frames += encode_method(1, method)
        frames += encode_content(1, 60, b"\x00\x00", b"x" * BODY, 131072)
    await client.stream.send_all(frames)  # a memory stream takes it all: the server reads at will


async def _wait_for(queue: Any, count: int) -> None:
    """Poll (on virtual time) until the queue holds `count` messages; a minute at most."""
    for _ in range(6000):
        if queue.message_count >= count:
            return
        await trio.sleep(0.01)
    raise AssertionError(f"{queue.message_count} of {count} messages after a minute")


async def _time_to_publish(node: Node) -> tuple[float, Any]:
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await _open_channel(client)
        queue = node.broker.vhosts["/"].queues["q"]
        start = trio.current_time()
        await _publish_all(client)
        await _wait_for(queue, COUNT)
        elapsed = trio.current_time() - start
        (conn,) = node.connections
        snapshot = conn.quota.snapshot()
        nursery.cancel_scope.cancel()
    return elapsed, snapshot


@pytest.mark.trio
async def test_a_publisher_is_read_at_its_quota(autojump_clock: Any) -> None:
    node = Node(Config())
    node.broker.set_limit("user", "guest", PUBLISH_RATE, RATE)
    elapsed, snapshot = await _time_to_publish(node)
    total = COUNT * BODY
    assert (total - RATE / 4) / RATE <= elapsed <= total / RATE + 1.0  # 4.75 .. 6 s
    assert snapshot["quota"][PUBLISH_RATE] == RATE
    assert snapshot["quota_wait"] >= 4.0


@pytest.mark.trio
async def test_a_vhost_quota_holds_its_users(autojump_clock: Any) -> None:
    node = Node(Config())
    node.broker.set_limit("vhost", "/", PUBLISH_RATE, RATE)
    elapsed, _ = await _time_to_publish(node)
    assert elapsed >= (COUNT * BODY - RATE / 4) / RATE


@pytest.mark.trio
async def test_without_a_quota_the_same_publishes_take_no_time(autojump_clock: Any) -> None:
    node = Node(Config())
    elapsed, snapshot = await _time_to_publish(node)
    assert elapsed < 0.5
    assert snapshot["quota_wait"] == 0
    assert snapshot["quota"] == {PUBLISH_RATE: None, DELIVER_RATE: None}


@pytest.mark.trio
async def test_a_consumer_is_written_to_at_its_quota_and_not_closed(autojump_clock: Any) -> None:
    node = Node(Config())
    node.broker.set_limit("user", "guest", DELIVER_RATE, RATE)
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await _open_channel(client)
        await _publish_all(client)
        queue = node.broker.vhosts["/"].queues["q"]
        await _wait_for(queue, COUNT)
        start = trio.current_time()
        await client.send(1, build(spec.Basic.Consume, queue="q", no_ack=True))
        received = 0
        while received < COUNT * BODY:
            frame = await client.next_frame()
            assert frame is not None  # never closed
            if isinstance(frame, BodyFrame):
                received += len(frame.payload)
        elapsed = trio.current_time() - start
        (conn,) = node.connections
        assert conn.quota.waited >= 4.0
        nursery.cancel_scope.cancel()
    assert (COUNT * BODY - RATE / 4) / RATE <= elapsed <= COUNT * BODY / RATE + 1.0
