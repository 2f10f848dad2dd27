"""AMQP errors typed by scope: a ChannelException closes the channel, a ConnectionException the connection."""

from __future__ import annotations

from amqplite.protocol.constants import ReplyCode


class AMQPError(Exception):
    """An error that has an AMQP reply code and a reply text for the peer."""

    def __init__(
        self, reply_code: ReplyCode, reply_text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        super().__init__(f"{reply_code.name} - {reply_text}")
        self.reply_code = reply_code
        self.reply_text = f"{reply_code.name} - {reply_text}"
        self.class_id = class_id
        self.method_id = method_id


class ChannelException(AMQPError):
    """A soft error (403, 404, 405, 406, ...): the channel is closed, the connection stays."""


class ConnectionException(AMQPError):
    """A hard error (320, 501-506, 530, 540, 541): the whole connection is closed."""
