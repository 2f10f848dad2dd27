"""A real etcd and N real nodes whose node links and etcd traffic all pass through a FaultProxy.

Each node is given its etcd route as --etcd and its link route as `cluster.advertise`, so the
proxy can cut any node from any other node and from etcd. Nodes keep their ports and data
directories across kill/restart. Leadership is read from etcd directly (never through the proxy).
"""

from __future__ import annotations

import signal
from pathlib import Path

from broker_process import BrokerProcess, free_port
from cluster_helpers import EtcdProcess, start_node, stop_nodes
from fault_proxy import FaultProxy
from mirror_helpers import in_sync_of, leader_of


class ProxiedCluster:
    """etcd, a FaultProxy and nodes named in `names`, every node-to-node and node-to-etcd byte proxied."""

    def __init__(self, base: Path, etcd: EtcdProcess, names: list[str], settings: str = "") -> None:
        self.base = base
        self.etcd = etcd
        self.proxy = FaultProxy().start()
        self.settings = settings  # more lines of the cluster section
        self.nodes: dict[str, BrokerProcess] = {}
        self.amqp_ports = {name: free_port() for name in names}
        self.link_ports = {name: free_port() for name in names}
        self.etcd_urls = {name: self.proxy.etcd_route(name, etcd.client_port) for name in names}
        self.advertised = {n: self.proxy.link_route(n, p) for n, p in self.link_ports.items()}

    def start(self, name: str) -> BrokerProcess:
        """Start (or restart) a node on its ports, with its data directory."""
        data_dir = self.base / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.base / f"{name}-broker-{self.amqp_ports[name]}.log"
        if log.exists():  # a restart: keep what the previous run logged
            runs = len(list(self.base.glob(f"{log.name}.*")))
            log.rename(log.with_name(f"{log.name}.{runs + 1}"))
        node = start_node(
            data_dir,
            name,
            self.etcd_urls[name],
            lease_ttl=None,  # as self.settings say
            cluster_settings=f"  advertise: {self.advertised[name]}\n{self.settings}",
            cluster_port=self.link_ports[name],
            port=self.amqp_ports[name],
        )
        self.nodes[name] = node
        return node

    def start_all(self) -> None:
        """Start every node."""
        for name in self.amqp_ports:
            self.start(name)

    def url(self, name: str) -> str:
        """The AMQP URL of a node (clients connect directly, never through the proxy)."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_ports[name]}/%2F"

    def alive(self, name: str) -> bool:
        """Whether the node's process is running (paused counts as running)."""
        node = self.nodes.get(name)
        return node is not None and node.proc is not None and node.proc.poll() is None

    def signal(self, name: str, sig: int) -> None:
        """Send a signal to a node's process."""
        proc = self.nodes[name].proc
        assert proc is not None
        proc.send_signal(sig)

    def kill(self, name: str) -> None:
        """SIGKILL a node and wait for it to die."""
        self.nodes[name].stop(signal.SIGKILL)

    def leader(self, queue: str) -> tuple[str, int] | None:
        """(node, epoch) of the queue's leader, from etcd directly."""
        return leader_of(self.etcd.url, queue)

    def in_sync(self, queue: str) -> tuple[str, ...]:
        """The queue's in-sync set, from etcd directly."""
        return in_sync_of(self.etcd.url, queue)

    def close(self) -> None:
        """Heal, resume and stop every node, then the proxy."""
        self.proxy.heal()
        stop_nodes(self.nodes.values())
        self.proxy.close()
