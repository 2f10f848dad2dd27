"""Publish throughput with the deduplication plugin on beside off, in the same run on one broker.

Spawns `amqplite serve` with `plugins: [deduplication]` and, round after round (modes
interleaved), publishes --count messages, each with its own message_id, into a fresh queue:

  off         a plain queue
  on          x-message-deduplication: true (default window: 100,000 keys), every id new
  on-dups     the same queue type, ids cycling over 1,000 values (most messages dropped)

Each round is timed from the first publish to the passive queue.declare-ok sent after the last
one (answered once every publish before it has been routed), and the broker's CPU seconds over
the same span are read from /proc. With --persistent the messages are persistent, the queues
durable and the channel in confirm mode (confirms are not waited for: the routing is measured).
Reported: the median msg/s and broker CPU µs/msg of each mode and the ratio to "off".

    .venv/bin/python scripts/bench_dedup.py                       # 200,000 messages, 5 rounds
    .venv/bin/python scripts/bench_dedup.py --persistent
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib.brokers import spawned_amqplite
from benchlib.client import Client
from benchlib.procinfo import sample
from pamqp import commands

from amqplite.protocol import encode_content, encode_method
from amqplite.protocol.methods import BasicPublish
from amqplite.protocol.properties import encode_properties

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "on", "on-dups")
BATCH = 500
ID_WIDTH = 12


def frame_maker(queue: str, size: int, persistent: bool) -> tuple[bytes, bytes]:
    """The bytes of one publish before and after its fixed-width message_id."""
    marker = "#" * ID_WIDTH
    props = commands.Basic.Properties(message_id=marker, delivery_mode=2 if persistent else 1)
    frames = encode_method(1, BasicPublish("", queue)) + encode_content(
        1, 60, encode_properties(props), b"x" * size, 131072
    )
    head, _, tail = frames.partition(marker.encode())
    return head, tail


def one_round(url: str, pid: int, mode: str, args: argparse.Namespace, round_no: int) -> tuple:
    """Publish --count messages in one mode: (msg/s, broker CPU µs/msg)."""
    client = Client(url)
    client.open_channel()
    queue = f"bench-{mode}-{round_no}"
    arguments = {} if mode == "off" else {"x-message-deduplication": True}
    client.declare_queue(queue, durable=args.persistent, arguments=arguments)
    if args.persistent:
        client.confirm_select()
    head, tail = frame_maker(queue, args.size, args.persistent)
    cycle = 1000 if mode == "on-dups" else args.count
    offset = round_no * args.count  # every round's ids are new to the broker
    batches = []
    for start in range(0, args.count, BATCH):
        ids = range(start, min(start + BATCH, args.count))
        batches.append(
            b"".join(head + f"{offset + i % cycle:0{ID_WIDTH}d}".encode() + tail for i in ids)
        )
    cpu_before = sample(pid).cpu_seconds
    began = time.perf_counter()
    for batch in batches:
        client.send(batch)
    depth = client.queue_depth(queue, timeout=600)
    elapsed = time.perf_counter() - began
    cpu = sample(pid).cpu_seconds - cpu_before
    expected = min(cycle, args.count)
    assert depth == expected, f"{mode}: {depth} messages in the queue, expected {expected}"
    client.delete_queue(queue)
    client.close()
    return args.count / elapsed, cpu / args.count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (interleaved)")
    parser.add_argument("--size", type=int, default=100, help="body bytes")
    parser.add_argument("--persistent", action="store_true", help="persistent, durable, confirms")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="amqplite-bench-dedup-") as tmp:
        config = Path(tmp) / "amqplite.yaml"
        config.write_text("plugins: [deduplication]\n")
        with spawned_amqplite(ROOT, config) as (url, pid):
            for round_no in range(args.rounds):
                for mode in MODES if round_no % 2 == 0 else reversed(MODES):
                    results[mode].append(one_round(url, pid, mode, args, round_no))
    kind = "persistent into a durable queue" if args.persistent else "transient"
    print(f"{args.count:,} messages of {args.size} B, {kind}; medians of {args.rounds} rounds")
    print("| mode | msg/s | broker CPU µs/msg | msg/s vs off |")
    print("|---|---|---|---|")
    base = statistics.median(rate for rate, _ in results["off"])
    for mode in MODES:
        rate = statistics.median(r for r, _ in results[mode])
        cpu = statistics.median(c for _, c in results[mode])
        print(f"| {mode} | {rate:,.0f} | {cpu:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
