"""The mirror side of the node link: queue logs written and fsynced before they are acked.

Each mirrored queue this node holds a copy of has a log file under <data dir>/mirrors/: the
leader's journal records, as they are framed in the journal (length, crc32, type, payload). A
snapshot replaces the file (written beside it, renamed when complete); appends extend it.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path

import attrs
import trio

from amqplite.cluster.link import (
    Ack,
    Append,
    Message,
    QueueRef,
    Refuse,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
)
from amqplite.cluster.replica import Cut, MirrorLog, Write
from amqplite.store.records import (
    RecordType,
    StoredMessage,
    decode_delivered,
    decode_enqueue,
    decode_seq,
    decode_seqs,
    scan,
)

log = logging.getLogger("amqplite.cluster")


def _fsync_file(path: Path, data: bytes, mode: str) -> None:
    """Write data to path (mode "ab" appends, "wb" replaces) and fsync it."""
    with open(path, mode) as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _cut_file(path: Path, records: int) -> None:
    """Keep the first `records` records of a log file (a tail the new leader never had)."""
    data = path.read_bytes() if path.exists() else b""
    found = scan(data, 0).records
    end = found[records][2] if records < len(found) else len(data)
    with open(path, "r+b" if path.exists() else "wb") as file:
        file.truncate(end)
        os.fsync(file.fileno())


@attrs.define
class MirrorCopy:
    """One queue's copy on this node: its log state and files."""

    log: MirrorLog
    path: Path
    snapshot: list[bytes] | None = None  # records of a snapshot being received


def live_messages(data: bytes) -> list[StoredMessage]:
    """The messages a log leaves in the queue, in order, with their delivery counts."""
    live: dict[int, StoredMessage] = {}
    for kind, payload, _ in scan(data, 0).records:
        if kind == RecordType.ENQUEUE:
            stored = decode_enqueue(payload)
            live[stored.seq] = stored
        elif kind == RecordType.REMOVE:
            live.pop(decode_seq(payload), None)
        elif kind == RecordType.DELIVERED:
            seq, count = decode_delivered(payload)
            if seq in live:
                live[seq] = attrs.evolve(live[seq], delivery_count=count)
        elif kind == RecordType.DELIVERED_ONCE:
            for seq in decode_seqs(payload):
                once = live.get(seq)
                if once is not None and once.delivery_count < 1:
                    live[seq] = attrs.evolve(once, delivery_count=1)
    return [live[seq] for seq in sorted(live)]


class MirrorHost:
    """The mirrored queue copies of this node, fed by leaders over the link."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.copies: dict[QueueRef, MirrorCopy] = {}

    def path_of(self, queue: QueueRef) -> Path:
        """<dir>/<vhost>/<queue>.log, names percent-encoded."""
        quoted = [urllib.parse.quote(p, safe="") for p in (queue.vhost, queue.name)]
        return self.directory / quoted[0] / f"{quoted[1]}.log"

    def copy_of(self, queue: QueueRef) -> MirrorCopy:
        """The copy of a queue, created empty on first use."""
        copy = self.copies.get(queue)
        if copy is None:
            path = self.path_of(queue)
            path.parent.mkdir(parents=True, exist_ok=True)
            copy = self.copies[queue] = MirrorCopy(MirrorLog(queue), path)
        return copy

    def epoch_of(self, queue: QueueRef) -> int:
        """The epoch this node follows for a queue (0: none)."""
        copy = self.copies.get(queue)
        return 0 if copy is None else copy.log.epoch

    def messages_of(self, queue: QueueRef) -> list[StoredMessage]:
        """What the copy on disk holds (read when this node takes the queue over)."""
        path = self.path_of(queue)
        return live_messages(path.read_bytes()) if path.exists() else []

    def lead(self, queue: QueueRef, epoch: int) -> None:
        """This node leads the queue at epoch now: its copy goes, older leaders are refused."""
        path = self.path_of(queue)
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)  # it may follow a later leader from here
        self.copies[queue] = MirrorCopy(MirrorLog(queue, epoch), path)

    async def handle(self, batch: list[Message]) -> list[Message]:
        """Apply received messages in order; write and fsync them; the acks and refusals to send."""
        replies: list[Message] = []
        writes: dict[QueueRef, list[bytes]] = {}
        for message in batch:
            if isinstance(message, SnapshotBegin | SnapshotChunk):
                copy = self.copy_of(message.queue)
                if message.epoch < copy.log.epoch:
                    replies.append(Refuse(message.queue, copy.log.epoch, "lower epoch"))
                elif isinstance(message, SnapshotBegin):
                    copy.snapshot = []
                elif copy.snapshot is not None:
                    copy.snapshot.extend(message.records)
            elif isinstance(message, SnapshotEnd | Append):
                replies.extend(await self._receive(message, writes))
        for queue, records in writes.items():
            copy = self.copies[queue]
            await trio.to_thread.run_sync(_fsync_file, copy.path, b"".join(records), "ab")
            replies.append(copy.log.synced(copy.log.end))
        return replies

    async def _receive(
        self, message: SnapshotEnd | Append, writes: dict[QueueRef, list[bytes]]
    ) -> list[Message]:
        copy = self.copy_of(message.queue)
        outcome = copy.log.receive(message)
        if isinstance(outcome, Refuse):
            return [outcome]
        if isinstance(message, SnapshotEnd):
            records = copy.snapshot or []
            copy.snapshot = None
            writes.pop(message.queue, None)
            tmp = copy.path.with_suffix(".tmp")
            await trio.to_thread.run_sync(_fsync_file, tmp, b"".join(records), "wb")
            tmp.replace(copy.path)
            return [Ack(message.queue, copy.log.epoch, copy.log.durable)]
        for action in outcome:
            if isinstance(action, Cut):  # what this batch holds for it goes first, then the cut
                pending = b"".join(writes.pop(message.queue, []))
                await trio.to_thread.run_sync(_fsync_file, copy.path, pending, "ab")
                await trio.to_thread.run_sync(_cut_file, copy.path, action.offset)
            elif isinstance(action, Write):
                writes.setdefault(message.queue, []).extend(action.records)
        return []
