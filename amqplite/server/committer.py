"""Group commit: one fsync in a worker thread covers every record appended since the last one."""

from __future__ import annotations

import gc
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import trio

from amqplite.broker.broker import Broker
from amqplite.broker.durability import CommitMark, CommitWaiter, is_durable
from amqplite.config.models import Config
from amqplite.server.restore import recover_into
from amqplite.store.journal import SyncJob
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


STALL_SECONDS = 0.05
"""A round still running after this long stops holding back the domains it has not reached."""


@attrs.define(eq=False)
class _Round:
    """One worker-thread call: the jobs it has not taken yet, and when it started."""

    jobs: deque[SyncJob]
    started: float


class Committer:
    """Runs group-commit rounds and hands the confirms they cover back to the sessions.

    A round is one worker-thread call that writes and fsyncs one job per dirty commit domain,
    reporting each job as it finishes. One round runs at a time while rounds make progress;
    a round stuck past STALL_SECONDS (a slow disk, later a slow mirror) gives the jobs it has
    not reached to a new round, so one slow domain only delays its own confirms.
    """

    def __init__(
        self,
        store: Store,
        sessions: Callable[[], Iterable[CommitWaiter]],
        *,
        sync_hook: Callable[[SyncJob], None] | None = None,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.sync_hook = sync_hook  # tests only: runs in the worker thread after each job's fsync
        self._committed = trio.Event()  # set (and replaced) after every completed job
        self.listeners: list[
            Callable[[], None]
        ] = []  # told after the sessions (cluster forwarding)
        if store.fsync_histogram is None:
            store.fsync_histogram = LatencyHistogram()  # read by /metrics
        self._wake = trio.Event()
        self._done: deque[SyncJob] = deque()  # jobs the worker threads finished
        self._rounds: list[_Round] = []
        self._unrun: list[SyncJob] = []  # flushed, never run: close() runs them
        self._token: trio.lowlevel.TrioToken | None = None
        store.on_dirty = self._poke
        if store.pending:  # appended before there was anyone to wake (recovery, boot)
            self._wake.set()

    def _poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Commit whenever something was appended; never write or fsync on the event loop."""
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                deadlines = [r.started + STALL_SECONDS for r in self._rounds]
                with trio.move_on_at(min((d for d in deadlines if d > now), default=math.inf)):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._finish()
                if self.store.finish_step():  # the rest after the other tasks had their turn
                    self._wake.set()
                now = trio.current_time()
                if any(now < r.started + STALL_SECONDS for r in self._rounds):
                    continue  # the running round makes progress: the next one batches behind it
                jobs = self._take_unstarted()
                jobs.extend(self.store.flush())
                if jobs:
                    round_ = _Round(deque(jobs), now)
                    self._rounds.append(round_)
                    nursery.start_soon(self._run_round, round_)

    async def _run_round(self, round_: _Round) -> None:
        try:
            await trio.to_thread.run_sync(self._work, round_.jobs)
        finally:
            self._rounds.remove(round_)
            self._unrun.extend(round_.jobs)  # cancelled before its thread started (shutdown)
            round_.jobs.clear()
            self._poke()

    def _work(self, jobs: deque[SyncJob]) -> None:
        """In the worker thread: run the round's jobs, reporting each one as it finishes."""
        token = self._token
        assert token is not None
        while True:
            try:
                job = jobs.popleft()  # a newer round may take the rest (_take_unstarted)
            except IndexError:
                return
            job.run()
            if self.sync_hook is not None:
                self.sync_hook(job)
            self._done.append(job)
            if jobs:  # after the last one, the round's end wakes the loop (_run_round)
                token.run_sync_soon(self._poke)

    def _take_unstarted(self) -> list[SyncJob]:
        """The jobs stuck rounds have not reached yet."""
        taken: list[SyncJob] = []
        for round_ in self._rounds:
            while True:
                try:
                    taken.append(round_.jobs.pop())
                except IndexError:
                    break
        return taken

    def _finish(self) -> None:
        """Complete the finished jobs; release the confirms and replies they cover."""
        if not self._done:
            return
        while self._done:
            self.store.complete(self._done.popleft(), in_steps=True)
        for session in list(self.sessions()):  # those waiting for a commit
            session.on_commit()
        for listener in self.listeners:
            listener()
        self._committed.set()
        self._committed = trio.Event()

    def committed_elsewhere(self) -> None:
        """Marks moved without a local job (mirrors' acks, forwarded publishes confirmed)."""
        self._committed.set()
        self._committed = trio.Event()

    async def wait_durable(self, mark: CommitMark) -> None:
        """Return once every record of the mark is on disk (HTTP answers wait here)."""
        while not is_durable(mark):
            await self._committed.wait()

    async def settle(self) -> None:
        """Return once nothing appended waits for a commit."""
        while self.store.pending:
            await self._committed.wait()

    def close(self) -> None:
        """Final commit at shutdown (blocking, after the connections are gone)."""
        while self._done:
            self.store.complete(self._done.popleft())
        for job in self._unrun:  # their records left the buffers when they were flushed
            job.run()
            self.store.complete(job)
        self._unrun.clear()
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
