"""Declare/bind/delete replies for durable entities wait for the commit of their metadata record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_session import Client, build

from amqplite.broker.auth import Permission
from amqplite.broker.broker import Broker
from amqplite.config.models import StoreConfig
from amqplite.protocol.methods import BasicAck, spec
from amqplite.server.restore import recover_into
from amqplite.session.connection import Session
from amqplite.store.store import Store


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Broker, Store]:
    """A broker whose store commits only when the test says so (store.commit())."""
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest")
    broker.set_permissions("guest", "/", Permission())
    store = Store(tmp_path / "data", StoreConfig(fsync=False))
    recover_into(broker, store)
    store.commit()
    return broker, store


def connect(broker: Broker) -> tuple[Session, Client]:
    session = Session(broker)
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    return session, client


def commit(store: Store, *sessions: Session) -> None:
    store.commit()
    for session in sessions:
        session.on_commit()


def kinds(client: Client) -> list[type]:
    return [type(c.method) for c in client.received()]


def test_durable_declares_and_bind_wait_for_the_commit(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(
        1, build(spec.Exchange.Declare, exchange="dx", exchange_type="direct", durable=True)
    )
    assert kinds(client) == []  # the record is not on disk yet
    commit(store, session)
    assert kinds(client) == [spec.Exchange.DeclareOk]
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    assert kinds(client) == []
    commit(store, session)
    assert kinds(client) == [spec.Queue.DeclareOk]
    client.send(1, build(spec.Queue.Bind, queue="dq", exchange="dx", routing_key="k"))
    assert kinds(client) == []
    commit(store, session)
    assert kinds(client) == [spec.Queue.BindOk]
    reopened = Broker()
    recover_into(reopened, Store(store.directory))  # what a crash right now would leave
    vhost = reopened.vhost("/")
    assert "dx" in vhost.exchanges
    assert "dq" in vhost.queues
    assert [b.destination.name for b in vhost.bindings_by_source["dx"]] == ["dq"]


def test_later_commands_of_a_held_channel_wait_in_order(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.open_channel(2)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.send(1, build(spec.Basic.Qos, prefetch_count=5))
    client.send(1, build(spec.Queue.Declare, queue="dq", passive=True))
    client.send(2, build(spec.Basic.Qos, prefetch_count=5))  # another channel is not held
    assert kinds(client) == [spec.Basic.QosOk]
    commit(store, session)
    commands = client.received()
    assert [(c.channel, type(c.method)) for c in commands] == [
        (1, spec.Queue.DeclareOk),
        (1, spec.Basic.QosOk),
        (1, spec.Queue.DeclareOk),
    ]


def test_deferred_publishes_and_consumes_run_after_the_reply(
    stored: tuple[Broker, Store],
) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, spec.Confirm.Select())
    assert kinds(client) == [spec.Confirm.SelectOk]
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.publish(1, "dq", b"persistent")  # straight from the read buffer when not held
    client.send(1, build(spec.Basic.Consume, queue="dq", consumer_tag="c", no_ack=True))
    assert kinds(client) == []
    assert broker.vhost("/").queues["dq"].message_count == 0  # the publish waits too
    commit(store, session)
    # the declare-ok, then the consume-ok and the delivery; the publish's record is not yet synced
    assert kinds(client) == [spec.Queue.DeclareOk, spec.Basic.ConsumeOk, spec.Basic.Deliver]
    commit(store, session)
    acks = [c.method for c in client.received()]
    assert [(type(a), a.delivery_tag) for a in acks] == [(BasicAck, 1)]


def test_transient_and_passive_replies_are_not_held(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    _session, client = connect(broker)
    client.send(1, build(spec.Exchange.Declare, exchange="tx", exchange_type="fanout"))
    client.send(1, build(spec.Queue.Declare, queue="tq"))
    client.send(1, build(spec.Queue.Bind, queue="tq", exchange="tx"))
    client.send(1, build(spec.Queue.Declare, queue="eq", durable=True, exclusive=True))
    client.send(1, build(spec.Queue.Declare, queue="tq", passive=True))
    client.send(1, build(spec.Queue.Delete, queue="tq"))
    assert kinds(client) == [
        spec.Exchange.DeclareOk,
        spec.Queue.DeclareOk,
        spec.Queue.BindOk,
        spec.Queue.DeclareOk,
        spec.Queue.DeclareOk,
        spec.Queue.DeleteOk,
    ]
    assert not store.pending


def test_redeclaring_an_existing_durable_queue_writes_nothing_and_is_not_held(
    stored: tuple[Broker, Store],
) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    commit(store, session)
    assert kinds(client) == [spec.Queue.DeclareOk]
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    assert kinds(client) == [spec.Queue.DeclareOk]


def test_nowait_declare_holds_the_next_reply_of_its_channel(
    stored: tuple[Broker, Store],
) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True, nowait=True))
    client.send(1, build(spec.Queue.Declare, queue="dq", passive=True))
    assert kinds(client) == []  # a passive ok must not announce a queue a crash would lose
    commit(store, session)
    assert kinds(client) == [spec.Queue.DeclareOk]


@pytest.mark.parametrize(
    "method",
    [
        build(spec.Queue.Delete, queue="dq"),
        build(spec.Queue.Unbind, queue="dq", exchange="dx", routing_key="k"),
        build(spec.Exchange.Delete, exchange="dx"),
        build(spec.Exchange.Unbind, destination="dx2", source="dx", routing_key="k"),
    ],
    ids=lambda m: type(m).__qualname__,
)
def test_delete_and_unbind_of_durable_entities_wait(
    stored: tuple[Broker, Store], method: Any
) -> None:
    broker, store = stored
    session, client = connect(broker)
    for setup in (
        build(spec.Exchange.Declare, exchange="dx", exchange_type="direct", durable=True),
        build(spec.Exchange.Declare, exchange="dx2", exchange_type="direct", durable=True),
        build(spec.Exchange.Bind, destination="dx2", source="dx", routing_key="k"),
        build(spec.Queue.Declare, queue="dq", durable=True),
        build(spec.Queue.Bind, queue="dq", exchange="dx", routing_key="k"),
    ):
        client.send(1, setup)
        commit(store, session)
    assert len(client.received()) == 5
    client.send(1, method)
    assert kinds(client) == []
    commit(store, session)
    assert len(kinds(client)) == 1


def test_error_after_a_held_reply_comes_after_it(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.send(1, build(spec.Queue.Declare, queue="missing", passive=True))
    client.send(1, build(spec.Queue.Declare, queue="after-the-error"))  # ignored: channel closing
    assert kinds(client) == []
    commit(store, session)
    commands = client.received()
    assert [type(c.method) for c in commands] == [spec.Queue.DeclareOk, spec.Channel.Close]
    assert commands[1].method.reply_code == 404
    assert "after-the-error" not in broker.vhost("/").queues
    client.send(1, spec.Channel.CloseOk())
    client.open_channel(1)


def test_closing_the_channel_while_held_answers_in_order(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.send(1, build(spec.Channel.Close, reply_code=200, reply_text="bye"))
    assert kinds(client) == []
    commit(store, session)
    assert kinds(client) == [spec.Queue.DeclareOk, spec.Channel.CloseOk]
    assert 1 not in session.channels


def test_connection_close_while_held_is_answered_at_once(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    client.send(0, build(spec.Connection.Close, reply_code=200, reply_text="bye"))
    assert kinds(client) == [spec.Connection.CloseOk]
    assert session.closed
    commit(store, session)  # nothing more is sent on a closed connection
    assert kinds(client) == []


def test_other_connections_are_not_held(stored: tuple[Broker, Store]) -> None:
    broker, store = stored
    session, client = connect(broker)
    other_session, other = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    other.send(1, build(spec.Queue.Declare, queue="tq"))
    assert kinds(client) == []
    assert kinds(other) == [spec.Queue.DeclareOk]
    commit(store, session, other_session)
    assert kinds(client) == [spec.Queue.DeclareOk]


def declared(stored: tuple[Broker, Store]) -> tuple[Session, Client]:
    """A client whose channel 1 declared the durable queue dq (committed)."""
    broker, store = stored
    session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    commit(store, session)
    assert kinds(client) == [spec.Queue.DeclareOk]
    return session, client


def test_tx_commit_ok_waits_for_the_commit_of_its_publishes(
    stored: tuple[Broker, Store],
) -> None:
    _broker, store = stored
    session, client = declared(stored)
    client.send(1, spec.Tx.Select())
    assert kinds(client) == [spec.Tx.SelectOk]
    client.publish(1, "dq", b"persistent")
    client.send(1, spec.Tx.Commit())
    client.send(1, build(spec.Basic.Qos, prefetch_count=1))  # waits behind the commit-ok
    assert kinds(client) == []
    assert store.pending
    commit(store, session)
    assert kinds(client) == [spec.Tx.CommitOk, spec.Basic.QosOk]
    reopened = Broker()
    recover_into(reopened, Store(store.directory))
    assert reopened.vhost("/").queues["dq"].message_count == 1


def test_tx_commit_ok_waits_for_the_commit_of_its_acks(stored: tuple[Broker, Store]) -> None:
    _broker, store = stored
    session, client = declared(stored)
    client.publish(1, "dq", b"persistent")
    commit(store, session)
    client.send(1, spec.Tx.Select())
    client.send(1, build(spec.Basic.Get, queue="dq"))
    got = client.received()
    assert [type(c.method) for c in got] == [spec.Tx.SelectOk, spec.Basic.GetOk]
    commit(store, session)  # the delivery count
    client.send(1, build(spec.Basic.Ack, delivery_tag=got[1].method.delivery_tag))
    client.send(1, spec.Tx.Commit())
    assert kinds(client) == []
    commit(store, session)
    assert kinds(client) == [spec.Tx.CommitOk]
    reopened = Broker()
    recover_into(reopened, Store(store.directory))
    assert reopened.vhost("/").queues["dq"].message_count == 0


def test_empty_or_transient_tx_commit_is_answered_at_once(stored: tuple[Broker, Store]) -> None:
    broker, _store = stored
    _session, client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="tq"))
    client.send(1, spec.Tx.Select())
    client.send(1, spec.Tx.Commit())
    client.publish(1, "tq", b"to a transient queue")
    client.send(1, spec.Tx.Commit())
    assert kinds(client) == [
        spec.Queue.DeclareOk,
        spec.Tx.SelectOk,
        spec.Tx.CommitOk,
        spec.Tx.CommitOk,
    ]


def test_purge_ok_of_a_durable_queue_waits_for_the_commit(stored: tuple[Broker, Store]) -> None:
    _broker, store = stored
    session, client = declared(stored)
    for i in range(3):
        client.publish(1, "dq", b"m%d" % i)
    commit(store, session)
    client.send(1, build(spec.Queue.Purge, queue="dq"))
    assert kinds(client) == []
    commit(store, session)
    commands = client.received()
    assert [type(c.method) for c in commands] == [spec.Queue.PurgeOk]
    assert commands[0].method.message_count == 3
    reopened = Broker()
    recover_into(reopened, Store(store.directory))
    assert reopened.vhost("/").queues["dq"].message_count == 0


def test_only_sessions_with_something_waiting_are_told_of_commits(
    stored: tuple[Broker, Store],
) -> None:
    broker, store = stored
    session, client = connect(broker)
    _, idle_client = connect(broker)
    client.send(1, build(spec.Queue.Declare, queue="dq", durable=True))
    idle_client.send(1, build(spec.Basic.Qos, prefetch_count=10))
    assert list(broker.commit_waiters.values()) == [session]  # its declare-ok waits
    store.commit()
    for waiter in list(broker.commit_waiters.values()):
        waiter.on_commit()
    assert kinds(client) == [spec.Queue.DeclareOk]
    assert broker.commit_waiters == {}  # nothing left to wait for
    client.send(1, build(spec.Confirm.Select))
    client.received()
    client.publish(1, "dq", b"x")  # persistent
    assert list(broker.commit_waiters.values()) == [session]  # its confirm waits
    store.commit()
    for waiter in list(broker.commit_waiters.values()):
        waiter.on_commit()
    assert kinds(client) == [BasicAck]
    assert broker.commit_waiters == {}
    assert kinds(idle_client) == [spec.Basic.QosOk]
