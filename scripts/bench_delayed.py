"""Delayed messages (x-delayed-message) at scale: timing tolerance, throughput and broker RSS.

Spawns `amqplite serve` with the delayed_message plugin and runs, in one broker:

1. tolerance: --tolerance-count messages (default 100,000), published first, due from --lead
   seconds on (default 40) spread over --spread seconds (20), consumed as they fire; how late each arrives after its due time (p50/p99/max) and
   how many arrive early (must be 0). The due time is taken when the publish is sent, batches of
   1,000 with a round trip between them, so the lateness includes reading at most one batch.
2. baseline: --count plain messages (default 1,000,000) published to a queue through a direct
   exchange: publish rate and the RSS they take (bodies in memory, as any queue keeps them).
3. scale: --count delayed messages, all due at one moment after publishing ends: scheduling
   rate (publishes/s), the broker's RSS growth while they are held (bodies paged out to the
   spool), then the firing rate (messages routed to the queue per second once due).

    .venv/bin/python scripts/bench_delayed.py                      # the figures of the note
    .venv/bin/python scripts/bench_delayed.py --count 100000 --tolerance-count 10000   # quick

Bodies are --size bytes (default 256) and transient; --persistent makes them persistent with
a durable exchange and queue (written to disk before they are held).
"""

from __future__ import annotations

import argparse
import select
import struct
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.brokers import spawned_amqplite
from benchlib.client import Client, Consumer, ack_frame
from benchlib.procinfo import sample

from amqplite.protocol import encode_content, encode_method
from amqplite.protocol.methods import BasicPublish, spec

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000
TOLERANCE_BATCH = 1000  # publishes between round trips: lateness is not a publish backlog
HEADERS_FLAG, DELIVERY_MODE_FLAG = 1 << 13, 1 << 12
_DELAY_TABLE = struct.Struct(">IB7sBq")  # table length, key length, "x-delay", 'l', value


def delayed_properties(delay_ms: int, persistent: bool) -> bytes:
    """Content properties with headers {"x-delay": delay_ms} (and delivery mode 2)."""
    flags = HEADERS_FLAG | (DELIVERY_MODE_FLAG if persistent else 0)
    table = _DELAY_TABLE.pack(17, 7, b"x-delay", ord("l"), delay_ms)
    return struct.pack(">H", flags) + table + (b"\x02" if persistent else b"")


def publish_one(exchange: str, properties: bytes, body: bytes) -> bytes:
    """The frames of one publish (routing key "k")."""
    return encode_method(1, BasicPublish(exchange, "k")) + encode_content(
        1, 60, properties, body, 131072
    )


def setup(client: Client, exchange: str, kind: str, queue: str, durable: bool) -> None:
    """Declare exchange, queue and binding (key "k")."""
    arguments = {"x-delayed-type": "direct"} if kind == "x-delayed-message" else {}
    client.rpc(
        1,
        spec.Exchange.Declare(
            exchange=exchange, exchange_type=kind, durable=durable, arguments=arguments
        ),
        spec.Exchange.DeclareOk,
    )
    client.declare_queue(queue, durable=durable)
    client.bind(queue, exchange, "k")


def rss_mb(pid: int) -> float:
    """The broker's resident memory in MiB."""
    return sample(pid).rss_bytes / 2**20


def wait_depth(client: Client, queue: str, count: int, timeout: float) -> float:
    """Poll until the queue holds `count` messages; the moment it did (time.time())."""
    deadline = time.monotonic() + timeout
    while True:
        if client.queue_depth(queue) >= count:
            return time.time()
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {queue} did not reach {count} messages in {timeout} s")
        time.sleep(0.05)


def tolerance(
    url: str, count: int, spread: float, lead: float, size: int, persistent: bool
) -> None:
    """Phase 1: how late delayed messages arrive after their due time."""
    pub, sub = Client(url), Client(url)
    pub.open_channel()
    sub.open_channel()
    setup(pub, "tol", "x-delayed-message", "tol", persistent)
    sub.qos(5000)
    sub.consume("tol", "t")
    consumer = Consumer(stamps=True)
    start = time.time()
    pad = b"x" * max(0, size - 8)
    sent = 0
    while sent < count:
        frames = []
        for i in range(sent, min(count, sent + TOLERANCE_BATCH)):
            now = time.time()
            due = start + lead + spread * i / count + (i * 7919 % 1000) / 1000  # shuffled a bit
            delay_ms = max(1, round((due - now) * 1000))
            due_ns = time.time_ns() + delay_ms * 1_000_000
            props = delayed_properties(delay_ms, persistent)
            frames.append(publish_one("tol", props, struct.pack(">Q", due_ns) + pad))
        pub.send(b"".join(frames))
        pub.queue_depth("tol")  # a round trip: the broker has taken the batch (no backlog)
        sent += len(frames)
        while select.select([sub.sock], [], [], 0)[0]:  # keep the consumer drained meanwhile
            sub.receive(1.0)
            consumer.feed(sub.buffer, time.time_ns())
            sub.send(ack_frame(consumer.last_tag, True))
    published = time.time() - start
    if published > lead:
        print(
            f"tolerance: publishing took {published:.1f} s, over --lead {lead:.0f} s: "
            "messages fell due while others were still being published"
        )
    while consumer.deliveries < count:
        if sub.receive(30.0):
            consumer.feed(sub.buffer, time.time_ns())
            sub.send(ack_frame(consumer.last_tag, True))
        else:
            raise SystemExit(f"bench: only {consumer.deliveries} of {count} arrived")
    late = sorted(ns / 1e6 for ns in consumer.latencies_ns)
    early = sum(1 for ms in late if ms < 0)

    def pct(p: float) -> float:
        return late[min(len(late) - 1, int(p * len(late)))]

    print(
        f"tolerance: {count:,} delayed messages due over {spread:.0f} s from {lead:.0f} s on "
        f"(published in "
        f"{published:.1f} s): late by p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, "
        f"max {late[-1]:.1f} ms; early: {early}"
    )
    pub.close()
    sub.close()


