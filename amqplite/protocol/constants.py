"""AMQP 0-9-1 wire constants: frame types, the frame end octet, class ids and reply codes."""

from __future__ import annotations

import enum
from typing import Final

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
FRAME_END: Final = 0xCE
FRAME_HEADER_SIZE: Final = 7
FRAME_OVERHEAD: Final = 8
FRAME_MIN_SIZE: Final = 4096
DEFAULT_FRAME_MAX: Final = 131072
DEFAULT_CHANNEL_MAX: Final = 2047
DEFAULT_HEARTBEAT: Final = 60


class FrameType(enum.IntEnum):
    """The four frame types of AMQP 0-9-1."""

    METHOD = 1
    HEADER = 2
    BODY = 3
    HEARTBEAT = 8


class ClassId(enum.IntEnum):
    """Class ids of the AMQP 0-9-1 method classes."""

    CONNECTION = 10
    CHANNEL = 20
    EXCHANGE = 40
    QUEUE = 50
    BASIC = 60
    CONFIRM = 85
    TX = 90


class ReplyCode(enum.IntEnum):
    """AMQP reply codes; soft (channel) codes are 3xx/4xx, hard (connection) codes 3xx/5xx."""

    REPLY_SUCCESS = 200  # the normal close
    CONTENT_TOO_LARGE = 311  # channel: content too large for the server
    NO_ROUTE = 312  # basic.return: mandatory message had no queue
    NO_CONSUMERS = 313  # basic.return: immediate message had no consumer
    CONNECTION_FORCED = 320  # connection: closed by the operator or a shutdown
    INVALID_PATH = 402  # connection: unknown virtual host
    ACCESS_REFUSED = 403  # channel: no access to the resource
    NOT_FOUND = 404  # channel: the named entity does not exist
    RESOURCE_LOCKED = 405  # channel: exclusive to another connection
    PRECONDITION_FAILED = 406  # channel: a precondition of the request was not met
    FRAME_ERROR = 501  # connection: a malformed frame
    SYNTAX_ERROR = 502  # connection: a frame with illegal field values
    COMMAND_INVALID = 503  # connection: a method not allowed in this state
    CHANNEL_ERROR = 504  # connection: a channel that is not open, or opened twice
    UNEXPECTED_FRAME = 505  # connection: a frame the server did not expect
    RESOURCE_ERROR = 506  # connection: out of a resource
    NOT_ALLOWED = 530  # connection: forbidden by the server's settings
    NOT_IMPLEMENTED = 540  # connection: functionality not implemented
    INTERNAL_ERROR = 541  # connection: the server could not complete the request


CHANNEL_CODES: Final = frozenset(
    {
        ReplyCode.CONTENT_TOO_LARGE,
        ReplyCode.NO_ROUTE,
        ReplyCode.NO_CONSUMERS,
        ReplyCode.ACCESS_REFUSED,
        ReplyCode.NOT_FOUND,
        ReplyCode.RESOURCE_LOCKED,
        ReplyCode.PRECONDITION_FAILED,
    }
)
