"""Session: one client connection's AMQP 0-9-1 semantics, bytes in and bytes out, no I/O."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from amqplite.broker.auth import User, check_access
from amqplite.broker.broker import Broker
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, PagedMessage, QueueEntry
from amqplite.broker.vhost import VHost
from amqplite.protocol.assembler import Command, ContentAssembler
from amqplite.protocol.constants import FRAME_MIN_SIZE, PROTOCOL_HEADER, ClassId, ReplyCode
from amqplite.protocol.errors import AMQPError, ChannelException, ConnectionException
from amqplite.protocol.frames import (
    NEED_DATA,
    BadProtocolHeader,
    FrameReader,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
)
from amqplite.protocol.methods import (
    Method,
    build_method,
    encode_method,
    method_ids,
    spec,
)
from amqplite.protocol.writers import Deliver, GetOk, Part, deliver_parts_of, get_ok_parts
from amqplite.session import handshake, limits
from amqplite.session.channel import ChannelSession, ChannelState
from amqplite.session.channel_commands import check_channel_open
from amqplite.session.commands import handle_command
from amqplite.session.confirms import PublisherConfirms
from amqplite.session.delivery_frames import DELIVERED_ONCE, deliver_frames
from amqplite.session.durable_replies import DurableReplies
from amqplite.session.hot_path import HotPath
from amqplite.session.output import SessionOutput
from amqplite.session.paged import HeldOutput, PagedDelivery, PagedOutput
from amqplite.session.settings import SessionSettings
from amqplite.session.state import ConnectionState

log = logging.getLogger("amqplite.session")


def _noop() -> None:
    """Default output notification: nothing to wake."""


class Session(SessionOutput, PagedOutput, HotPath):
    """AMQP 0-9-1 for one client connection: feed bytes in, take bytes out (h11 style)."""

    open_vhost: VHost  # the vhost opened (set by connection.open: commands run only after it)

    def __init__(
        self,
        broker: Broker,
        settings: SessionSettings | None = None,
        peer: str = "",
        on_output: Callable[[], None] = _noop,
    ) -> None:
        self.broker = broker
        self.settings = settings or SessionSettings()
        self.peer = peer
        self.on_output = on_output
        self.state = ConnectionState.AWAIT_HEADER
        self.reader = FrameReader(max(self.settings.frame_max, FRAME_MIN_SIZE))
        self.assembler = ContentAssembler(
            self.settings.max_message_size, self.settings.max_unfinished_content_bytes
        )
        self.frame_max = self.settings.frame_max
        self.channel_max = self.settings.channel_max
        self.heartbeat = 0
        self.user: User | None = None
        self.vhost: VHost | None = None
        self.client_properties: dict[str, Any] = {}
        self.channels: dict[int, ChannelSession] = {}
        self.close_reason: str = ""
        self.closed_by_client = False  # we answered the client's connection.close with close-ok
        self.publishing = False  # set by the first basic.publish (resource alarms block such)
        self._out: list[Part] = []  # joined once, in data_to_send: the one copy of a body
        self._out_size = 0
        self.defer_paged = False  # the server reads paged bodies off the loop (bodies_to_load)
        self._held_out: HeldOutput | None = None  # output behind a paged delivery being read
        self._starved = False
        self.output_stalled = False  # set by the server: the peer stopped taking output
        self.in_flight = 0  # bytes the server took from us and has not yet written
        self.confirms = PublisherConfirms()
        self._held = DurableReplies(broker)  # replies waiting for their records' commit
        self._released = False
        self._allowed: set[tuple[str, str, str]] = set()  # permission checks passed
        self._allowed_for: object = None  # the Permission those checks were made against
        self._permission_key = ("", "")  # (user, vhost) once the vhost is open
        self.open_refusal: ConnectionException | None = None  # e.g. the broker's connection limit
        self.external_identity: str | None = None  # a verified TLS client certificate's CN

    # -- I/O boundary ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True when the connection is finished: flush what is left, then close the socket."""
        return self.state is ConnectionState.CLOSED

    def receive_data(self, data: bytes | bytearray) -> None:
        """Process bytes from the client; replies and deliveries accumulate for data_to_send."""
        if self.closed:
            return
        reader = self.reader
        reader.receive_data(data)
        # enum members read once: each read off its class costs ~1k instructions (the
        # EnumType.__getattr__ hook keeps the attribute lookup off the fast path)
        closed = ConnectionState.CLOSED
        open_ = ConnectionState.OPEN
        try:
            while self.state is not closed:
                if self.state is open_ and self._receive_hot():
                    break  # a publish waits for the rest of its content, to be taken whole
                frame = reader.next_frame()
                if frame is NEED_DATA:
                    break
                self._handle_frame(frame)
        except BadProtocolHeader:
            self.write(PROTOCOL_HEADER)
            self._finish("bad protocol header")
        except ConnectionException as exc:
            self._connection_error(exc)
        except Exception as exc:  # never a traceback on the wire: 541 on this connection only
            log.exception("internal error on connection %s", self.peer)
            self._connection_error(
                ConnectionException(
                    ReplyCode.INTERNAL_ERROR, f"Unexpected error, please report: {exc!r}"
                )
            )
        self.broker.flush_acks()
        self._flush_confirms()
        if self.confirms or self._held:  # told after each commit until nothing waits
            self.broker.commit_waiters[id(self)] = self

    def connection_lost(self) -> None:
        """The socket is gone: release channels, requeue unacked, drop exclusive queues."""
        self._release()
        self.state = ConnectionState.CLOSED

    def force_close(self, code: ReplyCode, text: str) -> None:
        """Close from the server side (e.g. 320 CONNECTION_FORCED at shutdown)."""
        if self.state in (ConnectionState.OPEN, ConnectionState.AWAIT_OPEN):
            self._connection_error(ConnectionException(code, text))
        elif self.state is not ConnectionState.CLOSING:
            self._finish(text)

    def _finish(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self._release()
        self.state = ConnectionState.CLOSED

    # -- DeliverySink ------------------------------------------------------------------------

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        """Send basic.deliver for a queue entry (its body joins the outbound bytes uncopied)."""
        m = entry.message
        if self.defer_paged and type(m) is PagedMessage:
            deliver = Deliver(channel_id, consumer_tag, delivery_tag, entry.redelivered)
            self.defer_delivery(PagedDelivery(deliver, m, self.frame_max))  # read off the loop
            return
        if m.deliver_tail is None:  # most messages are delivered once: encoded whole
            m.deliver_tail = DELIVERED_ONCE
            parts = deliver_parts_of(
                channel_id, consumer_tag, delivery_tag, entry.delivery_count > 0, m, self.frame_max
            )
        else:  # delivered before (fanout, requeue): from the shared part
            parts = deliver_frames(channel_id, consumer_tag, delivery_tag, entry, self.frame_max)
        out = self._out
        if out and self._held_out is None:  # the server was told when the first of these came
            out += parts
            self._out_size += sum(map(len, parts))
            return
        self.write_parts(parts)

    def write_get_ok(self, get_ok: GetOk, message: Message) -> None:
        """Send basic.get-ok with its message (a paged body is read off the loop, in order)."""
        if self.defer_paged and type(message) is PagedMessage:
            self.defer_delivery(PagedDelivery(get_ok, message, self.frame_max))
            return
        self.write_parts(get_ok_parts(get_ok, message, self.frame_max))

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        """Server-initiated basic.cancel (consumer_cancel_notify)."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.state is ChannelState.OPEN:
            cancel = build_method(spec.Basic.Cancel, consumer_tag=consumer_tag, nowait=True)
            if channel.held_cancels is not None:  # after the queue.delete-ok this channel awaits
                channel.held_cancels.append(encode_method(channel_id, cancel))
            else:
                self.send(channel_id, cancel)

    def close_channel(self, channel_id: int, reply_code: ReplyCode, reply_text: str) -> None:
        """Close a channel from the server side (a consumer acknowledgement timeout)."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.state is ChannelState.OPEN:
            self._channel_error(channel, ChannelException(reply_code, reply_text), None)

    # -- frames ------------------------------------------------------------------------------

    def _handle_frame(self, frame: Any) -> None:
        if isinstance(frame, ProtocolHeaderReceived):
            self._start()
            return
        if isinstance(frame, HeartbeatFrame):
            return
        if self.state is ConnectionState.CLOSING:
            if isinstance(frame, MethodFrame) and frame.channel == 0:
                if isinstance(frame.method, spec.Connection.CloseOk):
                    self._finish("closed")
                elif isinstance(frame.method, spec.Connection.Close):
                    self.send(0, spec.Connection.CloseOk())
                    self._finish("closed")
            return
        if frame.channel == 0:
            if not isinstance(frame, MethodFrame):
                raise ConnectionException(
                    ReplyCode.UNEXPECTED_FRAME, "unexpected content frame on channel 0"
                )
            self._handle_connection_method(frame.method)
            return
        if self.state is not ConnectionState.OPEN:
            raise ConnectionException(
                ReplyCode.COMMAND_INVALID, "connection not open, channel frames not allowed"
            )
        channel = self.channels.get(frame.channel)
        if isinstance(frame, MethodFrame) and channel is None:
            self._handle_channel_open(frame.channel, frame.method)
            return
        if channel is None:
            raise ConnectionException(
                ReplyCode.CHANNEL_ERROR, f"expected 'channel.open' on channel {frame.channel}"
            )
        held = self._held.get(frame.channel)
        try:
            command = self.assembler.handle(frame)
        except ChannelException as exc:  # e.g. 406 message too large, known from the header
            if held is not None:
                held.deferred.append(exc)
            elif channel.state is ChannelState.OPEN:
                self._channel_error(channel, exc, None)
            return
        if command is None:
            return
        if held is not None:  # a reply of this channel waits for a commit: so does the rest
            held.deferred.append(command)
            return
        self._dispatch(channel, command)

    def _dispatch(self, channel: ChannelSession, command: Command) -> None:
        if channel.state is ChannelState.CLOSING:
            self._handle_closing_channel(channel, command.method)
            return
        try:
            handle_command(self, channel, command)
        except ChannelException as exc:
            self._channel_error(channel, exc, command.method)
        finally:
            self._held.close_open_mark()  # the command failed after write_mark()

    # -- connection class --------------------------------------------------------------------

    def _start(self) -> None:
        self.state = ConnectionState.AWAIT_START_OK
        self.send(0, handshake.start_method(self.settings, self.external_identity))

    def _handle_connection_method(self, method: Any) -> None:
        state = self.state
        if isinstance(method, spec.Connection.StartOk) and state is ConnectionState.AWAIT_START_OK:
            self._start_ok(method)
        elif isinstance(method, spec.Connection.TuneOk) and state is ConnectionState.AWAIT_TUNE_OK:
            self._tune_ok(method)
        elif isinstance(method, spec.Connection.Open) and state is ConnectionState.AWAIT_OPEN:
            self._open(method)
        elif isinstance(method, spec.Connection.Close):
            self.send(0, spec.Connection.CloseOk())
            self.closed_by_client = True
            self._finish("closed by client")
        elif isinstance(method, spec.Connection.CloseOk):
            self._finish("closed")
        elif isinstance(method, (spec.Connection.Blocked, spec.Connection.Unblocked)):
            return
        elif isinstance(method, spec.Connection.UpdateSecret) and state is ConnectionState.OPEN:
            # OAuth token refresh: PLAIN users have no token to check, as RabbitMQ's internal backend
            self.send(0, spec.Connection.UpdateSecretOk())
        elif method_ids(method)[0] != ClassId.CONNECTION:
            class_id, method_id = method_ids(method)
            raise ConnectionException(
                ReplyCode.CHANNEL_ERROR,
                f"expected 'channel.open' on channel 0, got {type(method).__qualname__}",
                class_id,
                method_id,
            )
        else:
            class_id, method_id = method_ids(method)
            raise ConnectionException(
                ReplyCode.COMMAND_INVALID,
                f"unexpected method {type(method).__qualname__} on channel 0 in state {state.value}",
                class_id,
                method_id,
            )

    def _start_ok(self, method: Any) -> None:
        self.client_properties = dict(method.client_properties or {})
        user = handshake.authenticate(
            self.broker, self.peer, method, self.settings.loopback_users, self.external_identity
        )
        if isinstance(user, ConnectionException):
            self._connection_error(user)
            return
        self.user = user
        self.state = ConnectionState.AWAIT_TUNE_OK
        self.send(0, handshake.tune_method(self.settings))

    def _tune_ok(self, method: Any) -> None:
        tuning = handshake.negotiate(self.settings, method)
        self.channel_max = tuning.channel_max
        self.frame_max = tuning.frame_max
        self.reader.frame_max = tuning.frame_max
        self.heartbeat = tuning.heartbeat
        self.state = ConnectionState.AWAIT_OPEN

    def _open(self, method: Any) -> None:
        if self.open_refusal is not None:
            raise self.open_refusal
        vhost = handshake.open_vhost(self.broker, self.peer, self.user, method)
        limits.admit_connection(self.broker, self.user.name if self.user else "", vhost.name)
        self.vhost = vhost  # from here on counted: _release uncounts it
        self.open_vhost = vhost
        self._permission_key = (self.user.name if self.user else "", vhost.name)
        self.state = ConnectionState.OPEN
        self.broker.churn.connection_created += 1
        self.send(0, spec.Connection.OpenOk())
        log.info(
            "connection open from %s user=%s vhost=%s",
            self.peer,
            self.user.name if self.user else "?",
            self.vhost.name,
        )

    def _connection_error(self, exc: ConnectionException) -> None:
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        if (
            exc.reply_code is not ReplyCode.CONNECTION_FORCED
            and self.state is not ConnectionState.AWAIT_START_OK
        ):
            log.warning(
                "closing connection %s user=%s: %d %s",
                self.peer,
                self.user.name if self.user else "?",
                int(exc.reply_code),
                exc.reply_text,
            )
        self.close_reason = exc.reply_text
        self.send(
            0,
            build_method(
                spec.Connection.Close,
                reply_code=int(exc.reply_code),
                reply_text=exc.reply_text[:255],
                class_id=exc.class_id,
                method_id=exc.method_id,
            ),
        )
        self._release()
        self.state = ConnectionState.CLOSING

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        vhost = self.vhost
        for channel in list(self.channels.values()):
            if vhost is not None:
                self.broker.close_channel(vhost, channel.delivery)
        if vhost is not None:
            user = self.user.name if self.user else ""
            limits.release_connection(self.broker, user, vhost.name, len(self.channels))
        self.broker.churn.channel_closed += len(self.channels)
        self.channels.clear()
        self.confirms.clear()
        self._held.clear()
        self.broker.commit_waiters.pop(id(self), None)
        self._held_out = None
        self.broker.close_connection(vhost, self)

    # -- channel class -----------------------------------------------------------------------

    def _handle_channel_open(self, channel_id: int, method: Method) -> None:
        check_channel_open(channel_id, method, self.channel_max, len(self.channels))
        limits.admit_channel(self.broker, self.user.name if self.user else "")
        self.channels[channel_id] = ChannelSession(channel_id, DeliveryChannel(channel_id, self))
        self.broker.churn.channel_created += 1
        self.send(channel_id, spec.Channel.OpenOk())

    def _handle_closing_channel(self, channel: ChannelSession, method: Any) -> None:
        if isinstance(method, spec.Channel.CloseOk):
            self.drop_channel(channel)
        elif isinstance(method, spec.Channel.Close):
            self.send(channel.channel_id, spec.Channel.CloseOk())
            self.drop_channel(channel)

    def drop_channel(self, channel: ChannelSession) -> None:
        if self.channels.pop(channel.channel_id, None) is not None:
            limits.release_channel(self.broker, self.user.name if self.user else "")
            self.broker.churn.channel_closed += 1
        self.confirms.forget(channel.channel_id)
        self._held.forget(channel.channel_id)
        self.assembler.reset(channel.channel_id)
        if self.vhost is not None:
            self.broker.close_channel(self.vhost, channel.delivery)

    def _channel_error(self, channel: ChannelSession, exc: ChannelException, method: Any) -> None:
        class_id, method_id = exc.class_id, exc.method_id
        if not class_id and method is not None:
            class_id, method_id = method_ids(method)
        self.broker.batch.flush()  # what the publishes before the error deliver goes first
        self._flush_confirms()
        self.send(
            channel.channel_id,
            build_method(
                spec.Channel.Close,
                reply_code=int(exc.reply_code),
                reply_text=exc.reply_text[:255],
                class_id=class_id,
                method_id=method_id,
            ),
        )
        channel.state = ChannelState.CLOSING
        self.confirms.forget(channel.channel_id)
        self._held.forget(channel.channel_id)  # the channel is gone: so is its held reply
        if self.vhost is not None:
            self.broker.close_channel(self.vhost, channel.delivery)

    # -- commands on an open channel ---------------------------------------------------------

    @property
    def owner(self) -> object:
        """The identity exclusive queues belong to: this connection."""
        return self

    # -- shared by the command handlers ----------------------------------------------------

    def allow(self, access: str, kind: str, name: str, class_id: int, method_id: int) -> None:
        """403 ACCESS_REFUSED unless the user's permissions on this vhost allow the access."""
        permission = self.broker.permissions.get(self._permission_key)
        if permission is not self._allowed_for:
            self._allowed_for = permission
            self._allowed.clear()
        key = (access, kind, name)
        if key in self._allowed:
            return
        user, vhost = self._permission_key
        check_access(permission, access, kind, name, vhost, user, class_id, method_id)
        if len(self._allowed) >= limits.PERMISSION_CACHE_SIZE:
            self._allowed.clear()  # bounded: a client naming ever new resources costs no memory
        self._allowed.add(key)

    def _release_held(self) -> None:
        """Send the held replies the commits now cover, then run what their channels deferred."""
        for channel_id, held in self._held.take_committed():
            if self.state is not ConnectionState.OPEN:
                return
            channel = self.channels.get(channel_id)
            if held.finish is None:
                self.write(held.reply)
            elif channel is not None:  # the leader's answer: the reply is made now
                try:
                    self.write_parts(held.finish())
                except ChannelException as exc:
                    self._channel_error(channel, exc, None)
            if channel is not None:
                self._run_deferred(channel, held.deferred)

    def _run_deferred(
        self, channel: ChannelSession, deferred: list[Command | ChannelException]
    ) -> None:
        channel_id = channel.channel_id
        for i, item in enumerate(deferred):
            if (
                self.state is not ConnectionState.OPEN
                or self.channels.get(channel_id) is not channel
            ):
                return
            again = self._held.get(channel_id)
            if again is not None:  # a deferred command is itself waiting for a commit
                again.deferred.extend(deferred[i:])
                return
            if isinstance(item, ChannelException):
                if channel.state is ChannelState.OPEN:
                    self._channel_error(channel, item, None)
            else:
                self._dispatch(channel, item)

    def on_commit(self) -> None:
        """The store made more records durable: release the confirms and replies they cover."""
        if self.state is ConnectionState.OPEN:
            self._release_committed()
        if self.state is not ConnectionState.OPEN or not (self.confirms or self._held):
            self.broker.commit_waiters.pop(id(self), None)

    def _release_committed(self) -> None:
        self._flush_confirms()
        if not self._held:
            return
        try:
            self._release_held()
        except ConnectionException as exc:
            self._connection_error(exc)
        except Exception as exc:  # as in receive_data: 541 on this connection only
            log.exception("internal error on connection %s", self.peer)
            self._connection_error(
                ConnectionException(
                    ReplyCode.INTERNAL_ERROR, f"Unexpected error, please report: {exc!r}"
                )
            )
        self._flush_confirms()


__all__ = ["AMQPError", "ConnectionState", "Session", "SessionSettings"]
