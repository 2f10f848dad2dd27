"""Cluster mode through etcd: membership, shared definitions, leadership (mirrored queues next)."""

from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import EtcdError, EtcdUnavailable

__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable"]
