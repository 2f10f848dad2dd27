"""Policies: queue and exchange settings applied by name pattern, own arguments taking precedence."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import attrs

from amqplite.broker.queue_settings import OVERFLOW_MODES, POLICY_INT_MINIMUMS, POLICY_KEYS
from amqplite.broker.retry import RETRY_TYPES

APPLY_TO: Final = ("queues", "exchanges", "all")
# Keys that apply to exchanges (apply-to exchanges or all): string values.
EXCHANGE_KEYS: Final = ("alternate-exchange",)
# Keys RabbitMQ knows that we accept (so exported definitions import) but do not act on.
IGNORED_KEYS: Final = (
    "queue-mode",
    "queue-version",
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-master-locator",
    "queue-leader-locator",
    "max-age",
    "stream-max-segment-size-bytes",
)


@attrs.frozen
class Policy:
    """A named policy of a vhost: a definition applied to queues or exchanges matching pattern."""

    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "queues"

    def applies_to_queue(self, queue: str) -> bool:
        """True when the policy applies to queues and the pattern matches (anywhere) in the name."""
        return self.apply_to in ("queues", "all") and re.search(self.pattern, queue) is not None

    def applies_to_exchange(self, exchange: str) -> bool:
        """True when the policy applies to exchanges and the pattern matches in the name."""
        return (
            self.apply_to in ("exchanges", "all") and re.search(self.pattern, exchange) is not None
        )


def validate_policy(policy: Policy) -> None:
    """Raise ValueError("reason") for a bad pattern, apply-to, definition key or value."""
    if not policy.name:
        raise ValueError("policy name must not be empty")
    if policy.apply_to not in APPLY_TO:
        raise ValueError(f"apply-to must be one of {', '.join(APPLY_TO)}, not {policy.apply_to!r}")
    if isinstance(policy.priority, bool) or not isinstance(policy.priority, int):
        raise ValueError(f"priority must be an integer, not {policy.priority!r}")
    try:
        re.compile(policy.pattern)
    except re.error as exc:
        raise ValueError(f"invalid pattern {policy.pattern!r}: {exc}") from None
    if not policy.definition:
        raise ValueError("policy definition must not be empty")
    for key, value in policy.definition.items():
        if key in IGNORED_KEYS:
            continue
        if key in EXCHANGE_KEYS:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{key} must be an exchange name, not {value!r}")
            continue
        if key not in POLICY_KEYS:
            raise ValueError(f"unknown policy key {key!r}")
        if key in POLICY_INT_MINIMUMS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer, not {value!r}")
            if value < POLICY_INT_MINIMUMS[key]:
                raise ValueError(f"{key} must be at least {POLICY_INT_MINIMUMS[key]}, not {value}")
        elif key == "overflow":
            if value not in OVERFLOW_MODES:
                raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}")
        elif key == "delayed-retry-type":
            if value not in RETRY_TYPES:
                raise ValueError(f"delayed-retry-type must be one of {', '.join(RETRY_TYPES)}")
        elif not isinstance(value, str):
            raise ValueError(f"{key} must be a string, not {value!r}")


def effective_policy(policies: Iterable[Policy], queue: str) -> Policy | None:
    """The policy that applies to a queue: the matching one with the highest priority."""
    return _highest(p for p in policies if p.applies_to_queue(queue))


def effective_exchange_policy(policies: Iterable[Policy], exchange: str) -> Policy | None:
    """The policy that applies to an exchange: the matching one with the highest priority."""
    return _highest(p for p in policies if p.applies_to_exchange(exchange))


def _highest(policies: Iterable[Policy]) -> Policy | None:
    best: Policy | None = None
    for policy in policies:
        if best is None or (policy.priority, policy.name) > (best.priority, best.name):
            best = policy
    return best
