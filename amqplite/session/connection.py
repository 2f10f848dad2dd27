"""Session: one client connection's AMQP 0-9-1 semantics, bytes in and bytes out, no I/O."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any, cast

import attrs

from amqplite import __version__
from amqplite.broker.auth import check_access, vhost_refused
from amqplite.broker.broker import Broker, User
from amqplite.broker.consumer import DeliveryChannel
from amqplite.broker.message import Message, QueueEntry
from amqplite.broker.plugin_api import Destination
from amqplite.broker.publishing import make_message
from amqplite.broker.vhost import VHost
from amqplite.protocol.assembler import Command, ContentAssembler
from amqplite.protocol.constants import (
    FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
    ClassId,
    ReplyCode,
)
from amqplite.protocol.errors import AMQPError, ChannelException, ConnectionException
from amqplite.protocol.frames import (
    HOT_PUBLISH,
    NEED_DATA,
    BadProtocolHeader,
    FrameReader,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    encode_ack,
    encode_deliver,
    encode_get_ok,
    encode_nack,
    encode_return,
)
from amqplite.protocol.methods import (
    BasicAck,
    BasicNack,
    BasicPublish,
    BasicReject,
    encode_method,
    method_ids,
    spec,
)
from amqplite.session.auth import MECHANISMS, parse_credentials
from amqplite.session.channel import ChannelSession, ChannelState, ConfirmMode

log = logging.getLogger("amqplite.session")


class ConnectionState(enum.Enum):
    """Lifecycle of a client connection."""

    AWAIT_HEADER = "await_header"
    AWAIT_START_OK = "await_start_ok"
    AWAIT_TUNE_OK = "await_tune_ok"
    AWAIT_OPEN = "await_open"
    OPEN = "open"
    CLOSING = "closing"  # we sent connection.close, waiting for close-ok
    CLOSED = "closed"


@attrs.frozen
class SessionSettings:
    """Limits and identity a session offers to clients (from the broker configuration)."""

    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * 1024 * 1024
    max_outbound_bytes: int = 1024 * 1024
    product: str = "amqplite"


CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}


def _m(cls: Any, **fields: Any) -> Any:
    """Build a pamqp method without its name validation (RabbitMQ allows any UTF-8 name)."""
    method = cls()
    for name, value in fields.items():
        setattr(method, name, value)
    return method


def _noop() -> None:
    """Default output notification: nothing to wake."""


@attrs.define(eq=False)
class _Held:
    """A channel's reply waiting for the commit of the metadata record it announces."""

    ticket: int
    reply: bytes
    deferred: list[Command | ChannelException]  # the channel's later input, run after the reply


