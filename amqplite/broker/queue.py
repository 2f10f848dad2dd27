"""Queue: one FIFO per priority level, a TTL deadline index, length limits, consumers and counts."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
from sortedcontainers import SortedKeyList

from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.stats import MessageStats
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.properties import replace_headers

if TYPE_CHECKING:
    from amqplite.broker.consumer import Consumer
    from amqplite.broker.durability import QueueJournal

OVERFLOW_MODES: Final = ("drop-head", "reject-publish", "reject-publish-dlx")
EXPIRE_BATCH: Final = 500  # messages expired per timer turn, so a flood never stalls the loop
MAX_PRIORITY: Final = 255


class Timed(Protocol):
    """Something the broker's timer wheel calls back at a deadline (queues, channels)."""

    timer_due: float | None

    def on_timer(self, now: float) -> float | None:
        """Do what is due at `now`; the next deadline (or None)."""


class QueueHost(Protocol):
    """What a queue needs from its broker: clocks, timers, dead-lettering, policies."""

    def now(self) -> float:
        """Monotonic seconds."""

    def wall_time(self) -> float:
        """POSIX seconds (for x-death timestamps)."""

    def schedule(self, target: Timed, deadline: float) -> None:
        """Call target.on_timer at (or soon after) the monotonic deadline."""

    def dead_letter(self, queue: Queue, entry: QueueEntry, reason: str) -> bool:
        """Republish a message that left `queue` through its dead-letter exchange; True if sent."""

    def policy_for(self, queue: Queue) -> Mapping[str, Any] | None:
        """The definition of the policy that applies to the queue, if any."""

    def consumer_timeout_ms(self) -> int | None:
        """The broker-wide consumer acknowledgement timeout (None or 0: none)."""


class DetachedHost:
    """A host for queues outside a broker (plain VHost in tests): frozen clock, no timers."""

    def now(self) -> float:
        """Always 0."""
        return 0.0

    def wall_time(self) -> float:
        """Always 0."""
        return 0.0

    def schedule(self, target: Timed, deadline: float) -> None:
        """No timers: nothing is ever called back."""

    def dead_letter(self, queue: Queue, entry: QueueEntry, reason: str) -> bool:
        """No routing: dead letters are dropped."""
        return False

    def policy_for(self, queue: Queue) -> Mapping[str, Any] | None:
        """No policies."""
        return None

    def consumer_timeout_ms(self) -> int | None:
        """No default timeout."""
        return None


DETACHED: Final = DetachedHost()


# -- settings ------------------------------------------------------------------------------


@attrs.frozen
class QueueSettings:
    """The effective features of a queue: its x- arguments merged with its policy."""

    max_priority: int | None = None
    message_ttl: int | None = None  # ms
    expires: int | None = None  # ms
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: str = "drop-head"
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    delivery_limit: int | None = None
    consumer_timeout: int | None = None  # ms; None means the broker default
    single_active_consumer: bool = False


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _invalid(queue: str, vhost: str, key: str, detail: str) -> ChannelException:
    return ChannelException(
        ReplyCode.PRECONDITION_FAILED,
        f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {detail}",
        ClassId.QUEUE,
        10,
    )


