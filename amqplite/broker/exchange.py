"""Exchanges: their settings, the router holding their bindings, and the built-in names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs

from amqplite.broker.plugin_api import Arguments, HeldMessage, Router

BUILTIN_EXCHANGES: Final = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


@attrs.define(eq=False)
class Exchange:
    """An exchange: its settings and the router holding its bindings."""

    name: str
    type_name: str
    router: Router
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    arguments: Arguments = attrs.field(factory=dict)
    policy: str | None = None  # the name of the policy that applies (apply-to exchanges or all)
    policy_alternate: str | None = None  # that policy's alternate-exchange
    publish_in: int = 0  # messages published to this exchange
    publish_out: int = 0  # of those, messages it routed to at least one queue
    hold: Callable[[HeldMessage], bool] | None = attrs.field(init=False, default=None)
    """The router's `hold` (a plugin's router may keep a message to route later), if it has one."""

    def __attrs_post_init__(self) -> None:
        self.hold = getattr(self.router, "hold", None)

    def alternate_exchange(self) -> str | None:
        """The alternate exchange: the `alternate-exchange` argument, else the policy's."""
        alternate = self.arguments.get("alternate-exchange")
        if isinstance(alternate, bytes):
            alternate = alternate.decode()
        return alternate if isinstance(alternate, str) else self.policy_alternate
