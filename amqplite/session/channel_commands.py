"""channel.* commands: the check before a channel opens, and the commands on an open one."""

from __future__ import annotations

from typing import cast

from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ConnectionException
from amqplite.protocol.methods import Method, build_method, method_ids, spec
from amqplite.session.channel import ChannelSession
from amqplite.session.context import SessionContext


def channel_close(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    ctx.send(channel.channel_id, spec.Channel.CloseOk())
    ctx.drop_channel(channel)


def channel_close_ok(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    return


def channel_flow(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    active = bool(cast(spec.Channel.Flow, command.method).active)
    channel.delivery.active = active
    ctx.send(channel.channel_id, build_method(spec.Channel.FlowOk, active=active))
    if active:
        ctx.broker.resume(channel.delivery)


def channel_open_again(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    raise ConnectionException(
        ReplyCode.CHANNEL_ERROR,
        f"second 'channel.open' seen on channel {channel.channel_id}",
        ClassId.CHANNEL,
        10,
    )


def check_channel_open(channel_id: int, method: Method, channel_max: int, open_count: int) -> None:
    """The first method on a new channel must be channel.open, within channel_max open channels.

    As RabbitMQ, channel_max bounds how many channels are open, not the channel number.
    """
    if not isinstance(method, spec.Channel.Open):
        class_id, method_id = method_ids(method)
        raise ConnectionException(
            ReplyCode.CHANNEL_ERROR,
            f"expected 'channel.open' on channel {channel_id}",
            class_id,
            method_id,
        )
    if channel_max and open_count >= channel_max:
        raise ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"number of channels opened ({open_count}) has reached the negotiated "
            f"channel_max ({channel_max})",
            ClassId.CHANNEL,
            10,
        )
