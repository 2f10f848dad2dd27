"""End-to-end tests with pika: publisher confirms, transactions and channel.flow."""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from pika import spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    channel_error,
    connection_error,
    drain,
    get_message,
    pump_until,
    ready_count,
)

# --- publisher confirms ---------------------------------------------------------------------


def test_confirm_select_is_answered_with_select_ok(ch: BlockingChannel) -> None:
    ch.confirm_delivery()
    assert ch.is_open


def test_confirmed_publish_is_acked_and_enqueued(ch: BlockingChannel, queue: str) -> None:
    ch.confirm_delivery()
    # pika's basic_publish returns only after the broker's basic.ack (it raises on a nack).
    ch.basic_publish("", queue, b"confirmed")
    # After the ack the message is in the queue: no polling needed.
    assert ready_count(ch, queue) == 1
    assert drain(ch, queue) == [b"confirmed"]


def test_confirmed_persistent_publish_to_durable_queue_is_acked(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q, durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"persistent", pika.BasicProperties(delivery_mode=2))
    assert ready_count(ch, q) == 1


def test_many_confirmed_publishes_are_all_acked_in_order(ch: BlockingChannel, queue: str) -> None:
    ch.confirm_delivery()
    for i in range(200):
        ch.basic_publish("", queue, str(i).encode())
    assert drain(ch, queue) == [str(i).encode() for i in range(200)]


