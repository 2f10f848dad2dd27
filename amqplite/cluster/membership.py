"""Who is in the cluster: node records as stored in etcd, and the view a watch keeps current."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import attrs

from amqplite.cluster.etcd_codec import KeyValue, RangeResult, WatchResponse
from amqplite.cluster.keys import node_of_key

log = logging.getLogger("amqplite.cluster")


@attrs.define
class LeaseClock:
    """Until when this node's lease surely holds, by its own monotonic clock (minus a margin)."""

    margin: float = 0.5  # seconds taken off for clock-rate drift and scheduling delay
    valid_until: float = float("-inf")

    def renewed(self, sent_at: float, ttl: int) -> None:
        """A grant or keepalive sent at `sent_at` came back with `ttl` (etcd renewed it later)."""
        self.valid_until = max(self.valid_until, sent_at + ttl - self.margin)

    def expired(self) -> None:
        """etcd said the lease is gone."""
        self.valid_until = float("-inf")

    def valid(self, now: float) -> bool:
        """Whether the lease holds at `now`: a leader confirms only while this is true."""
        return now < self.valid_until


class ClusterError(Exception):
    """Cluster mode cannot go on as asked (e.g. the node name is taken by a live node)."""


@attrs.frozen
class NodeRecord:
    """What a node publishes about itself: where clients, operators and other nodes reach it."""

    name: str
    amqp: str  # host:port of the AMQP listener
    management: str  # http://host:port of the management API ("" when it is off)
    cluster: str  # host:port of the node-to-node link
    started: float  # wall-clock seconds since the epoch
    version: str

    def encode(self) -> bytes:
        """The record as the value of its etcd key (JSON)."""
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> NodeRecord:
        """A record from its etcd value (ValueError if it is not one)."""
        try:
            obj = json.loads(value)
            return cls(
                name=str(obj["name"]),
                amqp=str(obj["amqp"]),
                management=str(obj["management"]),
                cluster=str(obj["cluster"]),
                started=float(obj["started"]),
                version=str(obj["version"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a node record: {exc}") from None

    def as_json(self) -> dict[str, Any]:
        """The record as the management API shows it."""
        return attrs.asdict(self)


class MemberView:
    """The registered nodes, rebuilt from a range and kept current by the watch that follows it."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.nodes: dict[str, NodeRecord] = {}
        self.revision = 0  # the etcd revision the view is current to

    def reset(self, result: RangeResult) -> None:
        """Replace the view by the nodes of a range over the nodes prefix."""
        self.nodes = {}
        self._put(result.kvs)
        self.revision = result.revision

    def apply(self, response: WatchResponse) -> None:
        """Apply one watch response (puts and deletes of node keys)."""
        for event in response.events:
            if event.type == "put":
                self._put([event.kv])
            else:
                name = node_of_key(self.cluster, event.kv.key)
                if name is not None and self.nodes.pop(name, None) is not None:
                    log.info("cluster: node %s left", name)
        self.revision = max(self.revision, response.revision)

    def _put(self, kvs: Iterable[KeyValue]) -> None:
        for kv in kvs:
            name = node_of_key(self.cluster, kv.key)
            if name is None:
                continue
            try:
                record = NodeRecord.decode(kv.value)
            except ValueError as exc:
                log.warning("cluster: ignoring node key %s: %s", name, exc)
                continue
            if name not in self.nodes:
                log.info("cluster: node %s joined (amqp %s)", name, record.amqp)
            self.nodes[name] = record

    def sorted(self) -> list[NodeRecord]:
        """The registered nodes by name."""
        return [self.nodes[name] for name in sorted(self.nodes)]
