"""The benchmark scenarios and the runner that drives one scenario against one broker."""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import attrs

from benchlib.client import BrokerClosed, Client
from benchlib.procinfo import ProcSample, sample, system_busy_seconds
from benchlib.roles import Flow, Shared, consumer_main, publisher_main
from benchlib.sampler import Sampler, Series


@attrs.frozen
class Target:
    """A broker under test: its URL, the pid whose CPU and memory we read, and its name."""

    url: str
    pid: int | None
    name: str


@attrs.frozen
class Settings:
    """Knobs shared by every scenario."""

    duration: float = 10.0
    count: int | None = None
    size: int = 1024
    backlog_count: int = 1_000_000
    backlog_size: int = 100
    connections: int = 1000
    drain_timeout: float = 60.0
    progress: bool = True
    max_in_flight: int | None = None


@attrs.frozen
class Result:
    """One scenario's figures on one broker (``error`` set when the run failed)."""

    scenario: str
    broker: str
    metrics: dict[str, float]
    error: str | None = None
    series: dict[str, Any] | None = None


@attrs.frozen
class Measured:
    """A scenario's figures and, for load flows, their time series."""

    metrics: dict[str, float]
    series: Series | None = None


@attrs.frozen
class Metric:
    """How to show a metric: label, unit, and whether higher is better (for ratios)."""

    label: str
    unit: str
    higher_is_better: bool
    ratio: bool = True


METRICS: Final[dict[str, Metric]] = {
    "accepted_per_s": Metric("accepted in window", "msg/s", True),
    "delivered_per_s": Metric("delivered in window", "msg/s", True),
    "msg_per_s": Metric("throughput incl. drain", "msg/s", True),
    "publish_per_s": Metric("publish rate", "msg/s", True),
    "drain_s": Metric("drain after window", "s", False, ratio=False),
    "depth_peak": Metric("queue depth, peak", "msgs", False, ratio=False),
    "rss_start_mb": Metric("broker RSS, start", "MB", False, ratio=False),
    "rss_peak_mb": Metric("broker RSS, peak", "MB", False),
    "rss_end_mb": Metric("broker RSS, end", "MB", False),
    "drain_per_s": Metric("drain rate", "msg/s", True),
    "cpu_us_per_msg": Metric("broker CPU", "us/msg", False),
    "p50_ms": Metric("latency p50", "ms", False),
    "p99_ms": Metric("latency p99", "ms", False),
    "p999_ms": Metric("latency p99.9", "ms", False),
    "max_ms": Metric("latency max", "ms", False),
    "kb_per_connection": Metric("memory/connection", "KB", False),
    "connections_per_s": Metric("connection opens", "conn/s", True),
    "connections_refused_at": Metric("connection refused at #", "conn", True, ratio=False),
    "backlog_mb": Metric("backlog memory", "MB", False),
    "backlog_peak_mb": Metric("backlog memory, peak", "MB", False),
    "bytes_per_msg": Metric("memory/message", "B", False),
    "lost": Metric("not delivered", "msgs", False),
    "publisher_cpu_pct": Metric("client: publisher CPU", "% core", False, ratio=False),
    "consumer_cpu_pct": Metric("client: consumer CPU", "% core", False, ratio=False),
    "other_cpu_pct": Metric("other load on the machine", "% core", False, ratio=False),
}


class Progress:
    """A one-line progress bar on stderr (silent when disabled)."""

    def __init__(self, enabled: bool, title: str) -> None:
        self.enabled = enabled
        self.title = title
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def update(self, fraction: float, text: str, force: bool = False) -> None:
        """Redraw the bar (at most five times a second unless forced)."""
        if not self.enabled or not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        fraction = min(1.0, max(0.0, fraction))
        filled = int(fraction * 24)
        bar = "#" * filled + "-" * (24 - filled)
        sys.stderr.write(f"\r{self.title:<34} [{bar}] {fraction * 100:5.1f}% {text:<40}")
        sys.stderr.flush()

    def finish(self, text: str) -> None:
        """End the bar's line with a summary."""
        if not self.enabled:
            return
        prefix = "\r" if self.tty else ""
        sys.stderr.write(f"{prefix}{self.title:<34} {text:<80}\n")
        sys.stderr.flush()


