"""The publisher and consumer processes of a load flow, and the state they share with the parent."""

from __future__ import annotations

import math
import resource
import struct
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import attrs

from benchlib.client import Client, Consumer, ack_frame, acks_each, publish_frames

_STAMP = struct.Struct(">Q")


@attrs.frozen
class Flow:
    """What a publisher sends and a consumer takes, for one scenario run."""

    queues: tuple[str, ...]
    routing_keys: tuple[str, ...]
    exchange: str = ""
    size: int = 1024
    persistent: bool = False
    confirm_window: int = 0
    prefetch: int = 1000
    ack_multiple: bool = True
    rate: float | None = None
    fanout: int = 1
    duration: float | None = 10.0
    count: int | None = None
    max_backlog: int | None = None  # None: publish as fast as the broker reads
    batch: int = 100
    drain_timeout: float = 60.0

    @property
    def stamps(self) -> bool:
        """True when bodies carry a send timestamp (paced flows measure latency)."""
        return self.rate is not None


class Shared:
    """Counters and events in shared memory between the parent and its two children."""

    def __init__(self, ctx: Any) -> None:
        self.published = ctx.RawValue("q", 0)
        self.consumed = ctx.RawValue("q", 0)
        self.final = ctx.RawValue("q", -1)  # messages published, set when the publisher is done
        self.go_ns = ctx.RawValue("q", 0)
        self.stop = ctx.RawValue("b", 0)
        self.go = ctx.Event()
        self.publisher_ready = ctx.Event()
        self.consumer_ready = ctx.Event()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[int], q: float) -> int:
    """The nearest-rank percentile of an ascending list (q in 0..1)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ns: list[int]) -> dict[str, float]:
    """p50, p99, p99.9 and max in milliseconds."""
    values = sorted(latencies_ns)
    return {
        "p50_ms": percentile(values, 0.50) / 1e6,
        "p99_ms": percentile(values, 0.99) / 1e6,
        "p999_ms": percentile(values, 0.999) / 1e6,
        "max_ms": (values[-1] if values else 0) / 1e6,
    }


def _run_child(body: Any, conn: Connection, *args: Any) -> None:
    try:
        conn.send(body(*args))
    except BaseException as exc:  # report anything: the parent prints it in the table
        conn.send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


def publisher_main(url: str, flow: Flow, shared: Shared, conn: Connection) -> None:
    """Entry point of the publisher process."""
    _run_child(_publish, conn, url, flow, shared)


def consumer_main(url: str, flow: Flow, shared: Shared, conn: Connection) -> None:
    """Entry point of the consumer process."""
    _run_child(_consume, conn, url, flow, shared)


def _batches(client: Client, flow: Flow) -> list[bytes]:
    """Pre-encoded batches of ``flow.batch`` publishes cycling over the routing keys."""
    keys = flow.routing_keys
    body = b"x" * flow.size
    frames = [
        publish_frames(
            flow.exchange, key, body, persistent=flow.persistent, frame_max=client.frame_max
        )
        for key in keys
    ]
    count = len(keys) // math.gcd(len(keys), flow.batch)
    cycle = frames * (count * flow.batch // len(keys))
    return [b"".join(cycle[i * flow.batch : (i + 1) * flow.batch]) for i in range(count)]


def _publish(url: str, flow: Flow, shared: Shared) -> dict[str, Any]:
    client = Client(url)
    client.open_channel()
    if flow.confirm_window:
        client.confirm_select()
    tracker = Consumer()
    shared.publisher_ready.set()
    shared.go.wait()
    cpu0 = _cpu_seconds()
    start = time.monotonic()
    if flow.rate is not None:
        published = _publish_paced(client, flow, shared, start)
    else:
        published = _publish_flat_out(client, flow, shared, tracker, start)
    if flow.confirm_window:
        deadline = time.monotonic() + flow.drain_timeout
        while tracker.confirmed < published and time.monotonic() < deadline:
            if client.receive(0.2):
                tracker.feed(client.buffer, 0)
    else:
        # a synchronous round trip on the publishing channel: the broker has taken every
        # publish sent before it (TCP buffers hold none back any more)
        client.queue_depth(flow.queues[0], timeout=flow.drain_timeout)
    elapsed = time.monotonic() - start
    shared.published.value = published
    shared.final.value = published
    cpu = _cpu_seconds() - cpu0
    client.close()
    return {
        "published": published,
        "confirmed": tracker.confirmed,
        "nacked": tracker.nacked,
        "seconds": elapsed,
        "cpu_seconds": cpu,
    }


def _done(flow: Flow, shared: Shared, published: int, start: float) -> bool:
    if shared.stop.value:
        return True
    if flow.count is not None:
        return published >= flow.count
    return flow.duration is not None and time.monotonic() - start >= flow.duration


def _publish_flat_out(
    client: Client, flow: Flow, shared: Shared, tracker: Consumer, start: float
) -> int:
    batches = _batches(client, flow)
    single = batches[0][: len(batches[0]) // flow.batch]
    window = flow.confirm_window
    backlog = flow.max_backlog
    fanout = flow.fanout
    published = 0
    turn = 0
    client.sock.settimeout(None)  # a broker's alarm may hold the publisher as long as it likes
    while not _done(flow, shared, published, start):
        if flow.count is not None and flow.count - published < flow.batch:
            data = single * (flow.count - published)
            step = flow.count - published
        else:
            data = batches[turn % len(batches)]
            step = flow.batch
        turn += 1
        if window:
            while published - tracker.confirmed + step > window:
                if client.receive(1.0):
                    tracker.feed(client.buffer, 0)
        elif backlog is not None:
            while (published - backlog) * fanout > shared.consumed.value:
                if shared.stop.value:
                    break
                time.sleep(0.0002)
        elif turn % 32 == 0 and client.readable():
            client.receive(0)
            tracker.feed(client.buffer, 0)
            client.sock.settimeout(None)
        client.send(data)
        published += step
        shared.published.value = published
    return published


def _publish_paced(client: Client, flow: Flow, shared: Shared, start: float) -> int:
    rate = flow.rate or 1.0
    size = max(8, flow.size)
    frames = [
        publish_frames(flow.exchange, key, b"\x00" * size, frame_max=client.frame_max)
        for key in flow.routing_keys
    ]
    prefixes = [f[: len(f) - 1 - size] for f in frames]
    suffix = b"x" * (size - 8) + b"\xce"
    pack = _STAMP.pack
    published = 0
    keys = len(prefixes)
    while not _done(flow, shared, published, start):
        now = time.monotonic()
        due = int((now - start) * rate) + 1 - published
        if due > 0:
            stamp = pack(time.monotonic_ns())
            client.send(
                b"".join(prefixes[(published + i) % keys] + stamp + suffix for i in range(due))
            )
            published += due
            shared.published.value = published
            continue
        # wake at most every 0.5 ms and send what is due: few syscalls, stamps stay exact
        time.sleep(max(0.0005, min(0.001, start + published / rate - now)))
    return published


def _consume(url: str, flow: Flow, shared: Shared) -> dict[str, Any]:
    client = Client(url)
    client.open_channel()
    client.qos(flow.prefetch)
    for index, queue in enumerate(flow.queues):
        client.consume(queue, f"bench-{index}")
    tracker = Consumer(stamps=flow.stamps)
    ack_every = max(1, flow.prefetch // 2)
    acked = 0
    shared.consumer_ready.set()
    shared.go.wait()
    cpu0 = _cpu_seconds()
    first_ns = last_ns = 0
    window_deliveries, window_ns = -1, 0
    done_at: float | None = None
    complete = False
    buffer = client.buffer
    while True:
        got = client.receive(0.1)
        now_ns = time.monotonic_ns()
        before = tracker.deliveries
        if got:
            tracker.feed(buffer, now_ns)
            if tracker.deliveries != before:
                last_ns = now_ns
                first_ns = first_ns or now_ns
                shared.consumed.value = tracker.deliveries
        pending = tracker.last_tag - acked
        if pending and (pending >= ack_every or not got or not flow.ack_multiple):
            if flow.ack_multiple:
                client.send(ack_frame(tracker.last_tag, True))
            else:
                client.send(acks_each(acked + 1, tracker.last_tag))
            acked = tracker.last_tag
        final = shared.final.value
        if final >= 0:
            if window_deliveries < 0:
                # the publisher's window just ended: what was delivered within it
                window_deliveries, window_ns = tracker.deliveries, time.monotonic_ns()
            if tracker.deliveries >= final * flow.fanout:
                complete = True
                break
            # give up once nothing has arrived for drain_timeout after the publisher finished
            if done_at is None or tracker.deliveries != before:
                done_at = time.monotonic()
            if time.monotonic() - done_at > flow.drain_timeout or shared.stop.value:
                break
        elif shared.stop.value:
            break
    if tracker.last_tag > acked:
        # settle the last deliveries: closing with them unacked would put them back
        if flow.ack_multiple:
            client.send(ack_frame(tracker.last_tag, True))
        else:
            client.send(acks_each(acked + 1, tracker.last_tag))
    cpu = _cpu_seconds() - cpu0
    client.close()
    result: dict[str, Any] = {
        "deliveries": tracker.deliveries,
        "complete": complete,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "window_deliveries": max(0, window_deliveries),
        "window_ns": window_ns or last_ns,
        "cpu_seconds": cpu,
    }
    if flow.stamps:
        result.update(latency_summary(tracker.latencies_ns))
    return result
