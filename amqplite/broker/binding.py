"""Bindings: a source exchange, a destination, a key and arguments, identified by value."""

from __future__ import annotations

from typing import Any

import attrs

from amqplite.broker.plugin_api import Arguments, Destination, freeze


@attrs.frozen(slots=True)
class Binding:
    """A binding from a source exchange to a destination, as listed and deleted."""

    source: str
    destination: Destination
    routing_key: str
    arguments: Arguments = attrs.field(eq=False, hash=False)
    arguments_key: Any = attrs.field(default=None)

    @classmethod
    def make(
        cls, source: str, destination: Destination, routing_key: str, arguments: Arguments
    ) -> Binding:
        """Build a binding whose identity includes its arguments."""
        return cls(source, destination, routing_key, arguments, freeze(arguments))
