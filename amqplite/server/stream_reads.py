"""Reads stream queues' segments for their consumers, and compacts them, in worker threads."""

from __future__ import annotations

import logging
from typing import Any

import trio

from amqplite.broker.broker import Broker
from amqplite.broker.stream_queue import StreamQueue

log = logging.getLogger("amqplite.server")


async def _compact(queue: StreamQueue, plan: Any) -> None:
    """One compaction in a worker thread (appends and reads go on meanwhile)."""
    try:
        await trio.to_thread.run_sync(plan.run)
    except OSError:
        log.exception("compacting stream queue %r failed", queue.name)
        plan.sizes.clear()
    queue.compaction_done(plan)


async def run_stream_reads(broker: Broker) -> None:
    """Serve the cursors that want a read: each batch is read in a thread, delivered on the loop."""
    reads = broker.stream_reads
    wake = trio.Event()

    def wanted() -> None:
        wake.set()

    reads.on_wanted = wanted
    try:
        async with trio.open_nursery() as compactions:
            while True:
                await wake.wait()
                wake = trio.Event()
                for queue in reads.take_compactions():
                    plan = queue.compaction_plan()
                    if plan is not None:
                        compactions.start_soon(_compact, queue, plan)
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
