"""scripts/local_cluster.py: etcd and N nodes in one command, all stopped by one SIGTERM."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from broker_process import ROOT, BrokerProcess, free_port
from cluster_helpers import node_names, wait_for

pytestmark = pytest.mark.cluster


def free_pair() -> int:
    """A port p with p and p + 1 both free, below the ephemeral range clients' sockets take."""
    for _ in range(200):
        base = random.randrange(20000, 32000)
        try:
            for port in (base, base + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    return free_port()


def test_local_cluster_script_starts_two_nodes_that_see_each_other_and_stops_them(
    tmp_path: Path,
) -> None:
    amqp, mgmt, link = free_pair(), free_pair(), free_pair()  # node i uses port + i - 1
    log = tmp_path / "out.txt"
    cmd = [sys.executable, "scripts/local_cluster.py", "--nodes", "2", "--dir", str(tmp_path)]
    cmd += ["--etcd-port", str(free_pair()), "--amqp-port", str(amqp)]
    cmd += ["--management-port", str(mgmt), "--cluster-port", str(link)]
    with open(log, "wb") as out:
        script = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), "cluster up", 60)
        node1 = BrokerProcess("127.0.0.1", amqp, management_port=mgmt)
        wait_for(lambda: node_names(node1) == ["node1", "node2"], "both nodes registered")
    finally:
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) == 0, log.read_text()
    assert "node1    amqp://guest:guest@127.0.0.1:" in log.read_text()
