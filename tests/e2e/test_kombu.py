"""kombu end to end: producers and consumers, SimpleQueue, topic routing, acks, retries, declares."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable, Iterator

import amqp.exceptions
import kombu
import pytest
from kombu.common import maybe_declare
from kombu.message import Message

RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.2}


@pytest.fixture
def uid(uid: str) -> str:
    """The shared unique name, made safe for exchange names (no brackets from parametrize)."""
    return re.sub(r"[^A-Za-z0-9_.:-]", "-", uid)


@pytest.fixture
def conn(broker) -> Iterator[kombu.Connection]:
    """A connected kombu Connection, released at the end of the test."""
    with kombu.Connection(broker.url, connect_timeout=5) as connection:
        connection.connect()
        yield connection


def drain_until(conn: kombu.Connection, done: Callable[[], bool], timeout: float = 3.0) -> None:
    """Drain events until done() holds, failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"condition not met within {timeout}s")
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=min(remaining, 0.5))


def drain_quietly(conn: kombu.Connection, seconds: float = 0.2) -> None:
    """Give in-flight deliveries a moment to arrive, without requiring any."""
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=seconds)


def ready_count(conn: kombu.Connection, queue: kombu.Queue) -> int:
    """Ready messages in the queue, from a passive queue.declare on a fresh channel."""
    with conn.channel() as channel:
        return int(queue(channel).queue_declare(passive=True).message_count)


def wait_ready(
    conn: kombu.Connection, queue: kombu.Queue, expected: int, timeout: float = 3.0
) -> None:
    """Wait until the queue reports `expected` ready messages (publishes without confirms are async)."""
    deadline = time.monotonic() + timeout
    while (count := ready_count(conn, queue)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue.name} has {count} ready messages, expected {expected}")
        time.sleep(0.02)


def get_within(queue: kombu.Queue, timeout: float = 3.0) -> Message:
    """Poll basic.get on a bound queue until a message arrives."""
    deadline = time.monotonic() + timeout
    while True:
        message = queue.get(no_ack=False)
        if message is not None:
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"no message on {queue.name} within {timeout}s")
        time.sleep(0.02)


def test_producer_publish_and_consumer_drain_events_delivers_json_body(conn, uid):
    exchange = kombu.Exchange(uid, type="direct", auto_delete=True)
    queue = kombu.Queue(uid, exchange, routing_key="job", exclusive=True)
    received: list[tuple[object, Message]] = []
    with conn.channel() as channel:
        producer = kombu.Producer(channel, exchange=exchange)
        with kombu.Consumer(
            conn, queues=[queue], accept=["json"], callbacks=[lambda b, m: received.append((b, m))]
        ):
            producer.publish({"n": 1, "text": "héllo"}, routing_key="job", serializer="json")
            drain_until(conn, lambda: len(received) == 1)
            body, message = received[0]
            assert body == {"n": 1, "text": "héllo"}
            assert message.content_type == "application/json"
            assert message.delivery_info["exchange"] == uid
            assert message.delivery_info["routing_key"] == "job"
            assert message.delivery_info["redelivered"] is False
            message.ack()


