"""The transient pager's task: bodies written to spill files in a worker thread, never on the loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import trio

from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.server.store_link import MessagePaging
from amqplite.store.bodies import close_descriptors
from amqplite.store.transient import SPILL_DIR, TransientPager

log = logging.getLogger("amqplite.server")

PAGING_RATIO: Final = (
    0.5  # of the memory watermark (RabbitMQ's vm_memory_high_watermark_paging_ratio)
)
INTERVAL: Final = 0.02  # seconds between batches while bodies are pending
IDLE_CHECK: Final = 1.0  # seconds between looks for retired descriptors while idle
BATCH_BYTES: Final = 4 * 2**20  # a batch this large is written without waiting for the interval


def attach_pager(config: Config, broker: Broker, mem_limit: int) -> TransientPager:
    """Page transient bodies out beyond min(store budget, the watermark x its paging ratio)."""
    ratio = config.alarms.memory_paging_ratio
    threshold = min(config.store.memory_budget_bytes, int(mem_limit * ratio))
    pager = TransientPager(Path(config.data_dir) / SPILL_DIR, threshold, MessagePaging())
    broker.spill = pager
    return pager


async def run_pager(pager: TransientPager) -> None:
    """Write pending bodies in batches, forever; close retired spill descriptors off the loop."""
    try:
        while True:
            if not pager.pending and not pager.has_retired:  # idle: sleep until bodies come
                woken = trio.Event()
                pager.on_pending = woken.set
                with trio.move_on_after(IDLE_CHECK):  # retired descriptors need no hurry
                    await woken.wait()
            await trio.sleep(INTERVAL if pager.pending_bytes < BATCH_BYTES else 0)
            batch = pager.take()
            if batch is not None:
                await trio.to_thread.run_sync(batch.run)
                pager.applied(batch)
            elif pager.has_retired:  # paged bodies gone: their files' blocks freed off the loop
                await trio.to_thread.run_sync(close_descriptors, pager.take_retired())
    finally:
        pager.close()
        if pager.paged_out:
            log.info("%d transient body bytes paged out to disk", pager.paged_out)
