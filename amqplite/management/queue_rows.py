"""Queues as /api/queues shows them: message_stats with rates, fields on demand, a JSON cache."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from amqplite.broker.broker import Broker
from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.management.json_values import jsonable
from amqplite.management.queue_contents import (
    Contents,
    head_timestamp,
    queue_contents,
    rabbit_time,
    unacked_bytes_by_queue,
)
from amqplite.management.rates import RateTracker
from amqplite.management.stream_metrics import stream_info
from amqplite.management.views import NodeView, session_details


class QueueContext(Protocol):
    """What queue rendering reads of the management app."""

    @property
    def broker(self) -> Broker:
        """The broker core."""

    @property
    def node(self) -> NodeView:
        """The running node (for the owners of exclusive queues)."""

    @property
    def node_name(self) -> str:
        """The node's name."""

    @property
    def rates(self) -> RateTracker:
        """The rate series of queues and totals."""

    @property
    def wall_clock(self) -> Callable[[], float]:
        """Seconds since the epoch."""


ENTRY_OVERHEAD = 160  # estimated bytes per queued message besides its body (entry, list slot)
QUEUE_OVERHEAD = 2048  # estimated bytes of an empty queue

# (field, counters summed) in the order of the rate sample tuple
STAT_FIELDS = (
    "publish",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "deliver_get",
    "ack",
    "redeliver",
    "get_empty",
)
# broker-wide only, after the depths in totals_sample(): (overview field, MessageStats fields)
TOTALS_ONLY = ("confirm", "drop_unroutable", "return_unroutable")


def stat_counts(stats: MessageStats) -> tuple[int, ...]:
    """The message_stats counters in STAT_FIELDS order."""
    deliver_get = stats.deliver + stats.deliver_no_ack + stats.get + stats.get_no_ack
    return (
        stats.publish,
        stats.deliver,
        stats.deliver_no_ack,
        stats.get,
        stats.get_no_ack,
        deliver_get,
        stats.ack,
        stats.redeliver,
        stats.get_empty,
    )


def message_stats(counts: tuple[int, ...], rates: tuple[float, ...]) -> dict[str, Any]:
    """RabbitMQ's message_stats object: each counter with its `_details: {rate}`."""
    out: dict[str, Any] = {}
    for i, name in enumerate(STAT_FIELDS):
        out[name] = counts[i]
        out[name + "_details"] = {"rate": rates[i]}
    return out


def totals_only_stats(counts: tuple[int, ...], rates: tuple[float, ...]) -> dict[str, Any]:
    """The overview's confirm, drop_unroutable and return_unroutable with their rates."""
    out: dict[str, Any] = {}
    for name, count, rate in zip(TOTALS_ONLY, counts, rates, strict=True):
        out[name] = count
        out[name + "_details"] = {"rate": rate}
    return out


def queue_memory(queue: Queue) -> int:
    """An estimate of the bytes a queue holds (bodies of ready messages plus bookkeeping)."""
    messages = len(queue.ready) + queue.unacked_count
    return QUEUE_OVERHEAD + queue.ready_bytes + ENTRY_OVERHEAD * messages


def queue_sample(queue: Queue) -> tuple[int, ...]:
    """Counters and depths of a queue, as one rate sample."""
    ready = len(queue.ready)
    unacked = queue.unacked_count
    return (*stat_counts(queue.stats), ready + unacked, ready, unacked)


