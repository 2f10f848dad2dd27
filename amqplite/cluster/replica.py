"""Replication state of one mirrored queue, pure: the leader's view of its mirrors, a mirror's log.

Offsets count journal records of the queue's replicated log from 0 (offset n: n records
before it). The leader confirms a record once its own disk and every in-sync mirror's ack
cover it; a mirror whose oldest unacked append is older than the in-sync timeout is overdue,
and the leader removes it from the in-sync set in etcd (fenced by its term) before it
confirms without it.
"""

from __future__ import annotations

from collections import deque

import attrs

from amqplite.cluster.link import Ack, Append, QueueRef, Refuse, SnapshotEnd


class ReplicaSet:
    """The leader's side: its mirrors, which of them are in sync, and the confirmable offset."""

    def __init__(self, leader: str, members: tuple[str, ...], in_sync: tuple[str, ...]) -> None:
        self.leader = leader
        self.acks = {m: 0 for m in members if m != leader}  # offset each mirror has on disk
        self.in_sync = {m for m in in_sync if m in self.acks}
        self.end = 0  # records appended by the leader
        self.durable = 0  # records on the leader's own disk
        self._times: deque[tuple[int, float]] = deque()  # (end offset, appended at) not all acked

    def appended(self, count: int, now: float) -> tuple[int, int]:
        """The leader appended records at `now` (monotonic seconds): (first, end) offsets."""
        first = self.end
        self.end += count
        self._times.append((self.end, now))
        return first, self.end

    def local_synced(self, offset: int) -> None:
        """The leader's own journal is on disk up to offset."""
        self.durable = max(self.durable, offset)

    def acked(self, mirror: str, offset: int) -> bool:
        """A mirror's ack; True when it now has everything the leader appended (caught up)."""
        if mirror not in self.acks:
            return False
        self.acks[mirror] = max(self.acks[mirror], offset)
        lowest = min(self.acks.values())
        while self._times and self._times[0][0] <= lowest:
            self._times.popleft()
        return self.acks[mirror] >= self.end

    @property
    def committed(self) -> int:
        """Every record before this offset is on the leader's disk and every in-sync mirror's."""
        point = self.durable
        for mirror in self.in_sync:
            point = min(point, self.acks[mirror])
        return point

    def overdue(self, now: float, timeout: float) -> list[str]:
        """In-sync mirrors lacking a record appended more than timeout ago (linked or not)."""
        late = []
        for mirror in sorted(self.in_sync):
            acked = self.acks[mirror]
            for end, at in self._times:
                if end > acked:
                    if now - at > timeout:
                        late.append(mirror)
                    break
        return late

    def dropped(self, mirror: str) -> None:
        """etcd no longer holds the mirror in sync: confirms stop waiting for it."""
        self.in_sync.discard(mirror)

    def rejoined(self, mirror: str) -> None:
        """etcd holds the mirror in sync again (after it caught up)."""
        if mirror in self.acks:
            self.in_sync.add(mirror)

    def lag(self) -> dict[str, int]:
        """Records each member lacks of what the leader appended (the leader: not yet on its disk)."""
        lags = {self.leader: self.end - self.durable}
        lags.update((m, self.end - a) for m, a in self.acks.items())
        return lags

    def catching_up(self) -> list[str]:
        """Mirrors out of sync that have everything appended so far: ready to be added back."""
        return sorted(m for m, a in self.acks.items() if m not in self.in_sync and a >= self.end)


@attrs.frozen
class Cut:
    """The mirror must cut its log back to `offset` before writing (a tail the leader lacks)."""

    offset: int


@attrs.frozen
class Write:
    """The mirror writes these records at `first` (already-held ones skipped), fsyncs, then acks."""

    first: int
    records: tuple[bytes, ...]


class MirrorLog:
    """A mirror's side of one queue: the epoch it follows and how far its log goes."""

    def __init__(self, queue: QueueRef, epoch: int = 0, end: int = 0) -> None:
        self.queue = queue
        self.epoch = epoch
        self.end = end  # records written to the local journal
        self.durable = end  # records fsynced

    def receive(self, message: Append | SnapshotEnd) -> Refuse | list[Cut | Write]:
        """What to do with an append (or a finished snapshot): refuse it, or cut and/or write."""
        if message.epoch < self.epoch:
            return Refuse(self.queue, self.epoch, f"epoch {message.epoch} < {self.epoch}")
        actions: list[Cut | Write] = []
        new_term = message.epoch > self.epoch
        self.epoch = message.epoch
        if isinstance(message, SnapshotEnd):  # the snapshot replaced the log: it ends there
            self.end = self.durable = message.offset
            return actions
        if message.first > self.end:
            return Refuse(self.queue, self.epoch, f"gap: log ends at {self.end}")
        if new_term and message.first < self.end:  # a tail the new leader never had: cut it
            actions.append(Cut(message.first))
            self.end = message.first
            self.durable = min(self.durable, message.first)
        skip = self.end - message.first
        records = message.records[skip:]
        if records:
            actions.append(Write(self.end, records))
            self.end += len(records)
        return actions

    def synced(self, offset: int) -> Ack:
        """The local journal is fsynced up to offset: the ack to send."""
        self.durable = max(self.durable, min(offset, self.end))
        return Ack(self.queue, self.epoch, self.durable)
