"""One client connection on trio: a reader task, a writer task, heartbeats and the close timeout."""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

import trio

from amqplite.config.models import Limits
from amqplite.protocol.frames import HEARTBEAT_FRAME
from amqplite.session.connection import ConnectionState, Session
from amqplite.session.paged import load_bodies

if TYPE_CHECKING:
    from amqplite.server.alarms import Alarms

log = logging.getLogger("amqplite.server")

RECEIVE_SIZE = 256 * 1024

_batch: list[ClientConnection] | None = None
"""While a reader processes received bytes: the connections that got output meanwhile."""


class ClientConnection:
    """Drives one Session over one stream; owns the tasks of that connection.

    Output produced while some connection's reader handles a receive (replies, deliveries to
    any connection, confirms) is written straight to the socket when that receive is done,
    one write per connection, if the socket takes it without blocking; the writer task sends
    whatever is left, and all output produced outside a receive (timers, commits).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Session,
        limits: Limits,
        alarms: Alarms | None = None,
    ) -> None:
        self.stream = stream
        self.session = session
        self.limits = limits
        self.alarms = alarms
        self.blocked = False  # held by a resource alarm: not read, heartbeats not expected
        self._wake = trio.Event()
        self._last_received = trio.current_time()
        self._last_sent = trio.current_time()
        self.finished = trio.Event()
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._batched = False  # in _batch
        self._sending = False  # the writer task is inside send_all
        self._leftover = b""  # the part of a direct write the socket did not take
        self._drop_at = math.inf  # when the connection ends, even in the middle of a send
        self._scope: trio.CancelScope | None = None  # the connection's tasks
        self._send_scope: trio.CancelScope | None = None  # the shielded send in progress
        session.on_output = self.wake
        session.defer_paged = True

    def drop_at(self, deadline: float) -> None:
        """End the connection at `deadline` (trio time), even mid-send to a peer not reading."""
        self._drop_at = min(self._drop_at, deadline)
        for scope in (self._scope, self._send_scope):
            if scope is not None:
                scope.deadline = min(scope.deadline, self._drop_at)

    def drop(self) -> None:
        """End the connection now: its output is abandoned (the session is already closed)."""
        self.drop_at(-math.inf)

    def wake(self) -> None:
        """Tell the writer there is output (called by the session, possibly for deliveries)."""
        if _batch is None:
            self._wake.set()
        elif not self._batched:
            self._batched = True
            _batch.append(self)

    def _write_now(self) -> bool:
        """Send the output without blocking; False when the writer task has to (finish) it."""
        session = self.session
        if self._fd < 0 or self._sending or self._leftover or session.closed:
            return False
        if session.output_held:
            return False  # paged bodies to read: the writer task does it off the loop
        data = session.data_to_send()
        if not data:
            return True
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # the writer task meets the error again and ends the connection
        self._last_sent = trio.current_time()
        if sent < len(data):
            self._leftover = data[sent:]
            return False
        session.on_drained()
        return True

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for client misbehaviour."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.cancel_scope.deadline = self._drop_at
                nursery.start_soon(self._writer, nursery.cancel_scope)
                nursery.start_soon(self._timers)
                await self._reader()
                self.wake()
            if self.session.closed_by_client:
                await self._linger()
        finally:
            if not self.session.closed:
                self.session.connection_lost()
            log.info(
                "connection closed %s user=%s: %s",
                self.session.peer,
                self.session.user.name if self.session.user else "?",
                self.session.close_reason or "peer went away",
            )
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            self.finished.set()

    async def _linger(self) -> None:
        """After close-ok, leave the socket for the client to close (as RabbitMQ), a while at most.

        A client that reads close-ok and then finds the socket already reset logs errors
        (aio-pika's robust reconnect does); so wait for its end of file, up to close_timeout.
        """
        deadline = min(trio.current_time() + self.limits.close_timeout, self._drop_at)
        with trio.move_on_at(deadline) as self._scope:  # a shutdown's drop_at still applies
            try:
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass  # anything after connection.close is ignored, as the spec says
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _reader(self) -> None:
        session = self.session
        alarms = self.alarms
        while not session.closed:
            if alarms is not None and alarms.active and session.publishing:
                await alarms.hold(self)
                self._last_received = trio.current_time()
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                session.connection_lost()
                return
            self._last_received = trio.current_time()
            _receive(session, data)

    async def _writer(self, scope: trio.CancelScope) -> None:
        session = self.session
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            loads = session.bodies_to_load()
            if loads:  # bodies paged out of memory: read in a worker thread, never on the loop
                await trio.to_thread.run_sync(load_bodies, loads)
                session.bodies_loaded()
            data = session.data_to_send()
            if self._leftover:
                data, self._leftover = self._leftover + data, b""
            if data:
                self._sending = True
                try:
                    # shielded: a frame is never half-written, unless the connection is dropped
                    with trio.CancelScope(shield=True, deadline=self._drop_at) as send_scope:
                        self._send_scope = send_scope
                        await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    send_scope.cancel()
                finally:
                    self._sending = False
                    self._send_scope = None
                if send_scope.cancel_called:  # broken, or dropped at its deadline
                    session.connection_lost()
                    scope.cancel()
                    return
                self._last_sent = trio.current_time()
                session.on_drained()
            if session.closed and not session.data_to_send_pending():
                scope.cancel()
                return

    async def _timers(self) -> None:
        session = self.session
        closing_since: float | None = None
        while True:
            await trio.sleep(0.5 if session.heartbeat == 0 else min(0.5, session.heartbeat / 4))
            now = trio.current_time()
            if session.state is ConnectionState.CLOSING:
                closing_since = closing_since or now
                if now - closing_since > self.limits.close_timeout:
                    session.connection_lost()
                    self.drop()  # the writer may be stuck sending the close to a peer not reading
                    return
            heartbeat = session.heartbeat
            if heartbeat and session.state is ConnectionState.OPEN:
                if self.blocked:  # not read while blocked: its heartbeats wait in the socket
                    self._last_received = now
                if now - self._last_received > 2 * heartbeat:
                    log.warning("missed heartbeats from %s, closing", session.peer)
                    session.close_reason = "missed heartbeats from client"
                    session.connection_lost()
                    self.drop()
                    return
                if now - self._last_sent >= heartbeat / 2:
                    session.send_raw(HEARTBEAT_FRAME)


def _receive(session: Session, data: bytes | bytearray) -> None:
    """Let the session handle received bytes, then write the output it caused, per connection."""
    global _batch
    if _batch is not None:  # not expected: receives do not nest
        session.receive_data(data)
        return
    batch: list[ClientConnection] = []
    _batch = batch
    i = 0
    try:
        session.receive_data(data)
        i = 0
        while i < len(batch):  # a write may resume deliveries, adding connections
            conn = batch[i]
            i += 1
            conn._batched = False
            if not conn._write_now():
                conn._wake.set()
    finally:
        _batch = None
        for conn in batch[i:]:
            conn._batched = False
            conn._wake.set()