class QueueRow:
    """One queue's /api/queues fields, each computed on demand (`columns=` and `sort=` read few)."""

    __slots__ = ("_contents", "_counts", "_rates", "app", "now", "queue")

    def __init__(self, app: QueueContext, queue: Queue, now: float) -> None:
        self.app = app
        self.queue = queue
        self.now = now
        self._counts: tuple[int, ...] | None = None
        self._rates: tuple[float, ...] | None = None
        self._contents: Contents | None = None

    @property
    def contents(self) -> Contents:
        """queue_contents(queue), taken once."""
        if self._contents is None:
            self._contents = queue_contents(self.queue)
        return self._contents

    @property
    def unacked_bytes(self) -> int:
        """Body bytes of the queue's delivered, unacknowledged messages."""
        if not self.queue.unacked_count:
            return 0
        return _UNACKED.by_queue(self.app, self.now).get(self.queue, 0)

    @property
    def counts(self) -> tuple[int, ...]:
        """queue_sample(queue), taken once."""
        if self._counts is None:
            self._counts = queue_sample(self.queue)
        return self._counts

    @property
    def rates(self) -> tuple[float, ...]:
        """The rates of the counts (observing them once)."""
        if self._rates is None:
            self._rates = self.app.rates.observe(self.queue, self.now, self.counts)
        return self._rates

    def fields(self, names: Iterable[str]) -> dict[str, Any]:
        """The named top-level fields (unknown names, and an absent owner, left out)."""
        out: dict[str, Any] = {}
        for name in names:
            field = QUEUE_FIELDS.get(name)
            if field is not None:
                value = field(self)
                if value is not _ABSENT:
                    out[name] = value
        return out


_ABSENT: Any = object()
_N = len(STAT_FIELDS)
_SAMPLE_SIZE = _N + 3  # queue_sample(): the counters, then messages, ready and unacked


def _policy_name(row: QueueRow) -> Any:
    policy = getattr(row.queue, "policy", None)
    return getattr(policy, "name", policy) if policy is not None else None


def _owner_details(row: QueueRow) -> Any:
    owner = row.queue.exclusive_owner
    details = session_details(row.app.node, owner) if owner is not None else None
    return details if details is not None else _ABSENT


class _UnackedBytes:
    """Unacked bytes of every queue, computed once per request time (one pass over channels)."""

    def __init__(self) -> None:
        self.key: tuple[int, float] = (0, -1.0)
        self.value: dict[Queue, int] = {}

    def by_queue(self, app: QueueContext, now: float) -> dict[Queue, int]:
        if self.key != (id(app), now):
            channels = [
                channel.delivery
                for conn in app.node.connections
                for channel in conn.session.channels.values()
            ]
            sqs = getattr(app, "sqs", None)  # messages received over HTTP, not yet deleted
            if sqs is not None:
                channels.append(sqs.channel)
            self.value = unacked_bytes_by_queue(channels)
            self.key = (id(app), now)
        return self.value


_UNACKED = _UnackedBytes()


def _capacity(row: QueueRow) -> float:
    """The share of consumers that could take a message now (0 without consumers)."""
    consumers = row.queue.consumers
    if not consumers:
        return 0
    return round(sum(1 for c in consumers if c.can_take()) / len(consumers), 3)


def _sac_tag(row: QueueRow) -> Any:
    queue = row.queue
    if not queue.settings.single_active_consumer or not queue.consumers:
        return None
    return queue.consumers[0].tag


_WALL_OFFSETS: dict[int, float] = {}


def _idle_since(row: QueueRow) -> Any:
    """When the queue was last used, while nothing happens to it (RabbitMQ's idle_since)."""
    if any(row.rates):
        return _ABSENT
    offset = _WALL_OFFSETS.get(id(row.app))
    if offset is None:  # the broker's monotonic clock -> wall clock, fixed once so it is stable
        offset = _WALL_OFFSETS[id(row.app)] = row.app.wall_clock() - row.app.broker.now()
    return rabbit_time(min(row.queue.last_used, row.app.broker.now()) + offset)


def _ram(i: int, paged: Callable[[Contents], int]) -> Callable[[QueueRow], Any]:
    return lambda row: row.counts[_N + i] - paged(row.contents)


def _depth(i: int) -> Callable[[QueueRow], Any]:
    return lambda row: row.counts[_N + i]


def _depth_rate(i: int) -> Callable[[QueueRow], Any]:
    return lambda row: {"rate": row.rates[_N + i]}


