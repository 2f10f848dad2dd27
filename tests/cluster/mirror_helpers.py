"""A replicated queue on real nodes: its leader and in-sync set read from etcd, pika clients on it.

Nodes are named by their AMQP URL (`BrokerProcess.url`, `ProxiedCluster.url(name)`), so the
same helpers serve nodes started directly and nodes behind a fault proxy.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

import pika
import pika.exceptions
from cluster_helpers import wait_for
from pika.adapters.blocking_connection import BlockingChannel

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _range(etcd_url: str, key: str) -> bytes | None:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(etcd_url + "/v3/kv/range", body)
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.load(response).get("kvs") or []
    return base64.b64decode(kvs[0]["value"]) if kvs else None


def queue_key(queue: str, leaf: str, vhost: str = "/") -> str:
    """The etcd key of one of a queue's leadership records (cluster "amqplite")."""
    parts = "/".join(urllib.parse.quote(p, safe="") for p in (vhost, queue))
    return f"/amqplite/amqplite/queues/{parts}/{leaf}"


def leader_of(etcd_url: str, queue: str) -> tuple[str, int] | None:
    """(node, epoch) leading the queue as etcd holds it now, or None."""
    value = _range(etcd_url, queue_key(queue, "leader"))
    if value is None:
        return None
    obj = json.loads(value)
    return str(obj["node"]), int(obj["epoch"])


def in_sync_of(etcd_url: str, queue: str) -> tuple[str, ...]:
    """The queue's in-sync set as etcd holds it now."""
    value = _range(etcd_url, queue_key(queue, "isr"))
    return () if value is None else tuple(json.loads(value)["members"])


def leader_name(etcd_url: str, queue: str) -> str | None:
    """The node leading the queue now, or None."""
    current = leader_of(etcd_url, queue)
    return None if current is None else current[0]


def leader_other_than(etcd_url: str, queue: str, old: str) -> str | None:
    """The node leading the queue now if it is not `old`, else None."""
    current = leader_name(etcd_url, queue)
    return current if current != old else None


def connect(url: str) -> pika.BlockingConnection:
    """A pika connection to url without heartbeats (a paused node must not drop it)."""
    return pika.BlockingConnection(pika.URLParameters(url + "?heartbeat=0"))


def declare_replicated(etcd_url: str, url: str, queue: str, replicas: int = 3) -> str:
    """Declare a durable queue with x-replicas through url; its leader once all are in sync."""
    with connect(url) as conn:
        conn.channel().queue_declare(queue, durable=True, arguments={"x-replicas": replicas})

    def placed() -> str | None:
        leader = leader_name(etcd_url, queue)
        in_sync = in_sync_of(etcd_url, queue)
        return leader if leader is not None and len(in_sync) == replicas else None

    return wait_for(placed, f"a leader and {replicas} in-sync members")


def publish_confirmed(url: str, queue: str, bodies: list[bytes]) -> None:
    """Publish persistent messages with confirms; each returns once confirmed (NackError if not)."""
    with connect(url) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, PERSISTENT)


def drain_deliveries(url: str, queue: str) -> list[tuple[bytes, bool]]:
    """(body, redelivered) of every message of the queue, got with auto-ack until it is empty."""
    out = []
    with connect(url) as conn:
        ch = conn.channel()
        while True:
            method, _, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((body, bool(method.redelivered)))


def drain(url: str, queue: str) -> list[bytes]:
    """The bodies of every message of the queue, in order, got with auto-ack until it is empty."""
    return [body for body, _ in drain_deliveries(url, queue)]


def acking(record: Callable[[bytes], object]) -> Callable[..., None]:
    """A basic_consume callback that records each body, then acks it."""

    def on_message(
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _: pika.BasicProperties,
        body: bytes,
    ) -> None:
        record(body)
        channel.basic_ack(method.delivery_tag)

    return on_message


class ConfirmingPublisher(threading.Thread):
    """Publishes persistent messages with confirms to one node until told to stop.

    A nacked body goes to `nacked`; publishing goes on after it only if `past_nacks`. An AMQP
    error that ends it (the node went away, the connection closed, a nack) is kept in `error`.
    """

    def __init__(self, url: str, queue: str, prefix: str, past_nacks: bool = False) -> None:
        super().__init__(daemon=True)
        self.url, self.queue, self.prefix = url, queue, prefix
        self.past_nacks = past_nacks
        self.confirmed: list[bytes] = []
        self.confirmed_at: list[float] = []
        self.nacked: list[bytes] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.url) as conn:
                ch = conn.channel()
                ch.confirm_delivery()
                i = 0
                while not self.stopping.is_set():
                    body = f"{self.prefix}{i}".encode()
                    i += 1
                    try:
                        ch.basic_publish("", self.queue, body, PERSISTENT)
                    except pika.exceptions.NackError:
                        self.nacked.append(body)
                        if self.past_nacks:
                            continue
                        raise
                    self.confirmed.append(body)
                    self.confirmed_at.append(time.monotonic())
        except pika.exceptions.AMQPError as exc:
            self.error = exc
