"""Stream queue benchmark: confirmed append throughput, replay throughput from `first`, and the
broker's RSS during the replay; amqplite's stream beside its classic durable queue and beside
RabbitMQ's stream queue (and classic queue) over AMQP 0-9-1, in one run.

    .venv/bin/python scripts/bench_streams.py                        # 1,000,000 x 1 KB
    .venv/bin/python scripts/bench_streams.py --messages 100000 --no-rabbitmq
    .venv/bin/python scripts/bench_streams.py --rabbitmq amqp://guest:guest@127.0.0.1:5672/%2F

A classic queue's "replay" is draining it (its consumers remove what they read); a stream's
replay leaves every message in place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_durability import Broker_, publish_confirmed
from benchlib.client import Client, Consumer, ack_frame
from benchlib.procinfo import find_listener_pid
from pamqp.commands import Basic

STREAM = {"x-queue-type": "stream"}


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssPeak:
    """Samples a process's RSS every 100 ms in a thread; the peak."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and self.pid is not None:
            self.peak = max(self.peak, rss_mb(self.pid))
            self.stop.wait(0.1)

    def __enter__(self) -> RssPeak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def replay(url: str, queue: str, count: int, prefetch: int, stream: bool) -> float:
    """Consume `count` messages from the start with manual acks; seconds it took."""
    client = Client(url)
    client.open_channel()
    client.qos(prefetch)
    arguments = {"x-stream-offset": "first"} if stream else {}
    client.rpc(
        1, Basic.Consume(queue=queue, consumer_tag="replay", arguments=arguments), Basic.ConsumeOk
    )
    counter = Consumer()
    started = time.perf_counter()
    acked = 0
    while counter.deliveries < count:
        client.receive(timeout=60)
        counter.feed(client.buffer, 0)
        if counter.last_tag - acked >= prefetch // 2 or counter.deliveries >= count:
            client.send(ack_frame(counter.last_tag, True))
            acked = counter.last_tag
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def measure(
    label: str, url: str, pid: int | None, queue: str, stream: bool, args: argparse.Namespace
) -> dict[str, float | str]:
    """Append and replay on one queue; figures."""
    setup = Client(url)
    setup.open_channel()
    setup.declare_queue(queue, durable=True, arguments=STREAM if stream else {})
    before = rss_mb(pid) if pid else 0.0
    append_s = publish_confirmed(url, queue, args.messages, True, args.window)
    idle = rss_mb(pid) if pid else 0.0
    with RssPeak(pid) as peak:
        replay_s = replay(url, queue, args.messages, args.prefetch, stream)
    setup.delete_queue(queue)
    setup.close()
    print(
        f"{label}: append {append_s:.1f} s, replay {replay_s:.1f} s, RSS peak {peak.peak:.0f} MB",
        flush=True,
    )
    return {
        "target": label,
        "append_msg_s": args.messages / append_s,
        "replay_msg_s": args.messages / replay_s,
        "rss_before_mb": before,
        "rss_after_append_mb": idle,
        "rss_peak_replay_mb": peak.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=1000, help="unconfirmed publishes in flight")
    parser.add_argument("--prefetch", type=int, default=1000)
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--no-rabbitmq", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        broker = Broker_(Path(tmp) / "data")
        try:
            pid = broker.proc.pid
            rows.append(measure("amqplite stream", broker.url, pid, "bench-stream", True, args))
            rows.append(
                measure("amqplite classic durable", broker.url, pid, "bench-classic", False, args)
            )
        finally:
            broker.stop()
    if not args.no_rabbitmq:
        port = int(args.rabbitmq.rsplit(":", 1)[1].split("/")[0])
        pid = find_listener_pid(port)
        rows.append(measure("rabbitmq stream", args.rabbitmq, pid, "bench-h-stream", True, args))
        rows.append(
            measure("rabbitmq classic durable", args.rabbitmq, pid, "bench-h-classic", False, args)
        )
    print(
        f"{args.messages} x 1 KB persistent, confirms ({args.window} in flight), prefetch {args.prefetch}"
    )
    print(
        f"{'target':<26} {'append msg/s':>13} {'replay msg/s':>13} {'RSS idle MB':>12} {'RSS replay MB':>14}"
    )
    for row in rows:
        print(
            f"{row['target']:<26} {row['append_msg_s']:>13,.0f} {row['replay_msg_s']:>13,.0f} "
            f"{row['rss_after_append_mb']:>12,.0f} {row['rss_peak_replay_mb']:>14,.0f}"
        )


if __name__ == "__main__":
    main()
