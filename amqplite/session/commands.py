"""Which handler runs each command a client may send on an open channel."""

from __future__ import annotations

from collections.abc import Callable

from amqplite.protocol.assembler import Command
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ConnectionException
from amqplite.protocol.methods import (
    BasicAck,
    BasicNack,
    BasicPublish,
    BasicReject,
    method_ids,
    spec,
)
from amqplite.session import basic, channel_commands, exchange_queue, tx_confirm
from amqplite.session.channel import ChannelSession
from amqplite.session.context import SessionContext

Handler = Callable[[SessionContext, ChannelSession, Command], None]

HANDLERS: dict[type, Handler] = {
    spec.Channel.Open: channel_commands.channel_open_again,
    spec.Channel.Close: channel_commands.channel_close,
    spec.Channel.CloseOk: channel_commands.channel_close_ok,
    spec.Channel.Flow: channel_commands.channel_flow,
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


def handle_command(ctx: SessionContext, channel: ChannelSession, command: Command) -> None:
    """Run the handler of `command`; 503 COMMAND_INVALID for a method clients may not send."""
    method = command.method
    handler = HANDLERS.get(type(method))
    if handler is None:
        class_id, method_id = method_ids(method)
        raise ConnectionException(
            ReplyCode.COMMAND_INVALID,
            f"method {type(method).__qualname__} not allowed from a client",
            class_id,
            method_id,
        )
    handler(ctx, channel, command)
