"""The publish/ack fast path: commands taken straight from a session's read buffer, in a row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from amqplite.broker.broker import Broker
from amqplite.broker.dispatch_batch import DispatchBatch
from amqplite.protocol.assembler import ContentAssembler
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.frames import HOT_PARTIAL, HOT_PUBLISH, FrameReader
from amqplite.protocol.methods import BasicAck, BasicPublish
from amqplite.session.basic import ack, ack_each, publish
from amqplite.session.channel import ChannelSession, ChannelState
from amqplite.session.durable_replies import DurableReplies
from amqplite.session.state import ConnectionState

if TYPE_CHECKING:
    from amqplite.session.context import SessionContext


class HotPath:
    """The Session's fast path for publishes and acks (the rest goes frame by frame)."""

    broker: Broker
    state: ConnectionState
    reader: FrameReader
    assembler: ContentAssembler
    channels: dict[int, ChannelSession]
    _held: DurableReplies

    def _channel_error(self, channel: ChannelSession, exc: ChannelException, method: Any) -> None:
        raise NotImplementedError  # provided by the Session

    def _receive_hot(self) -> bool:
        """Publishes and acks straight from the read buffer while they come in a row.

        True when the next publish has not fully arrived: reading waits for the rest of it.
        The credit the acks free is delivered on once, when the received bytes are done; the
        queues the publishes reach are dispatched once each before anything else is handled.
        """
        batch = self.broker.batch
        batch.open = True
        try:
            return self._receive_hot_run(batch)
        finally:
            batch.open = False
            if batch.pending:
                batch.flush()

    def _receive_hot_run(self, batch: DispatchBatch) -> bool:
        ctx = cast("SessionContext", self)  # a Session (the handlers' context) is what runs this
        reader = self.reader
        channels = self.channels
        assembler = self.assembler
        held = self._held
        max_body = assembler.max_body_size
        checked = -1  # a channel found open and idle; only hot commands ran on it since
        channel: ChannelSession | None = None
        open_ = ConnectionState.OPEN  # read once (see receive_data)
        channel_open = ChannelState.OPEN
        allowed: str | None = None  # the exchange a publish of this run was allowed to write to
        while self.state is open_:
            hot = reader.peek_hot()
            if hot is None:
                return False
            channel_id = hot[1]
            if channel_id != checked:
                channel = channels.get(channel_id)
                if (
                    channel is None
                    or channel.state is not channel_open
                    or assembler.has_pending(channel_id)
                    or channel_id in held
                ):
                    return False
                checked = channel_id
            assert channel is not None
            kind = hot[0]
            if kind == HOT_PUBLISH:
                _, _, size, exchange, routing_key, bits, properties_bin, body = hot
                if len(body) > max_body or bits & 2:  # immediate: refused on the slow path
                    return False
                reader.skip(size)
                try:
                    publish(
                        ctx,
                        channel,
                        exchange,
                        routing_key,
                        bits & 1 != 0,
                        properties_bin,
                        body,
                        exchange == allowed,
                    )
                    allowed = exchange  # permissions do not change while a read is handled
                except ChannelException as exc:
                    checked = -1
                    allowed = None
                    method = BasicPublish(exchange, routing_key, bool(bits & 1), bool(bits & 2))
                    self._channel_error(channel, exc, method)
            elif kind == HOT_PARTIAL:  # the rest of this publish is on its way: take it whole
                return True
            else:
                if batch.pending:  # the acks may be of what the publishes before them deliver
                    batch.flush()
                _, _, size, delivery_tag, multiple = hot
                try:
                    if multiple:
                        reader.skip(size)
                        ack(ctx, channel, delivery_tag, multiple, deferred=True)
                    else:  # it and the single acks read after it are settled in one pass
                        tags = reader.take_acks(channel_id)
                        if not tags:  # reserved bits set: this one alone
                            reader.skip(size)
                            tags = (delivery_tag,)
                        ack_each(ctx, channel, tags)
                except ChannelException as exc:
                    checked = -1
                    self._channel_error(channel, exc, BasicAck(delivery_tag, multiple))
        return False
