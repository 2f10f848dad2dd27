"""The etcd key layout of a cluster: every key lives under /amqplite/<cluster name>/."""

from __future__ import annotations

from amqplite.cluster.etcd_codec import prefix_end

ROOT = "/amqplite"


def cluster_prefix(cluster: str) -> bytes:
    """/amqplite/<cluster>/: everything of one cluster."""
    return f"{ROOT}/{cluster}/".encode()


def nodes_prefix(cluster: str) -> bytes:
    """/amqplite/<cluster>/nodes/: one key per registered node, held by that node's lease."""
    return cluster_prefix(cluster) + b"nodes/"


def node_key(cluster: str, node: str) -> bytes:
    """/amqplite/<cluster>/nodes/<node>: the node's addresses (JSON), under its lease."""
    return nodes_prefix(cluster) + node.encode()


def node_of_key(cluster: str, key: bytes) -> str | None:
    """The node name of a node key, or None for a key outside the nodes prefix."""
    prefix = nodes_prefix(cluster)
    if not key.startswith(prefix) or len(key) == len(prefix):
        return None
    return key[len(prefix) :].decode("utf-8", "replace")


def incarnation_key(cluster: str) -> bytes:
    """/amqplite/<cluster>/incarnation: a token put once into an empty etcd (a new one: data lost)."""
    return cluster_prefix(cluster) + b"incarnation"


def range_of(prefix: bytes) -> tuple[bytes, bytes]:
    """(key, range_end) covering every key under prefix."""
    return prefix, prefix_end(prefix)
