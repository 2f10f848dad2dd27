"""`amqplite serve --workers N` on this machine: total messages per second with 1 worker and with N.

Starts `amqplite serve --workers 1` and `amqplite serve --workers N` (each with an etcd of its
own, in a temporary directory), declares the same --queues durable queues on both (placement
spreads their leaders over the workers), and runs, in alternated rounds, one publisher and one
consumer process per queue (the lean benchmark client of scripts/benchlib), each connected to the
worker leading its queue (clients on another worker are refused until forwarding lands).
Messages are 1 KB, transient by default (--persistent: persistent, confirms, 1000 in flight).

    .venv/bin/python scripts/bench_workers.py --workers 2 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.client import Client
from benchlib.cluster import queue_leader as leader_of
from benchlib.ports import free_run, listening
from benchlib.roles import Flow, Shared, consumer_main, publisher_main

ROOT = Path(__file__).resolve().parent.parent


class Workers:
    """One `amqplite serve --workers N` with its own etcd and ports."""

    def __init__(self, count: int, base: Path) -> None:
        self.count = count
        self.amqp = free_run(count)
        self.mgmt = free_run(count)
        self.link = free_run(count + 2)  # the workers' links, then its etcd (client, peer)
        self.etcd = f"http://127.0.0.1:{self.link + count}"
        data = base / f"workers{count}"
        data.mkdir(parents=True)
        self.log = open(base / f"workers{count}.log", "wb")  # noqa: SIM115 - as long as the run
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "amqplite", "serve", "--workers", str(count),
             "--port", str(self.amqp), "--management-port", str(self.mgmt),
             "--cluster-port", str(self.link), "--data-dir", str(data), "--log-level", "warning"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not all(listening(self.amqp + i) for i in range(count)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench_workers: --workers {count} did not start (see {self.log.name})")
            time.sleep(0.1)

    def url(self, index: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp + index}/%2F"

    def declare(self, queues: list[str]) -> dict[str, str]:
        """Declare the queues on worker 1 and wait for their leaders; queue -> URL of its leader."""
        admin = Client(self.url(0))
        admin.open_channel()
        for queue in queues:
            admin.declare_queue(queue, durable=True)
        admin.close()
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while len(urls) < len(queues):
            for queue in queues:
                leader = leader_of(self.etcd, queue)
                if leader is not None:
                    urls[queue] = self.url(int(leader.rsplit("-", 1)[1]) - 1)
            if time.monotonic() > deadline:
                sys.exit("bench_workers: the queues got no leaders")
            time.sleep(0.1)
        return urls

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the worker processes (children of the supervisor)."""
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0.0
        total = 0
        for child in children:
            try:
                fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def one_round(urls: dict[str, str], args: argparse.Namespace) -> float:
    """Messages delivered per second over every queue, one publisher and consumer each."""
    ctx = multiprocessing.get_context("fork")
    flows: list[tuple[Shared, list[Any]]] = []
    for queue, url in urls.items():
        flow = Flow(
            queues=(queue,),
            routing_keys=(queue,),
            size=1024,
            persistent=args.persistent,
            confirm_window=1000 if args.persistent else 0,
            max_backlog=None if args.persistent else 2000,
            duration=args.seconds,
            drain_timeout=30.0,
        )
        shared = Shared(ctx)
        pipes = []
        for main in (consumer_main, publisher_main):
            receiver, sender = ctx.Pipe(duplex=False)
            ctx.Process(target=main, args=(url, flow, shared, sender), daemon=True).start()
            sender.close()
            pipes.append(receiver)
        flows.append((shared, pipes))
    for shared, _ in flows:
        shared.consumer_ready.wait(30)
        shared.publisher_ready.wait(30)
    go_ns = time.monotonic_ns()
    for shared, _ in flows:
        shared.go_ns.value = go_ns
        shared.go.set()
    total = 0.0
    for _, pipes in flows:
        consumer = pipes[0].recv()
        pipes[1].recv()
        if "error" in consumer:
            sys.exit(f"bench_workers: consumer: {consumer['error']}")
        seconds = (consumer["window_ns"] - go_ns) / 1e9
        total += consumer["window_deliveries"] / seconds if seconds > 0 else 0.0
    return total


def main(argv: list[str] | None = None) -> int:
    """Start both, measure in alternated rounds, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queues", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    runs = {1: Workers(1, base), args.workers: Workers(args.workers, base)}
    try:
        queues = [f"bench-w{i}" for i in range(args.queues)]
        urls = {n: w.declare(queues) for n, w in runs.items()}
        for n, mapping in urls.items():
            spread = sorted(mapping.values()).count
            print(f"--workers {n}: leaders per worker "
                  f"{[spread(runs[n].url(i)) for i in range(n)]}")  # fmt: skip
        rates: dict[int, list[float]] = {n: [] for n in runs}
        for i in range(args.rounds):
            for n in runs if i % 2 == 0 else reversed(list(runs)):
                cpu0, wall0 = runs[n].cpu_seconds(), time.monotonic()
                rates[n].append(one_round(urls[n], args))
                busy = (runs[n].cpu_seconds() - cpu0) / (time.monotonic() - wall0)
                print(
                    f"  round {i + 1}, --workers {n}: {rates[n][-1]:9.0f} msg/s "
                    f"(workers' CPU {busy:.2f} cores; load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
        kind = "persistent, confirms" if args.persistent else "transient"
        one = statistics.median(rates[1])
        print(f"{args.queues} queues, 1 KB {kind}, one publisher and consumer per queue; median")
        print(f"of {args.rounds} alternated rounds of {args.seconds:.0f} s (messages delivered/s):")
        print(f"  --workers 1: {one:9.0f}")
        for n in runs:
            if n != 1:
                many = statistics.median(rates[n])
                print(f"  --workers {n}: {many:9.0f}  ({many / one:.2f}x)")
    finally:
        for w in runs.values():
            w.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