def _integer(value: Any, key: str, minimum: int, queue: str, vhost: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
    if value < minimum:
        kind = "value_negative" if value < 0 else "value_zero"
        raise _invalid(queue, vhost, key, f"{{{kind},{value}}}")
    return value


# Integer settings (key without "x-") a policy may set, with their minimum values.
POLICY_INT_MINIMUMS: Final = {
    "message-ttl": 0,
    "expires": 1,
    "max-length": 0,
    "max-length-bytes": 0,
    "delivery-limit": 0,
    "consumer-timeout": 0,
}
_INT_KEYS: Final = {"max-priority": 0, **POLICY_INT_MINIMUMS}
# Numeric limits set by both a policy and an argument: the smaller wins (RabbitMQ's res_min).
_MIN_KEYS: Final = ("message-ttl", "expires", "max-length", "max-length-bytes", "delivery-limit")
POLICY_KEYS: Final = (
    "message-ttl",
    "expires",
    "max-length",
    "max-length-bytes",
    "overflow",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "delivery-limit",
    "consumer-timeout",
)


def parse_settings(
    arguments: Mapping[str, Any],
    policy: Mapping[str, Any] | None = None,
    queue: str = "",
    vhost: str = "/",
) -> QueueSettings:
    """Validate queue arguments (406 as RabbitMQ words it) and merge a policy definition."""
    values: dict[str, Any] = {}
    for key, raw in arguments.items():
        if not key.startswith("x-"):
            continue
        name = key[2:]
        value = _text(raw)
        if name in _INT_KEYS:
            values[name] = _integer(value, key, _INT_KEYS[name], queue, vhost)
        elif name == "overflow":
            if value not in OVERFLOW_MODES:
                raise _invalid(queue, vhost, key, f"{{unacceptable_value,{value!r}}}")
            values[name] = value
        elif name in ("dead-letter-exchange", "dead-letter-routing-key"):
            if not isinstance(value, str):
                raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
            values[name] = value
        elif name == "single-active-consumer":
            if not isinstance(value, bool):
                raise _invalid(queue, vhost, key, f"{{unacceptable_type,{value!r}}}")
            values[name] = value
    if values.get("max-priority", 0) > MAX_PRIORITY:
        raise _invalid(
            queue, vhost, "x-max-priority", f"{{value_too_large,{values['max-priority']}}}"
        )
    if "dead-letter-routing-key" in values and "dead-letter-exchange" not in values:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            "invalid arg 'x-dead-letter-routing-key' for queue "
            f"'{queue}' in vhost '{vhost}': Missing dead-letter-exchange",
            ClassId.QUEUE,
            10,
        )
    for key, value in (policy or {}).items():
        if key not in POLICY_KEYS:
            continue
        if key not in values:
            values[key] = value
        elif key in _MIN_KEYS:
            values[key] = min(values[key], value)
    max_priority = values.get("max-priority")
    return QueueSettings(
        max_priority=max_priority or None,
        message_ttl=values.get("message-ttl"),
        expires=values.get("expires"),
        max_length=values.get("max-length"),
        max_length_bytes=values.get("max-length-bytes"),
        overflow=values.get("overflow", "drop-head"),
        dead_letter_exchange=values.get("dead-letter-exchange"),
        dead_letter_routing_key=values.get("dead-letter-routing-key"),
        delivery_limit=values.get("delivery-limit"),
        consumer_timeout=values.get("consumer-timeout"),
        single_active_consumer=bool(values.get("single-active-consumer", False)),
    )


# -- ready messages ------------------------------------------------------------------------


def _entry_seq(entry: QueueEntry) -> int:
    """Sort key of requeued entries: their original position."""
    return entry.seq


def _entry_deadline(entry: QueueEntry) -> tuple[float, int]:
    """Sort key of the TTL index: deadline, then position."""
    assert entry.expires_at is not None
    return entry.expires_at, entry.seq


_BLOCK_SHIFT: Final = 10  # fresh entries are kept in blocks of 1,024 sequence numbers


class _Block:
    """Fresh entries of one range of sequence numbers, in order; taken ones before `head`.

    Entries removed from the middle stay as tombstones (`ready` False) until passed or until
    they outnumber the block's live ones, when the block alone is compacted.
    """

    __slots__ = ("entries", "head", "live")

    def __init__(self) -> None:
        self.entries: list[QueueEntry | None] = []
        self.head = 0
        self.live = 0


