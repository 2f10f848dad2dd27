"""Deliveries of paged-out messages: their bodies are read off the event loop, output stays in order.

A basic.deliver or basic.get-ok of a message whose body is on disk only becomes a placeholder; everything the
connection sends after it waits behind it. The server takes the placeholders, reads their
bodies in a worker thread (one batch per connection) and hands them back; the output then
flows again in its original order. The broker core stays synchronous: tags, unacked tracking
and credit are settled at delivery time, only the bytes wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from amqplite.broker.message import PagedMessage
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ConnectionException
from amqplite.protocol.writers import Deliver, GetOk, Part, deliver_parts, get_ok_parts

log = logging.getLogger("amqplite.session")


@attrs.frozen
class LoadedContent:
    """A paged message with its body read back (what the frame writer needs)."""

    exchange: str
    routing_key: str
    properties_bin: bytes
    body: bytes


@attrs.define(eq=False)
class PagedDelivery:
    """A basic.deliver (or basic.get-ok) whose body is still on disk."""

    deliver: Deliver | GetOk
    message: PagedMessage
    frame_max: int
    body: bytes | None = None
    failed: bool = False

    def load(self) -> None:
        """Read the body (in a worker thread)."""
        try:
            self.body = self.message.location.read()
        except OSError:
            log.exception("cannot read a paged message body")
            self.failed = True

    def parts(self) -> list[Part]:
        """The delivery's frames, once loaded."""
        m = self.message
        assert self.body is not None
        content = LoadedContent(m.exchange, m.routing_key, m.properties_bin, self.body)
        if isinstance(self.deliver, GetOk):
            return get_ok_parts(self.deliver, content, self.frame_max)
        return deliver_parts(self.deliver, content, self.frame_max)


class HeldOutput:
    """Output queued behind paged deliveries that are not loaded yet."""

    def __init__(self) -> None:
        self.items: list[Part | PagedDelivery] = []
        self.to_load: list[PagedDelivery] = []
        self.size = 0  # bytes held (bodies counted by their length)

    def defer(self, delivery: PagedDelivery) -> None:
        """Hold a paged delivery (and what follows it) until its body is loaded."""
        self.items.append(delivery)
        self.to_load.append(delivery)
        self.size += delivery.message.size

    def append(self, data: Part) -> None:
        """Output behind a held delivery."""
        self.items.append(data)
        self.size += len(data)

    def take_loads(self) -> list[PagedDelivery]:
        """The deliveries whose bodies the server should read now."""
        loads, self.to_load = self.to_load, []
        return loads

    def release(self) -> tuple[list[Part], bool]:
        """The output now ready, in order; True when a body could not be read."""
        ready: list[Part] = []
        items = self.items
        i = 0
        while i < len(items):
            item = items[i]
            if isinstance(item, PagedDelivery):
                if item.failed:
                    return ready, True
                if item.body is None:
                    break
                ready += item.parts()
                self.size -= item.message.size
            else:
                ready.append(item)
                self.size -= len(item)
            i += 1
        del items[:i]
        return ready, False


class PagedOutput:
    """The session's side: hold output behind paged deliveries until the server loaded them."""

    _out: list[Part]
    _out_size: int
    _held_out: HeldOutput | None
    on_output: Callable[[], None]

    def _connection_error(self, exc: ConnectionException) -> None:
        raise NotImplementedError  # provided by the Session

    @property
    def output_held(self) -> bool:
        """True while output waits behind a paged delivery whose body is not loaded."""
        return self._held_out is not None

    def defer_delivery(self, delivery: PagedDelivery) -> None:
        """Hold a delivery (and all output after it) until its body is loaded."""
        if self._held_out is None:
            self._held_out = HeldOutput()
        self._held_out.defer(delivery)
        self._out_size += delivery.message.size
        self.on_output()

    def bodies_to_load(self) -> list[PagedDelivery]:
        """Paged deliveries whose bodies the server should read (then call bodies_loaded)."""
        return self._held_out.take_loads() if self._held_out is not None else []

    def bodies_loaded(self) -> None:
        """The bodies were read: release the output they held, in order."""
        held = self._held_out
        if held is None:
            return
        ready, failed = held.release()
        self._out.extend(ready)
        if failed or not held.items:
            self._held_out = None
            self._out_size = sum(map(len, self._out))
        if failed:
            self._connection_error(
                ConnectionException(ReplyCode.INTERNAL_ERROR, "cannot read a message body")
            )
        self.on_output()


def load_bodies(deliveries: list[PagedDelivery]) -> None:
    """Read the bodies of paged deliveries (the server calls this in a worker thread)."""
    for delivery in deliveries:
        delivery.load()