class Session:
    """AMQP 0-9-1 for one client connection: feed bytes in, take bytes out (h11 style)."""

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
        self.assembler = ContentAssembler(self.settings.max_message_size)
        self.frame_max = self.settings.frame_max
        self.channel_max = self.settings.channel_max
        self.heartbeat = 0
        self.user: User | None = None
        self.vhost: VHost | None = None
        self.client_properties: dict[str, Any] = {}
        self.channels: dict[int, ChannelSession] = {}
        self.close_reason: str = ""
        self._out: list[bytes] = []
        self._out_size = 0
        self._starved = False
        self._confirming: dict[int, ChannelSession] = {}
        self._held: dict[int, _Held] = {}  # channel id -> reply held until its record is on disk
        self._released = False
        self._allowed: set[tuple[str, str, str]] = set()  # permission checks passed
        self._allowed_for: object = None  # the Permission those checks were made against

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
        try:
            while self.state is not ConnectionState.CLOSED:
                if self.state is ConnectionState.OPEN:
                    self._receive_hot()
                frame = reader.next_frame()
                if frame is NEED_DATA:
                    break
                self._handle_frame(frame)
        except BadProtocolHeader:
            self._write(PROTOCOL_HEADER)
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
        self._flush_confirms()

    def _receive_hot(self) -> None:
        """Publishes and acks straight from the read buffer while they come in a row."""
        reader = self.reader
        channels = self.channels
        assembler = self.assembler
        held = self._held
        max_body = assembler.max_body_size
        while self.state is ConnectionState.OPEN:
            hot = reader.peek_hot()
            if hot is None:
                return
            channel_id = hot[1]
            channel = channels.get(channel_id)
            if (
                channel is None
                or channel.state is not ChannelState.OPEN
                or assembler.has_pending(channel_id)
                or channel_id in held
            ):
                return
            if hot[0] == HOT_PUBLISH:
                _, _, size, exchange, routing_key, bits, properties_bin, body = hot
                if len(body) > max_body:
                    return
                reader.skip(size)
                try:
                    self._publish(
                        channel, exchange, routing_key, bool(bits & 1), properties_bin, body
                    )
                except ChannelException as exc:
                    method = BasicPublish(exchange, routing_key, bool(bits & 1), bool(bits & 2))
                    self._channel_error(channel, exc, method)
            else:
                _, _, size, delivery_tag, multiple = hot
                reader.skip(size)
                try:
                    self._ack(channel, delivery_tag, multiple)
                except ChannelException as exc:
                    self._channel_error(channel, exc, BasicAck(delivery_tag, multiple))

    def data_to_send(self) -> bytes:
        """Take every byte queued for the client."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        self._out_size = 0
        return data

    def data_to_send_pending(self) -> bool:
        """True if bytes are waiting for the client."""
        return bool(self._out)

    def send_raw(self, data: bytes) -> None:
        """Queue already-encoded bytes (heartbeat frames from the server's timer)."""
        self._write(data)

    def on_drained(self) -> None:
        """The server wrote our buffered bytes: resume deliveries paused for room."""
        if self._starved and self.state is ConnectionState.OPEN:
            self._starved = False
            for channel in list(self.channels.values()):
                if channel.state is ChannelState.OPEN:
                    self.broker.resume(channel.delivery)
            self._flush_confirms()

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

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        self.on_output()

    def _send(self, channel: int, method: Any) -> None:
        self._write(encode_method(channel, method))

    def _finish(self, reason: str) -> None:
        self.close_reason = self.close_reason or reason
        self._release()
        self.state = ConnectionState.CLOSED

    # -- DeliverySink ------------------------------------------------------------------------

    def deliver(
        self, channel_id: int, consumer_tag: str, delivery_tag: int, entry: QueueEntry
    ) -> None:
        """Send basic.deliver for a queue entry."""
        m = entry.message
        self._write(
            encode_deliver(
                channel_id,
                consumer_tag,
                delivery_tag,
                entry.redelivered,
                m.exchange,
                m.routing_key,
                m.properties_bin,
                m.body,
                self.frame_max,
            )
        )

    def cancel_consumer(self, channel_id: int, consumer_tag: str) -> None:
        """Server-initiated basic.cancel (consumer_cancel_notify)."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.state is ChannelState.OPEN:
            self._send(channel_id, _m(spec.Basic.Cancel, consumer_tag=consumer_tag, nowait=True))

    def close_channel(self, channel_id: int, reply_code: ReplyCode, reply_text: str) -> None:
        """Close a channel from the server side (a consumer acknowledgement timeout)."""
        channel = self.channels.get(channel_id)
        if channel is not None and channel.state is ChannelState.OPEN:
            self._channel_error(channel, ChannelException(reply_code, reply_text), None)

    def has_capacity(self) -> bool:
        """False while the outbound buffer is over its bound (deliveries pause)."""
        if self._out_size < self.settings.max_outbound_bytes:
            return True
        self._starved = True
        return False

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
                    self._send(0, spec.Connection.CloseOk())
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
            self._handle_command(channel, command)
        except ChannelException as exc:
            self._channel_error(channel, exc, command.method)

    # -- connection class --------------------------------------------------------------------

    def _start(self) -> None:
        self.state = ConnectionState.AWAIT_START_OK
        self._send(
            0,
            _m(
                spec.Connection.Start,
                version_major=0,
                version_minor=9,
                server_properties={
                    "product": self.settings.product,
                    "version": __version__,
                    "platform": "Python/trio",
                    "copyright": "amqplite developers",
                    "information": "https://pypi.org/project/amqplite/",
                    "capabilities": dict(CAPABILITIES),
                    "cluster_name": "amqplite",
                },
                mechanisms=" ".join(MECHANISMS),
                locales="en_US",
            ),
        )

    def _handle_connection_method(self, method: Any) -> None:
        state = self.state
        if isinstance(method, spec.Connection.StartOk) and state is ConnectionState.AWAIT_START_OK:
            self._start_ok(method)
        elif isinstance(method, spec.Connection.TuneOk) and state is ConnectionState.AWAIT_TUNE_OK:
            self._tune_ok(method)
        elif isinstance(method, spec.Connection.Open) and state is ConnectionState.AWAIT_OPEN:
            self._open(method)
        elif isinstance(method, spec.Connection.Close):
            self._send(0, spec.Connection.CloseOk())
            self._finish("closed by client")
        elif isinstance(method, spec.Connection.CloseOk):
            self._finish("closed")
        elif isinstance(method, (spec.Connection.Blocked, spec.Connection.Unblocked)):
            return
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
        mechanism = method.mechanism or ""
        if mechanism not in MECHANISMS:
            raise ConnectionException(
                ReplyCode.COMMAND_INVALID,
                f"unknown authentication mechanism '{mechanism}'; offered {' '.join(MECHANISMS)}",
                ClassId.CONNECTION,
                11,
            )
        credentials = parse_credentials(mechanism, method.response or "")
        user = self.broker.authenticate(*credentials) if credentials else None
        if user is None:
            self._refuse_login(mechanism, f"user '{credentials[0] if credentials else '?'}'")
            return
        self.user = user
        self.state = ConnectionState.AWAIT_TUNE_OK
        self._send(
            0,
            _m(
                spec.Connection.Tune,
                channel_max=self.settings.channel_max,
                frame_max=self.settings.frame_max,
                heartbeat=self.settings.heartbeat,
            ),
        )

    def _refuse_login(self, mechanism: str, detail: str) -> None:
        log.warning("login refused from %s: %s (%s)", self.peer, detail, mechanism)
        self._connection_error(
            ConnectionException(
                ReplyCode.ACCESS_REFUSED,
                f"Login was refused using authentication mechanism {mechanism}. "
                "For details see the broker logfile.",
            )
        )

    def _tune_ok(self, method: Any) -> None:
        frame_max = method.frame_max or self.settings.frame_max
        if frame_max < FRAME_MIN_SIZE:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"frame_max={frame_max} < {FRAME_MIN_SIZE} min size",
                ClassId.CONNECTION,
                31,
            )
        if frame_max > self.settings.frame_max:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"frame_max={frame_max} > {self.settings.frame_max} max size",
                ClassId.CONNECTION,
                31,
            )
        channel_max = method.channel_max or self.settings.channel_max
        self.channel_max = min(channel_max, self.settings.channel_max) or self.settings.channel_max
        self.frame_max = frame_max
        self.reader.frame_max = frame_max
        self.heartbeat = method.heartbeat or 0
        self.state = ConnectionState.AWAIT_OPEN

    def _open(self, method: Any) -> None:
        vhost = self.broker.vhost(method.virtual_host or "/")
        user = self.user.name if self.user else ""
        if self.broker.permissions_of(user, vhost.name) is None:
            log.warning(
                "vhost access refused from %s: user=%s vhost=%s", self.peer, user, vhost.name
            )
            raise vhost_refused(vhost.name, user)
        self.vhost = vhost
        self.state = ConnectionState.OPEN
        self._send(0, spec.Connection.OpenOk())
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
        self._send(
            0,
            _m(
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
        self.channels.clear()
        self._confirming.clear()
        self._held.clear()
        self.broker.close_connection(vhost, self)

    # -- channel class -----------------------------------------------------------------------

    def _handle_channel_open(self, channel_id: int, method: Any) -> None:
        if not isinstance(method, spec.Channel.Open):
            class_id, method_id = method_ids(method)
            raise ConnectionException(
                ReplyCode.CHANNEL_ERROR,
                f"expected 'channel.open' on channel {channel_id}",
                class_id,
                method_id,
            )
        if channel_id > self.channel_max:
            raise ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"channel {channel_id} exceeds channel_max {self.channel_max}",
                ClassId.CHANNEL,
                10,
            )
        self.channels[channel_id] = ChannelSession(channel_id, DeliveryChannel(channel_id, self))
        self._send(channel_id, spec.Channel.OpenOk())

    def _handle_closing_channel(self, channel: ChannelSession, method: Any) -> None:
        if isinstance(method, spec.Channel.CloseOk):
            self._drop_channel(channel)
        elif isinstance(method, spec.Channel.Close):
            self._send(channel.channel_id, spec.Channel.CloseOk())
            self._drop_channel(channel)

    def _drop_channel(self, channel: ChannelSession) -> None:
        self.channels.pop(channel.channel_id, None)
        self._confirming.pop(channel.channel_id, None)
        self._held.pop(channel.channel_id, None)
        self.assembler.reset(channel.channel_id)
        if self.vhost is not None:
            self.broker.close_channel(self.vhost, channel.delivery)

    def _channel_error(self, channel: ChannelSession, exc: ChannelException, method: Any) -> None:
        class_id, method_id = exc.class_id, exc.method_id
        if not class_id and method is not None:
            class_id, method_id = method_ids(method)
        self._flush_confirms()
        self._send(
            channel.channel_id,
            _m(
                spec.Channel.Close,
                reply_code=int(exc.reply_code),
                reply_text=exc.reply_text[:255],
                class_id=class_id,
                method_id=method_id,
            ),
        )
        channel.state = ChannelState.CLOSING
        self._confirming.pop(channel.channel_id, None)
        self._held.pop(channel.channel_id, None)  # the channel is gone: so is its held reply
        if self.vhost is not None:
            self.broker.close_channel(self.vhost, channel.delivery)

    # -- commands on an open channel ---------------------------------------------------------

    def _handle_command(self, channel: ChannelSession, command: Command) -> None:
        method = command.method
        handler = _HANDLERS.get(type(method))
        if handler is None:
            class_id, method_id = method_ids(method)
            raise ConnectionException(
                ReplyCode.COMMAND_INVALID,
                f"method {type(method).__qualname__} not allowed from a client",
                class_id,
                method_id,
            )
        handler(self, channel, command)

    def _queue_name(self, channel: ChannelSession, name: str) -> str:
        """An empty queue name means the channel's last declared queue (spec rule)."""
        if name:
            return name
        if not channel.last_queue:
            raise ChannelException(ReplyCode.NOT_FOUND, "no previously declared queue")
        return channel.last_queue

    @property
    def _vh(self) -> VHost:
        assert self.vhost is not None
        return self.vhost

    def _channel_close(self, channel: ChannelSession, command: Command) -> None:
        self._send(channel.channel_id, spec.Channel.CloseOk())
        self._drop_channel(channel)

    def _channel_close_ok(self, channel: ChannelSession, command: Command) -> None:
        return

    def _channel_flow(self, channel: ChannelSession, command: Command) -> None:
        active = bool(cast(spec.Channel.Flow, command.method).active)
        channel.delivery.active = active
        self._send(channel.channel_id, _m(spec.Channel.FlowOk, active=active))
        if active:
            self.broker.resume(channel.delivery)

    def _channel_open_again(self, channel: ChannelSession, command: Command) -> None:
        raise ConnectionException(
            ReplyCode.CHANNEL_ERROR,
            f"second 'channel.open' seen on channel {channel.channel_id}",
            ClassId.CHANNEL,
            10,
        )

    # exchange

    def _allow(self, access: str, kind: str, name: str, class_id: int, method_id: int) -> None:
        """403 ACCESS_REFUSED unless the user's permissions on this vhost allow the access."""
        user = self.user.name if self.user else ""
        permission = self.broker.permissions_of(user, self._vh.name)
        if permission is not self._allowed_for:
            self._allowed_for = permission
            self._allowed.clear()
        key = (access, kind, name)
        if key in self._allowed:
            return
        check_access(permission, access, kind, name, self._vh.name, user, class_id, method_id)
        self._allowed.add(key)

    def _write_mark(self) -> int:
        """The write ticket before a metadata change (-1 when no store records metadata)."""
        if self._vh.metadata is None:
            return -1
        return self.broker.commits.write_ticket()

    def _reply_when_durable(self, channel: ChannelSession, mark: int, reply: Any) -> None:
        """Send a declare/bind/delete reply once the records this channel wrote are on disk.

        Until then the reply is held and the channel's later input waits behind it, so the
        channel's replies stay in order; `reply` None (nowait) only notes what was written.
        """
        if mark >= 0:
            written = self.broker.commits.write_ticket()
            if written != mark:
                channel.metadata_ticket = written
        if reply is None:
            return
        frame = encode_method(channel.channel_id, reply)
        ticket = channel.metadata_ticket
        if ticket and ticket > self.broker.commits.committed_ticket():
            self._held[channel.channel_id] = _Held(ticket, frame, [])
        else:
            self._write(frame)

    def _release_held(self) -> None:
        """Send the held replies the commits now cover, then run what their channels deferred."""
        committed = self.broker.commits.committed_ticket()
        for channel_id, held in list(self._held.items()):
            if self.state is not ConnectionState.OPEN:
                return
            if held.ticket > committed or self._held.get(channel_id) is not held:
                continue
            del self._held[channel_id]
            self._write(held.reply)
            channel = self.channels.get(channel_id)
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

    def _exchange_declare(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Exchange.Declare, command.method)
        if not m.passive:
            self._allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 10)
            alternate = (m.arguments or {}).get("alternate-exchange")
            if isinstance(alternate, str):
                self._allow("write", "exchange", alternate, ClassId.EXCHANGE, 10)
                self._allow("read", "exchange", m.exchange, ClassId.EXCHANGE, 10)
        mark = self._write_mark()
        self._vh.declare_exchange(
            m.exchange,
            m.exchange_type,
            passive=m.passive,
            durable=m.durable,
            auto_delete=m.auto_delete,
            internal=m.internal,
            arguments=dict(m.arguments or {}),
        )
        self._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeclareOk())

    def _exchange_delete(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Exchange.Delete, command.method)
        self._allow("configure", "exchange", m.exchange, ClassId.EXCHANGE, 20)
        mark = self._write_mark()
        self._vh.delete_exchange(m.exchange, if_unused=m.if_unused)
        self._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.DeleteOk())

    def _exchange_bind(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Exchange.Bind, command.method)
        self._allow("write", "exchange", m.destination, ClassId.EXCHANGE, 30)
        self._allow("read", "exchange", m.source, ClassId.EXCHANGE, 30)
        mark = self._write_mark()
        self._vh.bind(
            m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
        )
        self._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.BindOk())

    def _exchange_unbind(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Exchange.Unbind, command.method)
        self._allow("write", "exchange", m.destination, ClassId.EXCHANGE, 40)
        self._allow("read", "exchange", m.source, ClassId.EXCHANGE, 40)
        mark = self._write_mark()
        self._vh.unbind(
            m.source, Destination("exchange", m.destination), m.routing_key, dict(m.arguments or {})
        )
        self._reply_when_durable(channel, mark, None if m.nowait else spec.Exchange.UnbindOk())

    # queue

    def _queue_declare(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Queue.Declare, command.method)
        name = m.queue if m.queue or not m.passive else self._queue_name(channel, m.queue)
        if not m.passive:
            self._allow("configure", "queue", name or "amq.gen", ClassId.QUEUE, 10)
            dlx = (m.arguments or {}).get("x-dead-letter-exchange")
            if isinstance(dlx, str):
                self._allow("write", "exchange", dlx, ClassId.QUEUE, 10)
                self._allow("read", "queue", name or "amq.gen", ClassId.QUEUE, 10)
        mark = self._write_mark()
        queue = self._vh.declare_queue(
            name,
            passive=m.passive,
            durable=m.durable,
            exclusive=m.exclusive,
            auto_delete=m.auto_delete,
            arguments=dict(m.arguments or {}),
            owner=self,
        )
        channel.last_queue = queue.name
        reply = None
        if not m.nowait:
            reply = _m(
                spec.Queue.DeclareOk,
                queue=queue.name,
                message_count=queue.message_count,
                consumer_count=len(queue.consumers),
            )
        self._reply_when_durable(channel, mark, reply)

    def _queue_bind(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Queue.Bind, command.method)
        queue = self._queue_name(channel, m.queue)
        routing_key = m.routing_key if (m.queue or m.routing_key) else queue
        self._allow("write", "queue", queue, ClassId.QUEUE, 20)
        self._allow("read", "exchange", m.exchange, ClassId.QUEUE, 20)
        mark = self._write_mark()
        self._vh.bind(
            m.exchange,
            Destination("queue", queue),
            routing_key,
            dict(m.arguments or {}),
            owner=self,
        )
        self._reply_when_durable(channel, mark, None if m.nowait else spec.Queue.BindOk())

    def _queue_unbind(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Queue.Unbind, command.method)
        queue = self._queue_name(channel, m.queue)
        self._allow("write", "queue", queue, ClassId.QUEUE, 50)
        self._allow("read", "exchange", m.exchange, ClassId.QUEUE, 50)
        mark = self._write_mark()
        self._vh.unbind(
            m.exchange,
            Destination("queue", queue),
            m.routing_key,
            dict(m.arguments or {}),
            owner=self,
        )
        self._reply_when_durable(channel, mark, spec.Queue.UnbindOk())

    def _queue_purge(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Queue.Purge, command.method)
        self._allow("read", "queue", self._queue_name(channel, m.queue), ClassId.QUEUE, 30)
        count = self._vh.queue(self._queue_name(channel, m.queue), self).purge()
        if not m.nowait:
            self._send(channel.channel_id, _m(spec.Queue.PurgeOk, message_count=count))

    def _queue_delete(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Queue.Delete, command.method)
        self._allow("configure", "queue", self._queue_name(channel, m.queue), ClassId.QUEUE, 40)
        mark = self._write_mark()
        count = self._vh.delete_queue(
            self._queue_name(channel, m.queue),
            if_unused=m.if_unused,
            if_empty=m.if_empty,
            owner=self,
        )
        reply = None if m.nowait else _m(spec.Queue.DeleteOk, message_count=count)
        self._reply_when_durable(channel, mark, reply)

    # basic

    def _basic_qos(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Basic.Qos, command.method)
        if m.global_:
            channel.delivery.global_prefetch = m.prefetch_count
        else:
            channel.delivery.prefetch_count = m.prefetch_count
        self._send(channel.channel_id, spec.Basic.QosOk())
        self.broker.resume(channel.delivery)

    def _basic_consume(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Basic.Consume, command.method)
        self._allow("read", "queue", self._queue_name(channel, m.queue), ClassId.BASIC, 20)
        consumer = self.broker.consume(
            self._vh,
            channel.delivery,
            self._queue_name(channel, m.queue),
            m.consumer_tag or "",
            no_ack=m.no_ack,
            exclusive=m.exclusive,
            arguments=dict(m.arguments or {}),
            owner=self,
        )
        if not m.nowait:
            self._send(channel.channel_id, _m(spec.Basic.ConsumeOk, consumer_tag=consumer.tag))
        consumer.queue.dispatch()

    def _basic_cancel(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Basic.Cancel, command.method)
        self.broker.cancel(self._vh, channel.delivery, m.consumer_tag or "")
        if not m.nowait:
            self._send(channel.channel_id, _m(spec.Basic.CancelOk, consumer_tag=m.consumer_tag))

    def _basic_get(self, channel: ChannelSession, command: Command) -> None:
        m = cast(spec.Basic.Get, command.method)
        self._allow("read", "queue", self._queue_name(channel, m.queue), ClassId.BASIC, 70)
        queue = self._vh.queue(self._queue_name(channel, m.queue), self)
        got = channel.delivery.get(queue, m.no_ack)
        if got is None:
            self._send(channel.channel_id, spec.Basic.GetEmpty())
            return
        tag, entry, redelivered = got
        msg = entry.message
        self._write(
            encode_get_ok(
                channel.channel_id,
                tag,
                redelivered,
                msg.exchange,
                msg.routing_key,
                queue.message_count,
                msg.properties_bin,
                msg.body,
                self.frame_max,
            )
        )

    def _basic_publish(self, channel: ChannelSession, command: Command) -> None:
        m = cast(BasicPublish, command.method)
        self._publish(
            channel,
            m.exchange,
            m.routing_key,
            m.mandatory,
            command.properties_bin or b"\x00\x00",
            command.body or b"",
        )

    def _publish(
        self,
        channel: ChannelSession,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        properties_bin: bytes,
        body: bytes,
    ) -> None:
        vhost = self._vh
        self._allow("write", "exchange", exchange, ClassId.BASIC, 40)
        vhost.exchange(exchange)  # 404 before anything else
        message = make_message(exchange, routing_key, properties_bin, body)
        if channel.mode is ConfirmMode.TX:
            channel.tx_ops.append(("publish", exchange, mandatory, message))
            return
        self._route(channel, exchange, mandatory, message)

    def _route(
        self, channel: ChannelSession, exchange: str, mandatory: bool, message: Message
    ) -> None:
        routed = self.broker.route(self._vh, exchange, message)
        queues = routed.queues
        if not queues and mandatory:
            self._write(
                encode_return(
                    channel.channel_id,
                    int(ReplyCode.NO_ROUTE),
                    "NO_ROUTE",
                    exchange,
                    message.routing_key,
                    message.properties_bin,
                    message.body,
                    self.frame_max,
                )
            )
        if channel.mode is ConfirmMode.CONFIRM:
            ticket = 0
            if message.persistent and any(q.durable for q in routed.accepted):
                ticket = self.broker.commits.write_ticket()
            # reject-publish: a queue refused it, so the publisher gets basic.nack (as RabbitMQ)
            ok = not routed.rejected
            channel.pending_confirms.append((channel.next_publish_seq(), ok, ticket))
            self._confirming[channel.channel_id] = channel

    def _flush_confirms(self) -> None:
        """Send the confirms whose records are on disk, in order; runs of acks as one ack(multiple)."""
        if not self._confirming:
            return
        committed = self.broker.commits.committed_ticket()
        done: list[int] = []
        for channel_id, channel in self._confirming.items():
            pending = channel.pending_confirms
            ready = 0
            while ready < len(pending) and pending[ready][2] <= committed:
                ready += 1
            i = 0
            while i < ready:
                seq, ok, _ = pending[i]
                if not ok:
                    self._write(encode_nack(channel_id, seq, False, False))
                    i += 1
                    continue
                j = i
                while j + 1 < ready and pending[j + 1][1]:
                    j += 1
                self._write(encode_ack(channel_id, pending[j][0], j > i))
                i = j + 1
            del pending[:ready]
            if not pending:
                done.append(channel_id)
        for channel_id in done:
            del self._confirming[channel_id]

    def on_commit(self) -> None:
        """The store made more records durable: release the confirms and replies they cover."""
        if self.state is not ConnectionState.OPEN:
            return
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

    def _basic_ack(self, channel: ChannelSession, command: Command) -> None:
        m = cast(BasicAck, command.method)
        self._ack(channel, m.delivery_tag, m.multiple)

    def _ack(self, channel: ChannelSession, delivery_tag: int, multiple: bool) -> None:
        if channel.mode is ConfirmMode.TX:
            channel.tx_ops.append(("ack", delivery_tag, multiple))
            return
        self.broker.ack(channel.delivery, delivery_tag, multiple)

    def _basic_nack(self, channel: ChannelSession, command: Command) -> None:
        m = cast(BasicNack, command.method)
        if channel.mode is ConfirmMode.TX:
            channel.tx_ops.append(("reject", m.delivery_tag, m.multiple, m.requeue))
            return
        self.broker.reject(channel.delivery, m.delivery_tag, m.multiple, m.requeue)

    def _basic_reject(self, channel: ChannelSession, command: Command) -> None:
        m = cast(BasicReject, command.method)
        if channel.mode is ConfirmMode.TX:
            channel.tx_ops.append(("reject", m.delivery_tag, False, m.requeue))
            return
        self.broker.reject(channel.delivery, m.delivery_tag, False, m.requeue)

    def _basic_recover(self, channel: ChannelSession, command: Command) -> None:
        self.broker.recover(channel.delivery)
        if isinstance(command.method, spec.Basic.Recover):
            self._send(channel.channel_id, spec.Basic.RecoverOk())

    # confirm / tx

    def _confirm_select(self, channel: ChannelSession, command: Command) -> None:
        if channel.mode is ConfirmMode.TX:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED, "cannot switch from tx to confirm mode"
            )
        channel.mode = ConfirmMode.CONFIRM
        if not cast(spec.Confirm.Select, command.method).nowait:
            self._send(channel.channel_id, spec.Confirm.SelectOk())

    def _tx_select(self, channel: ChannelSession, command: Command) -> None:
        if channel.mode is ConfirmMode.CONFIRM:
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED, "cannot switch from confirm to tx mode"
            )
        channel.mode = ConfirmMode.TX
        self._send(channel.channel_id, spec.Tx.SelectOk())

    def _tx_commit(self, channel: ChannelSession, command: Command) -> None:
        if channel.mode is not ConfirmMode.TX:
            raise ChannelException(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
        ops, channel.tx_ops = channel.tx_ops, []
        for op in ops:
            if op[0] == "publish":
                _, exchange, mandatory, message = op
                self._route(channel, exchange, mandatory, message)
            elif op[0] == "ack":
                self.broker.ack(channel.delivery, op[1], op[2])
            else:
                self.broker.reject(channel.delivery, op[1], op[2], op[3])
        self._send(channel.channel_id, spec.Tx.CommitOk())

    def _tx_rollback(self, channel: ChannelSession, command: Command) -> None:
        if channel.mode is not ConfirmMode.TX:
            raise ChannelException(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
        channel.tx_ops.clear()
        self._send(channel.channel_id, spec.Tx.RollbackOk())


_Handler = Callable[[Session, ChannelSession, Command], None]

_HANDLERS: dict[type, _Handler] = {
    spec.Channel.Open: Session._channel_open_again,
    spec.Channel.Close: Session._channel_close,
    spec.Channel.CloseOk: Session._channel_close_ok,
    spec.Channel.Flow: Session._channel_flow,
    spec.Exchange.Declare: Session._exchange_declare,
    spec.Exchange.Delete: Session._exchange_delete,
    spec.Exchange.Bind: Session._exchange_bind,
    spec.Exchange.Unbind: Session._exchange_unbind,
    spec.Queue.Declare: Session._queue_declare,
    spec.Queue.Bind: Session._queue_bind,
    spec.Queue.Unbind: Session._queue_unbind,
    spec.Queue.Purge: Session._queue_purge,
    spec.Queue.Delete: Session._queue_delete,
    spec.Basic.Qos: Session._basic_qos,
    spec.Basic.Consume: Session._basic_consume,
    spec.Basic.Cancel: Session._basic_cancel,
    spec.Basic.Get: Session._basic_get,
    BasicPublish: Session._basic_publish,
    BasicAck: Session._basic_ack,
    BasicNack: Session._basic_nack,
    BasicReject: Session._basic_reject,
    spec.Basic.Recover: Session._basic_recover,
    spec.Basic.RecoverAsync: Session._basic_recover,
    spec.Confirm.Select: Session._confirm_select,
    spec.Tx.Select: Session._tx_select,
    spec.Tx.Commit: Session._tx_commit,
    spec.Tx.Rollback: Session._tx_rollback,
}

__all__ = ["AMQPError", "ConnectionState", "Session", "SessionSettings"]
