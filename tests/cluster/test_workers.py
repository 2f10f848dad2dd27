"""`amqplite serve --workers N`: N node processes on one host, one cluster, queues spread over them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from broker_process import ROOT, BrokerProcess, free_run, listening
from cluster_helpers import api_get, wait_for
from mirror_helpers import leader_of

pytestmark = pytest.mark.cluster

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def process_age(pid: int) -> float:
    """Seconds since the process started (from /proc: its start time in clock ticks after boot)."""
    start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def worker_pids(supervisor: subprocess.Popen[bytes]) -> list[int]:
    """The pids of the supervisor's children (the workers and its etcd)."""
    path = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


class Workers:
    """A running `amqplite serve --workers 2` and its ports."""

    def __init__(self, tmp_path: Path) -> None:
        self.amqp, self.mgmt, self.link = free_run(2), free_run(2), free_run(4)
        self.etcd = f"http://127.0.0.1:{self.link + 2}"  # after the workers' link ports
        self.log = tmp_path / "workers.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "amqplite", "serve", "--workers", "2",
                 "--port", str(self.amqp), "--management-port", str(self.mgmt),
                 "--prometheus-port", "0", "--cluster-port", str(self.link),
                 "--data-dir", str(tmp_path / "data")],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.started = time.monotonic()

    def url(self, index: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp + index}/%2F"

    def node(self, index: int) -> BrokerProcess:
        """Worker `index` (0-based) as the helpers take a broker."""
        return BrokerProcess("127.0.0.1", self.amqp + index, management_port=self.mgmt + index)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    running = Workers(tmp_path)
    try:
        wait_for(lambda: listening(running.mgmt) and listening(running.mgmt + 1), "two workers")
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            running.proc.wait(timeout=60)


def test_two_workers_form_one_cluster_and_share_the_queues(workers: Workers) -> None:
    management = workers.node(0)
    wait_for(lambda: len(api_get(management, "/api/nodes")) == 2, "both workers registered")
    assert sorted(n["name"] for n in api_get(management, "/api/nodes")) == [
        "worker-1",
        "worker-2",
    ]
    queues = ["w-a", "w-b"]
    with pika.BlockingConnection(pika.URLParameters(workers.url(0))) as conn:
        ch = conn.channel()
        for queue in queues:
            ch.queue_declare(queue, durable=True)  # one replica: led by one worker

    def leaders() -> dict[str, str] | None:
        found = {q: leader_of(workers.etcd, q) for q in queues}
        return {q: v[0] for q, v in found.items() if v} if all(found.values()) else None

    led = wait_for(leaders, "both queues led")
    assert sorted(led.values()) == ["worker-1", "worker-2"]  # one each: placement spreads them
    for queue, node in led.items():  # each worker serves the queue it leads
        url = workers.url(int(node.rsplit("-", 1)[1]) - 1)
        with pika.BlockingConnection(pika.URLParameters(url)) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", queue, queue.encode(), PERSISTENT)
            method, _, body = ch.basic_get(queue, auto_ack=True)
            assert method is not None
            assert body == queue.encode()
    # a worker that dies is restarted by the supervisor (once it is past its start-up grace)
    before = set(worker_pids(workers.proc))
    victim = next(pid for pid in before if f"{workers.amqp + 1}" in _cmdline(pid))
    # its own age, not the supervisor's: the supervisor starts etcd first, slowly under load
    wait_for(lambda: process_age(victim) > 6, "worker 2 past the start-up grace")
    assert api_get(workers.node(1), "/api/overview")
    subprocess.run(["kill", "-KILL", str(victim)], check=True)
    wait_for(lambda: len(set(worker_pids(workers.proc)) - before) == 1, "worker 2 restarted")
    wait_for(lambda: listening(workers.amqp + 1), "worker 2 listening again")
    workers.proc.send_signal(signal.SIGTERM)
    assert workers.proc.wait(timeout=60) == 0
    assert not listening(workers.amqp)
    assert not listening(workers.amqp + 1)
    assert not listening(workers.link + 2)  # its etcd stopped too


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def test_workers_without_a_usable_count_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amqplite", "serve", "--workers", "0",
         "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "amqplite: --workers expects a number of processes of at least 1"
    ]
