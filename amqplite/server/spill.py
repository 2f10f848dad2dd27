"""The transient pager's task: queue tails and bodies written and read in worker threads, never on the loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import trio

from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.server.store_link import MessagePaging
from amqplite.server.tail_pager import TailPager
from amqplite.store.bodies import close_descriptors
from amqplite.store.tail_spill import TailFiles
from amqplite.store.transient import SPILL_DIR, TransientPager

log = logging.getLogger("amqplite.server")

PAGING_RATIO: Final = (
    0.5  # of the memory watermark (RabbitMQ's vm_memory_high_watermark_paging_ratio)
)
INTERVAL: Final = 0.02  # seconds between rounds while over the threshold
IDLE_CHECK: Final = 1.0  # seconds between looks for retired descriptors while idle
BATCH_BYTES: Final = 4 * 2**20  # a batch this large is written without waiting for the interval


def attach_pager(config: Config, broker: Broker, mem_limit: int) -> TailPager:
    """Page transient messages out beyond min(store budget, the watermark x its paging ratio)."""
    ratio = config.alarms.memory_paging_ratio
    threshold = min(config.store.memory_budget_bytes, int(mem_limit * ratio))
    directory = Path(config.data_dir) / SPILL_DIR
    bodies = TransientPager(directory, threshold, MessagePaging())
    pager = TailPager(bodies, TailFiles(directory), broker.now)
    broker.spill = pager
    return pager


async def run_pager(pager: TailPager) -> None:
    """Page tails and bodies out and tails back in, forever; close retired descriptors off the loop."""
    bodies, files = pager.bodies, pager.files
    wakeup = trio.Event()

    def wake() -> None:
        wakeup.set()

    pager.wake = bodies.on_pending = wake
    try:
        while True:
            if not pager.wanted and bodies.pending_bytes < BATCH_BYTES:
                busy = pager.growing or pager.paged or bodies.pending
                idle = not busy and not bodies.has_retired and not files.has_retired
                with trio.move_on_after(IDLE_CHECK if idle else INTERVAL):  # idle: until woken
                    await wakeup.wait()
            wakeup = trio.Event()
            await _page_in(pager)  # consumers wait for these: first
            for job in pager.take_page_outs():
                await trio.to_thread.run_sync(job.run, files)
                pager.page_out_done(job)
                await _page_in(pager)
            batch = bodies.take()
            if batch is not None:
                await trio.to_thread.run_sync(batch.run)
                bodies.applied(batch)
            retired = bodies.take_retired() + files.take_retired()
            if retired:  # paged messages gone: their files' blocks freed off the loop
                await trio.to_thread.run_sync(close_descriptors, retired)
    finally:
        files.close()
        bodies.close()
        if bodies.paged_out:
            log.info("%d transient body bytes paged out to disk", bodies.paged_out)


async def _page_in(pager: TailPager) -> None:
    for job in pager.take_page_ins():
        await trio.to_thread.run_sync(job.run)
        pager.page_in_done(job)
