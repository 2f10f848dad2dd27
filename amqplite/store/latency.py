"""A latency histogram (group-commit fsyncs), filled by the server and read by /metrics."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds (seconds) of the fsync latency buckets, Prometheus' `le` labels."""


class LatencyHistogram:
    """A Prometheus histogram kept in O(log buckets) per observation (fsync latency)."""

    def __init__(self, buckets: Sequence[float] = FSYNC_BUCKETS) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Record one latency."""
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, ending with +Inf."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(
            (*map(format_bound, self.buckets), "+Inf"), self.counts, strict=True
        ):
            running += count
            out.append((bound, running))
        return out


def format_bound(value: float) -> str:
    """A bucket bound as Prometheus writes it: "0.005", "1"."""
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
