"""Session without sockets: bytes in, bytes out, checked by decoding what the server sends."""

from __future__ import annotations

import attrs
import pytest
from session_helpers import Client, guest_broker, plain

from amqplite.broker.broker import Broker
from amqplite.protocol.constants import PROTOCOL_HEADER, ReplyCode
from amqplite.protocol.methods import BasicAck, BasicPublish, encode_method, spec
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.writers import encode_content
from amqplite.session.connection import ConnectionState, Session, SessionSettings


@attrs.define(eq=False)
class HeldCommits:
    """One commit domain whose commits the test completes by hand; every command writes a record."""

    written: int = 0
    committed: int = 0

    def watch(self) -> None:
        return None

    def watched(self, outer: object) -> tuple[tuple[HeldCommits, int], ...]:
        self.written += 1
        return ((self, self.written),)


@pytest.fixture
def broker() -> Broker:
    return guest_broker()


def test_handshake_then_publish_and_consume(broker: Broker) -> None:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c"))
    client.publish(1, "q", b"hello")
    commands = client.received()
    assert [type(c.method) for c in commands] == [
        spec.Queue.DeclareOk,
        spec.Basic.ConsumeOk,
        spec.Basic.Deliver,
    ]
    deliver = commands[-1]
    assert deliver.body == b"hello"
    assert deliver.method.delivery_tag == 1
    assert deliver.method.redelivered is False


def test_wrong_password_is_access_refused(broker: Broker) -> None:
    session = Session(broker)
    client = Client(session)
    session.receive_data(PROTOCOL_HEADER)
    client.send(
        0, build(spec.Connection.StartOk, mechanism="PLAIN", response=plain("guest", "nope"))
    )
    close = client.received()[-1].method
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == ReplyCode.ACCESS_REFUSED


def test_channel_error_closes_only_that_channel(broker: Broker) -> None:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.open_channel(2)
    client.send(1, build(spec.Queue.Declare, queue="missing", passive=True))
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.NOT_FOUND
    assert "no queue 'missing' in vhost '/'" in close.reply_text
    client.send(2, build(spec.Queue.Declare, queue="other"))
    assert isinstance(client.received()[-1].method, spec.Queue.DeclareOk)


def test_frames_on_a_closing_channel_are_ignored_until_close_ok(broker: Broker) -> None:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="missing", passive=True))
    client.received()
    client.send(1, build(spec.Queue.Declare, queue="ignored"))
    assert client.received() == []
    assert "ignored" not in broker.vhosts["/"].queues
    client.send(1, spec.Channel.CloseOk())
    client.open_channel(1)


def test_bad_frame_end_closes_connection_with_frame_error(broker: Broker) -> None:
    session = Session(broker)
    client = Client(session)
    client.handshake()
    frame = bytearray(encode_method(0, spec.Connection.Blocked()))
    frame[-1] = 0x00
    session.receive_data(bytes(frame))
    close = client.received()[-1].method
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == ReplyCode.FRAME_ERROR
    assert session.state is ConnectionState.CLOSING
    # The byte stream is out of step now: nothing more is parsed (the server's close timeout ends it).
    client.send(0, spec.Connection.CloseOk())
    assert client.received() == []


def test_unknown_method_closes_with_540_and_close_ok_finishes(broker: Broker) -> None:
    session = Session(broker)
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    payload = bytes([0, 60, 0, 99])  # basic class, no such method
    session.receive_data(bytes([1, 0, 1, 0, 0, 0, len(payload)]) + payload + b"\xce")
    close = client.received()[-1].method
    assert isinstance(close, spec.Connection.Close)
    assert close.reply_code == ReplyCode.NOT_IMPLEMENTED
    client.send(0, spec.Connection.CloseOk())
    assert session.closed


def test_confirm_waits_for_the_commit_covering_a_persistent_message(broker: Broker) -> None:
    session = Session(broker)
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.send(1, spec.Confirm.Select())
    client.received()
    commits = HeldCommits()
    broker.commits = commits
    client.publish(1, "dq", b"a")
    client.publish(1, "dq", b"b")
    assert client.received() == []  # nothing is on disk yet
    commits.committed = 1
    session.on_commit()
    acks = [c.method for c in client.received()]
    assert [(type(a), a.delivery_tag, a.multiple) for a in acks] == [(BasicAck, 1, False)]
    commits.committed = 2
    session.on_commit()
    acks = [c.method for c in client.received()]
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(2, False)]


def test_confirms_of_a_batch_are_coalesced_into_one_multiple_ack(broker: Broker) -> None:
    client = Client(Session(broker))
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    client.send(1, spec.Confirm.Select())
    client.received()
    data = b"".join(
        encode_method(1, BasicPublish("", "q", False, False))
        + encode_content(1, 60, b"\x00\x00", b"x", 131072)
        for _ in range(5)
    )
    client.session.receive_data(data)
    acks = [c.method for c in client.received()]
    assert [(a.delivery_tag, a.multiple) for a in acks] == [(5, True)]


def test_deliveries_pause_while_the_outbound_buffer_is_full(broker: Broker) -> None:
    session = Session(broker, SessionSettings(max_outbound_bytes=2000))
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    for _ in range(20):
        client.publish(1, "q", b"x" * 500)
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
    first = [c for c in client.received() if isinstance(c.method, spec.Basic.Deliver)]
    assert 0 < len(first) < 20
    delivered = len(first)
    while delivered < 20:
        session.on_drained()
        batch = [c for c in client.received() if isinstance(c.method, spec.Basic.Deliver)]
        assert batch, "resuming after a drain must deliver more"
        delivered += len(batch)
    assert delivered == 20
