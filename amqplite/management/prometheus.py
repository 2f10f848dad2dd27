"""rabbitmq_prometheus-compatible metrics (`rabbitmq_*` families): aggregated and per-object."""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from typing import TYPE_CHECKING

from amqplite import __version__
from amqplite.broker.queue import Queue
from amqplite.management.http import HttpError, Request, Response
from amqplite.management.metrics import CONTENT_TYPE
from amqplite.management.mirror_metrics import mirror_lines
from amqplite.management.stream_metrics import stream_lines
from amqplite.management.views import alarm_snapshot, connection_name, open_connections

if TYPE_CHECKING:
    from amqplite.management.app import ManagementApp

RABBITMQ_VERSION = "3.10.0"  # the RabbitMQ whose management and metrics amqplite follows
PROTOCOL = 'protocol="amqp091"'
CLASSIC = 'protocol="amqp091",queue_type="rabbit_classic_queue"'

# Per-queue families: (name, type, help), their values from queue_values(); aggregated mode
# sums them over every queue, per-object mode labels each queue's value {vhost, queue}.
QUEUE_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("rabbitmq_queue_messages_ready", "gauge", "Messages ready to be delivered to consumers"),
    (
        "rabbitmq_queue_messages_unacked",
        "gauge",
        "Messages delivered to consumers but not yet acknowledged",
    ),
    ("rabbitmq_queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth"),
    ("rabbitmq_queue_consumers", "gauge", "Consumers on a queue"),
    ("rabbitmq_queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages"),
    ("rabbitmq_queue_messages_published_total", "counter", "Total number of messages published to queues"),
)  # fmt: skip

# Broker-wide counters: (name, labels, MessageStats fields added up (a "-" prefix subtracts), help)
GLOBAL_COUNTERS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("received", PROTOCOL, ("received",), "Total number of messages received from publishers"),
    ("received_confirm", PROTOCOL, ("confirm",), "Total number of messages received from publishers expecting confirmations"),
    ("routed", PROTOCOL, ("received", "-unroutable"), "Total number of messages routed to queues or streams"),
    ("unroutable_dropped", PROTOCOL, ("unroutable", "-returned"), "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    ("unroutable_returned", PROTOCOL, ("returned",), "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
    ("confirmed", PROTOCOL, ("confirm",), "Total number of messages confirmed to publishers"),
    ("delivered", CLASSIC, ("deliver", "deliver_no_ack", "get", "get_no_ack"), "Total number of messages delivered to consumers"),
    ("delivered_consume_manual_ack", CLASSIC, ("deliver",), "Total number of messages delivered to consumers using basic.consume with manual acknowledgment"),
    ("delivered_consume_auto_ack", CLASSIC, ("deliver_no_ack",), "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment"),
    ("delivered_get_manual_ack", CLASSIC, ("get",), "Total number of messages delivered to consumers using basic.get with manual acknowledgment"),
    ("delivered_get_auto_ack", CLASSIC, ("get_no_ack",), "Total number of messages delivered to consumers using basic.get with automatic acknowledgment"),
    ("get_empty", CLASSIC, ("get_empty",), "Total number of times basic.get operations fetched no message"),
    ("redelivered", CLASSIC, ("redeliver",), "Total number of messages redelivered to consumers"),
    ("acknowledged", CLASSIC, ("ack",), "Total number of messages acknowledged by consumers"),
)  # fmt: skip


def label(value: str) -> str:
    """A label value escaped for the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def queue_values(queue: Queue) -> tuple[int, ...]:
    """The queue's value of each QUEUE_FAMILIES metric."""
    ready = len(queue.ready)
    unacked = queue.unacked_count
    return (
        ready,
        unacked,
        ready + unacked,
        len(queue.consumers),
        queue.ready_bytes,
        queue.stats.publish,
    )


