"""A large backlog under a memory watermark: publish with no consumer, then drain; broker RSS.

Publishes N x B transient messages (default 1,000,000 x 1 KB) to one queue with no consumer, as
fast as the broker reads them, waits until the queue holds them all, consumes every one (none
may be lost), then watches the broker's RSS for --settle seconds. Reports RSS before, at the peak
and after settling, beside the watermark, for each broker in one run.

    .venv/bin/python scripts/bench_backlog_memory.py --spawn \\
        --compare amqp://guest:guest@127.0.0.1:5672/%2F --rabbitmq-watermark 256MB

--watermark SIZE is written into the spawned amqplite's settings
(``alarms.memory_high_watermark_bytes``); --rabbitmq-watermark runs `rabbitmqctl
set_vm_memory_high_watermark absolute ...` for the run and puts the previous value back after.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.brokers import Broker
from benchlib.client import Client
from benchlib.procinfo import sample
from benchlib.roles import Flow
from benchlib.sampler import Series
from benchlib.scenarios import FlowRun, Progress, Target, run_flow

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        prog="bench_backlog_memory.py",
        description="A backlog larger than the memory watermark: RSS before, at peak, after.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help="broker under test (default: --spawn)")
    p.add_argument("--spawn", action="store_true", help="start `amqplite serve` for the run")
    p.add_argument("--compare", metavar="URL", help="the same run against this broker")
    p.add_argument("--broker-pid", type=int, help="pid of the --url broker (default: by port)")
    p.add_argument("--compare-pid", type=int, help="pid of the --compare broker")
    p.add_argument("--count", type=int, default=1_000_000, help="messages (default 1,000,000)")
    p.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    p.add_argument(
        "--watermark",
        metavar="SIZE",
        help="memory high watermark for the spawned amqplite, e.g. 256MB (default: its own)",
    )
    p.add_argument(
        "--rabbitmq-watermark",
        metavar="SIZE",
        help="set the --compare RabbitMQ's vm_memory_high_watermark to this absolute size "
        "for the run (rabbitmqctl), then restore it",
    )
    p.add_argument(
        "--settle", type=float, default=30.0, help="seconds to watch RSS after draining (30)"
    )
    p.add_argument(
        "--drain-timeout", type=float, default=120.0, help="give up after this long idle (120 s)"
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=20.0,
        help="a queue that stops growing this long with the publisher still sending means the "
        "broker holds it: start the consumer anyway (20 s)",
    )
    p.add_argument("--json", metavar="PATH", help="write the figures and RSS series as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_size(text: str) -> int:
    """Bytes from ``256MB``, ``1GB``, ``512MiB`` or a plain number."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    upper = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * factor)
    return int(upper)


@contextmanager
def rabbitmq_watermark(size: str | None) -> Iterator[None]:
    """RabbitMQ's memory watermark set to an absolute ``size`` for the block, then put back."""
    if size is None:
        yield
        return
    previous = _rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    _rabbitmqctl("set_vm_memory_high_watermark", "absolute", size)
    try:
        yield
    finally:
        # 0.4 is a relative fraction, {absolute, N} an absolute number of bytes
        text = previous.strip()
        if text.startswith("{absolute,"):
            _rabbitmqctl("set_vm_memory_high_watermark", "absolute", text[10:].strip(" }"))
        else:
            _rabbitmqctl("set_vm_memory_high_watermark", text)
        now = _rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()
        if now != text:
            print(f"RabbitMQ's watermark is {now}, not {text} as before the run", file=sys.stderr)
        else:
            print(f"RabbitMQ's watermark put back to {now}", file=sys.stderr)


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"rabbitmqctl {shlex.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _rss_mb(target: Target) -> float:
    return sample(target.pid).rss_bytes / MB if target.pid else 0.0


