"""The brokers under test: a fixed URL, or `amqplite serve` started afresh on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs

from benchlib.client import DEFAULT_URL, BrokerURL, Client
from benchlib.ports import free_port
from benchlib.procinfo import find_listener_pid
from benchlib.scenarios import Target


@contextmanager
def spawned_amqplite(root: Path, config: Path | None = None) -> Iterator[tuple[str, int]]:
    """Run `amqplite serve` from ``root`` on a free port in a temporary data dir; yield (url, pid).

    ``config`` is a settings YAML passed with --config (flags still choose port and data dir).
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="amqplite-bench-") as tmp:
        log = Path(tmp) / "broker.log"
        cmd = [
            sys.executable,
            "-m",
            "amqplite",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(Path(tmp) / "data"),
            "--management-port",
            "0",
            "--log-level",
            "warning",
        ]
        if config is not None:
            cmd += ["--config", str(config)]
        with open(log, "wb") as out:
            env = {**os.environ, "PYTHONPATH": str(root)}
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"amqplite exited with {proc.returncode}: {log.read_text()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("amqplite did not start listening") from None
                    time.sleep(0.05)
            yield f"amqp://guest:guest@127.0.0.1:{port}/%2F", proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_target(url: str, pid: int | None, taken: set[str]) -> Target:
    """Connect once to learn the broker's name; find its pid by port on this machine."""
    parts = BrokerURL.parse(url)
    if parts.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench: refusing a non-local broker {parts.host} (use 127.0.0.1)")
    client = Client(url)
    name = client.product
    client.close()
    while name in taken:
        name += "'"
    taken.add(name)
    if pid is None:
        pid = find_listener_pid(parts.port)
        if pid is None:
            print(
                f"bench: cannot find the process listening on port {parts.port}; "
                "pass --broker-pid/--compare-pid for CPU and memory figures",
                file=sys.stderr,
            )
    return Target(url, pid, name)


class Broker:
    """Where a scenario runs: a fixed URL, or a fresh `amqplite serve` for every scenario."""

    def __init__(
        self,
        url: str | None,
        pid: int | None,
        root: Path | None,
        taken: set[str],
        config: Path | None = None,
    ):
        self.root = root
        self.config = config
        if root is not None:
            with spawned_amqplite(root, config) as (spawned_url, spawned_pid):
                self.target = make_target(spawned_url, spawned_pid, taken)
        else:
            self.target = make_target(url or DEFAULT_URL, pid, taken)

    @contextmanager
    def session(self) -> Iterator[Target]:
        """The broker for one scenario (freshly started when spawned)."""
        if self.root is None:
            yield self.target
            return
        with spawned_amqplite(self.root, self.config) as (url, pid):
            yield attrs.evolve(self.target, url=url, pid=pid)
