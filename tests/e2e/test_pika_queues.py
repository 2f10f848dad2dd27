"""End-to-end tests with pika: queue declare, exclusive and auto-delete queues, bind, purge, delete."""

from __future__ import annotations

from typing import Any

from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    channel_error,
    connect,
    drain,
    get_message,
    queue_exists,
    ready_count,
    wait_queue_gone,
    wait_ready_count,
)


def publish_n(ch: BlockingChannel, queue: str, n: int) -> None:
    """Publish `n` messages to `queue` through the default exchange and wait until all are in."""
    for i in range(n):
        ch.basic_publish("", queue, str(i).encode())
    wait_ready_count(ch, queue, n)


# --- declare --------------------------------------------------------------------------------


def test_server_named_queue_gets_amq_gen_prefix(ch: BlockingChannel) -> None:
    name = ch.queue_declare("", exclusive=True).method.queue
    assert name.startswith("amq.gen-")
    assert len(name) > len("amq.gen-")


def test_server_named_queues_are_distinct_and_usable(ch: BlockingChannel) -> None:
    first = ch.queue_declare("", exclusive=True).method.queue
    second = ch.queue_declare("", exclusive=True).method.queue
    assert first != second
    ch.basic_publish("", second, b"to the second")
    assert get_message(ch, second, auto_ack=True)[2] == b"to the second"
    assert drain(ch, first) == []


