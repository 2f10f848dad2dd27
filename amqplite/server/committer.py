"""Group commit: one fsync in a worker thread covers every record appended since the last one."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import trio

from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.server.restore import recover_into
from amqplite.session.connection import Session
from amqplite.store.latency import LatencyHistogram
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
    if report.quarantined:
        log.error(
            "%d queue journal(s) could not be recovered and were kept in %s (amqplite ctl list "
            "quarantine)",
            report.quarantined,
            Path(config.data_dir) / "quarantine",
        )
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

    def __init__(self, store: Store, sessions: Callable[[], Iterable[Session]]) -> None:
        self.store = store
        self.sessions = sessions
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
            await trio.to_thread.run_sync(job.run)
            store.complete(job)
            for session in list(self.sessions()):
                session.on_commit()

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
