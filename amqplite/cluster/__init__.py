"""Cluster mode: coordination through etcd (membership now; definitions and mirrored queues next)."""

from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import EtcdError, EtcdUnavailable

__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable"]