class ReadyList:
    """One level's ready entries: fresh ones in blocks by sequence number, requeued ones sorted.

    Fresh entries are appended in sequence order into blocks of up to 1,024 sequence numbers, so
    an entry leaving from the middle (expiry) only marks its block: a block that empties is
    dropped at once and one mostly dead is compacted on its own, so no removal ever costs a pass
    over the whole queue (which stalled every connection for ~100 ms per million messages). Requeued entries precede every fresh one (they were taken from
    the head) and go back into place in a sorted list.
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Block] = {}
        self._keys: deque[int] = deque()  # block keys in order; some may have been dropped
        self._stale = 0  # keys in _keys whose block was dropped
        self._tail_key = -1
        self._requeued: SortedKeyList[QueueEntry] = SortedKeyList(key=_entry_seq)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, entry: QueueEntry) -> None:
        """Add a newly published entry at the tail (sequence numbers only grow)."""
        entry.ready = True
        self._count += 1
        key = entry.seq >> _BLOCK_SHIFT
        if key == self._tail_key:
            block = self._blocks[key]
            block.entries.append(entry)
            block.live += 1
            return
        block = _Block()
        block.entries.append(entry)
        block.live = 1
        self._blocks[key] = block
        self._keys.append(key)
        self._tail_key = key

    def requeue(self, entry: QueueEntry) -> None:
        """Put a delivered entry back at its original position."""
        entry.ready = True
        self._count += 1
        self._requeued.add(entry)

    def popleft(self) -> QueueEntry | None:
        """Take the entry at the head, or None if empty."""
        if not self._count:
            return None
        requeued = self._requeued
        if requeued:
            entry: QueueEntry = requeued.pop(0)
        else:
            keys = self._keys
            blocks = self._blocks
            while True:
                key = keys[0]
                block = blocks.get(key)
                if block is None:
                    keys.popleft()
                    self._stale -= 1
                    continue
                if block.live:
                    entries = block.entries
                    head = block.head
                    while True:
                        found = entries[head]
                        entries[head] = None  # the block must not keep the message alive
                        head += 1
                        assert found is not None
                        if found.ready:
                            break
                    block.head = head
                    block.live -= 1
                    entry = found
                    break
                self._drop_block(key, block)
        entry.ready = False
        self._count -= 1
        return entry

    def _drop_block(self, key: int, block: _Block) -> None:
        """A block holds nothing ready: forget it (the tail block is only emptied)."""
        if key == self._tail_key:
            block.entries.clear()
            block.head = 0
            block.live = 0
            return
        del self._blocks[key]
        if self._keys[0] == key:
            self._keys.popleft()
            return
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > len(self._keys):
            self._keys = deque(k for k in self._keys if k in self._blocks)
            self._stale = 0

    def remove(self, entry: QueueEntry) -> None:
        """Take a ready entry out from anywhere (expiry): O(log n + block size)."""
        entry.ready = False
        self._count -= 1
        requeued = self._requeued
        if requeued and entry.seq <= requeued[-1].seq:
            requeued.remove(entry)
            return
        key = entry.seq >> _BLOCK_SHIFT
        block = self._blocks[key]
        live = block.live - 1
        block.live = live
        if not live:
            self._drop_block(key, block)
            return
        entries = block.entries
        dead = len(entries) - block.head - live
        if dead > live and dead >= 64:
            block.entries = [
                e for e in islice(entries, block.head, None) if e is not None and e.ready
            ]
            block.head = 0

    def clear(self) -> list[QueueEntry]:
        """Remove and return every ready entry in queue order."""
        entries = list(self)
        for entry in entries:
            entry.ready = False
        self._requeued.clear()
        self._blocks.clear()
        self._keys.clear()
        self._stale = 0
        self._tail_key = -1
        self._count = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        yield from self._requeued
        blocks = self._blocks
        for key in self._keys:
            block = blocks.get(key)
            if block is not None:
                for entry in islice(block.entries, block.head, None):
                    if entry is not None and entry.ready:
                        yield entry


class ReadyMessages:
    """Ready entries of a queue: one ReadyList per priority level, served highest first."""

    def __init__(self, levels: int = 1) -> None:
        self.levels = [ReadyList() for _ in range(max(1, levels))]
        self._count = 0
        self._top = 0  # no level above this one holds entries

    def __len__(self) -> int:
        return self._count

    def append(self, entry: QueueEntry) -> None:
        """Add a fresh entry at the tail of its level."""
        self.levels[entry.level].append(entry)
        self._count += 1
        if entry.level > self._top:
            self._top = entry.level

    def requeue(self, entry: QueueEntry) -> None:
        """Return an entry to its original place in its level."""
        self.levels[entry.level].requeue(entry)
        self._count += 1
        if entry.level > self._top:
            self._top = entry.level

    def popleft(self) -> QueueEntry | None:
        """Take the next entry: the head of the highest non-empty level."""
        if not self._count:
            return None
        levels = self.levels
        while not len(levels[self._top]):
            self._top -= 1
        entry = levels[self._top].popleft()
        self._count -= 1
        return entry

    def remove(self, entry: QueueEntry) -> None:
        """Take out an entry that is ready (expiry)."""
        self.levels[entry.level].remove(entry)
        self._count -= 1

    def clear(self) -> list[QueueEntry]:
        """Remove every entry, highest level first."""
        entries: list[QueueEntry] = []
        for level in reversed(self.levels):
            entries.extend(level.clear())
        self._count = 0
        self._top = 0
        return entries

    def __iter__(self) -> Iterator[QueueEntry]:
        for level in reversed(self.levels):
            yield from level


# -- the queue ----------------------------------------------------------------------------


@attrs.define(eq=False)
class Queue:
    """One queue of a vhost: its settings, ready messages, unacked count and consumers."""

    name: str
    vhost: str
    durable: bool = False
    exclusive_owner: object | None = None
    auto_delete: bool = False
    arguments: dict[str, Any] = attrs.field(factory=dict)
    host: QueueHost = DETACHED
    settings: QueueSettings = attrs.field(init=False)
    ready: ReadyMessages = attrs.field(init=False)
    deadlines: SortedKeyList[QueueEntry] = attrs.field(init=False)
    consumers: deque[Consumer] = attrs.field(factory=deque)
    unacked_count: int = 0
    ready_bytes: int = 0
    next_seq: int = 0
    had_consumer: bool = False
    deleted: bool = False
    last_used: float = 0.0
    timer_due: float | None = None
    stats: MessageStats = attrs.field(factory=MessageStats)
    totals: MessageStats = attrs.field(factory=MessageStats)  # the broker's, shared by its queues
    journal: QueueJournal | None = None  # set by the store for durable queues
    on_delete: Callable[[Queue], object] | None = None  # set by the vhost, for x-expires
    _groups: list[deque[Consumer]] | None = None  # consumers by x-priority, when they differ
    _due_now: QueueEntry | None = None  # a TTL-0 entry being offered to consumers at publish

    def __attrs_post_init__(self) -> None:
        self.settings = parse_settings(
            self.arguments, self.host.policy_for(self), self.name, self.vhost
        )
        self.ready = ReadyMessages((self.settings.max_priority or 0) + 1)
        self.deadlines = SortedKeyList(key=_entry_deadline)
        self.last_used = self.host.now()
        self._schedule_expiry()

    @property
    def exclusive(self) -> bool:
        """True when only the declaring connection may use the queue."""
        return self.exclusive_owner is not None

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok and basic.get-ok report)."""
        return len(self.ready)

    # -- settings and policies -------------------------------------------------------------

    def reconfigure(self) -> None:
        """Recompute the settings after a policy change; limits apply at once."""
        self.settings = parse_settings(
            self.arguments, self.host.policy_for(self), self.name, self.vhost
        )
        self._enforce_limits()
        self._schedule_expiry()

    def touch(self) -> None:
        """The queue was used (declare, get, consumer gone): restart its x-expires period."""
        self.last_used = self.host.now()
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        expires = self.settings.expires
        if expires is not None and not self.consumers and not self.deleted:
            self.host.schedule(self, self.last_used + expires / 1000)

    # -- messages in -----------------------------------------------------------------------

    def enqueue(self, message: Message) -> QueueEntry | None:
        """Append a message at the tail and return its entry (None: refused by reject-publish)."""
        settings = self.settings
        if (settings.max_length is not None or settings.max_length_bytes is not None) and (
            settings.overflow != "drop-head" and self._is_full()
        ):
            self.stats.dropped += 1
            self.totals.dropped += 1
            if settings.overflow == "reject-publish-dlx":
                self._dead_letter_new(message)
            return None
        entry = QueueEntry(self.next_seq, message)
        self.next_seq += 1
        max_priority = settings.max_priority
        if max_priority is not None and message.priority:
            entry.level = min(message.priority, max_priority)
        ttl = settings.message_ttl
        if message.expiration_ms is not None and (ttl is None or message.expiration_ms < ttl):
            ttl = message.expiration_ms
        if self.journal is not None and message.persistent:
            self.journal.enqueue(entry)  # first: what the journal refuses never enters the queue
        self.ready.append(entry)
        self.ready_bytes += message.size
        self.stats.publish += 1
        self.totals.publish += 1
        if settings.delivery_limit is not None:
            self._set_delivery_count(entry)  # x-delivery-count: 0, as RabbitMQ's quorum queues
        if ttl is not None:
            self._add_deadline(entry, self.host.now() + ttl / 1000)
            if ttl == 0:
                self._due_now = entry
        if settings.max_length is not None or settings.max_length_bytes is not None:
            self._enforce_limits()
        return entry

    def _add_deadline(self, entry: QueueEntry, deadline: float) -> None:
        entry.expires_at = deadline
        deadlines = self.deadlines
        deadlines.add(entry)
        if deadlines[0] is entry:
            self.host.schedule(self, deadline)

    def _is_full(self) -> bool:
        settings = self.settings
        if settings.max_length is not None and len(self.ready) >= settings.max_length:
            return True
        return settings.max_length_bytes is not None and (
            self.ready_bytes >= settings.max_length_bytes
        )

    def _over_limit(self) -> bool:
        settings = self.settings
        if settings.max_length is not None and len(self.ready) > settings.max_length:
            return True
        return settings.max_length_bytes is not None and (
            self.ready_bytes > settings.max_length_bytes
        )

    def _enforce_limits(self) -> None:
        """drop-head: dead-letter (reason maxlen) from the head until within the limits."""
        if self.settings.overflow != "drop-head":
            return
        while len(self.ready) and self._over_limit():
            entry = self.take()
            if entry is None:
                return  # what was left had expired
            self.stats.dropped += 1
            self.totals.dropped += 1
            self.settle(entry)
            self._dead_letter(entry, "maxlen")

    # -- messages out ----------------------------------------------------------------------

    def settle(self, entry: QueueEntry) -> None:
        """An entry leaves the queue for good (acked, auto-acked, dropped): tell the journal."""
        if self.journal is not None and entry.message.persistent and not self.deleted:
            self.journal.remove(entry)

    def take(self) -> QueueEntry | None:
        """Remove the head entry for delivery; it becomes unacked (or gone if auto-acked).

        Entries past their deadline are expired here rather than delivered, so a message is
        never served late even while the timer's sweep is behind.
        """
        ready = self.ready
        while True:
            entry = ready.popleft()
            if entry is None:
                return None
            self.ready_bytes -= entry.message.size
            expires_at = entry.expires_at
            if expires_at is not None:
                self.deadlines.remove(entry)
                if expires_at <= self.host.now() and entry is not self._due_now:
                    self._expired(entry)
                    continue
            if self.journal is not None and entry.message.persistent:
                self.journal.delivered(entry)
            return entry

    def requeue(self, entry: QueueEntry) -> None:
        """Return a delivered entry to its place (redelivered), or dead-letter it if it is spent."""
        if self.deleted:
            return
        limit = self.settings.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self.settle(entry)
            self._dead_letter(entry, "delivery_limit")
            return
        if entry.expires_at is not None and entry.expires_at <= self.host.now():
            self._expired(entry)
            return
        if limit is not None:
            self._set_delivery_count(entry)
        self.ready.requeue(entry)
        self.ready_bytes += entry.message.size
        self.stats.requeue += 1
        self.totals.requeue += 1
        if entry.expires_at is not None:
            self._add_deadline(entry, entry.expires_at)
        self._enforce_limits()

    def reject(self, entry: QueueEntry) -> None:
        """Rejected without requeue: dropped, or dead-lettered with reason rejected."""
        self.stats.reject += 1
        self.totals.reject += 1
        self.settle(entry)
        self._dead_letter(entry, "rejected")

    @staticmethod
    def _set_delivery_count(entry: QueueEntry) -> None:
        """Record the delivery count in the x-delivery-count header (the body stays shared)."""
        old = entry.message
        headers = dict(old.headers or {})
        headers["x-delivery-count"] = entry.delivery_count
        entry.message = Message(
            old.exchange,
            old.routing_key,
            replace_headers(old.properties_bin, headers),
            old.body,
            persistent=old.persistent,
            priority=old.priority,
            expiration_ms=old.expiration_ms,
            headers=headers,
        )

    def purge(self) -> int:
        """Drop every ready message and return how many there were."""
        entries = self.ready.clear()
        self.ready_bytes = 0
        self.deadlines.clear()
        for entry in entries:
            self.settle(entry)
        return len(entries)

    # -- TTL and queue expiry --------------------------------------------------------------

    def _expired(self, entry: QueueEntry) -> None:
        self.stats.expired += 1
        self.totals.expired += 1
        self.settle(entry)
        self._dead_letter(entry, "expired")

    def expire_due(self, now: float | None = None, budget: int = EXPIRE_BATCH) -> bool:
        """Expire ready messages whose deadline has passed; True if more are due."""
        if now is None:
            now = self.host.now()
        self._due_now = None
        deadlines = self.deadlines
        done = 0
        while deadlines and done < budget:
            entry: QueueEntry = deadlines[0]
            assert entry.expires_at is not None
            if entry.expires_at > now:
                return False
            del deadlines[0]
            self.ready.remove(entry)
            self.ready_bytes -= entry.message.size
            self._expired(entry)
            done += 1
        return bool(deadlines) and deadlines[0].expires_at <= now

    def expire_if_due_now(self) -> None:
        """Messages with TTL 0 that no consumer took at publish expire at once."""
        if self._due_now is not None:
            self.expire_due()

    def next_deadline(self) -> float | None:
        """The earliest moment something is due in this queue."""
        due: float | None = None
        if self.deadlines:
            due = self.deadlines[0].expires_at
        expires = self.settings.expires
        if expires is not None and not self.consumers:
            at = self.last_used + expires / 1000
            due = at if due is None else min(due, at)
        return due

    def on_timer(self, now: float) -> float | None:
        """Timer callback: expire messages, delete the queue if unused too long."""
        if self.deleted:
            return None
        if self.expire_due(now):
            return now  # more are due: come back on the next turn
        expires = self.settings.expires
        if (
            expires is not None
            and not self.consumers
            and now >= self.last_used + expires / 1000
            and self.on_delete is not None
        ):
            self.on_delete(self)
            return None
        return self.next_deadline()

    # -- dead-lettering --------------------------------------------------------------------

    def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        if self.settings.dead_letter_exchange is None:
            return
        if self.host.dead_letter(self, entry, reason):
            self.stats.dead_lettered += 1
            self.totals.dead_lettered += 1

    def _dead_letter_new(self, message: Message) -> None:
        """reject-publish-dlx: a refused message is dead-lettered with reason maxlen."""
        self._dead_letter(QueueEntry(-1, message), "maxlen")

    # -- consumers -------------------------------------------------------------------------

    def add_consumer(self, consumer: Consumer) -> None:
        """Attach a consumer (ordered by x-priority when priorities differ)."""
        self.consumers.append(consumer)
        self.had_consumer = True
        self._regroup()

    def remove_consumer(self, consumer: Consumer) -> None:
        """Detach a consumer; the queue's x-expires period starts when the last one leaves."""
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        self._regroup()
        if not self.consumers:
            self.touch()

    def _regroup(self) -> None:
        priorities = sorted({c.priority for c in self.consumers}, reverse=True)
        if len(priorities) <= 1:
            self._groups = None
            return
        self._groups = [deque(c for c in self.consumers if c.priority == p) for p in priorities]

    @property
    def active_consumer(self) -> Consumer | None:
        """With x-single-active-consumer: the one consumer that receives."""
        return self.consumers[0] if self.consumers else None

    def dispatch(self) -> None:
        """Deliver ready messages to consumers that have room (round-robin, by priority)."""
        ready = self.ready
        if not len(ready) or not self.consumers:
            return
        if self.settings.single_active_consumer:
            active = self.active_consumer
            assert active is not None
            while len(ready) and active.can_take():
                entry = self.take()
                if entry is None:
                    return
                active.deliver(entry)
            return
        if self._groups is not None:
            self._dispatch_by_priority(self._groups)
            return
        consumers = self.consumers
        while len(ready) and consumers:
            for _ in range(len(consumers)):
                consumer = consumers[0]
                consumers.rotate(-1)
                if consumer.can_take():
                    break
            else:
                return
            entry = self.take()
            if entry is None:
                return
            consumer.deliver(entry)

    def _dispatch_by_priority(self, groups: list[deque[Consumer]]) -> None:
        ready = self.ready
        while len(ready) and self._groups is groups:
            chosen: Consumer | None = None
            for group in groups:
                for _ in range(len(group)):
                    consumer = group[0]
                    group.rotate(-1)
                    if consumer.can_take():
                        chosen = consumer
                        break
                if chosen is not None:
                    break
            if chosen is None:
                return
            entry = self.take()
            if entry is None:
                return
            chosen.deliver(entry)

    def _check(self) -> None:
        """Assert the queue's invariants (tests call this between operations)."""
        entries = list(self.ready)
        assert len(entries) == len(self.ready)
        assert self.ready_bytes == sum(e.message.size for e in entries)
        assert self.unacked_count >= 0
        assert all(e.ready for e in entries)
        for level in self.ready.levels:
            seqs = [e.seq for e in level]
            assert seqs == sorted(seqs)
        timed = [e for e in entries if e.expires_at is not None]
        assert sorted(map(id, timed)) == sorted(map(id, self.deadlines))