def test_pipelined_publishes_are_confirmed_with_sequence_numbers(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    # Through pika's lower-level channel, so that many publishes are in flight at once and the
    # broker may ack several with `multiple`.
    impl = ch._impl
    select_ok: list[Any] = []
    confirms: list[Any] = []
    impl.confirm_delivery(ack_nack_callback=confirms.append, callback=select_ok.append)
    pump_until(conn, lambda: bool(select_ok))
    total = 500
    for i in range(total):
        impl.basic_publish("", queue, str(i).encode())

    acked: set[int] = set()

    def all_acked() -> bool:
        while confirms:
            frame = confirms.pop(0)
            assert isinstance(frame.method, spec.Basic.Ack), frame
            tag = frame.method.delivery_tag
            assert tag not in acked, f"tag {tag} confirmed twice"
            if frame.method.multiple:
                acked.update(t for t in range(1, tag + 1))
            else:
                acked.add(tag)
        return len(acked) >= total

    pump_until(conn, all_acked)
    assert acked == set(range(1, total + 1))
    assert ready_count(ch, queue) == total


def test_confirmed_publish_without_route_is_acked(ch: BlockingChannel, uid: str) -> None:
    ch.confirm_delivery()
    ch.basic_publish("", f"{uid}-missing", b"dropped but acked")
    assert ch.is_open


def test_confirmed_mandatory_publish_without_route_is_returned_then_acked(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.confirm_delivery()
    # pika raises UnroutableError only when the basic.return came before the basic.ack.
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(
            x, "nowhere", b"bounced", pika.BasicProperties(message_id="m1"), mandatory=True
        )
    (returned,) = info.value.messages
    assert returned.method.reply_code == 312
    assert "NO_ROUTE" in returned.method.reply_text
    assert (returned.method.exchange, returned.method.routing_key) == (x, "nowhere")
    assert returned.body == b"bounced"
    assert returned.properties.message_id == "m1"
    # The channel stays usable.
    ch.basic_publish("", x, b"next")
    assert ch.is_open


def test_confirmed_mandatory_publish_with_route_is_acked_without_return(
    ch: BlockingChannel, queue: str
) -> None:
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"routed", mandatory=True)
    assert drain(ch, queue) == [b"routed"]


def test_confirmed_publish_to_missing_exchange_closes_channel_with_404(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    ch.confirm_delivery()
    with channel_error(404, "NOT_FOUND", uid):
        ch.basic_publish(uid, "key", b"nowhere")
    assert conn.is_open


def test_confirm_select_on_transactional_channel_is_precondition_failed(
    ch: BlockingChannel,
) -> None:
    ch.tx_select()
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.confirm_delivery()


def test_tx_select_on_confirm_channel_is_precondition_failed(ch: BlockingChannel) -> None:
    ch.confirm_delivery()
    with channel_error(406, "PRECONDITION_FAILED"):
        ch.tx_select()


# --- transactions ---------------------------------------------------------------------------


def test_tx_publish_is_not_enqueued_before_commit(ch: BlockingChannel, queue: str) -> None:
    ch.tx_select()
    ch.basic_publish("", queue, b"pending")
    assert ready_count(ch, queue) == 0
    assert ch.basic_get(queue) == (None, None, None)


def test_tx_commit_enqueues_the_publishes_in_order(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.tx_select()
    for body in (b"a", b"b", b"c"):
        ch.basic_publish("", queue, body)
    ch.tx_commit()
    assert drain(conn.channel(), queue) == [b"a", b"b", b"c"]


def test_tx_rollback_discards_the_publishes(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.tx_select()
    ch.basic_publish("", queue, b"discarded")
    ch.tx_rollback()
    ch.tx_commit()  # nothing is left to commit
    assert ready_count(ch, queue) == 0
    assert drain(conn.channel(), queue) == []


def test_tx_channel_stays_transactional_after_commit(ch: BlockingChannel, queue: str) -> None:
    ch.tx_select()
    ch.basic_publish("", queue, b"first")
    ch.tx_commit()
    ch.basic_publish("", queue, b"second")
    assert ready_count(ch, queue) == 1
    ch.tx_commit()
    assert drain(ch, queue) == [b"first", b"second"]


def test_tx_rolled_back_ack_leaves_the_message_unacked(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"keep me")
    ch.tx_select()
    method, _props, _body = get_message(ch, queue)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    ch.close()  # the message is still unacked, so it goes back to the queue
    method, _props, body = get_message(conn.channel(), queue, auto_ack=True)
    assert (body, method.redelivered) == (b"keep me", True)


def test_tx_committed_ack_removes_the_message(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"acked")
    ch.basic_publish("", queue, b"marker")
    ch.tx_select()
    method, _props, _body = get_message(ch, queue)
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert drain(conn.channel(), queue) == [b"marker"]


def test_tx_ack_can_be_sent_again_after_rollback(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"acked twice")
    ch.tx_select()
    method, _props, _body = get_message(ch, queue)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    assert drain(conn.channel(), queue) == []


def test_tx_mandatory_unroutable_is_returned_at_commit(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    returned: list[spec.Basic.Return] = []
    ch.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    ch.tx_select()
    ch.basic_publish("", f"{uid}-missing", b"bounced", mandatory=True)
    ch.tx_commit()
    pump_until(conn, lambda: bool(returned))
    assert returned[0].reply_code == 312


def test_tx_commit_without_select_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    with channel_error(406, "PRECONDITION_FAILED", "not transactional"):
        ch.tx_commit()
    assert conn.is_open


def test_tx_rollback_without_select_is_precondition_failed(ch: BlockingChannel) -> None:
    with channel_error(406, "PRECONDITION_FAILED", "not transactional"):
        ch.tx_rollback()


def test_tx_select_twice_is_ok(ch: BlockingChannel) -> None:
    ch.tx_select()
    ch.tx_select()
    assert ch.is_open


# --- channel.flow ---------------------------------------------------------------------------


def test_channel_flow_active_is_answered_with_flow_ok_active(
    ch: BlockingChannel, queue: str
) -> None:
    assert ch.flow(True) is True
    ch.basic_publish("", queue, b"still flowing")
    assert get_message(ch, queue, auto_ack=True)[2] == b"still flowing"


def test_channel_flow_inactive_pauses_deliveries_until_resumed(
    broker: Any, conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    if not broker.is_amqplite:
        # RabbitMQ refuses a client's channel.flow(active=false) with connection.close 540;
        # amqplite implements it: deliveries to the channel pause until flow(True).
        with connection_error(540, "NOT_IMPLEMENTED"):
            ch.flow(False)
        assert conn.is_closed
        return
    received: list[bytes] = []
    ch.basic_consume(queue, lambda c, m, p, body: received.append(body), auto_ack=True)
    assert ch.flow(False) is False
    ch.basic_publish("", queue, b"held back")
    conn.process_data_events(time_limit=0.3)
    assert received == []
    assert ch.flow(True) is True
    pump_until(conn, lambda: received == [b"held back"])
