"""Management benchmark: GET /api/queues with 10,000 queues, and AMQP throughput with the API polled.

Starts its own `amqplite serve` (fresh data directory), declares the queues over AMQP, then:
  1. times GET /api/queues (all queues, one JSON list), a paged request and /api/overview;
  2. runs a transient publisher -> consumer flow (1 KB messages, prefetch 1000) in alternating
     phases without and with a poller that GETs /api/queues (every queue) and /api/overview once
     a second, and reports each phase's throughput and the ratio with/without polling.

Examples (from the repository root):

    .venv/bin/python scripts/bench_management.py
    .venv/bin/python scripts/bench_management.py --queues 10000 --duration 10 --rounds 2
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.client import Client
from benchlib.roles import Flow
from benchlib.scenarios import Progress, Target, _flow_metrics, run_flow

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    """Block until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def http_get(base: str, path: str) -> tuple[float, int]:
    """(seconds, body bytes) of one GET."""
    request = urllib.request.Request(base + path, headers={"authorization": AUTH})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        size = len(response.read())
    return time.perf_counter() - start, size


def time_requests(base: str, queues: int, repeat: int) -> None:
    """Print the median time and size of the list endpoints."""
    print(f"\n## GET with {queues:,} queues (median of {repeat})")
    print(f"{'request':<58} {'median ms':>10} {'max ms':>9} {'bytes':>12}")
    for path in (
        "/api/queues",
        "/api/queues?columns=name,messages,messages_unacknowledged,consumers",
        "/api/queues?page=1&page_size=100",
        "/api/queues?page=1&page_size=500&sort=messages&sort_reverse=true",
        "/api/overview",
        "/metrics",
    ):
        runs = [http_get(base, path) for _ in range(repeat)]
        times = [t for t, _ in runs]
        print(
            f"{path:<58} {statistics.median(times) * 1000:>10.1f} {max(times) * 1000:>9.1f} "
            f"{runs[-1][1]:>12,}"
        )


class Poller(threading.Thread):
    """GETs /api/queues and /api/overview once a second until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.requests = 0
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            for path in ("/api/queues", "/api/overview"):
                elapsed, _ = http_get(self.base, path)
                self.seconds.append(elapsed)
                self.requests += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def throughput(url: str, base: str, duration: float, rounds: int, size: int) -> None:
    """Alternate flows without and with polling; print each and the ratio of the means."""
    admin = Client(url)
    admin.open_channel()
    queue = "bench-mgmt-flow"
    admin.declare_queue(queue)
    results: dict[bool, list[float]] = {False: [], True: []}
    poll_times: list[float] = []
    print(f"\n## AMQP throughput, {size} B transient messages, {duration:g} s phases")
    print(f"{'phase':<28} {'msg/s':>10} {'API requests':>13} {'API median ms':>14}")
    try:
        for _ in range(rounds):
            for polled in (False, True):
                poller = Poller(base) if polled else None
                if poller is not None:
                    poller.start()
                flow = Flow(
                    queues=(queue,),
                    routing_keys=(queue,),
                    size=size,
                    prefetch=1000,
                    duration=duration,
                )
                run = run_flow(Target(url, None, "amqplite"), flow, Progress(False, ""))
                if poller is not None:
                    poller.stop.set()
                    poller.join()
                    poll_times += poller.seconds
                rate = _flow_metrics(flow, run).get("msg_per_s", 0.0)
                results[polled].append(rate)
                label = "polled every second" if polled else "no polling"
                requests = f"{poller.requests}" if poller else "-"
                median = (
                    f"{statistics.median(poller.seconds) * 1000:.1f}"
                    if poller and poller.seconds
                    else "-"
                )
                print(f"{label:<28} {rate:>10,.0f} {requests:>13} {median:>14}")
                # drain anything left so phases start equal
                admin.delete_queue(queue)
                admin.declare_queue(queue)
    finally:
        admin.delete_queue(queue)
        admin.close()
    without, with_ = statistics.mean(results[False]), statistics.mean(results[True])
    print(f"\nmean without polling: {without:,.0f} msg/s")
    print(f"mean with polling:    {with_:,.0f} msg/s")
    print(f"ratio with/without:   {with_ / without:.3f} ({(with_ / without - 1) * 100:+.1f} %)")


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--queues", type=int, default=10_000, help="queues to declare (default 10000)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput phase")
    parser.add_argument("--rounds", type=int, default=2, help="(no poll, poll) phase pairs")
    parser.add_argument("--repeat", type=int, default=5, help="timed GETs per endpoint")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    args = parser.parse_args()
    port, mport = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "broker.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "amqplite",
                "serve",
                "--port",
                str(port),
                "--management-port",
                str(mport),
                "--data-dir",
                str(Path(tmp) / "data"),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_port(port)
            wait_port(mport)
            url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
            base = f"http://127.0.0.1:{mport}"
            admin = Client(url)
            admin.open_channel()
            started = time.perf_counter()
            for i in range(args.queues):
                admin.declare_queue(f"bench-q-{i:05d}")
            admin.close()
            print(
                f"# amqplite management benchmark ({args.queues:,} queues declared in {time.perf_counter() - started:.1f} s)"
            )
            time_requests(base, args.queues, args.repeat)
            throughput(url, base, args.duration, args.rounds, args.size)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
