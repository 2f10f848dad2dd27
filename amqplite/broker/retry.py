"""Retry with backoff: a requeued message is held back by a delay growing with its delivery count.

Queue arguments in both published forms (policy keys are the same without ``x-``):

- RabbitMQ 4.3: ``x-delayed-retry-type`` (``all`` | ``failed`` | ``returned`` | ``disabled``),
  ``x-delayed-retry-min`` and ``x-delayed-retry-max`` (ms); delay = min(min x count, max).
- LavinMQ: ``x-delayed-retry-min`` (enables it), ``x-delayed-retry-max`` (cap) and
  ``x-delayed-retry-multiplier``: absent for linear, 1 for constant, 2 or more for exponential
  (min x multiplier ** (count - 1)).

AMQP 0-9-1 has no delivery-failed flag, so basic.reject/nack with requeue is both "failed" and
"returned"; ``all`` also delays the requeues of a closed channel, a cancelled consumer or
basic.recover. When retry is on and nothing sets x-delivery-limit the limit is 20 (RabbitMQ's
quorum-queue default, LavinMQ's retry default), so a message always reaches the DLX in the end.
The held message stays in the queue's journal: a restart makes it ready at once (the delay is
not durable, the message is).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from amqplite.broker.message import QueueEntry
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ChannelException

RETRY_TYPES: Final = ("all", "failed", "returned", "disabled")
RETRY_KEYS: Final = (
    "delayed-retry-type",
    "delayed-retry-min",
    "delayed-retry-max",
    "delayed-retry-multiplier",
)
DEFAULT_DELIVERY_LIMIT: Final = 20
MAX_DELAY_MS: Final = 2**32 - 1  # LavinMQ's cap: the UInt32 millisecond range


@attrs.frozen
class RetrySettings:
    """How a queue delays requeued messages."""

    min_ms: int
    max_ms: int | None = None
    multiplier: int | None = None  # None: linear
    kind: str = "returned"

    def applies(self, explicit: bool) -> bool:
        """True when this requeue is delayed (explicit: basic.reject/nack with requeue)."""
        return explicit or self.kind == "all"

    def delay_ms(self, delivery_count: int) -> int:
        """The delay before the message is ready again, after `delivery_count` deliveries."""
        count = max(1, delivery_count)
        if self.multiplier is None:
            delay = self.min_ms * count
        elif self.multiplier == 1:
            delay = self.min_ms
        else:
            exponent = min(count - 1, 64)
            delay = self.min_ms * self.multiplier**exponent
        if self.max_ms is not None:
            delay = min(delay, self.max_ms)
        return min(delay, MAX_DELAY_MS)


def _invalid(queue: str, vhost: str, key: str, detail: str) -> ChannelException:
    return ChannelException(
        ReplyCode.PRECONDITION_FAILED,
        f"invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {detail}",
        ClassId.QUEUE,
        10,
    )


def parse_retry(
    arguments: Mapping[str, Any],
    policy: Mapping[str, Any] | None,
    queue: str = "",
    vhost: str = "/",
) -> RetrySettings | None:
    """The retry settings of a queue's arguments merged with its policy (arguments win), or None."""
    values: dict[str, Any] = {}
    for key in RETRY_KEYS:
        raw = arguments.get("x-" + key)
        if raw is None and policy is not None:
            raw = policy.get(key)
        if raw is None:
            continue
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        if key == "delayed-retry-type":
            if raw not in RETRY_TYPES:
                raise _invalid(queue, vhost, "x-" + key, f"{{unacceptable_value,{raw!r}}}")
        elif isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise _invalid(queue, vhost, "x-" + key, f"{{unacceptable_value,{raw!r}}}")
        values[key] = raw
    kind = values.get("delayed-retry-type")
    if kind == "disabled" or "delayed-retry-min" not in values:
        if kind not in (None, "disabled"):
            raise _invalid(queue, vhost, "x-delayed-retry-min", "required by x-delayed-retry-type")
        return None
    return RetrySettings(
        min_ms=values["delayed-retry-min"],
        max_ms=values.get("delayed-retry-max"),
        multiplier=values.get("delayed-retry-multiplier"),
        kind=kind or "returned",
    )


class RetryHold:
    """The requeued entries of one queue waiting out their delay, earliest first (a timer target)."""

    __slots__ = ("_order", "held", "ready_again", "timer_due")

    def __init__(self, ready_again: Callable[[list[QueueEntry]], None]) -> None:
        self.ready_again = ready_again  # hands the entries whose delay is over back to the queue
        self.held: list[tuple[float, int, QueueEntry]] = []
        self._order = itertools.count()
        self.timer_due: float | None = None

    def __len__(self) -> int:
        return len(self.held)

    @property
    def next_due(self) -> float | None:
        """When the first held entry is due (monotonic seconds), or None."""
        return self.held[0][0] if self.held else None

    def hold(self, entry: QueueEntry, due: float) -> None:
        """Keep the entry until `due`."""
        heapq.heappush(self.held, (due, next(self._order), entry))

    def take_due(self, now: float) -> list[QueueEntry]:
        """Remove and return the entries due by `now`, earliest first."""
        due: list[QueueEntry] = []
        held = self.held
        while held and held[0][0] <= now:
            due.append(heapq.heappop(held)[2])
        return due

    def clear(self) -> list[QueueEntry]:
        """Remove and return every held entry."""
        entries = [item[2] for item in sorted(self.held)]
        self.held.clear()
        return entries

    def on_timer(self, now: float) -> float | None:
        """Hand back what is due; the next deadline."""
        entries = self.take_due(now)
        if entries:
            self.ready_again(entries)
        return self.next_due
