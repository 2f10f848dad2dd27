"""Deliveries of paged-out messages: no body is read while the session runs, output stays in order."""

from __future__ import annotations

import threading

import pytest
from session_helpers import Client, guest_broker

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message, PagedMessage
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import spec
from amqplite.session.connection import Session
from amqplite.session.paged import PagedDelivery, load_bodies


class CountedBody:
    """A body on 'disk' that counts its reads (a BodyLocation)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        return self.data


class WorkerOnlyBody(CountedBody):
    """A body on 'disk' that refuses to be read on the event loop (the main thread)."""

    def read(self) -> bytes:
        if threading.current_thread() is threading.main_thread():
            raise AssertionError("a paged body was read on the event loop")
        return super().read()


def in_worker_thread(loads: list[PagedDelivery]) -> None:
    """Run the server's load step in another thread, as trio.to_thread does."""
    worker = threading.Thread(target=load_bodies, args=(loads,))
    worker.start()
    worker.join()


def deferring_session(broker: Broker) -> tuple[Session, Client]:
    """A session that defers paged bodies, with channel 1 open and queue q declared."""
    session = Session(broker)
    session.defer_paged = True
    client = Client(session)
    client.handshake()
    client.open_channel(1)
    client.send(1, build(spec.Queue.Declare, queue="q"))
    assert [type(c.method) for c in client.received()] == [spec.Queue.DeclareOk]
    return session, client


def paged_client(broker: Broker) -> tuple[Session, Client, list[CountedBody]]:
    """A session that defers paged bodies, consuming q where three of five messages are paged."""
    session, client = deferring_session(broker)
    queue = broker.vhost("/").queues["q"]
    bodies = []
    for i in range(5):
        message = Message("", "q", b"\x00\x00", b"body %d" % i)
        entry = queue.enqueue(message)
        assert entry is not None
        if i in (1, 2, 4):
            body = CountedBody(b"body %d" % i)
            entry.message = PagedMessage.of(message, body)
            bodies.append(body)
    return session, client, bodies


def test_paged_bodies_are_read_only_by_the_loader_and_output_keeps_its_order(
    broker: Broker,
) -> None:
    session, client, bodies = paged_client(broker)
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
    client.send(1, build(spec.Basic.Qos, prefetch_count=0))
    commands = client.received()
    # the first delivery is in memory; the second is paged: it and all after it wait
    assert [type(c.method) for c in commands] == [spec.Basic.ConsumeOk, spec.Basic.Deliver]
    assert [b.reads for b in bodies] == [0, 0, 0]
    assert session.output_held
    loads = session.bodies_to_load()
    assert len(loads) == 3
    load_bodies(loads)  # what the server runs in a worker thread
    assert [b.reads for b in bodies] == [1, 1, 1]
    session.bodies_loaded()
    assert not session.output_held
    commands = client.received()
    assert [type(c.method) for c in commands] == [spec.Basic.Deliver] * 4 + [spec.Basic.QosOk]
    assert [c.body for c in commands[:4]] == [b"body %d" % i for i in range(1, 5)]
    assert [c.method.delivery_tag for c in commands[:4]] == [2, 3, 4, 5]


def test_output_is_released_up_to_the_first_body_not_yet_loaded(broker: Broker) -> None:
    session, client, _bodies = paged_client(broker)
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
    client.received()
    first, *rest = session.bodies_to_load()
    first.load()
    session.bodies_loaded()
    assert [c.body for c in client.received()] == [b"body 1"]
    load_bodies(rest)
    session.bodies_loaded()
    assert [c.body for c in client.received()] == [b"body 2", b"body 3", b"body 4"]


def test_without_a_loader_paged_bodies_are_read_in_place(broker: Broker) -> None:
    session, client, bodies = paged_client(broker)
    session.defer_paged = False  # plain unit use: no server to read off the loop
    client.send(1, build(spec.Basic.Consume, queue="q", consumer_tag="c", no_ack=True))
    assert len(client.received()) == 6
    assert [b.reads for b in bodies] == [1, 1, 1]


def test_basic_get_of_a_paged_message_reads_its_body_off_the_loop_in_order(
    broker: Broker,
) -> None:
    session, client = deferring_session(broker)
    queue = broker.vhost("/").queues["q"]
    body = WorkerOnlyBody(b"paged body")
    entry = queue.enqueue(Message("", "q", b"\x00\x00", b"paged body"))
    assert entry is not None
    entry.message = PagedMessage.of(entry.message, body)
    client.send(1, build(spec.Basic.Get, queue="q", no_ack=True))
    client.send(1, build(spec.Basic.Qos, prefetch_count=5))
    assert client.received() == []  # the get-ok and all after it wait for the body
    assert session.output_held
    in_worker_thread(session.bodies_to_load())
    session.bodies_loaded()
    commands = client.received()
    assert [type(c.method) for c in commands] == [spec.Basic.GetOk, spec.Basic.QosOk]
    assert commands[0].body == b"paged body"
    assert commands[0].method.message_count == 0
    assert body.reads == 1


@pytest.fixture
def broker() -> Broker:
    return guest_broker()
