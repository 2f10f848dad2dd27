"""Byte-rate quotas per user and vhost: token buckets that slow a connection's reads and writes.

A user's or vhost's limits `max-publish-bytes-per-second` (bytes its connections send to the
broker) and `max-deliver-bytes-per-second` (bytes the broker writes to them) are shared by all
its connections. A connection over its quota is never closed: its reader waits before the next
read (the client's socket buffer fills, TCP holds the client back) and its writer waits before
the next write (output stays queued, deliveries pause at the output bound).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from amqplite.broker.broker import Broker
from amqplite.config.definitions import DELIVER_RATE, PUBLISH_RATE
from amqplite.session.connection import Session

BURST_SECONDS = 0.25
"""A bucket holds this many seconds of its rate: the most a quiet connection may send at once."""
MIN_CHUNK = 4096
"""The smallest read or write a limited connection is given (a rate below it still works)."""


class TokenBucket:
    """`rate` bytes per second; taking more than there is leaves a debt that waiting pays off."""

    def __init__(self, rate: int, now: float) -> None:
        self.rate = rate
        self.tokens = self.burst
        self.stamp = now

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds."""
        return max(self.rate * BURST_SECONDS, float(MIN_CHUNK))

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def set_rate(self, rate: int, now: float) -> None:
        """Change the rate (a limit changed); the tokens so far are kept, up to the new burst."""
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, self.burst)

    def take(self, size: int, now: float) -> None:
        """Count `size` bytes that went through (the tokens may go negative)."""
        self._refill(now)
        self.tokens -= size

    def delay(self, now: float) -> float:
        """Seconds until the debt is paid (0.0 when there is none)."""
        self._refill(now)
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


Key = tuple[str, str, str]  # ("user" | "vhost", name, limit name)


class QuotaBook:
    """The node's buckets, one per user or vhost and direction with a quota; rates read live."""

    def __init__(self, broker: Broker, clock: Callable[[], float]) -> None:
        self.broker = broker
        self.clock = clock
        self.buckets: dict[Key, TokenBucket] = {}

    def rate(self, kind: str, name: str, limit: str) -> int | None:
        """The quota in bytes/s, or None (no quota: missing, or negative as RabbitMQ's limits)."""
        limits = self.broker.user_limits if kind == "user" else self.broker.vhost_limits
        value = limits.get(name, {}).get(limit)
        return value if value is not None and value >= 0 else None

    def buckets_for(self, user: str, vhost: str, limit: str) -> list[TokenBucket]:
        """The buckets a connection of user on vhost is held to in one direction (often none)."""
        found: list[TokenBucket] = []
        for kind, name in (("user", user), ("vhost", vhost)):
            key = (kind, name, limit)
            rate = self.rate(kind, name, limit)
            bucket = self.buckets.get(key)
            if rate is None:
                if bucket is not None:
                    del self.buckets[key]  # the limit was cleared
                continue
            rate = max(rate, 1)
            if bucket is None:
                bucket = self.buckets[key] = TokenBucket(rate, self.clock())
            elif bucket.rate != rate:
                bucket.set_rate(rate, self.clock())
            found.append(bucket)
        return found


class ConnectionQuota:
    """One connection's view of its user's and vhost's quotas, and how long it was held."""

    def __init__(self, session: Session, book: QuotaBook) -> None:
        self.session = session
        self.book = book
        self.waited = 0.0  # seconds this connection was held by its quotas, both directions
        self.holding = 0  # 1 while a read or write waits for its quota

    def _buckets(self, limit: str) -> list[TokenBucket]:
        session = self.session
        user, vhost = session.user, session.vhost
        if user is None or vhost is None:
            return []  # before connection.open: the handshake is never held
        return self.book.buckets_for(user.name, vhost.name, limit)

    def _delay(self, limit: str) -> float:
        now = self.book.clock()
        return max((b.delay(now) for b in self._buckets(limit)), default=0.0)

    def _chunk(self, limit: str) -> int | None:
        buckets = self._buckets(limit)
        if not buckets:
            return None
        return int(max(min(b.burst for b in buckets), MIN_CHUNK))

    def _take(self, limit: str, size: int) -> None:
        now = self.book.clock()
        for bucket in self._buckets(limit):
            bucket.take(size, now)

    def read_delay(self) -> float:
        """Seconds to wait before the next read (publish quota in debt)."""
        return self._delay(PUBLISH_RATE)

    def read_size(self, default: int) -> int:
        """How many bytes the next read may take."""
        chunk = self._chunk(PUBLISH_RATE)
        return default if chunk is None else min(default, chunk)

    def received(self, size: int) -> None:
        """Count bytes read from the client."""
        if size:
            self._take(PUBLISH_RATE, size)

    def write_delay(self) -> float:
        """Seconds to wait before the next write (deliver quota in debt)."""
        return self._delay(DELIVER_RATE)

    def write_chunk(self) -> int | None:
        """The most bytes the next write may carry, or None when there is no deliver quota."""
        return self._chunk(DELIVER_RATE)

    def sent(self, size: int) -> None:
        """Count bytes written to the client."""
        if size:
            self._take(DELIVER_RATE, size)

    def snapshot(self) -> dict[str, Any]:
        """The management API's fields: the quotas that apply, whether held now, seconds held."""
        session = self.session
        user = session.user.name if session.user is not None else ""
        vhost = session.vhost.name if session.vhost is not None else ""
        rates: dict[str, Any] = {}
        for limit in (PUBLISH_RATE, DELIVER_RATE):
            found = [
                r
                for r in (
                    self.book.rate("user", user, limit),
                    self.book.rate("vhost", vhost, limit),
                )
                if r is not None
            ]
            rates[limit] = min(found) if found else None
        return {
            "quota": rates,
            "quota_state": "throttled" if self.holding else "running",
            "quota_wait": round(self.waited, 3),
        }
