"""Start and stop `amqplite serve` subprocesses for tests (or use AMQPLITE_TEST_URL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

import attrs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import ports  # noqa: E402  (the one port helper, shared with the scripts)

free_port = ports.free_port
free_run = ports.free_run
listening = ports.listening


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20.0
) -> None:
    """Block until host:port accepts a TCP connection, or fail with the broker's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} (see its log file)")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"broker did not listen on {host}:{port} within {timeout}s")


@attrs.define
class BrokerProcess:
    """A running broker the tests talk to."""

    host: str
    port: int
    user: str = "guest"
    password: str = "guest"
    vhost: str = "/"
    management_port: int | None = None
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()
    log_path: Path | None = None

    @property
    def url(self) -> str:
        """The amqp:// URL for pika, aio-pika and kombu."""
        vhost = urllib.parse.quote(self.vhost, safe="")
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{vhost}"

    @property
    def management_url(self) -> str:
        """Base URL of the HTTP management endpoint (no trailing slash)."""
        return f"http://{self.host}:{self.management_port or 15672}"

    @property
    def is_amqplite(self) -> bool:
        """True when the tests run against our own subprocess, not an external broker."""
        return self.proc is not None

    def stop(self, sig: int | None = None, timeout: float = 10.0) -> int | None:
        """Stop the subprocess (SIGTERM by default) and return its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        """The broker's combined stdout/stderr so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")


def start_broker(
    data_dir: Path, *extra_args: str, port: int | None = None, management: bool = True
) -> BrokerProcess:
    """Start `amqplite serve` on free ports; return once AMQP (and management, if on) listen.

    The management listener starts after the AMQP one, so both are waited for; pass
    management=False for a broker whose config turns the management endpoint off.
    """
    port = port or free_port()
    management_port = free_port()
    while management_port == port:  # a restart on a fixed port: that port is free right now
        management_port = free_port()
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
        str(data_dir),
        "--management-port",
        str(management_port),
        "--prometheus-port",  # off unless a test asks (extra_args come later and win)
        "0",
        *extra_args,
    ]
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-broker-{port}.log"
    with open(log_path, "wb") as log_file:  # a file, not a pipe: a full pipe would block the broker
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    broker = BrokerProcess(
        "127.0.0.1",
        port,
        management_port=management_port,
        data_dir=data_dir,
        proc=proc,
        extra_args=tuple(extra_args),
        log_path=log_path,
    )
    try:
        wait_for_port("127.0.0.1", port, proc)
        if management:
            wait_for_port("127.0.0.1", management_port, proc)
    except Exception:
        broker.stop()
        raise
    return broker


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `amqplite serve ARGS` to its end (a refused start ends at once); output captured."""
    return subprocess.run(
        [sys.executable, "-m", "amqplite", "serve", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def start_configured(
    base: Path,
    config: str | None = None,
    *extra_args: str,
    data: str = "data",
    port: int | None = None,
    management: bool = True,
) -> BrokerProcess:
    """start_broker with its data in base/data and, given `config`, base/amqplite.yaml holding it."""
    if config is not None:
        path = base / "amqplite.yaml"
        path.write_text(config)
        extra_args = ("--config", str(path), *extra_args)
    return start_broker(base / data, *extra_args, port=port, management=management)


class Serve(Protocol):
    """The `serve` fixture: start_configured in the test's tmp_path."""

    def __call__(
        self, config: str | None = None, *extra_args: str, **options: Any
    ) -> BrokerProcess:
        """Start a broker (options: data, port, management); it is stopped after the test."""
        ...


def external_broker() -> BrokerProcess | None:
    """The broker named by AMQPLITE_TEST_URL (e.g. a local RabbitMQ), if set."""
    url = os.environ.get("AMQPLITE_TEST_URL")
    if not url:
        return None
    parts = urllib.parse.urlparse(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return BrokerProcess(
        parts.hostname or "127.0.0.1",
        parts.port or 5672,
        user=parts.username or "guest",
        password=parts.password or "guest",
        vhost=vhost,
    )
