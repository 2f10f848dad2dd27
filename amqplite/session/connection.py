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
from amqplite.broker.durability import CommitMark, is_durable, merge_marks
from amqplite.broker.message import PagedMessage, QueueEntry
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
    encode_deliver,
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
from amqplite.session import basic, exchange_queue, tx_confirm
from amqplite.session.auth import MECHANISMS, parse_credentials
from amqplite.session.basic import ack, flush_confirms, publish
from amqplite.session.channel import ChannelSession, ChannelState
from amqplite.session.paged import HeldOutput, PagedDelivery
from amqplite.session.replies import _m

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


def _noop() -> None:
    """Default output notification: nothing to wake."""


@attrs.define(eq=False)
class _Held:
    """A channel's reply waiting for the commit of the metadata record it announces."""

    mark: CommitMark
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
        self.defer_paged = False  # the server reads paged bodies off the loop (bodies_to_load)
        self._held_out: HeldOutput | None = None  # output behind a paged delivery being loaded
        self._starved = False
        self._confirming: dict[int, ChannelSession] = {}
        self._held: dict[int, _Held] = {}  # channel id -> reply held until its record is on disk
        self._released = False
        self._open_watch: tuple[object] | None = None  # a _write_mark() token not yet closed
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
        flush_confirms(self)

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
                    publish(
                        self, channel, exchange, routing_key, bool(bits & 1), properties_bin, body
                    )
                except ChannelException as exc:
                    method = BasicPublish(exchange, routing_key, bool(bits & 1), bool(bits & 2))
                    self._channel_error(channel, exc, method)
            else:
                _, _, size, delivery_tag, multiple = hot
                reader.skip(size)
                try:
                    ack(self, channel, delivery_tag, multiple)
                except ChannelException as exc:
                    self._channel_error(channel, exc, BasicAck(delivery_tag, multiple))

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
        self._write(data)

    def on_drained(self) -> None:
        """The server wrote our buffered bytes: resume deliveries paused for room."""
        if self._starved and self.state is ConnectionState.OPEN:
            self._starved = False
            for channel in list(self.channels.values()):
                if channel.state is ChannelState.OPEN:
                    self.broker.resume(channel.delivery)
            flush_confirms(self)

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
        if self._held_out is not None:
            self._held_out.append(data)  # stays in order behind a paged delivery
        else:
            self._out.append(data)
        self._out_size += len(data)
        self.on_output()

    # -- paged bodies (read by the server in a worker thread) ------------------------------

    @property
    def output_held(self) -> bool:
        """True while output waits behind a paged delivery whose body is not loaded."""
        return self._held_out is not None

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
        if self.defer_paged and type(m) is PagedMessage:  # never read a body on the event loop
            if self._held_out is None:
                self._held_out = HeldOutput()
            delivery = PagedDelivery(
                channel_id, consumer_tag, delivery_tag, entry.redelivered, m, self.frame_max
            )
            self._held_out.defer(delivery)
            self._out_size += m.size
            self.on_output()
            return
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
        finally:
            if self._open_watch is not None:  # the command failed after _write_mark()
                self.broker.commits.watched(self._open_watch[0])
                self._open_watch = None

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
        self._held_out = None
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
        flush_confirms(self)
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

    # -- shared by the command handlers ----------------------------------------------------

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

    def _write_mark(self) -> object:
        """Start noting the records a command writes (pass the token to _reply_when_durable)."""
        token = self.broker.commits.watch()
        self._open_watch = (token,)
        return token

    def _reply_when_durable(self, channel: ChannelSession, token: object, reply: Any) -> None:
        """Send a reply once the records this channel wrote are on disk (declare, tx.commit...).

        Until then the reply is held and the channel's later input waits behind it, so the
        channel's replies stay in order; `reply` None (nowait) only notes what was written.
        """
        self._open_watch = None
        mark = self.broker.commits.watched(token)
        if mark is not None:
            channel.durable_mark = merge_marks(channel.durable_mark, mark)
        if reply is None:
            return
        frame = encode_method(channel.channel_id, reply)
        if is_durable(channel.durable_mark):
            channel.durable_mark = None
            self._write(frame)
        else:
            assert channel.durable_mark is not None
            self._held[channel.channel_id] = _Held(channel.durable_mark, frame, [])

    def _release_held(self) -> None:
        """Send the held replies the commits now cover, then run what their channels deferred."""
        for channel_id, held in list(self._held.items()):
            if self.state is not ConnectionState.OPEN:
                return
            if not is_durable(held.mark) or self._held.get(channel_id) is not held:
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

    def on_commit(self) -> None:
        """The store made more records durable: release the confirms and replies they cover."""
        if self.state is not ConnectionState.OPEN:
            return
        flush_confirms(self)
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
        flush_confirms(self)


_Handler = Callable[[Session, ChannelSession, Command], None]

_HANDLERS: dict[type, _Handler] = {
    spec.Channel.Open: Session._channel_open_again,
    spec.Channel.Close: Session._channel_close,
    spec.Channel.CloseOk: Session._channel_close_ok,
    spec.Channel.Flow: Session._channel_flow,
    spec.Exchange.Declare: exchange_queue.exchange_declare,
    spec.Exchange.Delete: exchange_queue.exchange_delete,
    spec.Exchange.Bind: exchange_queue.exchange_bind,
    spec.Exchange.Unbind: exchange_queue.exchange_unbind,
    spec.Queue.Declare: exchange_queue.queue_declare,
    spec.Queue.Bind: exchange_queue.queue_bind,
    spec.Queue.Unbind: exchange_queue.queue_unbind,
    spec.Queue.Purge: exchange_queue.queue_purge,
    spec.Queue.Delete: exchange_queue.queue_delete,
    spec.Basic.Qos: basic.basic_qos,
    spec.Basic.Consume: basic.basic_consume,
    spec.Basic.Cancel: basic.basic_cancel,
    spec.Basic.Get: basic.basic_get,
    BasicPublish: basic.basic_publish,
    BasicAck: basic.basic_ack,
    BasicNack: basic.basic_nack,
    BasicReject: basic.basic_reject,
    spec.Basic.Recover: basic.basic_recover,
    spec.Basic.RecoverAsync: basic.basic_recover,
    spec.Confirm.Select: tx_confirm.confirm_select,
    spec.Tx.Select: tx_confirm.tx_select,
    spec.Tx.Commit: tx_confirm.tx_commit,
    spec.Tx.Rollback: tx_confirm.tx_rollback,
}

__all__ = ["AMQPError", "ConnectionState", "Session", "SessionSettings"]