def test_queue_declare_ok_reports_name_and_counts(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ok = ch.queue_declare(q).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    publish_n(ch, q, 2)
    ch.basic_consume(q, lambda *_: None)
    ok = ch.queue_declare(q, passive=True).method
    assert ok.queue == q
    assert ok.consumer_count == 1


def test_queue_declare_with_amq_prefix_is_access_refused(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(403, "ACCESS_REFUSED", "amq."):
        ch.queue_declare(f"amq.{uid}")
    assert conn.is_open


def test_durable_queue_redeclared_durable_is_ok_and_passive_finds_it(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, durable=True)
    ch.queue_declare(q, durable=True)
    assert ch.queue_declare(q, passive=True).method.queue == q


def test_durable_queue_redeclared_transient_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, durable=True)
    with channel_error(406, "PRECONDITION_FAILED", "durable", q):
        ch.queue_declare(q, durable=False)
    assert conn.is_open


def test_transient_queue_redeclared_durable_is_precondition_failed(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, durable=False)
    with channel_error(406, "PRECONDITION_FAILED", "durable"):
        ch.queue_declare(q, durable=True)


def test_queue_redeclare_with_other_auto_delete_is_precondition_failed(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    with channel_error(406, "PRECONDITION_FAILED", "auto_delete"):
        ch.queue_declare(q, auto_delete=True)


def test_queue_redeclare_with_other_argument_value_is_precondition_failed(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, arguments={"x-max-length": 10})
    with channel_error(406, "PRECONDITION_FAILED", "inequivalent", "x-max-length"):
        ch.queue_declare(q, arguments={"x-max-length": 20})


def test_queue_redeclare_without_a_declared_argument_is_precondition_failed(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, arguments={"x-message-ttl": 60000})
    with channel_error(406, "PRECONDITION_FAILED", "x-message-ttl"):
        ch.queue_declare(q)


def test_queue_redeclare_with_same_arguments_is_ok(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, durable=True, arguments={"x-max-length": 10, "x-message-ttl": 60000})
    ch.queue_declare(q, durable=True, arguments={"x-message-ttl": 60000, "x-max-length": 10})
    assert ch.is_open


def test_passive_declare_ignores_flags_and_arguments(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, arguments={"x-max-length": 10})
    ok = ch.queue_declare(q, passive=True, durable=True, arguments={"x-max-length": 20})
    assert ok.method.queue == q


def test_passive_declare_of_missing_queue_is_not_found_naming_the_queue(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(404, "NOT_FOUND", "no queue", uid):
        ch.queue_declare(uid, passive=True)
    assert conn.is_open


# --- exclusive ------------------------------------------------------------------------------


def test_exclusive_queue_declare_from_another_connection_is_resource_locked(
    ch: BlockingChannel, other_conn: BlockingConnection, uid: str
) -> None:
    ch.queue_declare(uid, exclusive=True)
    with channel_error(405, "RESOURCE_LOCKED", uid):
        other_conn.channel().queue_declare(uid, exclusive=True)
    assert other_conn.is_open


def test_exclusive_queue_passive_declare_from_another_connection_is_resource_locked(
    ch: BlockingChannel, other_conn: BlockingConnection, uid: str
) -> None:
    ch.queue_declare(uid, exclusive=True)
    with channel_error(405, "RESOURCE_LOCKED"):
        other_conn.channel().queue_declare(uid, passive=True)


def test_exclusive_queue_consume_from_another_connection_is_resource_locked(
    ch: BlockingChannel, other_conn: BlockingConnection, uid: str
) -> None:
    ch.queue_declare(uid, exclusive=True)
    with channel_error(405, "RESOURCE_LOCKED"):
        other_conn.channel().basic_consume(uid, lambda *_: None)


def test_exclusive_queue_is_usable_from_another_channel_of_its_connection(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    ch.queue_declare(uid, exclusive=True)
    other = conn.channel()
    other.queue_declare(uid, exclusive=True)
    other.basic_publish("", uid, b"same connection")
    assert get_message(other, uid, auto_ack=True)[2] == b"same connection"


def test_exclusive_queue_is_deleted_when_its_connection_closes(
    broker: Any, other_conn: BlockingConnection, uid: str
) -> None:
    owner = connect(broker)
    owner.channel().queue_declare(uid, exclusive=True)
    assert queue_exists(owner, uid)
    owner.close()
    wait_queue_gone(other_conn, uid)
    # The name is free again for anyone.
    ch = other_conn.channel()
    ch.queue_declare(uid, exclusive=True)


# --- auto-delete ----------------------------------------------------------------------------


def test_auto_delete_queue_is_deleted_when_last_consumer_cancels(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, auto_delete=True)
    first = ch.basic_consume(q, lambda *_: None)
    second = ch.basic_consume(q, lambda *_: None)
    ch.basic_cancel(first)
    assert queue_exists(conn, q)
    ch.basic_cancel(second)
    wait_queue_gone(conn, q)


def test_auto_delete_queue_survives_until_it_had_a_consumer(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"kept")
    assert get_message(ch, q, auto_ack=True)[2] == b"kept"
    assert queue_exists(conn, q)


def test_auto_delete_queue_is_deleted_when_consumer_channel_closes(
    conn: BlockingConnection, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    consumer_ch = conn.channel()
    consumer_ch.queue_declare(q, auto_delete=True)
    consumer_ch.basic_consume(q, lambda *_: None)
    consumer_ch.close()
    wait_queue_gone(conn, q)


# --- bind / unbind --------------------------------------------------------------------------


def test_queue_bind_then_publish_routes_to_queue(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    q = cleanup.queue(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="rk")
    ch.basic_publish(x, "rk", b"bound")
    assert get_message(ch, q, auto_ack=True)[2] == b"bound"


def test_queue_unbind_stops_routing(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    x = cleanup.exchange(uid)
    q = cleanup.queue(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="rk")
    ch.queue_unbind(q, x, routing_key="rk")
    ch.basic_publish(x, "rk", b"unbound")
    ch.basic_publish("", q, b"marker")
    assert get_message(ch, q, auto_ack=True)[2] == b"marker"
    assert drain(ch, q) == []


def test_queue_bind_is_idempotent(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    x = cleanup.exchange(uid)
    q = cleanup.queue(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(q)
    ch.queue_bind(q, x, routing_key="rk")
    ch.queue_bind(q, x, routing_key="rk")
    ch.queue_unbind(q, x, routing_key="rk")
    ch.basic_publish(x, "rk", b"unbound")
    ch.basic_publish("", q, b"marker")
    assert get_message(ch, q, auto_ack=True)[2] == b"marker"


def test_queue_unbind_of_missing_binding_is_ok(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    q = cleanup.queue(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.queue_declare(q)
    ch.queue_unbind(q, x, routing_key="never-bound")
    assert ch.is_open


def test_queue_bind_to_missing_exchange_is_not_found(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    with channel_error(404, "NOT_FOUND", "no exchange", f"{uid}-missing"):
        ch.queue_bind(q, f"{uid}-missing", routing_key="rk")
    assert conn.is_open


def test_queue_bind_of_missing_queue_is_not_found(ch: BlockingChannel, uid: str) -> None:
    with channel_error(404, "NOT_FOUND", "no queue", uid):
        ch.queue_bind(uid, "amq.direct", routing_key="rk")


def test_queue_bind_to_default_exchange_is_access_refused(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    with channel_error(403, "ACCESS_REFUSED", "default exchange"):
        ch.queue_bind(q, "", routing_key="rk")


# --- purge / delete -------------------------------------------------------------------------


def test_queue_purge_returns_the_number_of_messages_removed(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    publish_n(ch, q, 3)
    assert ch.queue_purge(q).method.message_count == 3
    assert ready_count(ch, q) == 0
    assert ch.queue_purge(q).method.message_count == 0


def test_queue_purge_leaves_unacked_messages_alone(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    publish_n(ch, q, 3)
    consumer_ch = conn.channel()
    assert get_message(consumer_ch, q)[2] == b"0"
    assert ch.queue_purge(q).method.message_count == 2
    consumer_ch.close()  # the unacked message goes back
    method, _props, body = get_message(ch, q, auto_ack=True)
    assert (body, method.redelivered) == (b"0", True)


def test_queue_purge_of_missing_queue_is_not_found(ch: BlockingChannel, uid: str) -> None:
    with channel_error(404, "NOT_FOUND", uid):
        ch.queue_purge(uid)


def test_queue_delete_returns_the_message_count(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    publish_n(ch, q, 2)
    assert ch.queue_delete(q).method.message_count == 2
    assert not queue_exists(conn, q)


def test_queue_delete_removes_its_bindings(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    x = cleanup.exchange(uid)
    q = cleanup.queue(uid)
    ch.exchange_declare(x, exchange_type="fanout")
    ch.queue_declare(q)
    ch.queue_bind(q, x)
    ch.queue_delete(q)
    ch.queue_declare(q)
    ch.basic_publish(x, "", b"old binding")
    ch.basic_publish("", q, b"marker")
    assert get_message(ch, q, auto_ack=True)[2] == b"marker"
    assert drain(ch, q) == []


def test_queue_delete_if_unused_with_a_consumer_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *_: None)
    with channel_error(406, "PRECONDITION_FAILED", "in use"):
        conn.channel().queue_delete(q, if_unused=True)
    assert queue_exists(conn, q)


def test_queue_delete_if_unused_without_consumers_deletes_it(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    publish_n(ch, q, 1)
    assert ch.queue_delete(q, if_unused=True).method.message_count == 1
    assert not queue_exists(conn, q)


def test_queue_delete_if_empty_with_messages_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    publish_n(ch, q, 1)
    with channel_error(406, "PRECONDITION_FAILED", "not empty"):
        ch.queue_delete(q, if_empty=True)
    assert queue_exists(conn, q)


def test_queue_delete_if_empty_of_empty_queue_deletes_it(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    ch.queue_delete(q, if_empty=True)
    assert not queue_exists(conn, q)


def test_queue_delete_of_missing_queue_is_ok(ch: BlockingChannel, uid: str) -> None:
    assert ch.queue_delete(uid).method.message_count == 0
