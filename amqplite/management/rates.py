"""Rates from periodic samples of monotonic counters (RabbitMQ's `*_details: {"rate": ...}`)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import attrs

MIN_INTERVAL = 1.0  # a read samples a series again once its last sample is this old (seconds)


@attrs.define(slots=True)
class _Series:
    """The last sample of one object's counters and the rates it gave."""

    ref: weakref.ref[object]
    time: float
    counts: tuple[float, ...]
    rates: tuple[float, ...]
    zeros: tuple[float, ...]


class RateTracker:
    """Per-object counter samples; rate = change between the last two samples / time between."""

    def __init__(self, min_interval: float = MIN_INTERVAL) -> None:
        self.min_interval = min_interval
        self._series: dict[int, _Series] = {}  # by id(); entries go when their object dies

    def observe(self, key: object, now: float, counts: Sequence[float]) -> tuple[float, ...]:
        """Record the counters if the last sample is old enough; the current rates per second."""
        series = self._series.get(id(key))
        if series is None or series.ref() is not key:
            ident = id(key)
            ref = weakref.ref(key, lambda _r: self._forget(ident, _r))
            zeros = (0.0,) * len(counts)
            self._series[ident] = _Series(ref, now, tuple(counts), zeros, zeros)
            return (0.0,) * len(counts)
        elapsed = now - series.time
        if elapsed >= self.min_interval:
            counts = tuple(counts)
            if counts == series.counts:  # idle: the common case with many queues
                series.rates = series.zeros if series.rates != series.zeros else series.rates
                series.time = now
                return series.rates
            series.rates = tuple(
                round((new - old) / elapsed, 1)
                for new, old in zip(counts, series.counts, strict=True)
            )
            series.time = now
            series.counts = tuple(counts)
        return series.rates

    def settled(self, key: object, counts: Sequence[float]) -> bool:
        """True when the last sample holds these counts and zero rates (they stay zero until
        the counts change)."""
        series = self._series.get(id(key))
        return (
            series is not None
            and series.ref() is key
            and series.counts == tuple(counts)
            and series.rates == series.zeros
        )

    def _forget(self, ident: int, ref: weakref.ref[object]) -> None:
        series = self._series.get(ident)
        if series is not None and series.ref is ref:
            del self._series[ident]

    def __len__(self) -> int:
        return len(self._series)
