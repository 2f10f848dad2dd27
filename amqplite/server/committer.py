"""Group commit: one fsync in a worker thread covers every record appended since the last one."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from amqplite.broker.broker import Broker
from amqplite.broker.restore import recover_into
from amqplite.config.models import Config
from amqplite.management.metrics import LatencyHistogram
from amqplite.session.connection import Session
from amqplite.store.journal import SyncJob
from amqplite.store.store import Store

log = logging.getLogger("amqplite.store")


def open_store(config: Config, broker: Broker) -> Store:
    """Open the data directory, recover its durable state into the broker and attach the store."""
    started = time.monotonic()
    store = Store(Path(config.data_dir), config.store)
    gc.disable()  # millions of new objects: generational collections would rescan them all
    try:
        report = recover_into(broker, store)
    finally:
        gc.enable()
        gc.freeze()  # recovered messages are long-lived: keep them out of later collections
    log.info(
        "recovered %d exchanges, %d queues, %d bindings, %d messages from %s in %.2f s",
        report.exchanges,
        report.queues,
        report.bindings,
        report.messages,
        config.data_dir,
        time.monotonic() - started,
    )
    return store


class Committer:
    """Runs group commits and hands the confirms they cover back to the sessions."""

    def __init__(
        self,
        store: Store,
        sessions: Callable[[], Iterable[Session]],
        *,
        sync_hook: Callable[[SyncJob], None] | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.sync_hook = sync_hook  # tests only: runs in the worker thread after each job's fsync
        self._committed = trio.Event()  # set (and replaced) after every commit
        if store.fsync_histogram is None:
            store.fsync_histogram = LatencyHistogram()  # read by /metrics
        self._wake = trio.Event()
        store.on_dirty = self._wake.set
        if store.pending:  # appended before there was anyone to wake (recovery, boot)
            self._wake.set()

    async def run(self) -> None:
        """Commit whenever something was appended; never fsync on the event loop."""
        store = self.store
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            store.on_dirty = self._wake.set
            job = store.flush()
            await trio.to_thread.run_sync(self._sync, job)
            store.complete(job)
            for session in list(self.sessions()):
                session.on_commit()
            self._committed.set()
            self._committed = trio.Event()

    def _sync(self, job: SyncJob) -> None:
        """The worker thread's part: write barriers and fsyncs, then the test hook."""
        job.run()
        if self.sync_hook is not None:
            self.sync_hook(job)

    async def wait_durable(self, ticket: int) -> None:
        """Return once every record up to ticket is on disk (HTTP publishes wait here)."""
        while self.store.committed_ticket() < ticket:
            await self._committed.wait()

    def close(self) -> None:
        """Final commit at shutdown (blocking, after the connections are gone)."""
        self.store.close()
        stats = self.store.statistics()
        log.info(
            "store closed: %d group commits, %d fsync calls, %d bytes written, %d snapshots, "
            "%d body bytes paged out of memory",
            stats.commits,
            stats.fsync_calls,
            stats.bytes_written,
            stats.snapshots,
            stats.paged_out_bytes,
        )
