"""Stream queues end to end with aio-pika: replay by offset spec and timestamp, two consumers,
a named consumer resuming after a reconnect and after kill -9, filtering."""

from __future__ import annotations

import asyncio
import datetime
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
import pytest
from broker_process import BrokerProcess, start_broker

TIMEOUT = 30.0
STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def own(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker on a fresh data directory (restarted by some tests)."""
    process = start_broker(tmp_path / "data")
    yield process
    process.stop(signal.SIGKILL)


def _next_second() -> datetime.datetime:
    """The next whole second, once the wall clock has passed it (a polled deadline)."""
    stamp = math.ceil(time.time())
    while time.time() < stamp:
        time.sleep(0.02)
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC)


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body with a bound on its total runtime."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), TIMEOUT)

    asyncio.run(bounded())


async def _open(url: str, name: str) -> tuple[Any, aio_pika.abc.AbstractQueue]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=10)
    queue = await channel.declare_queue(name, durable=True, arguments=STREAM)
    return connection, queue


async def _publish(
    queue: aio_pika.abc.AbstractQueue, start: int, count: int, **headers: Any
) -> None:
    exchange = queue.channel.default_exchange  # type: ignore[attr-defined]
    for i in range(start, start + count):
        message = aio_pika.Message(f"m{i}".encode(), headers=dict(headers) or None)
        await exchange.publish(message, routing_key=queue.name)


async def _take(
    queue: aio_pika.abc.AbstractQueue, count: int, arguments: dict[str, Any], tag: str | None = None
) -> list[int]:
    """Offsets of the first `count` deliveries (acked)."""
    offsets: list[int] = []
    async with queue.iterator(arguments=arguments, consumer_tag=tag) as messages:
        async for message in messages:
            offsets.append(int(message.headers["x-stream-offset"]))  # type: ignore[arg-type]
            await message.ack()
            if len(offsets) >= count:
                break
    return offsets


def test_replay_offsets_timestamp_and_two_consumers(own: BrokerProcess) -> None:
    async def main() -> None:
        connection, queue = await _open(own.url, "aio-s")
        await _publish(queue, 0, 20)
        assert await _take(queue, 20, {"x-stream-offset": "first"}) == list(range(20))
        assert await _take(queue, 3, {"x-stream-offset": 15}) == [15, 16, 17]
        assert await _take(queue, 1, {"x-stream-offset": "last"}) == [19]
        stamp = _next_second()  # AMQP timestamps count whole seconds
        await _publish(queue, 20, 2)
        assert await _take(queue, 2, {"x-stream-offset": stamp}) == [20, 21]
        other_connection, other = await _open(own.url, "aio-s")
        first, late = await asyncio.gather(
            _take(queue, 5, {"x-stream-offset": "first"}),
            _take(other, 5, {"x-stream-offset": 10}),
        )
        assert first == [0, 1, 2, 3, 4]
        assert late == [10, 11, 12, 13, 14]
        await other_connection.close()
        await connection.close()

    run(main)


def test_named_consumer_resumes_after_reconnect_and_kill(own: BrokerProcess) -> None:
    named = {"x-stream-consumer-name": "aio-reader", "x-stream-offset": "first"}

    async def first_round() -> None:
        connection, queue = await _open(own.url, "aio-n")
        await _publish(queue, 0, 30)
        assert await _take(queue, 10, named) == list(range(10))
        await connection.close()
        connection, queue = await _open(own.url, "aio-n")
        assert await _take(queue, 5, named) == [10, 11, 12, 13, 14]
        await _publish(queue, 100, 1)  # confirmed after the acks' offset record: it is on disk
        await connection.close()

    run(first_round)
    own.stop(signal.SIGKILL)
    assert own.data_dir is not None
    restarted = start_broker(own.data_dir, port=own.port)
    try:

        async def second_round() -> None:
            connection, queue = await _open(restarted.url, "aio-n")
            assert await _take(queue, 2, named) == [15, 16]
            await connection.close()

        run(second_round)
    finally:
        restarted.stop(signal.SIGKILL)


def test_filter_delivers_only_matching_values(own: BrokerProcess) -> None:
    async def main() -> None:
        connection, queue = await _open(own.url, "aio-f")
        await _publish(queue, 0, 10, **{"x-stream-filter-value": "eu"})
        await _publish(queue, 10, 3, **{"x-stream-filter-value": "us"})
        await _publish(queue, 13, 2, **{"x-stream-filter-value": "eu"})
        wanted = {"x-stream-offset": "first", "x-stream-filter": "us"}
        assert await _take(queue, 3, wanted) == [10, 11, 12]
        await connection.close()

    run(main)