class PerObjectLines:
    """Each queue's labelled sample lines, re-formatted only when one of its values changed."""

    def __init__(self) -> None:
        self._cache: dict[Queue, tuple[tuple[int, ...], tuple[str, ...]]] = {}

    def lines(self, queues: Sequence[Queue]) -> list[tuple[str, ...]]:
        """One tuple of sample lines per queue, in QUEUE_FAMILIES order."""
        cache = self._cache
        out: list[tuple[str, ...]] = []
        for queue in queues:
            values = queue_values(queue)
            cached = cache.get(queue)
            if cached is None or cached[0] != values:
                labels = f'{{vhost="{label(queue.vhost)}",queue="{label(queue.name)}"}}'
                formatted = tuple(
                    f"{family[0]}{labels} {value}"
                    for family, value in zip(QUEUE_FAMILIES, values, strict=True)
                )
                cached = cache[queue] = (values, formatted)
            out.append(cached[1])
        if len(cache) > 2 * len(queues) + 64:  # forget deleted queues
            keep = set(queues)
            self._cache = {q: v for q, v in cache.items() if q in keep}
        return out


def _family(lines: list[str], name: str, kind: str, text: str) -> None:
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"# HELP {name} {text}")


def _disk_free(path: str) -> int | None:
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _node_gauges(app: ManagementApp, memory_bytes: int) -> list[tuple[str, int, str]]:
    """Process and resource gauges, with the alarm limits when the node has them."""
    from amqplite.management.resources.overview import fd_used

    node = app.node
    fd_total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    gauges = [
        ("rabbitmq_process_open_fds", fd_used(), "Open file descriptors"),
        ("rabbitmq_process_max_fds", fd_total, "Open file descriptors limit"),
        ("rabbitmq_process_open_tcp_sockets", len(node.connections), "Open TCP sockets"),
        ("rabbitmq_process_max_tcp_sockets", fd_total, "Open TCP sockets limit"),
        ("rabbitmq_process_resident_memory_bytes", memory_bytes, "Memory used in bytes"),
        ("rabbitmq_erlang_uptime_seconds", int(app.clock() - app.started), "Node uptime"),
    ]
    snapshot = alarm_snapshot(node, memory_bytes)
    disk_free = snapshot.get("disk_free", _disk_free(node.config.data_dir))
    if disk_free is not None:
        gauges.append(("rabbitmq_disk_space_available_bytes", int(disk_free), "Disk space available in bytes"))  # fmt: skip
    for key, name, text in (
        ("mem_limit", "rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes"),
        ("disk_free_limit", "rabbitmq_disk_space_available_limit_bytes", "Free disk space low watermark in bytes"),
    ):  # fmt: skip
        if key in snapshot:
            gauges.append((name, int(snapshot[key]), text))
    return gauges


