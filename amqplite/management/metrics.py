"""/metrics in the Prometheus text format: queues, message counters, connections, store, memory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from amqplite.broker.queue import Queue
from amqplite.management.mirror_metrics import mirror_lines
from amqplite.management.views import NodeView, alarm_snapshot, open_connections
from amqplite.store.latency import LatencyHistogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (metric suffix, MessageStats fields summed, help)
COUNTERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("published", ("publish",), "Messages enqueued"),
    ("delivered", ("deliver", "deliver_no_ack", "get", "get_no_ack"), "Messages delivered or got"),
    ("acked", ("ack",), "Messages acknowledged by clients"),
    ("redelivered", ("redeliver",), "Deliveries with the redelivered flag"),
    ("rejected", ("reject",), "Messages rejected or nacked without requeue"),
    ("requeued", ("requeue",), "Messages returned to their queue"),
    ("dead_lettered", ("dead_lettered",), "Messages dead-lettered"),
    ("expired", ("expired",), "Messages expired by TTL"),
    ("dropped", ("dropped",), "Messages dropped by a length limit"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# HELP {name} {text}")
    lines.append(f"# TYPE {name} {kind}")


def _store_numbers(store: Any) -> tuple[int, LatencyHistogram | None]:
    """Journal bytes on disk and the fsync histogram, read from the store if it offers them."""
    if store is None:
        return 0, None
    journal_bytes = 0
    total = getattr(store, "journal_bytes", None)
    if callable(total):
        total = total()
    if isinstance(total, int):
        journal_bytes = total
    else:
        for journal in list(getattr(store, "journals", {}).values()):
            size = getattr(journal, "journal_bytes", None)
            size = size() if callable(size) else size
            if isinstance(size, int):
                journal_bytes += size
    histogram = getattr(store, "fsync_histogram", None)
    if not isinstance(histogram, LatencyHistogram):
        histogram = None
    return journal_bytes, histogram


# Per-queue families: (name, type, help); their values come from QueueMetricLines.values.
QUEUE_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("amqplite_queue_messages_ready", "gauge", "Messages ready for delivery"),
    ("amqplite_queue_messages_unacked", "gauge", "Messages delivered and not yet acknowledged"),
    ("amqplite_queue_consumers", "gauge", "Consumers of the queue"),
    ("amqplite_queue_messages_ready_bytes", "gauge", "Body bytes of ready messages"),
    *(
        (f"amqplite_queue_messages_{suffix}_total", "counter", f"{text} (per queue)")
        for suffix, _fields, text in COUNTERS
    ),
)


class QueueMetricLines:
    """Each queue's sample lines, re-formatted only when one of its values has changed."""

    def __init__(self) -> None:
        self._cache: dict[Queue, tuple[tuple[int, ...], tuple[str, ...], str]] = {}

    @staticmethod
    def values(queue: Queue) -> tuple[int, ...]:
        """The queue's value of each QUEUE_FAMILIES metric."""
        s = queue.stats
        return (
            len(queue.ready),
            queue.unacked_count,
            len(queue.consumers),
            queue.ready_bytes,
            s.publish,
            s.deliver + s.deliver_no_ack + s.get + s.get_no_ack,
            s.ack,
            s.redeliver,
            s.reject,
            s.requeue,
            s.dead_lettered,
            s.expired,
            s.dropped,
        )

    def lines(self, queues: Sequence[Queue]) -> list[tuple[str, ...]]:
        """One tuple of sample lines per queue, in QUEUE_FAMILIES order."""
        cache = self._cache
        out: list[tuple[str, ...]] = []
        for queue in queues:
            values = self.values(queue)
            cached = cache.get(queue)
            if cached is None or cached[0] != values:
                label = (
                    cached[2]
                    if cached is not None
                    else f'{{vhost="{_label(queue.vhost)}",queue="{_label(queue.name)}"}}'
                )
                formatted = tuple(
                    f"{family[0]}{label} {value}"
                    for family, value in zip(QUEUE_FAMILIES, values, strict=True)
                )
                cached = cache[queue] = (values, formatted, label)
            out.append(cached[1])
        if len(cache) > 2 * len(queues) + 64:  # forget deleted queues
            keep = set(queues)
            self._cache = {q: v for q, v in cache.items() if q in keep}
        return out


def _alarm_gauges(snapshot: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Resource alarms (1 while set) and the limits they watch."""
    gauges = [
        ("amqplite_alarm_memory", int(snapshot["mem_alarm"]), "1 while the memory alarm is set"),
        ("amqplite_alarm_disk", int(snapshot["disk_free_alarm"]), "1 while the disk alarm is set"),
    ]
    for key, name, text in (
        ("mem_limit", "amqplite_memory_high_watermark_bytes", "Memory high watermark"),
        ("disk_free", "amqplite_disk_free_bytes", "Free disk space on the data directory"),
        ("disk_free_limit", "amqplite_disk_free_limit_bytes", "Free disk space limit"),
    ):
        if key in snapshot:
            gauges.append((name, int(snapshot[key]), text))
    return gauges


def render_metrics(
    node: NodeView, queue_lines: QueueMetricLines, store: object | None, memory_bytes: int
) -> str:
    """Every metric of the node in the text exposition format."""
    broker = node.broker
    lines: list[str] = []
    queues = [q for v in broker.vhosts.values() for q in v.queues.values()]
    per_queue = list(zip(*queue_lines.lines(queues), strict=True)) or [()] * len(QUEUE_FAMILIES)
    for (name, kind, text), samples in zip(QUEUE_FAMILIES, per_queue, strict=True):
        _header(lines, name, kind, text)
        lines.extend(samples)
    for suffix, fields, text in COUNTERS:
        name = f"amqplite_global_messages_{suffix}_total"
        _header(lines, name, "counter", text)
        lines.append(f"{name} {sum(getattr(broker.totals, f, 0) for f in fields)}")
    replies = broker.direct_replies
    for suffix, value, text in (
        ("delivered", replies.delivered, "Direct reply-to replies delivered to their consumer"),
        ("dropped", replies.dropped, "Direct reply-to replies whose consumer had gone"),
    ):
        name = f"amqplite_direct_replies_{suffix}_total"
        _header(lines, name, "counter", text)
        lines.append(f"{name} {value}")
    conns = open_connections(node)
    gauges: Iterable[tuple[str, int, str]] = (
        ("amqplite_connections", len(conns), "Open AMQP connections"),
        ("amqplite_channels", sum(len(c.session.channels) for c in conns), "Open AMQP channels"),
        ("amqplite_consumers", sum(len(q.consumers) for q in queues), "Consumers"),
        ("amqplite_queues", len(queues), "Queues"),
        ("amqplite_process_resident_memory_bytes", memory_bytes, "Resident memory of the broker"),
        *_alarm_gauges(alarm_snapshot(node, memory_bytes)),
    )
    for name, value, text in gauges:
        _header(lines, name, "gauge", text)
        lines.append(f"{name} {value}")
    journal_bytes, histogram = _store_numbers(store)
    _header(lines, "amqplite_journal_bytes", "gauge", "Bytes of queue journals on disk")
    lines.append(f"amqplite_journal_bytes {journal_bytes}")
    histogram = histogram or LatencyHistogram()
    name = "amqplite_fsync_seconds"
    _header(lines, name, "histogram", "Latency of group-commit fsyncs")
    for bound, count in histogram.cumulative():
        lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
    lines.append(f"{name}_sum {histogram.sum}")
    lines.append(f"{name}_count {histogram.count}")
    lines.extend(mirror_lines(queues))
    lines.append("")
    return "\n".join(lines)