def scale(url: str, pid: int, count: int, size: int, persistent: bool) -> None:
    """Phases 2 and 3: a plain backlog beside the same number of delayed messages."""
    client = Client(url)
    client.open_channel()
    body = b"x" * size
    rss0 = rss_mb(pid)
    setup(client, "plain", "direct", "plain", persistent)
    plain_props = b"\x10\x00\x02" if persistent else b"\x00\x00"
    frame = publish_one("plain", plain_props, body)
    started = time.time()
    for sent in range(0, count, BATCH):
        client.send(frame * min(BATCH, count - sent))
    wait_depth(client, "plain", count, 600)
    plain_rate = count / (time.time() - started)
    rss_plain = rss_mb(pid)
    print(
        f"baseline: {count:,} plain messages of {size} B: {plain_rate:,.0f} publishes/s, "
        f"RSS +{rss_plain - rss0:,.0f} MiB ({(rss_plain - rss0) * 2**20 / count:,.0f} B/message), "
        f"{rss_plain:,.0f} MiB in all"
    )
    client.delete_queue("plain")
    time.sleep(2.0)  # let the freed memory settle before the next baseline
    rss1 = rss_mb(pid)
    setup(client, "later", "x-delayed-message", "fired", persistent)
    expected_rate = max(plain_rate / 3, 5000)
    fire_at = time.time() + count / expected_rate + 10
    started = time.time()
    for sent in range(0, count, BATCH):
        frames = []
        now = time.time()
        for _ in range(min(BATCH, count - sent)):
            props = delayed_properties(max(1, round((fire_at - now) * 1000)), persistent)
            frames.append(publish_one("later", props, body))
        client.send(b"".join(frames))
    client.queue_depth("fired")  # answered after every publish above was taken
    scheduled_in = time.time() - started
    if time.time() >= fire_at:
        raise SystemExit("bench: scheduling outran the firing time; raise the margin")
    rss_held = rss_mb(pid)
    print(
        f"scale: {count:,} delayed messages of {size} B scheduled at {count / scheduled_in:,.0f} "
        f"publishes/s ({scheduled_in:.1f} s); held: RSS +{rss_held - rss1:,.0f} MiB "
        f"({(rss_held - rss1) * 2**20 / count:,.0f} B/message), {rss_held:,.0f} MiB in all"
    )
    while time.time() < fire_at:
        time.sleep(0.01)
    done = wait_depth(client, "fired", count, 900)
    print(
        f"scale: fired {count:,} at {count / (done - fire_at):,.0f} messages/s "
        f"({done - fire_at:.1f} s from their due time until all were in the queue); "
        f"RSS now +{rss_mb(pid) - rss1:,.0f} MiB (they are queue messages now)"
    )
    client.close()


def main() -> None:
    """Parse the flags and run the three phases against one spawned broker."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--tolerance-count", type=int, default=100_000)
    parser.add_argument("--spread", type=float, default=20.0, help="seconds (tolerance phase)")
    parser.add_argument(
        "--lead", type=float, default=40.0, help="seconds before the first is due (tolerance)"
    )
    parser.add_argument("--size", type=int, default=256, help="body bytes")
    parser.add_argument("--persistent", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-delayed-") as tmp:
        config = Path(tmp) / "amqplite.yaml"
        config.write_text("plugins: [delayed_message]\n")
        with spawned_amqplite(ROOT, config) as (url, pid):
            print(f"broker pid {pid}, {args.size} B bodies, persistent={args.persistent}")
            if args.tolerance_count:
                tolerance(
                    url, args.tolerance_count, args.spread, args.lead, args.size, args.persistent
                )
            if args.count:
                scale(url, pid, args.count, args.size, args.persistent)


if __name__ == "__main__":
    main()
