"""The public context a session hands its command handlers (as hypercorn hands its protocols one)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from amqplite.broker.auth import User
    from amqplite.broker.broker import Broker
    from amqplite.broker.entry_reports import RemoteAnswer
    from amqplite.broker.message import Message
    from amqplite.broker.vhost import VHost
    from amqplite.protocol.methods import Method
    from amqplite.protocol.writers import GetOk, Part
    from amqplite.session.channel import ChannelSession
    from amqplite.session.confirms import PublisherConfirms
    from amqplite.session.settings import SessionSettings


class SessionContext(Protocol):
    """What a handler of one AMQP command may use of its connection."""

    publishing: bool  # the connection has published (resource alarms block such connections)

    @property
    def broker(self) -> Broker:
        """The broker the connection talks to."""

    @property
    def user(self) -> User | None:
        """The user the connection logged in as."""

    @property
    def settings(self) -> SessionSettings:
        """The limits the connection enforces (from the broker configuration)."""

    @property
    def open_vhost(self) -> VHost:
        """The virtual host the connection opened (handlers run only on an open connection)."""

    @property
    def owner(self) -> object:
        """The identity exclusive queues and their bindings belong to (the connection)."""

    @property
    def frame_max(self) -> int:
        """The negotiated frame_max, for encoding content frames."""

    @property
    def confirms(self) -> PublisherConfirms:
        """The channels' publisher confirms waiting to be sent."""

    def send(self, channel_id: int, method: Method) -> None:
        """Encode a method frame and queue it for the client."""

    def write(self, data: bytes) -> None:
        """Queue already-encoded frames for the client."""

    def write_parts(self, parts: list[Part]) -> None:
        """Queue frames given as a writer's parts (the body among them, uncopied)."""

    def write_get_ok(self, get_ok: GetOk, message: Message) -> None:
        """Queue a basic.get-ok with its message (a paged body is read off the event loop)."""

    def allow(self, access: str, kind: str, name: str, class_id: int, method_id: int) -> None:
        """Raise 403 ACCESS_REFUSED unless the user may have `access` to the resource."""

    def write_mark(self) -> object:
        """Start noting the records a command writes (the token for reply_when_durable)."""

    def reply_when_durable(
        self, channel: ChannelSession, mark: object, reply: Method | None, then: bytes = b""
    ) -> None:
        """Send `reply`, then the frames `then`, once the records since `mark` are on disk."""

    def reply_when_answered(
        self,
        channel: ChannelSession,
        mark: object | None,
        answer: RemoteAnswer,
        finish: Callable[[], list[Part]],
    ) -> None:
        """Send finish()'s frames once the leader answered and the records since `mark` are on disk."""

    def drop_channel(self, channel: ChannelSession) -> None:
        """Forget a closed channel and release what it held in the broker."""