def test_producer_headers_and_properties_reach_the_consumer(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    received: list[Message] = []
    with conn.channel() as channel:
        queue(channel).declare()
        producer = kombu.Producer(channel)
        producer.publish(
            b"raw-bytes",
            routing_key=uid,
            headers={"attempt": 2, "origin": "e2e"},
            priority=4,
            correlation_id="corr-1",
            content_type="application/octet-stream",
            content_encoding="binary",
        )
        with kombu.Consumer(conn, queues=[queue], on_message=received.append, no_ack=True):
            drain_until(conn, lambda: len(received) == 1)
    message = received[0]
    assert message.body == b"raw-bytes"
    assert message.headers == {"attempt": 2, "origin": "e2e"}
    assert message.properties["priority"] == 4
    assert message.properties["correlation_id"] == "corr-1"


def test_simple_queue_put_then_get_returns_payload_in_order(conn, uid):
    simple = conn.SimpleQueue(uid)
    try:
        simple.put({"job": 1})
        simple.put({"job": 2})
        first = simple.get(block=True, timeout=3)
        first.ack()
        second = simple.get(block=True, timeout=3)
        second.ack()
        assert [first.payload, second.payload] == [{"job": 1}, {"job": 2}]
        with pytest.raises(simple.Empty):
            simple.get_nowait()
    finally:
        simple.close()
        with conn.channel() as channel:
            channel.queue_delete(uid)
            channel.exchange_delete(uid)


def test_simple_queue_qsize_and_clear_report_ready_messages(conn, uid):
    simple = conn.SimpleQueue(uid)
    try:
        for i in range(3):
            simple.put(i)
        wait_ready(conn, kombu.Queue(uid), 3)
        assert simple.qsize() == 3
        assert simple.clear() == 3
        assert simple.qsize() == 0
    finally:
        simple.close()
        with conn.channel() as channel:
            channel.queue_delete(uid)
            channel.exchange_delete(uid)


def test_topic_exchange_delivers_only_matching_routing_keys(conn, uid):
    exchange = kombu.Exchange(uid, type="topic", auto_delete=True)
    bindings = {
        "kern": "kern.*",
        "critical": "*.critical",
        "everything": "#",
        "deep": "app.#.error",
    }
    queues = {
        name: kombu.Queue(f"{uid}-{name}", exchange, routing_key=key, exclusive=True)
        for name, key in bindings.items()
    }
    keys = ["kern.critical", "kern.info", "app.db.error", "app.error", "cron.critical", "app.x.y"]
    got: dict[str, set[str]] = {name: set() for name in queues}

    def collector(name: str) -> Callable[[Message], None]:
        def on_message(message: Message) -> None:
            got[name].add(message.delivery_info["routing_key"])
            message.ack()

        return on_message

    with conn.channel() as channel:
        for queue in queues.values():
            queue(channel).declare()
        producer = kombu.Producer(channel, exchange=exchange)
        for key in keys:
            producer.publish(key, routing_key=key)
        consumers = [
            kombu.Consumer(conn, queues=[queue], on_message=collector(name))
            for name, queue in queues.items()
        ]
        for consumer in consumers:
            consumer.consume()
        drain_until(conn, lambda: len(got["everything"]) == len(keys))
        drain_quietly(conn)
        for consumer in consumers:
            consumer.cancel()
    assert got == {
        "kern": {"kern.critical", "kern.info"},
        "critical": {"kern.critical", "cron.critical"},
        "everything": set(keys),
        "deep": {"app.db.error", "app.error"},
    }


def test_message_ack_removes_it_from_the_queue(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    with conn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        kombu.Producer(channel).publish("payload", routing_key=uid)
        message = get_within(bound)
        assert message.payload == "payload"
        message.ack()
        assert message.acknowledged
        # Nothing is left unacked: closing the channel puts nothing back.
    kombu.Producer(conn).publish("marker", routing_key=uid)
    with conn.channel() as channel:
        assert get_within(queue(channel)).payload == "marker"
        assert queue(channel).get() is None


def test_message_requeue_redelivers_with_redelivered_flag(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    received: list[Message] = []
    with conn.channel() as channel:
        queue(channel).declare()
        kombu.Producer(channel).publish("again", routing_key=uid)
        with kombu.Consumer(conn, queues=[queue], on_message=received.append):
            drain_until(conn, lambda: len(received) == 1)
            assert received[0].delivery_info["redelivered"] is False
            received[0].requeue()
            drain_until(conn, lambda: len(received) == 2)
            assert received[1].body == received[0].body
            assert received[1].delivery_info["redelivered"] is True
            received[1].ack()


def test_message_reject_without_requeue_drops_it(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    with conn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        kombu.Producer(channel).publish("poison", routing_key=uid)
        message = get_within(bound)
        message.reject(requeue=False)
        assert message.acknowledged
        # A requeued message would come back before a later publish on the same channel.
        kombu.Producer(channel).publish("marker", routing_key=uid)
        assert get_within(bound).payload == "marker"


def test_message_reject_with_requeue_puts_it_back_redelivered(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    with conn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        kombu.Producer(channel).publish("later", routing_key=uid)
        message = get_within(bound)
        assert message.delivery_info["redelivered"] is False
        message.reject(requeue=True)
        again = get_within(bound)
        assert again.payload == "later"
        assert again.delivery_info["redelivered"] is True
        again.ack()


def test_unacked_messages_return_to_queue_when_channel_closes(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    with conn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        producer = kombu.Producer(channel)
        for i in range(3):
            producer.publish(i, routing_key=uid)
        taken = [get_within(bound) for _ in range(3)]
        assert [m.payload for m in taken] == [0, 1, 2]
        assert ready_count(conn, queue) == 0
    # Closing the channel without acking requeues every message it held.
    wait_ready(conn, queue, 3)
    with conn.channel() as channel:
        again = [get_within(queue(channel)) for _ in range(3)]
    assert [m.payload for m in again] == [0, 1, 2]
    assert all(m.delivery_info["redelivered"] for m in again)


def test_consumer_qos_prefetch_count_limits_unacked_deliveries(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    received: list[Message] = []
    with conn.channel() as channel:
        queue(channel).declare()
        producer = kombu.Producer(channel)
        for i in range(4):
            producer.publish(i, routing_key=uid)
        wait_ready(conn, queue, 4)
        with kombu.Consumer(conn, queues=[queue], on_message=received.append, prefetch_count=1):
            drain_until(conn, lambda: len(received) == 1)
            assert ready_count(conn, queue) == 3
            drain_quietly(conn)
            assert len(received) == 1
            received[0].ack()
            drain_until(conn, lambda: len(received) == 2)
            assert [m.payload for m in received] == [0, 1]
            assert ready_count(conn, queue) == 2


def test_publish_with_retry_reconnects_after_connection_loss(conn, uid):
    queue = kombu.Queue(uid, exclusive=False, auto_delete=False)
    try:
        with conn.channel() as channel:
            queue(channel).declare()
        producer = kombu.Producer(conn)
        producer.publish("before", routing_key=uid)
        # Break the socket under the connection: the next publish fails, then is retried.
        conn.connection.sock.shutdown(socket.SHUT_RDWR)
        producer.publish("after", routing_key=uid, retry=True, retry_policy=RETRY_POLICY)
        wait_ready(conn, queue, 2)
        with conn.channel() as channel:
            bound = queue(channel)
            assert [get_within(bound).payload for _ in range(2)] == ["before", "after"]
    finally:
        with conn.channel() as channel:
            queue(channel).delete()


def test_connection_ensure_calls_errback_and_retries_on_connection_loss(conn, uid):
    queue = kombu.Queue(uid, exclusive=False, auto_delete=False)
    errors: list[Exception] = []
    try:
        with conn.channel() as channel:
            queue(channel).declare()
        producer = kombu.Producer(conn)
        publish = conn.ensure(
            producer,
            producer.publish,
            errback=lambda exc, interval: errors.append(exc),
            **RETRY_POLICY,
        )
        conn.connection.sock.shutdown(socket.SHUT_RDWR)
        publish("ensured", routing_key=uid)
        assert len(errors) >= 1
        wait_ready(conn, queue, 1)
    finally:
        with conn.channel() as channel:
            queue(channel).delete()


def test_publish_declare_list_creates_exchange_queue_and_binding(conn, uid):
    exchange = kombu.Exchange(uid, type="direct", auto_delete=True)
    queue = kombu.Queue(uid, exchange, routing_key="rk", exclusive=True)
    with conn.channel() as channel:
        producer = kombu.Producer(channel, exchange=exchange)
        producer.publish({"declared": True}, routing_key="rk", declare=[queue])
        bound = queue(channel)
        message = get_within(bound)
        assert message.payload == {"declared": True}
        message.ack()


def test_maybe_declare_declares_queue_once_and_caches_it(conn, uid):
    queue = kombu.Queue(uid, routing_key=uid, durable=False, auto_delete=False)
    try:
        with conn.channel() as channel:
            assert maybe_declare(queue, channel) is True
            assert maybe_declare(queue, channel) is False
            kombu.Producer(channel).publish("present", routing_key=uid)
        wait_ready(conn, queue, 1)
    finally:
        with conn.channel() as channel:
            queue(channel).delete()


def test_queue_purge_returns_number_of_messages_removed(conn, uid):
    queue = kombu.Queue(uid, exclusive=True)
    with conn.channel() as channel:
        bound = queue(channel)
        bound.declare()
        producer = kombu.Producer(channel)
        for i in range(5):
            producer.publish(i, routing_key=uid)
        wait_ready(conn, queue, 5)
        assert bound.purge() == 5
        assert ready_count(conn, queue) == 0
        assert bound.get() is None


def test_consumer_purge_empties_all_its_queues(conn, uid):
    queues = [kombu.Queue(f"{uid}-{i}", exclusive=True) for i in range(2)]
    with conn.channel() as channel:
        producer = kombu.Producer(channel)
        for queue in queues:
            queue(channel).declare()
            for _ in range(2):
                producer.publish("x", routing_key=queue.name)
        for queue in queues:
            wait_ready(conn, queue, 2)
        consumer = kombu.Consumer(channel, queues=queues)
        assert consumer.purge() == 4
    assert [ready_count(conn, queue) for queue in queues] == [0, 0]


def test_confirm_publish_transport_option_makes_publish_wait_for_the_broker(broker, uid):
    queue = kombu.Queue(uid, exclusive=True)
    options = {"confirm_publish": True}
    with kombu.Connection(broker.url, connect_timeout=5, transport_options=options) as conn:
        with conn.channel() as channel:
            queue(channel).declare()
            producer = kombu.Producer(channel)
            for i in range(3):
                producer.publish(i, routing_key=uid)
        # Each publish returned only after the broker's basic.ack, so all three are queued.
        assert ready_count(conn, queue) == 3


def test_passive_declare_of_missing_queue_raises_not_found_404(conn, uid):
    queue = kombu.Queue(f"{uid}-missing")
    with conn.channel() as channel, pytest.raises(amqp.exceptions.NotFound) as info:
        queue(channel).queue_declare(passive=True)
    assert info.value.reply_code == 404
    assert "no queue" in info.value.reply_text
    assert f"{uid}-missing" in info.value.reply_text
    # The connection is still usable on another channel.
    with conn.channel() as channel:
        kombu.Queue(uid, exclusive=True)(channel).declare()
