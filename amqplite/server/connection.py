"""One client connection on trio: a reader task, a writer task, heartbeats and the close timeout."""

from __future__ import annotations

import logging

import trio

from amqplite.config.models import Limits
from amqplite.protocol.frames import HEARTBEAT_FRAME
from amqplite.session.connection import ConnectionState, Session

log = logging.getLogger("amqplite.server")

RECEIVE_SIZE = 256 * 1024


class ClientConnection:
    """Drives one Session over one stream; owns the tasks of that connection."""

    def __init__(self, stream: trio.abc.Stream, session: Session, limits: Limits) -> None:
        self.stream = stream
        self.session = session
        self.limits = limits
        self._wake = trio.Event()
        self._last_received = trio.current_time()
        self._last_sent = trio.current_time()
        self.finished = trio.Event()
        session.on_output = self.wake

    def wake(self) -> None:
        """Tell the writer there is output (called by the session, possibly for deliveries)."""
        self._wake.set()

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for client misbehaviour."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                nursery.start_soon(self._timers)
                await self._reader()
                self.wake()
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

    async def _reader(self) -> None:
        session = self.session
        while not session.closed:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                session.connection_lost()
                return
            self._last_received = trio.current_time()
            session.receive_data(data)

    async def _writer(self, scope: trio.CancelScope) -> None:
        session = self.session
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            data = session.data_to_send()
            if data:
                try:
                    with trio.CancelScope(shield=True):
                        await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
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
                    self.wake()
                    return
            heartbeat = session.heartbeat
            if heartbeat and session.state is ConnectionState.OPEN:
                if now - self._last_received > 2 * heartbeat:
                    log.warning("missed heartbeats from %s, closing", session.peer)
                    session.close_reason = "missed heartbeats from client"
                    session.connection_lost()
                    self.wake()
                    return
                if now - self._last_sent >= heartbeat / 2:
                    session.send_raw(HEARTBEAT_FRAME)
