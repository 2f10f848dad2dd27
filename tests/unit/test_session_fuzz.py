"""Hostile input into the protocol layer, no sockets: any bytes give replies or reply-code closes.

Hypothesis builds byte streams from valid frames (most AMQP commands, content included), mutated
frames (flipped bytes, truncations, lengths, channel numbers) and random bytes, and feeds them to
a Session after (or instead of) a valid handshake. A session may refuse anything, but only with
an AMQP reply code: never an exception out of receive_data, never 541 INTERNAL_ERROR, never a
logged internal error, and its output always parses as frames. AMQPLITE_FUZZ_EXAMPLES raises
the number of examples for a long run.
"""

from __future__ import annotations

import logging
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import guest_broker

from amqplite.protocol.constants import PROTOCOL_HEADER, ReplyCode
from amqplite.protocol.errors import AMQPError
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import encode_method, spec
from amqplite.protocol.writers import encode_content
from amqplite.session.connection import Session, SessionSettings

EXAMPLES = int(os.environ.get("AMQPLITE_FUZZ_EXAMPLES", "150"))


def _handshake() -> bytes:
    return (
        PROTOCOL_HEADER
        + encode_method(
            0, build(spec.Connection.StartOk, mechanism="PLAIN", response="\x00guest\x00guest")
        )
        + encode_method(
            0, build(spec.Connection.TuneOk, channel_max=0, frame_max=131072, heartbeat=0)
        )
        + encode_method(0, build(spec.Connection.Open, virtual_host="/"))
    )


def _content(body: bytes, properties: bytes = b"\x10\x00\x02") -> bytes:
    return encode_content(1, 60, properties, body, 4096)


def _publish(exchange: str, key: str, body: bytes, properties: bytes = b"\x10\x00\x02") -> bytes:
    method = build(spec.Basic.Publish, exchange=exchange, routing_key=key, mandatory=True)
    return encode_method(1, method) + _content(body, properties)


