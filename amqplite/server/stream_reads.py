"""Reads stream queues' segments for their consumers in a worker thread, off the event loop."""

from __future__ import annotations

import logging

import trio

from amqplite.broker.broker import Broker
from amqplite.broker.stream_queue import StreamQueue

log = logging.getLogger("amqplite.server")


async def run_stream_reads(broker: Broker) -> None:
    """Serve the cursors that want a read: each batch is read in a thread, delivered on the loop."""
    reads = broker.stream_reads
    wake = trio.Event()

    def wanted() -> None:
        wake.set()

    reads.on_wanted = wanted
    try:
        while True:
            await wake.wait()
            wake = trio.Event()
            for cursor in reads.take():
                queue = cursor.consumer.queue
                if not isinstance(queue, StreamQueue):
                    continue
                plan = queue.read_plan(cursor)
                if plan is None:
                    continue
                try:
                    start, result = await trio.to_thread.run_sync(plan.run)
                except OSError:
                    log.exception("reading stream queue %r failed", queue.name)
                    cursor.reading = False
                    continue
                queue.deliver_batch(plan, start, result)
    finally:
        reads.on_wanted = lambda: None
