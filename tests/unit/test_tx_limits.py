"""Bounded session buffers, no sockets: a channel's uncommitted transaction, the permission cache."""

from __future__ import annotations

from session_helpers import Client

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import spec
from amqplite.session.connection import Session, SessionSettings
from amqplite.session.limits import PERMISSION_CACHE_SIZE, TX_OP_BYTES

LIMIT = 10_000


def _client(limit: int = LIMIT) -> tuple[Broker, Session, Client]:
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest")
    broker.set_permissions("guest", "/", Permission())
    session = Session(broker, SessionSettings(max_tx_bytes_per_channel=limit))
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    client.send(1, spec.Tx.Select())
    client.received()
    return broker, session, client


def test_a_transaction_past_its_limit_is_refused_with_406_naming_the_setting() -> None:
    broker, session, client = _client()
    body = b"x" * (LIMIT // 4 - TX_OP_BYTES)  # four of these fill the channel's allowance
    for _ in range(4):
        client.publish(1, "q", body)
    assert client.received() == []
    client.publish(1, "q", b"one byte too many")
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.PRECONDITION_FAILED
    assert "limits.max_tx_bytes_per_channel" in close.reply_text
    assert broker.vhosts["/"].queues["q"].message_count == 0  # the transaction went with it
    client.send(1, spec.Channel.CloseOk())
    assert 1 not in session.channels  # and the buffered publishes with it


def test_commit_and_rollback_give_the_allowance_back() -> None:
    broker, _session, client = _client()
    body = b"x" * (LIMIT // 2 - TX_OP_BYTES)
    for _ in range(3):  # each round holds two bodies: the limit exactly, never past it
        client.publish(1, "q", body)
        client.publish(1, "q", body)
        client.send(1, spec.Tx.Commit())
        client.publish(1, "q", body)
        client.publish(1, "q", body)
        client.send(1, spec.Tx.Rollback())
    kinds = [type(c.method) for c in client.received()]
    assert kinds == [spec.Tx.CommitOk, spec.Tx.RollbackOk] * 3
    assert broker.vhosts["/"].queues["q"].message_count == 6


def test_acks_in_a_transaction_count_too() -> None:
    _broker, _session, client = _client(limit=3 * TX_OP_BYTES)
    for tag in range(1, 4):
        client.send(1, build(spec.Basic.Ack, delivery_tag=tag))
    assert client.received() == []
    client.send(1, build(spec.Basic.Reject, delivery_tag=4))
    close = client.received()[-1].method
    assert isinstance(close, spec.Channel.Close)
    assert close.reply_code == ReplyCode.PRECONDITION_FAILED


def test_the_permission_cache_stays_bounded() -> None:
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest")
    broker.set_permissions("guest", "/", Permission())
    session = Session(broker)
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    for i in range(PERMISSION_CACHE_SIZE + 100):  # every publish names a new exchange
        session.allow("write", "exchange", f"x{i}", 60, 40)
    assert len(session._allowed) <= PERMISSION_CACHE_SIZE
    session.allow("write", "exchange", "x0", 60, 40)  # still allowed after the cache started over