def render(app: ManagementApp, per_object: PerObjectLines | None, memory_bytes: int) -> str:
    """Every family in the text format: queues summed (per_object None) or one sample each."""
    broker = app.broker
    queues = [q for v in broker.vhosts.values() for q in v.queues.values()]
    conns = open_connections(app.node)
    consumers = sum(len(q.consumers) for q in queues)
    lines: list[str] = []
    _family(lines, "rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info")
    node = label(app.node_name)
    lines.append(
        f'rabbitmq_identity_info{{rabbitmq_node="{node}",rabbitmq_cluster="{node}",'
        f'rabbitmq_cluster_permanent_id="amqplite-{node}"}} 1'
    )
    _family(lines, "rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info")
    lines.append(
        f'rabbitmq_build_info{{rabbitmq_version="{RABBITMQ_VERSION}",'
        f'prometheus_plugin_version="{__version__}",prometheus_client_version="amqplite",'
        f'erlang_version="none",product_name="amqplite",product_version="{__version__}"}} 1'
    )
    totals: list[tuple[str, int, str]] = [
        ("rabbitmq_connections", len(conns), "Connections currently open"),
        ("rabbitmq_channels", sum(len(c.session.channels) for c in conns), "Channels currently open"),
        ("rabbitmq_consumers", consumers, "Consumers currently connected"),
        ("rabbitmq_queues", len(queues), "Queues available"),
        *_node_gauges(app, memory_bytes),
    ]  # fmt: skip
    for name, value, text in totals:
        _family(lines, name, "gauge", text)
        lines.append(f"{name} {value}")
    if per_object is None:
        sums = [0] * len(QUEUE_FAMILIES)
        for queue in queues:
            for i, value in enumerate(queue_values(queue)):
                sums[i] += value
        for (name, kind, text), value in zip(QUEUE_FAMILIES, sums, strict=True):
            _family(lines, name, kind, text)
            lines.append(f"{name} {value}")
    else:
        per_queue = list(zip(*per_object.lines(queues), strict=True))
        per_queue = per_queue or [()] * len(QUEUE_FAMILIES)
        for (name, kind, text), samples in zip(QUEUE_FAMILIES, per_queue, strict=True):
            _family(lines, name, kind, text)
            lines.extend(samples)
    _family(lines, "rabbitmq_channel_consumers", "gauge", "Consumers on a channel")
    if per_object is None:
        lines.append(f"rabbitmq_channel_consumers {consumers}")
    else:
        for conn in conns:
            for channel in conn.session.channels.values():
                name = label(f"{connection_name(conn)} ({channel.channel_id})")
                count = len(channel.delivery.consumers)
                lines.append(f'rabbitmq_channel_consumers{{channel="{name}"}} {count}')
    churn = broker.churn
    for name, value, text in (
        ("rabbitmq_connections_opened_total", churn.connection_created, "Total number of connections opened"),
        ("rabbitmq_connections_closed_total", churn.connection_closed, "Total number of connections closed or terminated"),
        ("rabbitmq_channels_opened_total", churn.channel_created, "Total number of channels opened"),
        ("rabbitmq_channels_closed_total", churn.channel_closed, "Total number of channels closed"),
        ("rabbitmq_queues_declared_total", churn.queue_declared, "Total number of queues declared"),
        ("rabbitmq_queues_created_total", churn.queue_created, "Total number of queues created"),
        ("rabbitmq_queues_deleted_total", churn.queue_deleted, "Total number of queues deleted"),
    ):  # fmt: skip
        _family(lines, name, "counter", text)
        lines.append(f"{name} {value}")
    _family(lines, "rabbitmq_global_consumers", "gauge", "Current number of consumers")
    lines.append(f"rabbitmq_global_consumers{{{PROTOCOL}}} {consumers}")
    stats = broker.totals
    for suffix, labels, fields, text in GLOBAL_COUNTERS:
        name = f"rabbitmq_global_messages_{suffix}_total"
        value = sum(
            -getattr(stats, f[1:]) if f.startswith("-") else getattr(stats, f) for f in fields
        )
        _family(lines, name, "counter", text)
        lines.append(f"{name}{{{labels}}} {value}")
    lines.extend(stream_lines(queues))
    lines.extend(mirror_lines(queues))
    lines.append("")
    return "\n".join(lines)


class PrometheusEndpoint:
    """The unauthenticated HTTP handler of the Prometheus port (like rabbitmq_prometheus)."""

    def __init__(self, app: ManagementApp) -> None:
        self.app = app
        self.per_object = PerObjectLines()

    def handle(self, request: Request) -> Response:
        """GET /metrics (aggregated) or /metrics/per-object; anything else 404 or 405."""
        from amqplite.management.resources.overview import memory_used

        path = request.path.rstrip("/") or "/"
        if path not in ("/metrics", "/metrics/per-object"):
            return HttpError(404, "Not Found", "Object Not Found").response()
        if request.method not in ("GET", "HEAD"):
            return HttpError(405, f"method {request.method} not allowed here", headers=(("allow", "GET, HEAD"),)).response()  # fmt: skip
        per_object = self.per_object if path == "/metrics/per-object" else None
        text = render(self.app, per_object, memory_used())
        body = b"" if request.method == "HEAD" else text.encode()
        return Response(200, body, CONTENT_TYPE)
