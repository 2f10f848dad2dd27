"""Stream queues: an append-only log in the store, read by each consumer at its own offset.

A publish appends to the stream's log (never to memory); consumption removes nothing. Each
consumer has a cursor (next offset, filter, optional name); when it has credit and the log has
committed messages past it, the cursor asks the server (StreamReads) to read a batch in a worker
thread, then `deliver_batch` hands the batch to the consumer with an `x-stream-offset` header.
Acks only return credit, and move a named consumer's durable offset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

import attrs

from amqplite.broker.consumer import Consumer
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.publishing import make_message
from amqplite.broker.queue import Queue
from amqplite.broker.queue_consumer import QueueConsumer
from amqplite.broker.stream_arguments import OffsetSpec, parse_age, parse_offset, resolve
from amqplite.protocol.properties import replace_headers

READ_BATCH: Final = 256  # messages read per worker-thread call at most
RETENTION_CHECK_S: Final = 60.0  # age retention runs at least this often


class StreamJournal(Protocol):
    """What a stream queue uses of its log in the store (store/stream_log.py's StreamLog)."""

    next_offset: int
    committed_next: int
    tracked: dict[str, int]
    on_committed: Callable[[], None]

    @property
    def first_offset(self) -> int: ...
    @property
    def length(self) -> int: ...
    @property
    def bytes_on_disk(self) -> int: ...
    @property
    def segments(self) -> list[Any]: ...

    def append(
        self,
        exchange: str,
        routing_key: str,
        properties_bin: bytes,
        body: bytes,
        timestamp_ms: int,
        filter_value: str | None = None,
    ) -> int:
        """Buffer a message; its offset."""
        ...

    def track(self, name: str, offset: int) -> None:
        """A named consumer acked up to offset."""
        ...

    def configure(
        self, max_segment_bytes: int | None, max_bytes: int | None, max_age_ms: int | None
    ) -> None:
        """Retention settings."""
        ...

    def retain(self, now_ms: int) -> int:
        """Drop whole segments beyond the limits."""
        ...

    def view(self) -> Any:
        """What a worker thread may read (StreamView: read(), offset_at(), first)."""
        ...

    compaction_key: str | None
    tombstone_ms: int

    def start_compaction(self, now_ms: int, fsync: bool = True) -> Any:
        """A compaction for a worker thread (run(), sizes, removed), or None."""
        ...

    def compaction_done(self, sizes: dict[int, int], removed: int) -> None:
        """The compaction ran."""
        ...


@attrs.define(eq=False)
class StreamCursor:
    """One consumer's position in a stream."""

    consumer: Consumer
    spec: OffsetSpec | None  # until resolved by the first read
    position: int = 0
    name: str | None = None  # tracked consumer: its acked offset is durable
    filters: frozenset[str] | None = None
    match_unfiltered: bool = False
    reading: bool = False
    gone: bool = False
    delivered_to: int = -1  # the last offset delivered


@attrs.define(slots=True, eq=False)
class StreamDelivery(QueueEntry):
    """A delivered stream message: its offset is its seq; the cursor it went to."""

    cursor: StreamCursor | None = None


class StreamReads:
    """Cursors waiting for a read in a worker thread (the server's task serves them)."""

    def __init__(self) -> None:
        self.wanted: dict[int, StreamCursor] = {}
        self.compactions: dict[int, Any] = {}
        self.on_wanted: Callable[[], None] = _noop

    def want(self, cursor: StreamCursor) -> None:
        """Ask for a read for this cursor."""
        if id(cursor) not in self.wanted:
            self.wanted[id(cursor)] = cursor
            self.on_wanted()

    def want_compaction(self, queue: Any) -> None:
        """Ask for a compaction of a stream queue."""
        if id(queue) not in self.compactions:
            self.compactions[id(queue)] = queue
            self.on_wanted()

    def take_compactions(self) -> list[Any]:
        """The stream queues to compact now."""
        wanted, self.compactions = self.compactions, {}
        return list(wanted.values())

    def take(self) -> list[StreamCursor]:
        """The cursors to read for now."""
        wanted, self.wanted = self.wanted, {}
        return list(wanted.values())


def _noop() -> None:
    """Nobody listens."""


@attrs.frozen
class ReadPlan:
    """One read to run in a worker thread: what to read, and the result afterwards."""

    cursor: StreamCursor
    view: Any
    count: int

    def run(self) -> tuple[int, Any]:
        """Resolve the start if needed and read (in a worker thread): (start, ReadResult)."""
        cursor, view = self.cursor, self.view
        start = cursor.position if cursor.spec is None else resolve(cursor.spec, view)
        return start, view.read(start, self.count, cursor.filters, cursor.match_unfiltered)


@attrs.define(eq=False)
class StreamQueue(Queue):
    """A durable stream queue: publishes append to its log, consumers read it by offset."""

    cursors: dict[int, StreamCursor] = attrs.field(factory=dict)
    _retention_timer: bool = False
    _segments_seen: int = 0
    _hooked: object | None = None  # the log whose commits this queue listens to
    _compaction_due: bool = False  # a segment closed: compact once it is committed

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._retention_timer = True  # a first turn soon: hooks the log, starts age retention
        self.host.schedule(self, self.host.now() + 0.05)

    @property
    def stream(self) -> StreamJournal | None:
        """The log in the store (None until the store attached it)."""
        journal = self.journal
        if journal is None:
            return None
        stream: StreamJournal = journal  # type: ignore[assignment]
        if self._hooked is not journal:  # first use of this log: hook it, hand it the settings
            self._hooked = journal
            stream.on_committed = self._committed
            self.apply_retention_settings()
        return stream

    @property
    def message_count(self) -> int:
        """0, as RabbitMQ's queue.declare-ok says for a stream."""
        return 0

    @property
    def reads(self) -> StreamReads | None:
        """The broker's read requests (the host is the broker)."""
        reads = getattr(self.host, "stream_reads", None)
        return reads if isinstance(reads, StreamReads) else None

    # -- settings ---------------------------------------------------------------------------

    def retention(self) -> tuple[int | None, int | None, int | None]:
        """(max segment bytes, max bytes, max age ms): arguments first, then the policy."""
        policy = self.host.policy_for(self) or {}
        args = self.arguments

        def pick(key: str) -> Any:
            value = args.get(f"x-{key}")
            return policy.get(key) if value is None else value

        segment = pick("stream-max-segment-size-bytes")
        size = pick("max-length-bytes")
        age = pick("max-age")
        return (
            segment if isinstance(segment, int) and segment > 0 else None,
            size if isinstance(size, int) and size > 0 else None,
            parse_age(age) if age is not None else None,
        )

    def apply_retention_settings(self) -> None:
        """Hand the retention settings to the log and start the age check."""
        journal = self.journal
        if journal is None:
            return
        stream: StreamJournal = journal  # type: ignore[assignment]
        segment, size, age = self.retention()
        stream.configure(segment, size, age)
        key = self.arguments.get("x-stream-compaction")
        stream.compaction_key = key.decode() if isinstance(key, bytes) else key
        tombstones = parse_age(self.arguments.get("x-stream-tombstone-max-age", "1D"))
        stream.tombstone_ms = tombstones if tombstones is not None else 86_400_000
        period = self._check_period()
        if period is not None and not self._retention_timer:
            self._retention_timer = True
            self.host.schedule(self, self.host.now() + period)

    def _check_period(self) -> float | None:
        """How often the timer applies age retention and compaction (None: never)."""
        periods = [RETENTION_CHECK_S]
        age = self.retention()[2]
        if age is not None:
            periods.append(max(age / 4000, 0.05))
        if self.arguments.get("x-stream-compaction"):
            tombstones = parse_age(self.arguments.get("x-stream-tombstone-max-age", "1D"))
            periods.append(max((tombstones or 0) / 4000, 0.05))
        elif age is None:
            return None
        return min(periods)

    def reconfigure(self) -> None:
        """A policy changed: new retention settings."""
        super().reconfigure()
        self.apply_retention_settings()

    def on_timer(self, now: float) -> float | None:
        """Age retention: drop whole segments older than x-max-age."""
        self._retention_timer = False
        stream = self.stream
        if self.deleted or stream is None:
            return None
        stream.retain(int(self.host.wall_time() * 1000))
        self.want_compaction()
        period = self._check_period()
        if period is None:
            return None
        self._retention_timer = True
        return now + period

    def want_compaction(self) -> None:
        """Ask the server to compact the closed segments (when the stream compacts)."""
        stream, reads = self.stream, self.reads
        if stream is not None and reads is not None and stream.compaction_key is not None:
            reads.want_compaction(self)

    def compaction_plan(self) -> Any:
        """The compaction to run in a worker thread now (None: nothing to do)."""
        stream = self.stream
        if stream is None or self.deleted:
            return None
        return stream.start_compaction(int(self.host.wall_time() * 1000))

    def compaction_done(self, plan: Any) -> None:
        """Back on the loop after a compaction."""
        stream = self.stream
        if stream is not None:
            stream.compaction_done(plan.sizes, plan.removed)

    # -- messages in ------------------------------------------------------------------------

    def enqueue(self, message: Message) -> QueueEntry | None:
        """Append to the log (every message, persistent or not, as RabbitMQ streams do)."""
        stream = self.stream
        if stream is None or self.led_elsewhere is not None:
            return None
        value = (message.headers or {}).get("x-stream-filter-value")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        now_ms = int(self.host.wall_time() * 1000)
        offset = stream.append(
            message.exchange,
            message.routing_key,
            message.properties_bin,
            message.body,
            now_ms,
            value if isinstance(value, str) else None,
        )
        segments = len(stream.segments)
        if segments != self._segments_seen:  # a segment closed: size retention, compaction
            self._segments_seen = segments
            stream.retain(now_ms)
            self._compaction_due = stream.compaction_key is not None
        self.stats.publish += 1
        self.totals.publish += 1
        return QueueEntry(offset, message)

    def purge(self) -> int:
        """A stream is not purged (its retention removes data)."""
        return 0

    def _committed(self) -> None:
        """New offsets are on disk: consumers at the tail may read them."""
        if self._compaction_due:
            self._compaction_due = False
            self.want_compaction()
        self.dispatch()

    # -- consumers --------------------------------------------------------------------------

    def add_consumer(self, consumer: QueueConsumer) -> None:
        """Attach a consumer with its cursor (offset, name, filter from its arguments)."""
        assert isinstance(consumer, Consumer)  # its cursor reads the channel's credit
        super().add_consumer(consumer)
        args = consumer.arguments
        name = args.get("x-stream-consumer-name")
        default = "next"
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if not isinstance(name, str) or not name:
            name = None
            lavin = args.get("x-stream-automatic-offset-tracking")
            if (
                lavin is True
                or lavin in ("true", b"true")
                or ("x-stream-offset" in args and args["x-stream-offset"] is None)
            ):
                name = consumer.tag  # LavinMQ: the consumer tag names the tracked consumer
                default = "first"
        spec = parse_offset(args.get("x-stream-offset"), default)
        stream = self.stream
        if name is not None and stream is not None and name in stream.tracked:
            spec = OffsetSpec("offset", stream.tracked[name] + 1)
        if spec is not None and spec.kind == "age":
            spec = OffsetSpec("timestamp", int(self.host.wall_time() * 1000) - spec.value)
        cursor = StreamCursor(consumer, spec or OffsetSpec("next"), name=name)
        filters = args.get("x-stream-filter")
        if filters is not None:
            values = filters if isinstance(filters, list) else [filters]
            cursor.filters = frozenset(
                v.decode() if isinstance(v, bytes) else str(v) for v in values
            )
            cursor.match_unfiltered = bool(args.get("x-stream-match-unfiltered", False))
        self.cursors[id(consumer)] = cursor

    def remove_consumer(self, consumer: QueueConsumer) -> None:
        """Detach a consumer and drop its cursor."""
        cursor = self.cursors.pop(id(consumer), None)
        if cursor is not None:
            cursor.gone = True
        super().remove_consumer(consumer)

    def dispatch(self) -> None:
        """Ask for a read for every cursor with credit and something (maybe) to read."""
        stream = self.stream
        reads = self.reads
        if stream is None or reads is None:
            return
        bound = stream.committed_next
        for cursor in self.cursors.values():
            if cursor.reading or credit(cursor.consumer) <= 0:
                continue
            if cursor.spec is None and cursor.position >= bound:
                continue
            reads.want(cursor)

    def read_plan(self, cursor: StreamCursor) -> ReadPlan | None:
        """The next read for a cursor (None: nothing to read or no credit now)."""
        stream = self.stream
        if cursor.gone or cursor.reading or stream is None or self.deleted:
            return None
        count = min(credit(cursor.consumer), READ_BATCH)
        if count <= 0:
            return None
        if cursor.spec is None and cursor.position >= stream.committed_next:
            return None
        cursor.reading = True
        return ReadPlan(cursor, stream.view(), count)

    def deliver_batch(self, plan: ReadPlan, start: int, result: Any) -> None:
        """Back on the loop: hand what was read to the consumer, then ask for more."""
        cursor = plan.cursor
        cursor.reading = False
        if cursor.gone or self.deleted:
            return
        if cursor.spec is not None:
            cursor.spec = None
            cursor.position = start
        for entry in result.entries:
            if entry.offset < cursor.position:
                continue
            cursor.position = entry.offset + 1
            message = make_message(entry.exchange, entry.routing_key, entry.properties_bin, b"")
            headers = dict(message.headers or {})
            if cursor.filters is not None:
                value = headers.get("x-stream-filter-value")
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if value not in cursor.filters and not (value is None and cursor.match_unfiltered):
                    continue  # a hash collision: the summary is only a hint
            headers["x-stream-offset"] = entry.offset
            delivered = Message(
                entry.exchange,
                entry.routing_key,
                replace_headers(entry.properties_bin, headers),
                entry.body,
                persistent=message.persistent,
                headers=headers,
            )
            cursor.delivered_to = entry.offset
            cursor.consumer.deliver(StreamDelivery(entry.offset, delivered, cursor=cursor))
        cursor.position = max(cursor.position, result.next_offset)
        self.dispatch()

    # -- settling ---------------------------------------------------------------------------

    def settle(self, entry: QueueEntry, acked: bool = False) -> None:
        """An ack: a named consumer's offset moves (durable at the next commit)."""
        if not isinstance(entry, StreamDelivery) or entry.cursor is None:
            return
        name = entry.cursor.name
        stream = self.stream
        if name is not None and stream is not None and not self.deleted:
            stream.track(name, entry.seq)

    def acked(self, entries: list[QueueEntry]) -> None:
        """Acks of a run: each moves its consumer's offset."""
        self.stats.ack += len(entries)
        for entry in entries:
            self.settle(entry, True)

    def requeue(self, entry: QueueEntry, explicit: bool = False) -> None:
        """Nothing returns to a stream: the credit is freed, the message stays in the log."""

    def reject(self, entry: QueueEntry) -> None:
        """As an ack: the message stays in the log."""
        self.settle(entry)

    def stream_stats(self) -> dict[str, Any]:
        """Length, offsets, bytes, segments and each named consumer's offset and lag."""
        stream = self.stream
        if stream is None:
            return {}
        last = stream.next_offset - 1
        return {
            "messages": stream.length,
            "first_offset": stream.first_offset,
            "last_offset": last,
            "bytes_on_disk": stream.bytes_on_disk,
            "segments": len(stream.segments),
            "consumer_offsets": {
                name: {"offset": offset, "lag": max(0, last - offset)}
                for name, offset in sorted(stream.tracked.items())
            },
        }


def credit(consumer: Consumer) -> int:
    """How many more deliveries the consumer's prefetch allows now."""
    channel = consumer.channel
    if not channel.active:
        return 0
    left = consumer.prefetch_count - consumer.unacked if consumer.prefetch_count else READ_BATCH
    if channel.global_prefetch:
        left = min(left, channel.global_prefetch - channel.global_unacked)
    return left
