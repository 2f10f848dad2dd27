"""Longest event-loop stall while a persistent backlog is published and then consumed.

A probe process keeps one tiny request in flight on its own connection (a passive
queue.declare, one every millisecond) and records each round trip: a broker whose event loop
is busy in file I/O answers late, so the longest round trip bounds the longest stall. Two
phases: publish `--gigabytes` of persistent messages to a durable queue with confirms, then
consume them all (bodies beyond the memory budget are read back from disk).

    .venv/bin/python scripts/bench_loop_stall.py                     # this checkout, 1 GB
    .venv/bin/python scripts/bench_loop_stall.py --baseline /tmp/base  # also another checkout

`--baseline DIR` runs the same measurement on a checkout in DIR (with DIR/.venv) first,
in the same run, so the two are compared under the same machine load.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_durability import free_port
from benchlib.client import Client, Consumer, acks_each, publish_frames, send_confirmed

from amqplite.protocol.methods import spec

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "backlog"


def serve(root: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`amqplite serve` from the checkout at root (its own .venv), listening on a free port."""
    port = free_port()
    python = root / ".venv" / "bin" / "python"
    log_path = data_dir.parent / f"broker-{port}.log"
    cmd = [str(python), "-m", "amqplite", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--management-port", str(free_port())]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            Client(f"amqp://guest:guest@127.0.0.1:{port}/%2F").close()
            return proc, port, log_path
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"broker did not start: {log_path.read_text()[-2000:]}")


# -- the probe (its own process, so the load generator never delays it) --------------------


def probe(port: int, out: Path) -> None:
    """Round-trip a passive queue.declare every ms until SIGTERM; write the RTTs (µs) as JSON."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    client = Client(f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout=120)
    client.open_channel()
    client.declare_queue("probe")
    marks: list[tuple[float, float]] = []  # (when, rtt µs)
    out.with_suffix(".ready").write_text("1")
    while not stop:
        started = time.perf_counter()
        client.rpc(1, spec.Queue.Declare(queue="probe", passive=True), spec.Queue.DeclareOk, 120)
        marks.append((time.monotonic(), (time.perf_counter() - started) * 1e6))
        time.sleep(0.001)
    out.write_text(json.dumps(marks))


class Probe:
    """The probe process and the phases measured."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.out = workdir / f"probe-{port}.json"
        cmd = [sys.executable, __file__, "probe", "--port", str(port), "--out", str(self.out)]
        self.proc = subprocess.Popen(cmd)
        while not self.out.with_suffix(".ready").exists():
            time.sleep(0.01)
        self.phases: list[tuple[str, float, float]] = []

    def stop(self) -> list[tuple[float, float]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return [tuple(m) for m in json.loads(self.out.read_text())]  # type: ignore[misc]


# -- load --------------------------------------------------------------------------------


def publish(port: int, count: int, body: bytes, window: int) -> None:
    """Publish count persistent messages with confirms, at most window unconfirmed."""
    client = Client(f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout=120)
    client.open_channel()
    client.declare_queue(QUEUE, durable=True)
    client.confirm_select()
    frames = publish_frames("", QUEUE, body, persistent=True)
    send_confirmed(client, frames, count, window, timeout=120)
    client.close()


def consume(port: int, count: int, prefetch: int) -> None:
    """Consume count messages with manual acks."""
    client = Client(f"amqp://guest:guest@127.0.0.1:{port}/%2F", timeout=120)
    client.open_channel()
    client.qos(prefetch)
    client.consume(QUEUE, "drain")
    counter = Consumer()
    acked = 0
    while acked < count:
        client.receive(timeout=120)
        counter.feed(client.buffer, 0)
        if counter.last_tag > acked:
            client.send(acks_each(acked + 1, counter.last_tag))
            acked = counter.last_tag
    client.close()


def stats(marks: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    """Round trips (ms) of one phase: count, median, 99.9th percentile and the longest."""
    rtts = sorted(rtt for when, rtt in marks if start <= when <= end)
    if not rtts:
        return {"probes": 0}
    return {
        "probes": len(rtts),
        "median_ms": rtts[len(rtts) // 2] / 1000,
        "p999_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.999))] / 1000,
        "max_ms": rtts[-1] / 1000,
    }


def run(root: Path, gigabytes: float, body_kb: int, window: int) -> dict[str, object]:
    """One broker from root: publish then consume the backlog under the probe."""
    body = b"x" * (body_kb * 1024)
    count = int(gigabytes * 1024 * 1024 * 1024) // len(body)
    with tempfile.TemporaryDirectory(prefix="loop-stall-") as tmp:
        proc, port, _log = serve(root, Path(tmp) / "data")
        try:
            probe_ = Probe(port, Path(tmp))
            t0 = time.monotonic()
            publish(port, count, body, window)
            t1 = time.monotonic()
            consume(port, count, prefetch=200)
            t2 = time.monotonic()
            marks = probe_.stop()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        return {
            "root": str(root),
            "messages": count,
            "body_bytes": len(body),
            "publish_s": round(t1 - t0, 1),
            "consume_s": round(t2 - t1, 1),
            "publish": stats(marks, t0, t1),
            "consume": stats(marks, t1, t2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("probe")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--body-kb", type=int, default=16)
    parser.add_argument("--window", type=int, default=256, help="unconfirmed publishes")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured first")
    args = parser.parse_args()
    if args.command == "probe":
        probe(args.port, args.out)
        return
    roots = ([args.baseline] if args.baseline else []) + [ROOT]
    for root in roots:
        print(json.dumps(run(root, args.gigabytes, args.body_kb, args.window)), flush=True)


if __name__ == "__main__":
    main()
