"""Bundled plugin: message deduplication by message_id or `x-deduplication-header`, per queue or exchange.

A message's key is its `x-deduplication-header` header (as RabbitMQ's community plugin has it),
or else its message_id; a message with neither is never a duplicate. A key accepted within the
window (at most `x-cache-size` keys, each for `x-cache-ttl` ms) makes a later message with the same
key a duplicate: it is confirmed to the publisher but not enqueued (queue level) or not routed
(exchange level, type `x-message-deduplication`, which routes as fanout).

Across a restart a durable queue's window is rebuilt from the messages the queue's own journal
brings back (a key is durable exactly when its message is) and from the plugin state, where the
key of each persistent message is written when it is acknowledged. An exchange with
`x-cache-persistence: disk` writes each persistent message's key to its state as it routes it.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import ClassVar, Final

from amqplite.broker.plugin_api import (
    COMMON_EQUIVALENT_ARGUMENTS,
    Arguments,
    ChannelException,
    Destination,
    ExchangeContext,
    ExchangeTypeRegistry,
    HeldMessage,
    PluginState,
    QueueContext,
    ReplyCode,
    Router,
    Scheduler,
    Verdict,
    assert_args_equivalence,
    format_argument,
)

__all__ = [
    "DedupCache",
    "DeduplicatingRouter",
    "DeduplicationExchangeType",
    "QueueDeduplication",
    "QueueDeduplicationPlugin",
    "dedup_key",
    "register",
]

DEDUP_HEADER: Final = "x-deduplication-header"
QUEUE_ARGUMENT: Final = "x-message-deduplication"
CACHE_SIZE: Final = "x-cache-size"
CACHE_TTL: Final = "x-cache-ttl"
CACHE_PERSISTENCE: Final = "x-cache-persistence"
PERSISTENCE_MODES: Final = ("memory", "disk")
DEFAULT_QUEUE_CACHE_SIZE: Final = 100_000  # a queue's window without x-cache-size


def dedup_key(message: HeldMessage) -> str | None:
    """The key a message is deduplicated by: its x-deduplication-header, else its message_id."""
    headers = message.headers
    if headers:
        value = headers.get(DEDUP_HEADER)
        if value is not None:
            return value if isinstance(value, str) else repr(value)
    return message.message_id or None


def header_ttl(message: HeldMessage) -> int | None:
    """A positive x-cache-ttl header (ms) overriding the window's TTL for this message."""
    headers = message.headers
    if not headers:
        return None
    value = headers.get(CACHE_TTL)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


NOTHING_LEFT: Final[tuple[str, ...]] = ()


class DedupCache:
    """Keys accepted within a window: at most `size` (oldest out first), each until its TTL ends.

    Times are POSIX seconds passed in by the caller (virtual time in tests). Until a key with
    an expiry is added, `timed` is False and callers may pass any time (0.0) without a clock.
    """

    def __init__(self, size: int | None, ttl_ms: int | None) -> None:
        self.size = size
        self.ttl_ms = ttl_ms
        self.timed = ttl_ms is not None
        self.entries: OrderedDict[str, float] = OrderedDict()  # key -> expiry, inf: none

    def __len__(self) -> int:
        return len(self.entries)

    def seen(self, key: str, now: float) -> bool:
        """True when `key` was accepted and its time has not run out."""
        expires = self.entries.get(key)
        return expires is not None and expires > now

    def expires_at(self, key: str) -> float | None:
        """When `key` leaves the window (inf: only by size), or None if it is not in it."""
        return self.entries.get(key)

    def add(self, key: str, now: float, ttl_ms: int | None = None) -> Sequence[str]:
        """Remember `key` from now (ttl_ms overrides the window's); the keys that left for it."""
        ttl = self.ttl_ms if ttl_ms is None else ttl_ms
        self.restore(key, now + ttl / 1000 if ttl is not None else math.inf)
        entries = self.entries
        size = self.size
        if not self.timed and (size is None or len(entries) <= size):
            return NOTHING_LEFT
        gone: list[str] = []
        while entries:
            first, expires = next(iter(entries.items()))
            if expires > now and (size is None or len(entries) <= size):
                break
            entries.popitem(last=False)
            gone.append(first)
        return gone

    def restore(self, key: str, expires: float) -> None:
        """Put `key` back at the tail with a known expiry (no eviction)."""
        entries = self.entries
        if key in entries:
            del entries[key]
        entries[key] = expires
        if expires != math.inf:
            self.timed = True

    def forget(self, key: str) -> None:
        """Take `key` out of the window."""
        self.entries.pop(key, None)