def _uid() -> str:
    return f"{os.getpid()}-{time.monotonic_ns() % 10**9}"


def _sample(target: Target) -> ProcSample | None:
    return sample(target.pid) if target.pid else None


@attrs.frozen
class FlowRun:
    """The reports of a flow's processes, its wall time, start and broker samples around it."""

    publisher: dict[str, Any]
    consumer: dict[str, Any]
    wall: float
    go_ns: int
    before: ProcSample | None
    after: ProcSample | None
    other_cpu_pct: float
    series: Series


def run_flow(
    target: Target,
    flow: Flow,
    progress: Progress,
    *,
    with_publisher: bool = True,
    with_consumer: bool = True,
    preset_final: int | None = None,
) -> FlowRun:
    """Run a publisher and/or consumer process until they finish; return what they report."""
    ctx = multiprocessing.get_context("fork")
    shared = Shared(ctx)
    if preset_final is not None:
        shared.final.value = preset_final
    children: list[tuple[str, Any, Any]] = []
    roles: list[tuple[str, Callable[..., None], Any]] = []
    if with_consumer:
        roles.append(("consumer", consumer_main, shared.consumer_ready))
    if with_publisher:
        roles.append(("publisher", publisher_main, shared.publisher_ready))
    for role, main, ready in roles:
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=main, args=(target.url, flow, shared, sender), daemon=True)
        proc.start()
        sender.close()
        children.append((role, proc, receiver))
        deadline = time.monotonic() + 30
        while not ready.wait(0.1):
            if not proc.is_alive() or time.monotonic() > deadline:
                _stop_children(shared, children)
                report = receiver.recv() if receiver.poll(1) else {}
                raise RuntimeError(f"{role} failed to start: {report.get('error', 'timeout')}")
    before = _sample(target)
    busy0, own0 = system_busy_seconds(), _own_cpu()
    sampler = Sampler(target.url, target.pid, flow.queues, shared.published, shared.consumed)
    sampler.start()
    start = time.monotonic()
    shared.go_ns.value = time.monotonic_ns()
    shared.go.set()
    limit = (flow.duration or 0) + flow.drain_timeout + 60
    if flow.count is not None or preset_final is not None:
        limit += 600
    expected = (flow.count or preset_final or 0) * flow.fanout
    last_count, last_time = 0, start
    rate = 0.0
    while any(proc.is_alive() for _, proc, _ in children):
        time.sleep(0.05)
        now = time.monotonic()
        elapsed = now - start
        count = shared.consumed.value if with_consumer else shared.published.value
        if now - last_time >= 0.5:
            rate = (count - last_count) / (now - last_time)
            last_count, last_time = count, now
        fraction = count / expected if expected else elapsed / (flow.duration or 1)
        progress.update(fraction, f"{count:>11,} msgs {rate:>10,.0f} msg/s")
        if elapsed > limit:
            shared.stop.value = 1
        if shared.final.value >= 0 and with_publisher:
            sampler.mark_window_end()
    series = sampler.stop()
    after = _sample(target)
    busy1, own1 = system_busy_seconds(), _own_cpu()
    wall = time.monotonic() - start
    reports: dict[str, dict[str, Any]] = {}
    for role, proc, receiver in children:
        reports[role] = receiver.recv() if receiver.poll(5) else {"error": "no report"}
        proc.join(5)
    for role, report in reports.items():
        if "error" in report:
            raise RuntimeError(f"{role}: {report['error']}\n{report.get('traceback', '')}")
    # CPU that neither the broker nor this benchmark used: other load on the machine
    other = busy1 - busy0 - (own1 - own0)
    other -= sum(report.get("cpu_seconds", 0.0) for report in reports.values())
    if before is not None and after is not None:
        other -= after.cpu_seconds - before.cpu_seconds
    return FlowRun(
        reports.get("publisher", {}),
        reports.get("consumer", {}),
        wall,
        shared.go_ns.value,
        before,
        after,
        max(0.0, other) / wall * 100,
        series,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stop_children(shared: Shared, children: list[tuple[str, Any, Any]]) -> None:
    shared.stop.value = 1
    shared.go.set()
    for _, proc, _ in children:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


def _cpu_per_msg(
    before: ProcSample | None, after: ProcSample | None, messages: int
) -> dict[str, float]:
    if before is None or after is None or not messages:
        return {}
    return {"cpu_us_per_msg": (after.cpu_seconds - before.cpu_seconds) / messages * 1e6}


def _flow_metrics(flow: Flow, run: FlowRun) -> dict[str, float]:
    publisher, consumer, before, after = run.publisher, run.consumer, run.before, run.after
    metrics: dict[str, float] = {}
    published = int(publisher.get("published", 0))
    if publisher.get("seconds"):
        # what the broker took: sent and read (the window ends with a round trip or confirms)
        accepted = publisher.get("confirmed", 0) if flow.confirm_window else published
        metrics["accepted_per_s"] = accepted / publisher["seconds"]
        metrics["publisher_cpu_pct"] = publisher["cpu_seconds"] / publisher["seconds"] * 100
    deliveries = int(consumer.get("deliveries", 0))
    if deliveries and consumer.get("last_ns"):
        window = (consumer["window_ns"] - run.go_ns) / 1e9
        if window > 0:
            metrics["delivered_per_s"] = consumer["window_deliveries"] / window
        metrics["msg_per_s"] = deliveries / ((consumer["last_ns"] - run.go_ns) / 1e9)
        metrics["drain_s"] = max(0.0, (consumer["last_ns"] - consumer["window_ns"]) / 1e9)
        metrics["consumer_cpu_pct"] = consumer["cpu_seconds"] / run.wall * 100
        metrics.update(_cpu_per_msg(before, after, deliveries))
    if flow.confirm_window and publisher.get("seconds"):
        # the end-to-end figure that matters is confirmed publishes per second
        metrics["msg_per_s"] = publisher.get("confirmed", 0) / publisher["seconds"]
    metrics.update(_memory_metrics(run))
    metrics["other_cpu_pct"] = run.other_cpu_pct
    for key in ("p50_ms", "p99_ms", "p999_ms", "max_ms"):
        if key in consumer:
            metrics[key] = consumer[key]
    if consumer and not consumer.get("complete", True):
        metrics["lost"] = float(published * flow.fanout - deliveries)
    return metrics


def _memory_metrics(run: FlowRun) -> dict[str, float]:
    """Broker RSS at the start, at its peak and at the end; the deepest the queues were seen."""
    metrics: dict[str, float] = {}
    if run.before is not None and run.after is not None:
        start, end = run.before.rss_bytes / 2**20, run.after.rss_bytes / 2**20
        metrics["rss_start_mb"] = start
        metrics["rss_peak_mb"] = max(start, end, run.series.peak_rss_mb() or 0.0)
        metrics["rss_end_mb"] = end
    depth = run.series.peak_depth()
    if depth is not None:
        metrics["depth_peak"] = float(depth)
    return metrics


# ---------------------------------------------------------------------------------------------
# scenarios


def _simple_flow(
    target: Target,
    settings: Settings,
    progress: Progress,
    *,
    queues: int = 1,
    exchange_type: str | None = None,
    bindings: int = 0,
    **flow_args: Any,
) -> Measured:
    """Declare the topology, run one publisher and one consumer, tear the topology down."""
    uid = _uid()
    names = tuple(f"bench-{uid}-q{i}" for i in range(queues))
    exchange = f"bench-{uid}-x" if exchange_type else ""
    admin = Client(target.url)
    admin.open_channel()
    durable = bool(flow_args.get("persistent"))
    flow_args.setdefault("max_backlog", settings.max_in_flight)
    try:
        for name in names:
            admin.declare_queue(name, durable=durable)
        keys: tuple[str, ...]
        if exchange_type == "fanout":
            admin.declare_exchange(exchange, "fanout")
            admin.bind_many([(name, exchange, "") for name in names])
            keys = ("",)
        elif exchange_type == "topic":
            admin.declare_exchange(exchange, "topic")
            admin.bind_many(
                [(names[i % queues], exchange, f"bench.{i}.*") for i in range(bindings)]
            )
            keys = tuple(f"bench.{i}.x" for i in range(bindings))
        else:
            keys = (names[0],)
        flow = Flow(
            queues=names,
            routing_keys=keys,
            exchange=exchange,
            duration=None if settings.count else settings.duration,
            count=settings.count,
            drain_timeout=settings.drain_timeout,
            **flow_args,
        )
        run = run_flow(target, flow, progress)
        return Measured(_flow_metrics(flow, run), run.series)
    finally:
        for name in names:
            admin.delete_queue(name)
        if exchange:
            admin.delete_exchange(exchange)
        admin.close()


def transient(target: Target, settings: Settings, progress: Progress) -> Measured:
    """Transient 1 KB messages, prefetch 1000, acks with multiple."""
    return _simple_flow(target, settings, progress, size=settings.size, prefetch=1000)


def manual_ack(target: Target, settings: Settings, progress: Progress) -> Measured:
    """Transient 1 KB messages, prefetch 100, one ack per message."""
    return _simple_flow(
        target, settings, progress, size=settings.size, prefetch=100, ack_multiple=False
    )


def confirms(target: Target, settings: Settings, progress: Progress) -> Measured:
    """Persistent 1 KB messages into a durable queue, publisher confirms, 1000 in flight."""
    return _simple_flow(
        target,
        settings,
        progress,
        size=settings.size,
        persistent=True,
        confirm_window=1000,
        max_backlog=None,
    )


def latency_1k(target: Target, settings: Settings, progress: Progress) -> Measured:
    """Latency at a fixed 1,000 msg/s."""
    return _simple_flow(target, settings, progress, size=settings.size, rate=1000.0)


def latency_10k(target: Target, settings: Settings, progress: Progress) -> Measured:
    """Latency at a fixed 10,000 msg/s."""
    return _simple_flow(target, settings, progress, size=settings.size, rate=10000.0)


def fanout(target: Target, settings: Settings, progress: Progress) -> Measured:
    """A fanout exchange to 10 queues, all consumed by one connection."""
    return _simple_flow(
        target,
        settings,
        progress,
        queues=10,
        exchange_type="fanout",
        size=settings.size,
        fanout=10,
    )


def topic(target: Target, settings: Settings, progress: Progress) -> Measured:
    """A topic exchange with 1,000 bindings over 10 queues; each message matches one."""
    return _simple_flow(
        target,
        settings,
        progress,
        queues=10,
        exchange_type="topic",
        bindings=1000,
        size=settings.size,
    )


def idle_connections(target: Target, settings: Settings, progress: Progress) -> dict[str, float]:
    """Open many idle connections and read the broker's resident memory per connection."""
    if target.pid is None:
        raise RuntimeError("needs the broker's pid (--broker-pid) to read its memory")
    total = settings.connections
    time.sleep(0.5)
    before = sample(target.pid)
    clients: list[Client] = []
    refused = ""
    start = time.monotonic()
    try:
        for i in range(total):
            try:
                clients.append(Client(target.url, timeout=5.0))
            except (OSError, BrokerClosed) as exc:
                # e.g. a broker out of file descriptors: report what it could hold
                refused = f"{type(exc).__name__}: {exc}"
                break
            progress.update((i + 1) / total, f"{i + 1:>11,} connections")
        opened = time.monotonic() - start
        time.sleep(2.0)
        after = sample(target.pid)
    finally:
        for client in clients:
            client.close()
    if not clients:
        raise RuntimeError(f"no connection opened: {refused}")
    metrics = {
        "kb_per_connection": (after.rss_bytes - before.rss_bytes) / len(clients) / 1024,
        "connections_per_s": len(clients) / opened,
    }
    if refused:
        metrics["connections_refused_at"] = float(len(clients) + 1)
    return metrics


def backlog(target: Target, settings: Settings, progress: Progress) -> dict[str, float]:
    """Publish a backlog of small messages, read the broker's memory, then drain it."""
    total = settings.backlog_count
    uid = _uid()
    name = f"bench-{uid}-backlog"
    admin = Client(target.url)
    admin.open_channel()
    try:
        admin.declare_queue(name)
        time.sleep(0.5)
        base = _sample(target)
        flow = Flow(
            queues=(name,),
            routing_keys=(name,),
            size=settings.backlog_size,
            duration=None,
            count=total,
            max_backlog=None,
            drain_timeout=settings.drain_timeout,
            batch=500,
        )
        start = time.monotonic()
        published = run_flow(target, flow, progress, with_consumer=False)
        deadline = time.monotonic() + settings.drain_timeout
        depth = admin.queue_depth(name)
        while depth < total and time.monotonic() < deadline:
            time.sleep(0.05)
            depth = admin.queue_depth(name)
        enqueued = time.monotonic() - start
        full, peak = _settle(target)
        drained = run_flow(target, flow, progress, with_publisher=False, preset_final=depth)
    finally:
        admin.delete_queue(name)
        admin.close()
    metrics: dict[str, float] = {"publish_per_s": depth / enqueued}
    consumer = drained.consumer
    if consumer.get("last_ns"):
        metrics["drain_per_s"] = consumer["deliveries"] / (
            (consumer["last_ns"] - drained.go_ns) / 1e9
        )
    if base is not None and full is not None:
        metrics["backlog_mb"] = (full.rss_bytes - base.rss_bytes) / 2**20
        metrics["backlog_peak_mb"] = (peak - base.rss_bytes) / 2**20
        metrics["bytes_per_msg"] = (full.rss_bytes - base.rss_bytes) / max(1, depth)
    metrics.update(_cpu_per_msg(published.before, drained.after, depth))
    metrics["other_cpu_pct"] = max(published.other_cpu_pct, drained.other_cpu_pct)
    if depth < total:
        metrics["lost"] = float(total - depth)
    return metrics


def _settle(target: Target, limit: float = 30.0) -> tuple[ProcSample | None, int]:
    """Wait until the broker's memory stops moving (garbage collected); return it and the peak."""
    current = _sample(target)
    if current is None:
        return None, 0
    peak = current.rss_bytes
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(1.0)
        latest = _sample(target)
        assert latest is not None
        peak = max(peak, latest.rss_bytes)
        settled = abs(latest.rss_bytes - current.rss_bytes) < 2 * 2**20
        current = latest
        if settled:
            break
    return current, peak


Scenario = Callable[[Target, Settings, Progress], dict[str, float] | Measured]

SCENARIOS: Final[dict[str, Scenario]] = {
    "transient": transient,
    "manual-ack": manual_ack,
    "confirms": confirms,
    "latency-1k": latency_1k,
    "latency-10k": latency_10k,
    "fanout": fanout,
    "topic": topic,
    "idle-connections": idle_connections,
    "backlog": backlog,
}
"""Every scenario by name, in the order the suite runs them."""

COMPARE: Final = ("transient", "manual-ack", "fanout", "topic", "confirms")
"""The scenarios of the side-by-side table (what `--compare` runs unless told otherwise)."""


def run_scenario(name: str, target: Target, settings: Settings) -> Result:
    """Run one scenario against one broker; failures become a Result with ``error``."""
    progress = Progress(settings.progress, f"{name} @ {target.name}")
    try:
        outcome = SCENARIOS[name](target, settings, progress)
    except Exception as exc:
        progress.finish(f"FAILED: {exc}".splitlines()[0])
        return Result(name, target.name, {}, f"{type(exc).__name__}: {exc}")
    measured = outcome if isinstance(outcome, Measured) else Measured(outcome)
    metrics = measured.metrics
    series = measured.series.as_dict() if measured.series is not None else None
    if metrics.get("lost"):
        # every run must deliver all it published once drained
        error = f"lost {metrics['lost']:,.0f} messages (not delivered within --drain-timeout)"
        progress.finish("FAILED: " + error)
        return Result(name, target.name, metrics, error, series)
    main = metrics.get("msg_per_s") or metrics.get("publish_per_s") or 0.0
    summary = f"{main:,.0f} msg/s" if main else ""
    if "delivered_per_s" in metrics and "accepted_per_s" in metrics:
        summary = (
            f"accepted {metrics['accepted_per_s']:,.0f}/s, "
            f"delivered {metrics['delivered_per_s']:,.0f}/s"
        )
    if "kb_per_connection" in metrics:
        summary = f"{metrics['kb_per_connection']:.1f} KB/connection"
    if "p99_ms" in metrics:
        summary += f", p99 {metrics['p99_ms']:.2f} ms"
    progress.finish(summary)
    return Result(name, target.name, metrics, None, series)
