"""The leader side of a mirrored queue: stream its journal to mirrors, hold confirms for their acks.

The queue journal's tap hands every record to `QueueLeader.tapped`; each mirror gets a link that
starts with a snapshot of the live messages, then the records appended since. The queue's commit
domain asks `gate` how far confirms may go: below the ticket of the first record some in-sync
mirror has not acked. A mirror that leaves a record unacked longer than the in-sync timeout is removed from the
in-sync set in etcd (a txn fenced by this term) before confirms go on without it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio

from amqplite.broker.queue import Queue
from amqplite.cluster.election import InSync, Leadership, QueueElection
from amqplite.cluster.etcd_codec import EtcdError
from amqplite.cluster.link import (
    Ack,
    Append,
    LinkError,
    QueueRef,
    Refuse,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
)
from amqplite.cluster.link_stream import LinkStream, connect
from amqplite.cluster.replica import ReplicaSet
from amqplite.store.queue_store import QueueStore, encode_entry

log = logging.getLogger("amqplite.cluster")

CHUNK_BYTES = 1 << 20
LINK_ERRORS = (
    OSError,
    LinkError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def _nothing() -> None:
    """Nobody to wake."""


def _always() -> bool:
    """No lease to check."""
    return True


class QueueLeader:
    """This node leads one mirrored queue for one term."""

    def __init__(
        self,
        ref: QueueRef,
        queue: Queue,
        journal: QueueStore,
        term: Leadership,
        election: QueueElection,
        members: tuple[str, ...],
        in_sync: InSync,
    ) -> None:
        self.ref = ref
        self.queue = queue
        self.journal = journal
        self.term = term
        self.election = election
        self.seen = in_sync
        self.replicas = ReplicaSet(term.node, members, in_sync.members)
        self.wake: Callable[[], None] = _nothing  # the confirms it held may go now
        # the node lease holds by this node's clock (with a margin)
        self.lease_valid: Callable[[], bool] = _always
        self.records: list[
            bytes
        ] = []  # records from offset `base` on (what a mirror may still need)
        self.base = 0
        self.tickets: deque[tuple[int, int]] = deque()  # (end offset, domain ticket of the record)
        self.fenced_at: int | None = (
            None  # the domain ticket after which this term confirms nothing
        )
        self.wakeups: dict[str, trio.Event] = {}  # one per mirror feed: records were appended
        self.links: dict[str, LinkStream] = {}
        self._sync_wait: tuple[int, float] | None = None  # (ticket, since) of a sync in flight
        self.lease_held = False  # the gate held confirms for want of a valid lease
        self.domain = journal.domain
        if self.domain.written:  # records from before this term: the first snapshot covers them
            _, self.base = self.replicas.appended(1, trio.current_time())
            self.replicas.local_synced(self.base)
            self.tickets.append((1, self.domain.written))
        journal.writer.tap = self.tapped
        self.domain.gate = self.gate

    def tapped(self, record: bytes) -> None:
        """A record entered the queue journal: it goes to the mirrors, confirms wait for them."""
        self.records.append(record)
        _, end = self.replicas.appended(1, trio.current_time())
        self.replicas.local_synced(end)  # the leader's own fsync is the store's ticket
        self.tickets.append((end, self.domain.written + 1))  # the ticket it is appended under
        for event in self.wakeups.values():
            event.set()

    def replication(self) -> tuple[tuple[str, ...], dict[str, int]] | None:
        """(in-sync members, each member's lag in records) while this term lasts, for management."""
        if self.fenced_at is not None:
            return None
        return tuple(sorted(self.replicas.in_sync | {self.term.node})), self.replicas.lag()

    def gate(self, committed: int) -> int:
        """The domain ticket up to which confirms may go, given the one on the local disk."""
        if self.fenced_at is not None:
            return min(committed, self.fenced_at)
        if not self.lease_valid():  # etcd may have given the queue to another node: hold
            self.lease_held = True  # watch_in_sync lets them go once the lease is renewed
            return self.domain.committed
        point = self.replicas.committed
        tickets = self.tickets
        while tickets and tickets[0][0] <= point:
            tickets.popleft()
        return min(committed, tickets[0][1] - 1) if tickets else committed

    def stop(self) -> None:
        """This term is over: the journal stops feeding mirrors; nothing more is confirmed."""
        self.journal.writer.tap = None
        for event in self.wakeups.values():
            event.set()
        if self.fenced_at is None:
            self.fenced_at = self.domain.written if not self.tickets else self.tickets[0][1] - 1
        self.domain.regate()

    def _trim(self) -> None:
        """Forget records every mirror has (a mirror that reconnects starts from a snapshot)."""
        lowest = min(self.replicas.acks.values(), default=self.replicas.end)
        drop = lowest - self.base
        if drop > 4096:
            del self.records[:drop]
            self.base = lowest

    def snapshot(self) -> tuple[int, list[list[bytes]]]:
        """The live messages as enqueue records in chunks, and the log offset they stand for."""
        chunks: list[list[bytes]] = [[]]
        size = 0
        for entry in list(self.journal.live.values()):
            record = encode_entry(entry.seq, entry.delivery_count, entry.message)
            if size + len(record) > CHUNK_BYTES and chunks[-1]:
                chunks.append([])
                size = 0
            chunks[-1].append(record)
            size += len(record)
        return self.replicas.end, chunks

    async def feed(self, mirror: str, address: Callable[[], str | None]) -> None:
        """Keep one mirror fed: connect, send a snapshot, then every record appended after it."""
        epoch = self.term.epoch
        while self.fenced_at is None:
            target = address()
            if target is None:
                await trio.sleep(0.2)
                continue
            try:
                link, _ = await connect(target, self.term.node)
            except LINK_ERRORS as exc:
                log.debug("link to %s: %s", mirror, exc)
                await trio.sleep(0.2)
                continue
            self.links[mirror] = link
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._read_acks, mirror, link, nursery.cancel_scope)
                    offset, chunks = self.snapshot()
                    await link.send(SnapshotBegin(self.ref, epoch, offset))
                    for chunk in chunks:
                        await link.send(SnapshotChunk(self.ref, epoch, tuple(chunk)))
                    await link.send(SnapshotEnd(self.ref, epoch, offset))
                    sent = offset
                    while self.fenced_at is None:
                        if sent == self.replicas.end:
                            event = self.wakeups[mirror] = trio.Event()
                            await event.wait()
                            continue
                        end = self.replicas.end
                        batch = tuple(self.records[sent - self.base : end - self.base])
                        await link.send(Append(self.ref, epoch, sent, batch))
                        sent = end
                        self._trim()
                    nursery.cancel_scope.cancel()
            except* LINK_ERRORS as group:  # (a nursery raises its errors as a group)
                log.info("link to mirror %s of %s lost: %s", mirror, self.ref.name, group)
            finally:
                self.links.pop(mirror, None)
                with trio.CancelScope(shield=True):
                    await link.aclose()
            await trio.sleep(0.2)

    async def _read_acks(self, mirror: str, link: LinkStream, scope: trio.CancelScope) -> None:
        while batch := await link.receive():
            for message in batch:
                if isinstance(message, Ack) and message.epoch == self.term.epoch:
                    self.replicas.acked(mirror, message.offset)
                    self.domain.regate()
                    self.wake()
                elif isinstance(message, Refuse):
                    log.warning("mirror %s refused %s: %s", mirror, self.ref.name, message.reason)
                    if message.epoch > self.term.epoch:
                        self.stop()
                        self.wake()
        scope.cancel()

    def disk_stalled(self, now: float, bound: float) -> bool:
        """True once a sync of this queue's journal has been running for longer than bound."""
        domain = self.domain
        waiting = self._sync_wait
        if waiting is not None and domain.synced >= waiting[0]:
            waiting = self._sync_wait = None
        if waiting is None:
            if domain.synced < domain.flushed:
                self._sync_wait = (domain.flushed, now)
            return False
        return now - waiting[1] > bound

    async def resign_stalled(self) -> None:
        """Our own disk hangs: leave the in-sync set and the leadership to a member that can sync."""
        log.error("the journal sync of %s hangs: giving up its leadership", self.ref.name)
        self.stop()
        self.wake()
        others = tuple(m for m in self.seen.members if m != self.term.node)
        if others and await self.election.set_in_sync(self.term, others, self.seen):
            await self.election.resign(self.term)

    async def watch_in_sync(self, bound: float) -> None:
        """Drop overdue mirrors from the in-sync set in etcd, add caught-up ones back (fenced txns)."""
        while self.fenced_at is None:
            await trio.sleep(min(0.05, bound / 4))
            now = trio.current_time()
            if self.lease_held and self.lease_valid():  # renewed: nothing else would regate
                self.lease_held = False
                self.domain.regate()
                self.wake()
            try:
                if self.disk_stalled(now, bound):
                    await self.resign_stalled()
                    return
                await self._check_in_sync(now, bound)
            except EtcdError as exc:  # etcd away: overdue mirrors stay in (their confirms wait)
                log.warning("in-sync check of %s: %s", self.ref.name, exc)

    async def _check_in_sync(self, now: float, bound: float) -> None:
        """One look at the members: drop the overdue, take back the caught up."""
        late = self.replicas.overdue(now, bound)
        back = [m for m in self.replicas.catching_up() if m in self.links]
        if not late and not back:
            return
        members = sorted((self.replicas.in_sync - set(late)) | set(back) | {self.term.node})
        if await self.election.set_in_sync(self.term, tuple(members), self.seen):
            for mirror in late:
                self.replicas.dropped(mirror)
                log.warning("mirror %s of %s left the in-sync set", mirror, self.ref.name)
            for mirror in back:
                self.replicas.rejoined(mirror)
                log.info("mirror %s of %s is in sync again", mirror, self.ref.name)
            self.seen = await self.election.in_sync()
            self.domain.regate()
            self.wake()
        elif not await self.election.still_leading(self.term):
            log.warning("lost the leadership of %s", self.ref.name)
            self.stop()
            self.wake()
        else:
            self.seen = await self.election.in_sync()
