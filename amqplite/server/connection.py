"""One client connection on trio: a reader task, a writer task, heartbeats and the close timeout.

The reader reads a batch only when the connection's output (deliveries, returns, replies
together) is under its bound, and, after publishes that reached a queue behind on delivery,
only once that queue caught up (pacing.py): a client that does not read stops being read,
and ingress never starves deliveries.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

import trio

from amqplite.broker.queue import Queue
from amqplite.config.models import Limits
from amqplite.protocol.frames import HEARTBEAT_FRAME
from amqplite.server.pacing import STALL_AFTER, Pacer
from amqplite.server.quota import ConnectionQuota, QuotaBook
from amqplite.session.connection import ConnectionState, Session
from amqplite.session.paged import load_bodies

if TYPE_CHECKING:
    from amqplite.server.alarms import Alarms

log = logging.getLogger("amqplite.server")

HANDSHAKE_STATES = (
    ConnectionState.AWAIT_HEADER,
    ConnectionState.AWAIT_START_OK,
    ConnectionState.AWAIT_TUNE_OK,
    ConnectionState.AWAIT_OPEN,
)

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
        pacer: Pacer | None = None,
        quotas: QuotaBook | None = None,
    ) -> None:
        self.stream = stream
        self.session = session
        self.limits = limits
        self.alarms = alarms
        self.blocked = False  # held by a resource alarm: not read, heartbeats not expected
        self.pacer = pacer or Pacer(session.broker.flow)
        self.quota = ConnectionQuota(
            session, quotas or QuotaBook(session.broker, trio.current_time)
        )
        self._bound = limits.max_outbound_bytes
        self._wake = trio.Event()
        self._room = trio.Event()  # set when written output leaves room under the bound
        self._paused = False  # the reader waits for output room or for queues to catch up
        self._last_progress = trio.current_time()  # output last written (or found empty)
        self._accepted = trio.current_time()
        self._last_received = self._accepted
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
        if self.quota.write_chunk() is not None:
            return False  # a deliver quota: the writer task paces it
        data = session.data_to_send()
        if not data:
            return True
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # the writer task meets the error again and ends the connection
        now = self._last_sent = trio.current_time()
        if sent:
            self._last_progress = now
        if sent < len(data):
            self._leftover = data[sent:]
            session.in_flight = len(self._leftover)
            return False
        session.on_drained()
        self._room.set()
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

    def buffered(self) -> int:
        """Output bytes held for this client: queued in the session or not yet written."""
        return self.session.output_size()

    async def _reader(self) -> None:
        session = self.session
        flow = session.broker.flow
        alarms = self.alarms
        owed: list[Queue] = []
        while not session.closed:
            if alarms is not None and alarms.active and session.publishing:
                await alarms.hold(self)
                self._last_received = trio.current_time()
            if owed or session.output_size() >= self._bound:
                await self._wait_turn(owed)
                if session.closed:
                    return
            delay = self.quota.read_delay()
            if delay:
                self._paused = True  # not read: its heartbeats wait too
                await self._hold(delay)
                self._paused = False
            try:
                data = await self.stream.receive_some(self.quota.read_size(RECEIVE_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                session.connection_lost()
                return
            self._last_received = trio.current_time()
            self.quota.received(len(data))
            flow.take_touched()  # routed outside any receive (management, timers): not ours
            _receive(session, data)
            owed = flow.take_touched()

    async def _wait_turn(self, owed: list[Queue]) -> None:
        """Wait while output is over its bound, then while a queue just published to is behind."""
        session = self.session
        self._paused = True
        try:
            while not session.closed and session.output_size() >= self._bound:
                self._room = trio.Event()
                self._wake.set()  # the writer sends what is queued, then sets _room
                await self._room.wait()
            if owed and not session.closed:
                await self.pacer.wait_for(owed, session)
        finally:
            self._paused = False

    async def _hold(self, delay: float) -> None:
        """Wait `delay` seconds for a quota, counted in the connection's quota_wait."""
        self.quota.holding += 1
        try:
            await trio.sleep(delay)
        finally:
            self.quota.holding -= 1
            self.quota.waited += delay

    async def _writer(self, scope: trio.CancelScope) -> None:
        session = self.session
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            delay = self.quota.write_delay()
            if delay:
                await self._hold(delay)
            loads = session.bodies_to_load()
            if loads:  # bodies paged out of memory: read in a worker thread, never on the loop
                await trio.to_thread.run_sync(load_bodies, loads)
                session.bodies_loaded()
            data = session.data_to_send()
            if self._leftover:
                data, self._leftover = self._leftover + data, b""
            chunk = self.quota.write_chunk()
            if chunk is not None and len(data) > chunk:  # the rest after the quota's next wait
                data, self._leftover = data[:chunk], data[chunk:]
                self._wake.set()
            if data:
                session.in_flight = len(data) + len(self._leftover)
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
                self._last_sent = self._last_progress = trio.current_time()
                self.quota.sent(len(data))
                session.in_flight = len(self._leftover)
                if not self._leftover:
                    session.on_drained()
            self._room.set()
            if session.closed and not session.data_to_send_pending() and not self._leftover:
                scope.cancel()
                return

    async def _timers(self) -> None:
        session = self.session
        closing_since: float | None = None
        while True:
            await trio.sleep(0.5 if session.heartbeat == 0 else min(0.5, session.heartbeat / 4))
            now = trio.current_time()
            timeout = self.limits.handshake_timeout
            if session.state in HANDSHAKE_STATES and now - self._accepted > timeout:
                log.warning("handshake timeout from %s, closing", session.peer)
                session.close_reason = (
                    f"handshake not finished within {timeout:g} s (limits.handshake_timeout)"
                )
                session.connection_lost()
                self.drop()
                return
            if session.output_size() == 0:
                self._last_progress = now
            elif now - self._last_progress >= STALL_AFTER:
                session.on_stalled()  # its consumers stop holding publishers back
            if self._paused:
                self._last_received = now  # we are not reading it: its heartbeats wait too
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