# Valid frames for channel 1 (mutations move some to other channels).
OPEN = encode_method(1, spec.Channel.Open())
CLOSE = encode_method(
    0, build(spec.Connection.Close, reply_code=200, reply_text="", class_id=0, method_id=0)
)
CORPUS: list[bytes] = [
    encode_method(1, build(spec.Queue.Declare, queue="q")),
    encode_method(1, build(spec.Queue.Declare, queue="", exclusive=True)),
    encode_method(
        1, build(spec.Queue.Declare, queue="t", arguments={"x-max-length": 2, "x-message-ttl": 0})
    ),
    encode_method(1, build(spec.Exchange.Declare, exchange="x", exchange_type="topic")),
    encode_method(1, build(spec.Exchange.Declare, exchange="h", exchange_type="headers")),
    encode_method(1, build(spec.Queue.Bind, queue="q", exchange="x", routing_key="a.#")),
    encode_method(1, build(spec.Exchange.Bind, destination="h", source="x", routing_key="#")),
    _publish("", "q", b"hello"),
    _publish("x", "a.b", b"x" * 5000),
    _publish("", "q", b"", b"\x00\x00"),
    _publish("", "q", b"p", b"\x00\x10\x04boss"),  # user_id: boss
    encode_method(1, build(spec.Basic.Consume, queue="q", consumer_tag="c")),
    encode_method(1, build(spec.Basic.Cancel, consumer_tag="c")),
    encode_method(1, build(spec.Basic.Get, queue="q")),
    encode_method(1, build(spec.Basic.Ack, delivery_tag=1)),
    encode_method(1, build(spec.Basic.Ack, delivery_tag=0, multiple=True)),
    encode_method(1, build(spec.Basic.Nack, delivery_tag=1, requeue=True)),
    encode_method(1, build(spec.Basic.Reject, delivery_tag=2, requeue=False)),
    encode_method(1, build(spec.Basic.Qos, prefetch_count=1)),
    encode_method(1, build(spec.Basic.Recover, requeue=True)),
    encode_method(1, spec.Tx.Select()),
    encode_method(1, spec.Tx.Commit()),
    encode_method(1, spec.Tx.Rollback()),
    encode_method(1, spec.Confirm.Select()),
    encode_method(1, build(spec.Channel.Flow, active=False)),
    encode_method(1, build(spec.Channel.Flow, active=True)),
    encode_method(1, build(spec.Queue.Purge, queue="q")),
    encode_method(1, build(spec.Queue.Unbind, queue="q", exchange="x", routing_key="a.#")),
    encode_method(1, build(spec.Queue.Delete, queue="q")),
    encode_method(1, build(spec.Exchange.Delete, exchange="x")),
    encode_method(  # then open it again
        1, build(spec.Channel.Close, reply_code=200, reply_text="", class_id=0, method_id=0)
    )
    + OPEN,
    encode_method(1, spec.Channel.CloseOk()),
    b"\x08\x00\x00\x00\x00\x00\x00\xce",  # heartbeat
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """One corpus frame, changed the way a broken or hostile client would change it."""
    frame = bytearray(draw(st.sampled_from([*CORPUS, OPEN, CLOSE])))
    kind = draw(st.sampled_from(["as is", "byte", "truncate", "channel", "size", "insert"]))
    if kind == "byte":
        for _ in range(draw(st.integers(1, 4))):
            frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del frame[draw(st.integers(0, len(frame) - 1)) :]
    elif kind == "channel":
        frame[1:3] = draw(st.integers(0, 65535)).to_bytes(2, "big")
    elif kind == "size":
        frame[3:7] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif kind == "insert":
        at = draw(st.integers(0, len(frame)))
        frame[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(frame)


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """Valid frames in random orders (every command, so that deep channel states are reached),
    with a few mutated frames or random bytes put in at random places."""
    stream = draw(st.permutations(CORPUS)) + draw(st.permutations(CORPUS))
    del stream[draw(st.integers(1, len(stream))) :]
    for _ in range(draw(st.integers(0, 3))):
        bad = draw(st.one_of(mutated(), st.binary(min_size=1, max_size=64)))
        stream.insert(draw(st.integers(0, len(stream))), bad)
    return stream


class _Internal(logging.Handler):
    """Collects internal-error log records (a session caught an exception it did not expect)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Output:
    """The session's output read structurally, as a client would: whole frames, each ending in
    0xCE, no close carrying 541 INTERNAL_ERROR. Names are echoed as the client sent them (AMQP
    short strings are bytes), so frames are not decoded as text here."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False

    def closed_channels(self, data: bytes) -> list[int]:
        """Read `data`; the channels the server closed in it (a client answers and reopens)."""
        if not self.started and data.startswith(PROTOCOL_HEADER):  # a bad header's answer
            data = data[len(PROTOCOL_HEADER) :]
        self.started = self.started or bool(data)
        self.buffer += data
        closed = []
        while len(self.buffer) >= 7:
            kind, channel, size = struct.unpack_from(">BHI", self.buffer)
            if len(self.buffer) < size + 8:
                break
            payload, end = self.buffer[7 : 7 + size], self.buffer[7 + size]
            self.buffer = self.buffer[size + 8 :]
            assert kind in (1, 2, 3, 8), f"frame type {kind}"
            assert end == 0xCE, "a frame without its end octet"
            if kind == 1 and payload[:4] in (CONNECTION_CLOSE, CHANNEL_CLOSE):
                code, length = struct.unpack_from(">HB", payload, 4)
                text = payload[7 : 7 + length].decode("utf-8", "replace")
                assert code != ReplyCode.INTERNAL_ERROR, text
                if payload[:4] == CHANNEL_CLOSE:
                    closed.append(channel)
        return closed


CONNECTION_CLOSE = struct.pack(">HH", 10, 50)
CHANNEL_CLOSE = struct.pack(">HH", 20, 40)
SETUP = OPEN + b"".join(CORPUS[i] for i in (0, 3, 5))  # channel 1, queue q, exchange x, a binding


def _run(stream: list[bytes], handshake: bool, split: int) -> None:
    handler = _Internal()
    logger = logging.getLogger("amqplite")
    logger.addHandler(handler)
    try:
        session = Session(guest_broker(), SessionSettings(max_unfinished_content_bytes=20000))
        data = (_handshake() + SETUP if handshake else b"") + b"".join(stream)
        output = _Output()
        for start in range(0, len(data), split):  # arbitrary read boundaries
            chunk = data[start : start + split]
            while chunk:
                try:
                    session.receive_data(chunk)
                except AMQPError as exc:  # a failure, shown with its reply code
                    raise AssertionError(f"receive_data raised {exc!r}") from exc
                closed = output.closed_channels(session.data_to_send())
                session.on_drained()
                # like a client that recovers: confirm the channel's close and reopen it
                chunk = b"".join(
                    encode_method(c, spec.Channel.CloseOk()) + encode_method(c, spec.Channel.Open())
                    for c in closed
                )
        session.connection_lost()
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stream=streams(),
    handshake=st.booleans() | st.just(True),
    split=st.sampled_from([1, 7, 64, 4096, 1 << 20]),
)
def test_any_bytes_get_replies_or_reply_code_closes(
    stream: list[bytes], handshake: bool, split: int
) -> None:
    _run(stream, handshake, split)
