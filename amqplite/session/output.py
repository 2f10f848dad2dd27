"""A session's output: the bytes queued for its client, their bound, replies held until durable."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.broker.broker import Broker
from amqplite.broker.entry_reports import RemoteAnswer
from amqplite.protocol.methods import Method, encode_method
from amqplite.protocol.writers import Part
from amqplite.session.channel import ChannelSession, ChannelState
from amqplite.session.confirms import PublisherConfirms
from amqplite.session.durable_replies import DurableReplies
from amqplite.session.paged import HeldOutput
from amqplite.session.settings import SessionSettings
from amqplite.session.state import ConnectionState


class SessionOutput:
    """The Session's output side: frames queued in order, taken whole by the server."""

    broker: Broker
    settings: SessionSettings
    state: ConnectionState
    channels: dict[int, ChannelSession]
    confirms: PublisherConfirms
    on_output: Callable[[], None]
    _out: list[Part]
    _out_size: int
    _held_out: HeldOutput | None
    _held: DurableReplies
    _starved: bool
    output_stalled: bool
    in_flight: int

    def data_to_send(self) -> bytes:
        """Take every byte queued for the client."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = self._held_out.size if self._held_out is not None else 0
        return data

    def data_to_send_pending(self) -> bool:
        """True if bytes are waiting for the client."""
        return bool(self._out)

    def send_raw(self, data: bytes) -> None:
        """Queue already-encoded bytes (heartbeat frames from the server's timer)."""
        self.write(data)

    def on_drained(self) -> None:
        """The server wrote our buffered bytes: resume deliveries paused for room."""
        self.output_stalled = False
        if self._starved and self.state is ConnectionState.OPEN:
            self._starved = False
            self._resume_deliveries()
            self._flush_confirms()

    def on_stalled(self) -> None:
        """The peer has taken no output for a while: its consumers stop pacing publishers."""
        if not self.output_stalled and self.state is ConnectionState.OPEN:
            self.output_stalled = True
            self._resume_deliveries()  # their queues see the stall and stop holding publishers

    def _resume_deliveries(self) -> None:
        for channel in list(self.channels.values()):
            if channel.state is ChannelState.OPEN:
                self.broker.resume(channel.delivery)

    def output_size(self) -> int:
        """Bytes buffered for the client: queued here, or taken by the server and not yet written."""
        return self._out_size + self.in_flight

    def write(self, data: bytes) -> None:
        """Queue already-encoded frames for the client."""
        self._out_size += len(data)
        if self._held_out is not None:
            self._held_out.append(data)  # stays in order behind a paged delivery
        elif self._out:
            self._out.append(data)
            return  # the server was told when the first bytes still queued came
        else:
            self._out.append(data)
        self.on_output()

    def write_parts(self, parts: list[Part]) -> None:
        """Queue frames given as parts (a writer's output, the body among them uncopied)."""
        self._out_size += sum(map(len, parts))
        if self._held_out is not None:
            for part in parts:  # stays in order behind a paged delivery
                self._held_out.append(part)
        elif self._out:
            self._out += parts
            return  # the server was told when the first bytes still queued came
        else:
            self._out += parts
        self.on_output()

    def send(self, channel_id: int, method: Method) -> None:
        """Encode a method frame and queue it for the client."""
        self.write(encode_method(channel_id, method))

    def _flush_confirms(self) -> None:
        if self.confirms:
            self.confirms.flush(self.write)

    def has_capacity(self) -> bool:
        """False while the outbound buffer is over its bound (deliveries pause)."""
        if self._out_size + self.in_flight < self.settings.max_outbound_bytes:
            return True
        self._starved = True
        return False

    def output_moving(self) -> bool:
        """True unless the server found the peer not taking output (see on_stalled)."""
        return not self.output_stalled

    def write_mark(self) -> object:
        """Start noting the records a command writes (the token for reply_when_durable)."""
        return self._held.mark()

    def reply_when_answered(
        self,
        channel: ChannelSession,
        mark: object | None,
        answer: RemoteAnswer,
        finish: Callable[[], list[Part]],
    ) -> None:
        """Send finish()'s frames once the queue's leader answered (and `mark`'s records are on
        disk); the channel's later input waits behind, as for reply_when_durable."""
        if not self._held.hold_answer(channel, mark, answer, finish):
            self.write_parts(finish())

    def reply_when_durable(
        self, channel: ChannelSession, mark: object, reply: Method | None, then: bytes = b""
    ) -> None:
        """Send a reply once the records this channel wrote are on disk (declare, tx.commit...).

        Until then the reply is held and the channel's later input waits behind it, so the
        channel's replies stay in order; `reply` None (nowait) only notes what was written.
        `then` (encoded frames) follows the reply.
        """
        frame = None if reply is None else encode_method(channel.channel_id, reply) + then
        if not self._held.hold(channel, mark, frame) and frame is not None:
            self.write(frame)
        elif frame is None and then:
            self.write(then)
