"""Shared rendering: message_stats with rates, queue objects, connection names."""

from __future__ import annotations

import json
import weakref
from typing import TYPE_CHECKING, Any

from amqplite.broker.queue import Queue
from amqplite.broker.stats import MessageStats
from amqplite.management.app import jsonable

if TYPE_CHECKING:
    from amqplite.management.app import ManagementApp

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
)


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
    )


def message_stats(counts: tuple[int, ...], rates: tuple[float, ...]) -> dict[str, Any]:
    """RabbitMQ's message_stats object: each counter with its `_details: {rate}`."""
    out: dict[str, Any] = {}
    for i, name in enumerate(STAT_FIELDS):
        out[name] = counts[i]
        out[name + "_details"] = {"rate": rates[i]}
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


def render_queue(app: ManagementApp, queue: Queue, now: float) -> dict[str, Any]:
    """A queue as RabbitMQ's /api/queues object."""
    counts = queue_sample(queue)
    rates = app.rates.observe(queue, now, counts)
    n = len(STAT_FIELDS)
    messages, ready, unacked = counts[n], counts[n + 1], counts[n + 2]
    exclusive_consumer = next((c.tag for c in queue.consumers if c.exclusive), None)
    policy = getattr(queue, "policy", None)
    item: dict[str, Any] = {
        "name": queue.name,
        "vhost": queue.vhost,
        "durable": queue.durable,
        "auto_delete": queue.auto_delete,
        "exclusive": queue.exclusive,
        "arguments": jsonable(queue.arguments) if queue.arguments else {},
        "node": app.node_name,
        "type": "classic",
        "state": "running",
        "consumers": len(queue.consumers),
        "exclusive_consumer_tag": exclusive_consumer,
        "consumer_utilisation": None,
        "policy": getattr(policy, "name", policy) if policy is not None else None,
        "memory": queue_memory(queue),
        "messages": messages,
        "messages_details": {"rate": rates[n]},
        "messages_ready": ready,
        "messages_ready_details": {"rate": rates[n + 1]},
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": {"rate": rates[n + 2]},
        "message_bytes_ready": queue.ready_bytes,
        "message_stats": message_stats(counts[:n], rates[:n]),
    }
    if queue.exclusive_owner is not None:
        details = app_connection_details(app, queue.exclusive_owner)
        if details is not None:
            item["owner_pid_details"] = details
    return item


class QueueJsonCache:
    """Each queue's JSON text, re-rendered only when something /api/queues shows has changed."""

    def __init__(self) -> None:
        self._cache: weakref.WeakKeyDictionary[Queue, tuple[Any, str]] = weakref.WeakKeyDictionary()

    def render(self, app: ManagementApp, queue: Queue, now: float) -> str:
        """The queue's JSON object as text."""
        counts = queue_sample(queue)
        rates = app.rates.observe(queue, now, counts)
        key = (
            counts,
            rates,
            len(queue.consumers),
            queue.ready_bytes,
            id(queue.arguments),
            len(queue.arguments),
            getattr(queue, "policy", None),
            queue.exclusive_owner is not None,
        )
        cached = self._cache.get(queue)
        if cached is not None and cached[0] == key:
            return cached[1]
        text = json.dumps(render_queue(app, queue, now), separators=(",", ":"), ensure_ascii=False)
        self._cache[queue] = (key, text)
        return text


def app_connection_details(app: ManagementApp, session: object) -> dict[str, Any] | None:
    """{name, peer_host, peer_port} of the connection whose session this is."""
    for conn in app.node.connections:
        if conn.session is session:
            return connection_details(conn)
    return None


def split_peer(peer: str) -> tuple[str, int]:
    """("host", port) from "host:port" (IPv6 hosts keep their colons)."""
    host, _, port = peer.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return peer, 0


def local_address(conn: Any) -> tuple[str, int]:
    """The broker-side address of a client connection's socket."""
    sock = getattr(conn.stream, "socket", None)
    if sock is not None:
        try:
            host, port = sock.getsockname()[:2]
            return str(host), int(port)
        except OSError:
            pass
    return "", 0


def connection_name(conn: Any) -> str:
    """RabbitMQ's connection name: "peer_host:peer_port -> host:port"."""
    host, port = local_address(conn)
    return f"{conn.session.peer} -> {host}:{port}"


def connection_details(conn: Any) -> dict[str, Any]:
    """RabbitMQ's connection_details object."""
    peer_host, peer_port = split_peer(conn.session.peer)
    return {"name": connection_name(conn), "peer_host": peer_host, "peer_port": peer_port}


def sample_all(app: ManagementApp) -> None:
    """Take a rate sample of every queue and of the broker totals."""
    now = app.clock()
    for vhost in list(app.broker.vhosts.values()):
        for queue in list(vhost.queues.values()):
            app.rates.observe(queue, now, queue_sample(queue))
    app.rates.observe(app.broker.totals, now, totals_sample(app))


def totals_sample(app: ManagementApp) -> tuple[int, ...]:
    """Broker-wide counters and depths, as one rate sample."""
    ready = unacked = 0
    for vhost in app.broker.vhosts.values():
        for queue in vhost.queues.values():
            ready += len(queue.ready)
            unacked += queue.unacked_count
    return (*stat_counts(app.broker.totals), ready + unacked, ready, unacked)


# pamqp attribute names that RabbitMQ's JSON spells differently
_PROPERTY_NAMES = {"message_type": "type"}
PROPERTY_FIELDS = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)


def render_properties(properties_bin: bytes) -> dict[str, Any]:
    """Message properties as RabbitMQ's JSON object (absent ones left out)."""
    from amqplite.protocol.errors import AMQPError
    from amqplite.protocol.properties import decode_properties

    try:
        props = decode_properties(properties_bin)
    except AMQPError:
        return {}
    out: dict[str, Any] = {}
    for name in (
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "message_type",
        "user_id",
        "app_id",
        "cluster_id",
    ):
        value = getattr(props, name, None)
        if value is not None and value != "":
            out[_PROPERTY_NAMES.get(name, name)] = jsonable(value)
    return out


def encode_payload(body: bytes, encoding: str = "auto") -> tuple[str, str]:
    """(payload, "string" | "base64"): UTF-8 text as a string unless base64 is asked for."""
    import base64

    if encoding != "base64":
        try:
            return body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode("ascii"), "base64"
