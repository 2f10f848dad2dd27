"""confirm.select and tx.* commands on an open channel."""

from __future__ import annotations

from typing import cast

from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException
from amqplite.protocol.methods import spec
from amqplite.session.basic import route
from amqplite.session.channel import ChannelSession, ConfirmMode
from amqplite.session.context import SessionContext


def confirm_select(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    if channel.mode is ConfirmMode.TX:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED, "cannot switch from tx to confirm mode"
        )
    channel.mode = ConfirmMode.CONFIRM
    if not cast(spec.Confirm.Select, command.method).nowait:
        ctx.send(channel.channel_id, spec.Confirm.SelectOk())


def tx_select(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    if channel.mode is ConfirmMode.CONFIRM:
        raise ChannelException(
            ReplyCode.PRECONDITION_FAILED, "cannot switch from confirm to tx mode"
        )
    channel.mode = ConfirmMode.TX
    ctx.send(channel.channel_id, spec.Tx.SelectOk())


def tx_commit(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    if channel.mode is not ConfirmMode.TX:
        raise ChannelException(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
    ops, channel.tx_ops = channel.tx_ops, []
    channel.tx_bytes = 0
    mark = ctx.write_mark()
    for op in ops:
        if op[0] == "publish":
            _, exchange, mandatory, message = op
            route(ctx, channel, exchange, mandatory, message)
        elif op[0] == "ack":
            ctx.broker.ack(channel.delivery, op[1], op[2])
        else:
            ctx.broker.reject(channel.delivery, op[1], op[2], op[3])
    # commit-ok says the transaction's publishes and acks are durable: it waits for their records
    ctx.reply_when_durable(channel, mark, spec.Tx.CommitOk())


def tx_rollback(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    if channel.mode is not ConfirmMode.TX:
        raise ChannelException(ReplyCode.PRECONDITION_FAILED, "channel is not transactional")
    channel.tx_ops.clear()
    channel.tx_bytes = 0
    ctx.send(channel.channel_id, spec.Tx.RollbackOk())