def _placement(i: int) -> Callable[[QueueRow], Any]:
    """leader / members / online of a mirrored queue (cluster mode), as RabbitMQ's quorum queues."""

    def field(row: QueueRow) -> Any:
        remote = row.queue.remote
        placement = None if remote is None else remote.placement
        if placement is None:
            return _ABSENT
        value = placement[i]
        return list(value) if isinstance(value, tuple) else value

    return field


def _replication(i: int) -> Callable[[QueueRow], Any]:
    """in_sync / lag of a mirrored queue, on the node that leads it (amqplite's own fields)."""

    def field(row: QueueRow) -> Any:
        remote = row.queue.remote
        replication = None if remote is None else remote.replication
        if replication is None:
            return _ABSENT
        in_sync, lag = replication
        return list(in_sync) if i == 0 else dict(sorted(lag.items()))

    return field


def _node(row: QueueRow) -> Any:
    """The node the queue lives on: a mirrored queue's leader (when it has one)."""
    remote = row.queue.remote
    placement = None if remote is None else remote.placement
    return placement[0] if placement is not None and placement[0] else row.app.node_name


# /api/queues fields in RabbitMQ's order: name -> value of a row
QUEUE_FIELDS: dict[str, Callable[[QueueRow], Any]] = {
    "name": lambda row: row.queue.name,
    "vhost": lambda row: row.queue.vhost,
    "durable": lambda row: row.queue.durable,
    "auto_delete": lambda row: row.queue.auto_delete,
    "exclusive": lambda row: row.queue.exclusive,
    "arguments": lambda row: jsonable(row.queue.arguments) if row.queue.arguments else {},
    "node": _node,
    "leader": _placement(0),
    "members": _placement(1),
    "online": _placement(2),
    "in_sync": _replication(0),
    "lag": _replication(1),
    "type": lambda row: "stream" if stream_info(row.queue) is not None else "classic",
    "stream": lambda row: stream_info(row.queue),
    "state": lambda row: "running",
    "consumers": lambda row: len(row.queue.consumers),
    "exclusive_consumer_tag": lambda row: next(
        (c.tag for c in row.queue.consumers if c.exclusive), None
    ),
    "single_active_consumer_tag": _sac_tag,
    "consumer_capacity": _capacity,
    "consumer_utilisation": _capacity,
    "policy": _policy_name,
    "operator_policy": lambda row: None,
    "effective_policy_definition": lambda row: jsonable(
        dict(row.app.broker.policy_for(row.queue) or {})
    ),
    "head_message_timestamp": lambda row: head_timestamp(row.queue),
    "idle_since": _idle_since,
    "memory": lambda row: queue_memory(row.queue),
    "messages": _depth(0),
    "messages_details": _depth_rate(0),
    "messages_ready": _depth(1),
    "messages_ready_details": _depth_rate(1),
    "messages_unacknowledged": _depth(2),
    "messages_unacknowledged_details": _depth_rate(2),
    "messages_delayed": lambda row: len(row.queue.delayed),  # retry with backoff (broker/retry.py)
    "message_bytes": lambda row: row.queue.ready_bytes + row.unacked_bytes,
    "message_bytes_ready": lambda row: row.queue.ready_bytes,
    "message_bytes_unacknowledged": lambda row: row.unacked_bytes,
    "message_bytes_ram": lambda row: (
        row.queue.ready_bytes + row.unacked_bytes - row.contents.paged_bytes
    ),
    "message_bytes_persistent": lambda row: row.contents.persistent_bytes,
    "message_bytes_paged_out": lambda row: row.contents.paged_bytes,
    "messages_persistent": lambda row: row.contents.persistent,
    "messages_ram": _ram(0, lambda c: c.paged_ready + c.paged_unacked),
    "messages_ready_ram": _ram(1, lambda c: c.paged_ready),
    "messages_unacknowledged_ram": _ram(2, lambda c: c.paged_unacked),
    "messages_paged_out": lambda row: row.contents.paged_ready + row.contents.paged_unacked,
    "message_stats": lambda row: message_stats(row.counts[:_N], row.rates[:_N]),
    "owner_pid_details": _owner_details,
}


