"""Content assembly: method, content header and body frames in, whole commands out.

A method that carries content (basic.publish; also basic.deliver, basic.get-ok and
basic.return, which RabbitMQ treats the same way) waits for its content header and body
frames; every other method comes out at once. Each channel has its own state, so content on
one channel may interleave with frames on another, as RabbitMQ allows.

Errors (the texts and codes are RabbitMQ 3.10.8's, checked over a raw socket):

- a content header or body frame with no content pending on its channel, a method frame
  while content is pending, a header for the wrong class, a body frame where a header was
  expected: ConnectionException 505 UNEXPECTED_FRAME;
- body frames adding up to more than the announced body size: 501 FRAME_ERROR (RabbitMQ
  keeps waiting forever on such a channel);
- an announced body size over ``max_body_size``: ChannelException 406 PRECONDITION_FAILED,
  the code RabbitMQ uses for max_message_size, raised at the header, before any body is
  buffered. The channel's body frames that follow are then swallowed, so that a client's
  pipelined body frames do not turn a channel error into a connection error;
- body bytes held for unfinished content over ``max_pending_bytes``, summed over all the
  channels of the connection: ConnectionException 530 NOT_ALLOWED, so that many channels each
  holding part of a large message cannot add up to more memory than one connection may use.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import ChannelException, ConnectionException
from amqplite.protocol.frames import BodyFrame, HeaderFrame, MethodFrame
from amqplite.protocol.methods import Method, carries_content, method_ids

DEFAULT_MAX_BODY_SIZE: Final = 128 * 1024 * 1024


@attrs.frozen
class Command:
    """A method with its content, if it carries any."""

    channel: int
    method: Method
    properties_bin: bytes | None = None
    body: bytes | None = None


class _Stage(enum.Enum):
    """Where a channel's pending content is."""

    HEADER = enum.auto()  # the method arrived; its content header is expected
    BODY = enum.auto()  # the header arrived; body frames are expected
    DISCARD = enum.auto()  # the content was refused; its body frames are swallowed


@attrs.define
class _Pending:
    """Content being assembled on one channel."""

    method: Method
    stage: _Stage = _Stage.HEADER
    properties_bin: bytes = b""
    body_size: int = 0
    received: int = 0
    parts: list[bytes] = attrs.Factory(list)


class ContentAssembler:
    """Join each content-carrying method with its header and body frames, per channel."""

    def __init__(
        self, max_body_size: int = DEFAULT_MAX_BODY_SIZE, max_pending_bytes: int = 0
    ) -> None:
        self.max_body_size = max_body_size
        self.max_pending_bytes = max_pending_bytes  # 0: no bound beyond max_body_size
        self.pending_bytes = 0  # body bytes held for unfinished content, all channels
        self._pending: dict[int, _Pending] = {}

    def handle(self, frame: MethodFrame | HeaderFrame | BodyFrame) -> Command | None:
        """Take one frame; return a Command once one is complete, else None."""
        if isinstance(frame, MethodFrame):
            return self._method(frame)
        if isinstance(frame, HeaderFrame):
            return self._header(frame)
        return self._body(frame)

    def reset(self, channel: int) -> None:
        """Drop any partial content of a channel (when the channel closes)."""
        pending = self._pending.pop(channel, None)
        if pending is not None and pending.stage is _Stage.BODY:
            self.pending_bytes -= pending.received

    def has_pending(self, channel: int) -> bool:
        """True while content is in progress on `channel`."""
        return channel in self._pending

    def pending_channels(self) -> frozenset[int]:
        """The channels with content in progress."""
        return frozenset(self._pending)

    def _method(self, frame: MethodFrame) -> Command | None:
        pending = self._pending.get(frame.channel)
        if pending is not None:
            if pending.stage is _Stage.DISCARD:
                del self._pending[frame.channel]
            else:
                raise self._unexpected(pending)
        if carries_content(frame.method):
            self._pending[frame.channel] = _Pending(frame.method)
            return None
        return Command(frame.channel, frame.method)

    def _header(self, frame: HeaderFrame) -> Command | None:
        pending = self._pending.get(frame.channel)
        if pending is None or pending.stage is _Stage.DISCARD:
            raise ConnectionException(
                ReplyCode.UNEXPECTED_FRAME, "expected method frame, got non method frame instead"
            )
        class_id, method_id = method_ids(pending.method)
        if pending.stage is not _Stage.HEADER:
            raise self._unexpected(pending)
        if frame.class_id != class_id:
            raise ConnectionException(
                ReplyCode.UNEXPECTED_FRAME,
                f"expected content header for class {class_id}, "
                f"got one for class {frame.class_id} instead",
                class_id,
                method_id,
            )
        if frame.body_size == 0:
            del self._pending[frame.channel]
            return Command(frame.channel, pending.method, frame.properties_bin, b"")
        pending.body_size = frame.body_size
        if frame.body_size > self.max_body_size:
            pending.stage = _Stage.DISCARD
            raise ChannelException(
                ReplyCode.PRECONDITION_FAILED,
                f"message size {frame.body_size} is larger than configured max size "
                f"{self.max_body_size}",
                class_id,
                method_id,
            )
        pending.stage = _Stage.BODY
        pending.properties_bin = frame.properties_bin
        return None

    def _body(self, frame: BodyFrame) -> Command | None:
        pending = self._pending.get(frame.channel)
        if pending is None:
            raise ConnectionException(
                ReplyCode.UNEXPECTED_FRAME, "expected method frame, got non method frame instead"
            )
        if pending.stage is _Stage.HEADER:
            raise self._unexpected(pending)
        pending.received += len(frame.payload)
        if pending.stage is _Stage.DISCARD:
            if pending.received >= pending.body_size:
                del self._pending[frame.channel]
            return None
        if pending.received > pending.body_size:
            class_id, method_id = method_ids(pending.method)
            raise ConnectionException(
                ReplyCode.FRAME_ERROR,
                f"content body of at least {pending.received} bytes is larger than the "
                f"{pending.body_size} bytes announced in its content header",
                class_id,
                method_id,
            )
        if pending.received < pending.body_size:
            self.pending_bytes += len(frame.payload)
            if self.max_pending_bytes and self.pending_bytes > self.max_pending_bytes:
                raise self._too_much_pending(pending)
            pending.parts.append(frame.payload)
            return None
        if frame.payload:
            pending.parts.append(frame.payload)
        self.pending_bytes -= pending.received - len(frame.payload)
        del self._pending[frame.channel]
        parts = pending.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return Command(frame.channel, pending.method, pending.properties_bin, body)

    def _too_much_pending(self, pending: _Pending) -> ConnectionException:
        class_id, method_id = method_ids(pending.method)
        return ConnectionException(
            ReplyCode.NOT_ALLOWED,
            f"unfinished message content on this connection exceeds {self.max_pending_bytes} "
            "bytes (limits.max_unfinished_content_bytes)",
            class_id,
            method_id,
        )

    @staticmethod
    def _unexpected(pending: _Pending) -> ConnectionException:
        class_id, method_id = method_ids(pending.method)
        if pending.stage is _Stage.HEADER:
            text = f"expected content header for class {class_id}, got non content header frame instead"
        else:
            text = "expected content body, got non content body frame instead"
        return ConnectionException(ReplyCode.UNEXPECTED_FRAME, text, class_id, method_id)
