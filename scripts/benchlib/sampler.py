"""Time series of a flow: messages accepted and delivered, queue depth, broker RSS and CPU."""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs

from benchlib.client import BrokerClosed, Client
from benchlib.procinfo import sample

INTERVAL = 0.25


@attrs.define
class Series:
    """Samples over a flow, seconds since its start; depth has its own clock (a round trip each)."""

    t: list[float] = attrs.Factory(list)
    accepted: list[int] = attrs.Factory(list)
    delivered: list[int] = attrs.Factory(list)
    rss_mb: list[float] = attrs.Factory(list)
    cpu_s: list[float] = attrs.Factory(list)
    depth_t: list[float] = attrs.Factory(list)
    depth: list[int] = attrs.Factory(list)
    window_end: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return attrs.asdict(self)

    def peak_rss_mb(self) -> float | None:
        """The highest broker RSS sampled."""
        return max(self.rss_mb) if self.rss_mb else None

    def peak_depth(self) -> int | None:
        """The deepest the queues (summed) were seen."""
        return max(self.depth) if self.depth else None


def rates(t: list[float], counts: list[int]) -> tuple[list[float], list[float]]:
    """Per-second rates between consecutive samples, at the midpoints."""
    mids, values = [], []
    for i in range(1, len(t)):
        dt = t[i] - t[i - 1]
        if dt > 0:
            mids.append((t[i] + t[i - 1]) / 2)
            values.append((counts[i] - counts[i - 1]) / dt)
    return mids, values


class Sampler:
    """Two threads: one reads counters and /proc every INTERVAL, one asks the queue depths."""

    def __init__(
        self,
        url: str,
        pid: int | None,
        queues: tuple[str, ...],
        accepted: Any,
        delivered: Any,
    ) -> None:
        self.series = Series()
        self._url = url
        self._pid = pid
        self._queues = queues
        self._accepted = accepted
        self._delivered = delivered
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._threads = [
            threading.Thread(target=self._counters, daemon=True),
            threading.Thread(target=self._depths, daemon=True),
        ]

    def start(self) -> None:
        """Start sampling; t = 0 is now."""
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()

    def mark_window_end(self) -> None:
        """Remember when the publisher's window ended."""
        if self.series.window_end is None:
            self.series.window_end = time.monotonic() - self._start

    def stop(self) -> Series:
        """Take a last sample, stop both threads, return the series."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._take()
        return self.series

    def _take(self) -> None:
        series = self.series
        now = time.monotonic() - self._start
        series.t.append(now)
        series.accepted.append(int(self._accepted.value))
        series.delivered.append(int(self._delivered.value))
        if self._pid is not None:
            try:
                proc = sample(self._pid)
            except OSError:  # the broker is gone: repeat the last figures, keep lists aligned
                series.rss_mb.append(series.rss_mb[-1] if series.rss_mb else 0.0)
                series.cpu_s.append(series.cpu_s[-1] if series.cpu_s else 0.0)
                return
            series.rss_mb.append(proc.rss_bytes / 2**20)
            series.cpu_s.append(proc.cpu_seconds)

    def _counters(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._take()

    def _depths(self) -> None:
        if not self._queues:
            return
        try:
            client = Client(self._url, timeout=30.0)
            client.open_channel()
        except (OSError, BrokerClosed):
            return
        try:
            while not self._stop.is_set():
                depth = sum(client.queue_depths(self._queues))
                self.series.depth_t.append(time.monotonic() - self._start)
                self.series.depth.append(depth)
                self._stop.wait(INTERVAL)
        except (OSError, BrokerClosed, TimeoutError):
            pass
        finally:
            client.close(timeout=1.0)