class StateWindow:
    """A DedupCache whose keys may also be records of a PluginState (expiry in POSIX ms)."""

    def __init__(self, cache: DedupCache, state: PluginState, scheduler: Scheduler) -> None:
        self.cache = cache
        self.state = state
        self.scheduler = scheduler
        self.persisted: set[str] = set()  # keys with a record in the state
        self._wall_time = scheduler.wall_time
        records = state.load()
        now = scheduler.wall_time()
        for key, record in sorted(records.items(), key=lambda item: int(item[1]["n"])):
            expires = int(record["exp"]) / 1000 if record["exp"] else math.inf
            if expires > now:
                cache.restore(key, expires)
                self.persisted.add(key)
            else:
                state.delete(key)
        self._order = itertools.count(max((int(r["n"]) for r in records.values()), default=-1) + 1)

    def now(self) -> float:
        """POSIX seconds (the window's times must mean the same after a restart); 0.0 untimed."""
        return self._wall_time() if self.cache.timed else 0.0

    def remember(self, key: str, now: float, ttl_ms: int | None) -> None:
        """Add `key` to the window; forget the records of the keys that leave it for it."""
        if ttl_ms is not None and not self.cache.timed:
            now = self._wall_time()  # the first key with an expiry: the window needs the clock
        for gone in self.cache.add(key, now, ttl_ms):
            if gone in self.persisted:
                self.persisted.discard(gone)
                self.state.delete(gone)

    def persist(self, key: str) -> None:
        """Write `key` with its expiry to the state (a confirm in progress waits for it)."""
        expires = self.cache.expires_at(key)
        if expires is None:
            return
        self.state.put(
            key,
            {"exp": 0 if expires == math.inf else round(expires * 1000), "n": next(self._order)},
        )
        self.persisted.add(key)

    def forget(self, key: str) -> None:
        """Take `key` out of the window and the state."""
        self.cache.forget(key)
        if key in self.persisted:
            self.persisted.discard(key)
            self.state.delete(key)


def _positive(arguments: Arguments, key: str, where: str) -> int | None:
    """A positive integer argument, None when absent; 406 otherwise."""
    value = arguments.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg '{key}' for {where}: expected a positive integer, "
            f"got '{format_argument(value)}'",
        )
    return value


# -- queue level ----------------------------------------------------------------------------


class QueueDeduplication:
    """The queue hooks of one queue with x-message-deduplication: true."""

    def __init__(self, context: QueueContext, size: int, ttl_ms: int | None) -> None:
        self.window = StateWindow(DedupCache(size, ttl_ms), context.state, context.scheduler)
        self.state = context.state
        self.messages = context.messages
        self._caught_up = False

    def _catch_up(self) -> None:
        """Once: the keys of the messages the queue holds (restored at boot) join the window."""
        self._caught_up = True
        self._add_all(self.messages())

    def _add_all(self, messages: Iterable[HeldMessage]) -> None:
        window = self.window
        now = window.now()
        for message in messages:
            key = dedup_key(message)
            if key is not None and not window.cache.seen(key, now):
                window.remember(key, now, header_ttl(message))

    def before_enqueue(self, message: HeldMessage) -> Verdict:
        """DROP a message whose key is in the window; otherwise remember its key and ACCEPT."""
        if not self._caught_up:
            self._catch_up()
        key = dedup_key(message)
        if key is None:
            return Verdict.ACCEPT
        window = self.window
        now = window.now()
        if window.cache.seen(key, now):
            return Verdict.DROP
        window.remember(key, now, header_ttl(message))
        return Verdict.ACCEPT

    def refused(self, message: HeldMessage) -> None:
        """The queue refused it (a length limit; the publisher got a nack): a retry is new."""
        key = dedup_key(message)
        if key is not None:
            self.window.forget(key)

    def after_ack(self, message: HeldMessage) -> None:
        """A persistent message left a durable queue: its key is kept by the state from now on."""
        if not message.persistent or not self.state.durable:
            return
        key = dedup_key(message)
        if key is None:
            return
        if not self._caught_up:
            self._catch_up()
        window = self.window
        if window.cache.expires_at(key) is None:  # restored and delivered before any publish
            window.remember(key, window.now(), header_ttl(message))
        window.persist(key)

    def close(self) -> None:
        """The queue was deleted: forget its window."""
        self.window.cache.entries.clear()
        self.state.clear()


