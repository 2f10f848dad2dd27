"""Management benchmark: the list endpoints with 10,000 queues, and AMQP throughput while polled.

Starts its own `amqplite serve` (fresh data directory), declares the queues over AMQP, then:
  1. times GET /api/queues (all queues, one JSON list), `columns=`, paged and sorted requests,
     /api/overview and /metrics: median and max wall time, and the broker's CPU per request;
  2. runs a transient publisher -> consumer flow (1 KB messages, prefetch 1000) in phases
     without and with a poller that GETs /api/queues (every queue) and /api/overview once a
     second. Phases alternate and swap order every round (A B, B A, ...) so drift in the
     machine's load hits both alike; it reports every phase with the other load on the
     machine, then the median and spread of each side, and the median of the paired ratios.

Examples (from the repository root):

    .venv/bin/python scripts/bench_management.py
    .venv/bin/python scripts/bench_management.py --queues 10000 --duration 8 --rounds 4
    .venv/bin/python scripts/bench_management.py --skip-requests --poll "/api/overview"
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.client import Client
from benchlib.ports import free_port
from benchlib.procinfo import sample
from benchlib.roles import Flow
from benchlib.scenarios import Progress, Target, _flow_metrics, run_flow

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()


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


def load_average() -> str:
    """The 1-minute load average and core count, for the report."""
    try:
        with open("/proc/loadavg") as f:
            one = f.read().split()[0]
    except OSError:
        one = "?"
    return f"load average {one} on {os.cpu_count()} cores"


REQUESTS = (
    "/api/queues",
    "/api/queues?columns=name,messages,messages_unacknowledged,consumers",
    "/api/queues?page=1&page_size=100",
    "/api/queues?page=1&page_size=500&sort=messages&sort_reverse=true",
    "/api/overview",
    "/metrics",
)


def time_requests(base: str, pid: int, queues: int, repeat: int) -> None:
    """Print the median and max time, the broker's CPU per request and the size of each."""
    print(f"\n## GET with {queues:,} queues (median of {repeat}; {load_average()})")
    print(f"{'request':<68} {'median ms':>9} {'max ms':>7} {'CPU ms':>7} {'bytes':>10}")
    for path in REQUESTS:
        http_get(base, path)  # warm: first samples for rates, caches filled
        cpu0 = sample(pid).cpu_seconds
        runs = [http_get(base, path) for _ in range(repeat)]
        cpu = (sample(pid).cpu_seconds - cpu0) / repeat
        times = [t for t, _ in runs]
        print(
            f"{path:<68} {statistics.median(times) * 1000:>9.1f} {max(times) * 1000:>7.1f} "
            f"{cpu * 1000:>7.1f} {runs[-1][1]:>10,}"
        )