def render_queue(app: QueueContext, queue: Queue, now: float) -> dict[str, Any]:
    """A queue as RabbitMQ's /api/queues object."""
    return QueueRow(app, queue, now).fields(QUEUE_FIELDS)


def queue_fields(app: QueueContext, now: float) -> Callable[[Queue, Iterable[str]], dict[str, Any]]:
    """A partial renderer for render_list: only the named top-level fields of a queue."""
    return lambda queue, names: QueueRow(app, queue, now).fields(names)


class QueueJsonCache:
    """Each queue's JSON text, re-rendered only when something /api/queues shows has changed.

    An idle queue whose rates have settled at zero costs one tuple and one comparison: its
    rates stay zero while its counters do, so its rate series need not even be consulted.
    """

    def __init__(self) -> None:
        # queue (identity) -> (state, settled, text, rates); deleted queues pruned by prune()
        self._cache: dict[Queue, tuple[tuple[Any, ...], bool, str, tuple[float, ...]]] = {}

    def render(self, app: QueueContext, queue: Queue, now: float) -> str:
        """The queue's JSON object as text."""
        stats = queue.stats
        ready = len(queue.ready)
        unacked = queue.unacked_count
        state: tuple[Any, ...] = (
            stats.publish,
            stats.deliver,
            stats.deliver_no_ack,
            stats.get,
            stats.get_no_ack,
            stats.deliver + stats.deliver_no_ack + stats.get + stats.get_no_ack,
            stats.ack,
            stats.redeliver,
            stats.get_empty,
            ready + unacked,
            ready,
            unacked,
            len(queue.consumers),
            queue.ready_bytes,
            id(queue.arguments),
            len(queue.arguments),
            queue.exclusive_owner is not None,
            getattr(queue, "policy", None),
            None if queue.remote is None else queue.remote.placement,
            None if queue.remote is None else queue.remote.replication,
            len(queue.delayed),
        )
        cached = self._cache.get(queue)
        if cached is not None and cached[1] and cached[0] == state:
            return cached[2]
        counts = state[:_SAMPLE_SIZE]
        rates = app.rates.observe(queue, now, counts)
        if cached is not None and cached[0] == state and cached[3] == rates:
            text = cached[2]
        else:
            row = render_queue(app, queue, now)
            text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
        settled = not any(rates) and app.rates.settled(queue, counts)
        self._cache[queue] = (state, settled, text, rates)
        return text

    def prune(self, live: int, queues: Iterable[Queue]) -> None:
        """Forget deleted queues once the cache holds many more entries than `live` queues."""
        if len(self._cache) > 2 * live + 64:
            keep = set(queues)
            self._cache = {q: v for q, v in self._cache.items() if q in keep}


def sample_all(app: QueueContext, now: float) -> None:
    """Take a rate sample of every queue and of the broker totals."""
    for vhost in list(app.broker.vhosts.values()):
        for queue in list(vhost.queues.values()):
            app.rates.observe(queue, now, queue_sample(queue))
    app.rates.observe(app.broker.totals, now, totals_sample(app))


def queue_totals(app: QueueContext) -> tuple[int, int, int]:
    """(ready, unacked, consumers) summed over every queue, in one pass."""
    ready = unacked = consumers = 0
    for vhost in app.broker.vhosts.values():
        for queue in vhost.queues.values():
            ready += len(queue.ready)
            unacked += queue.unacked_count
            consumers += len(queue.consumers)
    return ready, unacked, consumers


def totals_sample(app: QueueContext, totals: tuple[int, int, int] | None = None) -> tuple[int, ...]:
    """Broker-wide counters and depths, as one rate sample (from queue_totals() if given)."""
    ready, unacked, _consumers = totals or queue_totals(app)
    t = app.broker.totals
    return (
        *stat_counts(t),
        ready + unacked,
        ready,
        unacked,
        t.confirm,
        t.unroutable - t.returned,
        t.returned,
    )