class QueueDeduplicationPlugin:
    """Attaches QueueDeduplication to queues declared with x-message-deduplication: true."""

    name: ClassVar[str] = "deduplication"

    def attach(self, context: QueueContext) -> QueueDeduplication | None:
        """Hooks for a deduplicating queue (406 for bad arguments), None for other queues."""
        arguments = context.arguments
        enabled = arguments.get(QUEUE_ARGUMENT)
        where = f"queue '{context.name}' in vhost '{context.vhost}'"
        if enabled is None or enabled is False:
            return None
        if enabled is not True:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"invalid arg '{QUEUE_ARGUMENT}' for {where}: expected a boolean, "
                f"got '{format_argument(enabled)}'",
            )
        size = _positive(arguments, CACHE_SIZE, where) or DEFAULT_QUEUE_CACHE_SIZE
        return QueueDeduplication(context, size, _positive(arguments, CACHE_TTL, where))


# -- exchange level -------------------------------------------------------------------------


class DeduplicatingRouter:
    """Fanout routing that takes (and drops) a message whose key is in the exchange's window."""

    def __init__(self, context: ExchangeContext, size: int, ttl_ms: int | None, disk: bool) -> None:
        self.window = StateWindow(DedupCache(size, ttl_ms), context.state, context.scheduler)
        self.state = context.state
        self.disk = disk
        self.bound: dict[Destination, int] = {}  # destination -> bindings to it

    def bind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Fanout: every bound destination gets every message that is not a duplicate."""
        self.bound[destination] = self.bound.get(destination, 0) + 1

    def unbind(self, destination: Destination, routing_key: str, arguments: Arguments) -> None:
        """Remove one binding; the destination stays while others bind it."""
        left = self.bound.get(destination, 0) - 1
        if left > 0:
            self.bound[destination] = left
        else:
            self.bound.pop(destination, None)

    def route(self, routing_key: str, headers: Arguments | None) -> list[Destination]:
        """Every bound destination."""
        return list(self.bound)

    def hold(self, message: HeldMessage) -> bool:
        """Take (drop) a duplicate; remember the key of any other message and let it route."""
        key = dedup_key(message)
        if key is None:
            return False
        window = self.window
        now = window.now()
        if window.cache.seen(key, now):
            return True
        window.remember(key, now, header_ttl(message))
        if self.disk and message.persistent and self.state.durable:
            window.persist(key)
        return False

    def close(self) -> None:
        """The exchange was deleted: forget its window."""
        self.window.cache.entries.clear()
        self.state.clear()


class DeduplicationExchangeType:
    """Exchange type "x-message-deduplication": fanout, without duplicates within the window."""

    name: ClassVar[str] = "x-message-deduplication"

    def validate(self, arguments: Arguments) -> None:
        """x-cache-size is required, x-cache-ttl optional (positive ms), persistence memory|disk."""
        where = f"exchange type '{self.name}'"
        if _positive(arguments, CACHE_SIZE, where) is None:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"Missing or invalid argument, '{CACHE_SIZE}' must be a positive integer",
            )
        _positive(arguments, CACHE_TTL, where)
        persistence = arguments.get(CACHE_PERSISTENCE, "memory")
        if persistence not in PERSISTENCE_MODES:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"invalid arg '{CACHE_PERSISTENCE}' for {where}: expected memory or disk, "
                f"got '{format_argument(persistence)}'",
            )

    def validate_binding(self, routing_key: str, arguments: Arguments) -> None:
        """Any binding (the routing key is ignored, as fanout)."""

    def create_router(self) -> Router:
        """Not used: the broker calls create_router_in, which knows the exchange's arguments."""
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED, f"exchange type {self.name!r} needs its arguments"
        )

    def create_router_in(self, context: ExchangeContext) -> DeduplicatingRouter:
        """A fanout router with the exchange's window (restored from its state)."""
        arguments = context.arguments
        where = f"exchange '{context.name}' in vhost '{context.vhost}'"
        size = _positive(arguments, CACHE_SIZE, where)
        assert size is not None  # validate() ran first
        disk = arguments.get(CACHE_PERSISTENCE) == "disk"
        return DeduplicatingRouter(context, size, _positive(arguments, CACHE_TTL, where), disk)

    def assert_args_equivalence(
        self, resource: str, current: Arguments, received: Arguments
    ) -> None:
        """On redeclare the window's arguments must match (and alternate-exchange)."""
        keys = (*COMMON_EQUIVALENT_ARGUMENTS, CACHE_SIZE, CACHE_TTL, CACHE_PERSISTENCE)
        assert_args_equivalence(resource, current, received, keys)


def register(registry: ExchangeTypeRegistry) -> None:
    """Add the exchange type and the queue plugin to `registry`."""
    registry.register(DeduplicationExchangeType())
    registry.register_queue_plugin(QueueDeduplicationPlugin())