class Poller(threading.Thread):
    """GETs its paths (/api/queues and /api/overview by default) once a second until stopped."""

    def __init__(self, base: str, paths: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.paths = paths
        self.stop = threading.Event()
        self.requests = 0
        self.seconds: list[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            for path in self.paths:
                elapsed, _ = http_get(self.base, path)
                self.seconds.append(elapsed)
                self.requests += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def spread(values: Sequence[float]) -> str:
    """median [min - max] of a sample."""
    return f"{statistics.median(values):,.0f} [{min(values):,.0f} - {max(values):,.0f}]"


def run_phase(
    url: str,
    pid: int,
    base: str,
    paths: Sequence[str],
    queue: str,
    duration: float,
    size: int,
    polled: bool,
    round_no: int,
) -> tuple[float, float]:
    """One flow, with or without the poller; print it; (msg/s, other load % of a core)."""
    poller = Poller(base, paths) if polled else None
    if poller is not None:
        poller.start()
    flow = Flow(queues=(queue,), routing_keys=(queue,), size=size, prefetch=1000, duration=duration)
    try:
        run = run_flow(Target(url, pid, "amqplite"), flow, Progress(False, ""))
    finally:
        if poller is not None:
            poller.stop.set()
            poller.join()
    metrics = _flow_metrics(flow, run)
    rate = metrics.get("msg_per_s", 0.0)
    other = metrics.get("other_cpu_pct", 0.0)
    label = "polled every second" if polled else "no polling"
    requests = f"{poller.requests}" if poller else "-"
    median = f"{statistics.median(poller.seconds) * 1000:.1f}" if poller and poller.seconds else "-"
    print(
        f"{round_no:>5} {label:<20} {rate:>10,.0f} {metrics.get('cpu_us_per_msg', 0.0):>14.1f} "
        f"{other:>13.0f} {requests:>13} {median:>14}"
    )
    return rate, other


def throughput(
    url: str,
    pid: int,
    base: str,
    paths: Sequence[str],
    duration: float,
    rounds: int,
    size: int,
    max_other_load: float,
    retries: int,
) -> None:
    """Alternate flows without and with polling; print each phase and the medians.

    A phase during which other processes used more than max_other_load % of a core is run
    again (up to `retries` times): the machine is shared, and such a phase measures them.
    """
    admin = Client(url)
    admin.open_channel()
    queue = "bench-mgmt-flow"
    admin.declare_queue(queue)
    results: dict[bool, list[float]] = {False: [], True: []}
    ratios: list[float] = []
    print(
        f"\n## AMQP throughput, {size} B transient messages, {duration:g} s phases, "
        f"{rounds} rounds; poller GETs {', '.join(paths)} every second ({load_average()})"
    )
    print(
        f"{'round':>5} {'phase':<20} {'msg/s':>10} {'broker µs/msg':>14} {'other load %':>13} "
        f"{'API requests':>13} {'API median ms':>14}"
    )
    try:
        for round_no in range(rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            rates: dict[bool, float] = {}
            for polled in order:
                for attempt in range(retries + 1):
                    rate, other = run_phase(
                        url, pid, base, paths, queue, duration, size, polled, round_no + 1
                    )
                    admin.delete_queue(queue)  # drain anything left so phases start equal
                    admin.declare_queue(queue)
                    if other <= max_other_load:
                        break
                    verdict = "repeated" if attempt < retries else "kept, no retries left"
                    print(f"{'':>5} (other load {other:.0f} % > {max_other_load:g} %: {verdict})")
                rates[polled] = rate
                results[polled].append(rate)
            if rates[False]:
                ratios.append(rates[True] / rates[False])
    finally:
        admin.delete_queue(queue)
        admin.close()
    without, with_ = statistics.median(results[False]), statistics.median(results[True])
    print(f"\nwithout polling, msg/s median [min - max]: {spread(results[False])}")
    print(f"with polling,    msg/s median [min - max]: {spread(results[True])}")
    print(
        f"ratio of the medians with/without: {with_ / without:.3f} ({(with_ / without - 1) * 100:+.1f} %)"
    )
    if ratios:
        paired = statistics.median(ratios)
        print(
            f"paired ratios per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
            f"median {paired:.3f} ({(paired - 1) * 100:+.1f} %)"
        )
    print(f"({load_average()} at the end)")


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--queues", type=int, default=10_000, help="queues to declare (default 10000)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per throughput phase")
    parser.add_argument(
        "--rounds", type=int, default=4, help="phase pairs, order swapped every round"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed GETs per endpoint")
    parser.add_argument("--size", type=int, default=1024, help="message body bytes")
    parser.add_argument(
        "--poll",
        action="append",
        help="a path the poller GETs every second (repeatable; default /api/queues, /api/overview)",
    )
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=50.0,
        help="repeat a phase during which other processes used more %% of a core (default 50)",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed phase")
    parser.add_argument("--skip-requests", action="store_true", help="only the throughput part")
    parser.add_argument("--skip-throughput", action="store_true", help="only the request timings")
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
            if not args.skip_requests:
                time_requests(base, proc.pid, args.queues, args.repeat)
            if not args.skip_throughput:
                paths = args.poll or ["/api/queues", "/api/overview"]
                throughput(
                    url,
                    proc.pid,
                    base,
                    paths,
                    args.duration,
                    args.rounds,
                    args.size,
                    args.max_other_load,
                    args.retries,
                )
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