def run_backlog(target: Target, args: argparse.Namespace, watermark: int | None) -> dict[str, Any]:
    """Publish the backlog, wait for all of it, drain it, watch RSS; the figures and series.

    A broker that holds the publisher (a memory alarm) and cannot page messages out stops
    taking the backlog: when the queue has not grown for --stall-timeout s, the consumer
    starts anyway and the publisher finishes against it (reported as ``held_at``).
    """
    name = f"bench-backlog-memory-{time.monotonic_ns() % 10**9}"
    admin = Client(target.url)
    admin.open_channel()
    admin.declare_queue(name)
    flow = Flow(
        queues=(name,),
        routing_keys=(name,),
        size=args.size,
        duration=None,
        count=args.count,
        drain_timeout=args.drain_timeout,
        batch=200,
    )
    runs: dict[str, FlowRun] = {}
    try:
        time.sleep(1.0)
        before = _rss_mb(target)
        start = time.monotonic()
        progress = Progress(not args.quiet, f"publish @ {target.name}")
        publisher = threading.Thread(
            target=lambda: runs.update(
                publish=run_flow(target, flow, progress, with_consumer=False)
            )
        )
        publisher.start()
        depth, held_at, filled = _wait_for_backlog(admin, name, args, publisher)
        enqueued = filled - start
        progress = Progress(not args.quiet, f"drain @ {target.name}")
        final = args.count if held_at is not None else depth
        drained = run_flow(target, flow, progress, with_publisher=False, preset_final=final)
        publisher.join()
        delivered = int(drained.consumer.get("deliveries", 0))
        drain_seconds = (drained.consumer.get("last_ns", 0) - drained.go_ns) / 1e9
        after = _watch(target, args.settle)
        left = admin.queue_depth(name)
    finally:
        admin.delete_queue(name)
        admin.close()
    published = runs["publish"]
    peak = max(
        [before, *published.series.rss_mb, *drained.series.rss_mb, *after.rss_mb], default=0.0
    )
    figures: dict[str, Any] = {
        "broker": target.name,
        "published": int(published.publisher.get("published", 0)),
        "enqueued": depth,
        "held_at": held_at,
        "delivered": delivered,
        "left_in_queue": left,
        "lost": args.count - delivered,
        "publish_per_s": depth / enqueued,
        "drain_per_s": delivered / drain_seconds if drain_seconds > 0 else 0.0,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "rss_after_mb": after.rss_mb[-1] if after.rss_mb else 0.0,
        "settle_s": args.settle,
        "watermark_mb": watermark / MB if watermark else None,
        "series": {
            "publish": published.series.as_dict(),
            "drain": drained.series.as_dict(),
            "settle": after.as_dict(),
        },
    }
    if watermark:
        figures["peak_over_watermark_mb"] = peak - watermark / MB
    return figures


def _wait_for_backlog(
    admin: Client, name: str, args: argparse.Namespace, publisher: threading.Thread
) -> tuple[int, int | None, float]:
    """Poll the depth until the queue holds every message, or until it stops growing.

    Returns the depth, that depth again when the broker held the publisher short of the count
    (else None), and when the depth last changed.
    """
    depth, changed = 0, time.monotonic()
    while True:
        time.sleep(0.5)
        latest = admin.queue_depth(name, timeout=args.drain_timeout)
        now = time.monotonic()
        if latest != depth:
            depth, changed = latest, now
        if depth >= args.count:
            publisher.join()
            return depth, None, changed
        if now - changed > args.stall_timeout:
            if not publisher.is_alive():
                return depth, None, changed  # the publisher finished short: reported as lost
            return depth, depth, changed


def _watch(target: Target, seconds: float) -> Series:
    """RSS once a second for ``seconds``."""
    series = Series()
    start = time.monotonic()
    while True:
        now = time.monotonic() - start
        series.t.append(now)
        series.rss_mb.append(_rss_mb(target))
        if now >= seconds:
            return series
        time.sleep(min(1.0, seconds - now))


def table(rows: list[dict[str, Any]]) -> str:
    """The figures as a Markdown table, one row per broker."""
    lines = [
        "| broker | watermark MB | queued with no consumer "
        "| RSS before / peak / after drain and settle MB | peak over watermark MB "
        "| publish / drain msg/s | delivered / published |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        watermark = f"{row['watermark_mb']:.0f}" if row["watermark_mb"] else "none"
        over = row.get("peak_over_watermark_mb")
        queued = f"{row['enqueued']:,}"
        if row.get("held_at") is not None:
            queued += " (then the publisher was held)"
        rss = f"{row['rss_before_mb']:.0f} / {row['rss_peak_mb']:.0f} / {row['rss_after_mb']:.0f}"
        lines.append(
            f"| {row['broker']} | {watermark} | {queued} | {rss} | "
            f"{'-' if over is None else f'{over:+.0f}'} | "
            f"{row['publish_per_s']:,.0f} / {row['drain_per_s']:,.0f} | "
            f"{row['delivered']:,} / {row['published']:,} |"
        )
    return "\n".join(lines)


def _amqplite_config(watermark: int | None, folder: Path) -> Path | None:
    if watermark is None:
        return None
    path = folder / "amqplite.yaml"
    path.write_text(f"alarms:\n  memory_high_watermark_bytes: {watermark}\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the backlog against each broker in turn; print the table; 1 if any message was lost."""
    args = parser().parse_args(argv)
    if args.spawn == bool(args.url):
        raise SystemExit("bench_backlog_memory: give exactly one of --spawn and --url")
    watermark = parse_size(args.watermark) if args.watermark else None
    rabbit_watermark = parse_size(args.rabbitmq_watermark) if args.rabbitmq_watermark else None
    rows = []
    taken: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
        config = _amqplite_config(watermark, Path(tmp))
        root = ROOT if args.spawn else None
        subject = Broker(args.url, args.broker_pid, root, taken, config)
        with subject.session() as target:
            rows.append(run_backlog(target, args, watermark if args.spawn else None))
        if args.compare:
            other = Broker(args.compare, args.compare_pid, None, taken)
            with rabbitmq_watermark(args.rabbitmq_watermark), other.session() as target:
                rows.append(run_backlog(target, args, rabbit_watermark))
    print(table(rows))
    if args.json:
        doc = {
            "command": shlex.join(["scripts/bench_backlog_memory.py", *sys.argv[1:]]),
            "runs": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(row["lost"] or row["left_in_queue"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
