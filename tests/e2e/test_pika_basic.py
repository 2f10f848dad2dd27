"""End-to-end tests with pika: publish, return, consume, get, qos, ack/nack/reject, requeue, bodies."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import random
from typing import Any

import pika
from pika import spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    channel_error,
    connect,
    connection,
    connection_error,
    drain,
    get_message,
    pump_until,
    ready_count,
    wait_ready_count,
)

Delivery = tuple[spec.Basic.Deliver, spec.BasicProperties, bytes]

# Settle time for "no further delivery happens" checks: deliveries that should not happen at
# all are given this long to show up before the test looks at what arrived.
SETTLE = 0.3


def publish_bodies(ch: BlockingChannel, queue: str, bodies: list[bytes]) -> None:
    """Publish `bodies` to `queue` in order and wait until all of them are ready."""
    before = ready_count(ch, queue)
    for body in bodies:
        ch.basic_publish("", queue, body)
    wait_ready_count(ch, queue, before + len(bodies))


def start_consumer(ch: BlockingChannel, queue: str, **kwargs: Any) -> tuple[str, list[Delivery]]:
    """basic.consume on `queue`; return the consumer tag and the list deliveries are appended to."""
    received: list[Delivery] = []

    def on_message(_ch: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
        received.append((method, props, body))

    tag = ch.basic_consume(queue, on_message, **kwargs)
    return tag, received


def wait_deliveries(
    conn: BlockingConnection, received: list[Delivery], n: int, *, settle: bool = False
) -> None:
    """Process events until `received` holds `n` deliveries (then SETTLE longer, for extras)."""
    pump_until(conn, lambda: len(received) >= n)
    if settle:
        conn.process_data_events(time_limit=SETTLE)


def raw_consume(conn: BlockingConnection, ch: BlockingChannel, queue: str, tag: str) -> str:
    """Send basic.consume with `tag` as is (pika would make its own); return the tag of consume-ok."""
    consume_ok: list[Any] = []
    # BlockingChannel listens for every consume-ok of the channel; the block resets that listener.
    with ch._basic_consume_ok_result:
        ch._impl._rpc(
            spec.Basic.Consume(queue=queue, consumer_tag=tag),
            consume_ok.append,
            [spec.Basic.ConsumeOk],
        )
        pump_until(conn, lambda: bool(consume_ok))
    return str(consume_ok[0].method.consumer_tag)


def raw_cancel(conn: BlockingConnection, ch: BlockingChannel, tag: str) -> str:
    """Send basic.cancel for `tag` even if pika does not know it; return the tag of cancel-ok."""
    cancel_ok: list[Any] = []
    ch._impl._rpc(spec.Basic.Cancel(consumer_tag=tag), cancel_ok.append, [spec.Basic.CancelOk])
    pump_until(conn, lambda: bool(cancel_ok))
    return str(cancel_ok[0].method.consumer_tag)


# --- publish and basic.return ---------------------------------------------------------------


def test_mandatory_publish_without_route_is_returned_with_312_no_route(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    returned: list[tuple[spec.Basic.Return, spec.BasicProperties, bytes]] = []
    ch.add_on_return_callback(
        lambda _ch, method, props, body: returned.append((method, props, body))
    )
    props = pika.BasicProperties(content_type="text/plain", headers={"k": "v"})
    ch.basic_publish(x, "nowhere", b"unroutable", props, mandatory=True)
    pump_until(conn, lambda: bool(returned))
    method, got_props, body = returned[0]
    assert (method.reply_code, method.exchange, method.routing_key) == (312, x, "nowhere")
    assert "NO_ROUTE" in method.reply_text
    assert body == b"unroutable"
    assert got_props.content_type == "text/plain"
    assert got_props.headers == {"k": "v"}


def test_mandatory_publish_to_default_exchange_without_queue_is_returned(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    returned: list[spec.Basic.Return] = []
    ch.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    ch.basic_publish("", f"{uid}-missing", b"x", mandatory=True)
    pump_until(conn, lambda: bool(returned))
    assert returned[0].reply_code == 312
    assert returned[0].routing_key == f"{uid}-missing"


def test_non_mandatory_publish_without_route_is_dropped_silently(
    conn: BlockingConnection, ch: BlockingChannel, queue: str, uid: str
) -> None:
    returned: list[spec.Basic.Return] = []
    ch.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    ch.basic_publish("", f"{uid}-missing", b"dropped")
    # Returns come in publish order: once the mandatory one sent after it is back, a return
    # of the first one would have been seen already.
    ch.basic_publish("", f"{uid}-missing", b"returned", mandatory=True)
    pump_until(conn, lambda: bool(returned))
    assert len(returned) == 1
    assert ch.is_open


def test_mandatory_publish_with_a_route_is_not_returned(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    returned: list[spec.Basic.Return] = []
    ch.add_on_return_callback(lambda _ch, method, _props, _body: returned.append(method))
    ch.basic_publish("", queue, b"routed", mandatory=True)
    assert get_message(ch, queue, auto_ack=True)[2] == b"routed"
    conn.process_data_events(time_limit=0)
    assert returned == []


# --- consume and cancel ---------------------------------------------------------------------


def test_consume_with_client_tag_delivers_with_that_tag(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tag, received = start_consumer(ch, queue, consumer_tag="my-client-tag", auto_ack=True)
    assert tag == "my-client-tag"
    ch.basic_publish("", queue, b"hello")
    wait_deliveries(conn, received, 1)
    method, _props, body = received[0]
    assert (method.consumer_tag, body, method.redelivered) == ("my-client-tag", b"hello", False)
    assert method.routing_key == queue
    assert method.exchange == ""


def test_consume_with_empty_tag_gets_a_server_made_tag(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tag = raw_consume(conn, ch, queue, "")
    assert tag
    received: list[Any] = []
    ch._impl._consumers[tag] = lambda _ch, method, _props, body: received.append((method, body))
    ch.basic_publish("", queue, b"to the server tag")
    pump_until(conn, lambda: bool(received))
    assert received[0][0].consumer_tag == tag
    assert received[0][1] == b"to the server tag"


def test_consumer_with_server_made_tag_can_be_cancelled(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tag = raw_consume(conn, ch, queue, "")
    assert raw_cancel(conn, ch, tag) == tag
    assert ch.queue_declare(queue, passive=True).method.consumer_count == 0


def test_server_made_consumer_tags_are_unique_per_channel(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tags = [raw_consume(conn, ch, queue, "") for _ in range(3)]
    assert all(tags)
    assert len(set(tags)) == 3


def test_consume_reusing_a_tag_on_the_channel_is_530_not_allowed(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_consume(queue, lambda *_: None, consumer_tag="dup")
    # pika refuses duplicate tags itself, so the second basic.consume is sent directly.
    with connection_error(530, "NOT_ALLOWED", "dup"):
        raw_consume(conn, ch, queue, "dup")


def test_consume_on_missing_queue_is_not_found(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(404, "NOT_FOUND", uid):
        ch.basic_consume(f"{uid}-missing", lambda *_: None)
    assert conn.is_open


def test_cancel_stops_deliveries_and_leaves_messages_in_queue(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tag, received = start_consumer(ch, queue, auto_ack=True)
    ch.basic_publish("", queue, b"before")
    wait_deliveries(conn, received, 1)
    assert ch.basic_cancel(tag) == []
    publish_bodies(ch, queue, [b"after"])
    conn.process_data_events(time_limit=0)
    assert [body for _m, _p, body in received] == [b"before"]
    assert get_message(ch, queue, auto_ack=True)[2] == b"after"


def test_cancel_of_unknown_tag_is_answered_with_cancel_ok(
    conn: BlockingConnection, ch: BlockingChannel
) -> None:
    assert raw_cancel(conn, ch, "never-used") == "never-used"
    assert ch.is_open


def test_consumers_on_one_queue_are_served_round_robin(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    tag_a, got_a = start_consumer(ch, queue, auto_ack=True)
    tag_b, got_b = start_consumer(ch, queue, auto_ack=True)
    for i in range(6):
        ch.basic_publish("", queue, str(i).encode())
    pump_until(conn, lambda: len(got_a) + len(got_b) == 6)
    assert len(got_a) == 3
    assert len(got_b) == 3
    assert {m.consumer_tag for m, _p, _b in got_a} == {tag_a}
    assert {m.consumer_tag for m, _p, _b in got_b} == {tag_b}


def test_exclusive_consume_when_another_consumer_exists_is_access_refused(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_consume(queue, lambda *_: None)
    other = conn.channel()
    with channel_error(403, "ACCESS_REFUSED", queue):
        other.basic_consume(queue, lambda *_: None, exclusive=True)
    assert conn.is_open
    assert ch.is_open


def test_consume_when_an_exclusive_consumer_exists_is_access_refused(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_consume(queue, lambda *_: None, exclusive=True)
    with connection(broker) as other_conn:
        with channel_error(403, "ACCESS_REFUSED", queue):
            other_conn.channel().basic_consume(queue, lambda *_: None)
        assert other_conn.is_open


def test_exclusive_consumer_receives_the_messages(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    _tag, received = start_consumer(ch, queue, exclusive=True, auto_ack=True)
    ch.basic_publish("", queue, b"mine")
    wait_deliveries(conn, received, 1)
    assert received[0][2] == b"mine"


def test_consumer_gets_basic_cancel_when_its_queue_is_deleted(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    cancels: list[Any] = []
    ch.add_on_cancel_callback(cancels.append)
    tag = ch.basic_consume(queue, lambda *_: None)
    conn.channel().queue_delete(queue)
    pump_until(conn, lambda: bool(cancels))
    assert cancels[0].method.consumer_tag == tag
    assert ch.is_open
    assert ch.consumer_tags == []


# --- basic.get ------------------------------------------------------------------------------


def test_basic_get_returns_message_and_remaining_count(ch: BlockingChannel, queue: str) -> None:
    publish_bodies(ch, queue, [b"a", b"b", b"c"])
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert body == b"a"
    assert method.message_count == 2
    assert method.redelivered is False
    assert method.routing_key == queue


def test_basic_get_on_empty_queue_is_get_empty(ch: BlockingChannel, queue: str) -> None:
    assert ch.basic_get(queue) == (None, None, None)
    assert ch.is_open


def test_basic_get_on_missing_queue_is_not_found(ch: BlockingChannel, uid: str) -> None:
    with channel_error(404, "NOT_FOUND", uid):
        ch.basic_get(f"{uid}-missing")


def test_delivery_tags_count_up_from_one_per_channel(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"1", b"2", b"3"])
    other = conn.channel()
    tags = [get_message(ch, queue)[0].delivery_tag, get_message(ch, queue)[0].delivery_tag]
    assert tags == [1, 2]
    assert get_message(other, queue)[0].delivery_tag == 1


# --- qos ------------------------------------------------------------------------------------


def test_prefetch_count_limits_unacked_deliveries_per_consumer(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [str(i).encode() for i in range(5)])
    ch.basic_qos(prefetch_count=2)
    _tag, received = start_consumer(ch, queue)
    wait_deliveries(conn, received, 2, settle=True)
    assert [body for _m, _p, body in received] == [b"0", b"1"]
    ch.basic_ack(received[0][0].delivery_tag)
    wait_deliveries(conn, received, 3, settle=True)
    assert [body for _m, _p, body in received] == [b"0", b"1", b"2"]


def test_prefetch_count_applies_to_each_consumer_of_the_channel(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    queues = [cleanup.queue(f"{uid}-{i}") for i in range(2)]
    for q in queues:
        ch.queue_declare(q)
        publish_bodies(ch, q, [b"m"] * 4)
    ch.basic_qos(prefetch_count=2)
    _tag_a, got_a = start_consumer(ch, queues[0])
    _tag_b, got_b = start_consumer(ch, queues[1])
    pump_until(conn, lambda: len(got_a) + len(got_b) >= 4)
    conn.process_data_events(time_limit=SETTLE)
    assert (len(got_a), len(got_b)) == (2, 2)


def test_global_qos_is_shared_by_the_consumers_of_the_channel(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    queues = [cleanup.queue(f"{uid}-{i}") for i in range(2)]
    for q in queues:
        ch.queue_declare(q)
        publish_bodies(ch, q, [b"m"] * 4)
    ch.basic_qos(prefetch_count=3, global_qos=True)
    _tag_a, got_a = start_consumer(ch, queues[0])
    _tag_b, got_b = start_consumer(ch, queues[1])
    pump_until(conn, lambda: len(got_a) + len(got_b) >= 3)
    conn.process_data_events(time_limit=SETTLE)
    assert len(got_a) + len(got_b) == 3
    assert ready_count(ch, queues[0]) + ready_count(ch, queues[1]) == 5
    # Acking one frees exactly one slot for the whole channel.
    delivered = got_a + got_b
    ch.basic_ack(delivered[0][0].delivery_tag)
    pump_until(conn, lambda: len(got_a) + len(got_b) >= 4)
    conn.process_data_events(time_limit=SETTLE)
    assert len(got_a) + len(got_b) == 4


def test_prefetch_count_zero_means_unlimited(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"m"] * 20)
    ch.basic_qos(prefetch_count=0)
    _tag, received = start_consumer(ch, queue)
    wait_deliveries(conn, received, 20)
    assert len(received) == 20


def test_prefetch_does_not_limit_auto_ack_consumers(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"m"] * 5)
    ch.basic_qos(prefetch_count=1)
    _tag, received = start_consumer(ch, queue, auto_ack=True)
    wait_deliveries(conn, received, 5)
    assert len(received) == 5


# --- ack, nack, reject ----------------------------------------------------------------------


def take(ch: BlockingChannel, queue: str, n: int) -> list[spec.Basic.GetOk]:
    """basic.get `n` messages without acking them."""
    return [get_message(ch, queue)[0] for _ in range(n)]


def test_ack_removes_the_message_for_good(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b"])
    first, second = take(ch, queue, 2)
    ch.basic_ack(first.delivery_tag)
    ch.close()  # only the unacked one comes back
    assert drain(conn.channel(), queue) == [b"b"]
    assert second.delivery_tag == 2


def test_ack_multiple_acks_every_tag_up_to_it(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b", b"c", b"d"])
    methods = take(ch, queue, 4)
    ch.basic_ack(methods[2].delivery_tag, multiple=True)
    ch.close()
    assert drain(conn.channel(), queue) == [b"d"]


def test_ack_multiple_with_tag_zero_acks_everything(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b", b"c"])
    take(ch, queue, 3)
    ch.basic_ack(0, multiple=True)
    ch.close()
    assert drain(conn.channel(), queue) == []


def test_nack_with_requeue_returns_message_with_redelivered_set(
    ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a"])
    (method,) = take(ch, queue, 1)
    ch.basic_nack(method.delivery_tag, requeue=True)
    again, _props, body = get_message(ch, queue)
    assert (body, again.redelivered) == (b"a", True)


def test_nack_without_requeue_drops_the_message(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b"])
    (method,) = take(ch, queue, 1)
    ch.basic_nack(method.delivery_tag, requeue=False)
    ch.close()
    assert drain(conn.channel(), queue) == [b"b"]


def test_nack_multiple_requeues_every_tag_up_to_it(ch: BlockingChannel, queue: str) -> None:
    publish_bodies(ch, queue, [b"a", b"b", b"c", b"d"])
    methods = take(ch, queue, 3)
    ch.basic_nack(methods[1].delivery_tag, multiple=True, requeue=True)
    got = [get_message(ch, queue, auto_ack=True) for _ in range(3)]
    assert [(body, m.redelivered) for m, _p, body in got] == [
        (b"a", True),
        (b"b", True),
        (b"d", False),
    ]
    # "c" is still unacked on this channel.
    assert ch.basic_get(queue) == (None, None, None)


def test_reject_with_requeue_returns_message_with_redelivered_set(
    ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a"])
    (method,) = take(ch, queue, 1)
    ch.basic_reject(method.delivery_tag, requeue=True)
    again, _props, body = get_message(ch, queue)
    assert (body, again.redelivered) == (b"a", True)


def test_reject_without_requeue_drops_the_message(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b"])
    (method,) = take(ch, queue, 1)
    ch.basic_reject(method.delivery_tag, requeue=False)
    ch.close()
    assert drain(conn.channel(), queue) == [b"b"]


def test_requeued_messages_go_back_to_their_original_position(
    ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"1", b"2", b"3", b"4", b"5"])
    methods = take(ch, queue, 3)
    # Requeue in reverse order: the queue order must still be the publish order.
    ch.basic_reject(methods[2].delivery_tag, requeue=True)
    ch.basic_reject(methods[0].delivery_tag, requeue=True)
    got = [get_message(ch, queue, auto_ack=True) for _ in range(4)]
    assert [(body, m.redelivered) for m, _p, body in got] == [
        (b"1", True),
        (b"3", True),
        (b"4", False),
        (b"5", False),
    ]


def test_requeued_message_is_delivered_again_to_a_consumer_with_redelivered_set(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    _tag, received = start_consumer(ch, queue)
    ch.basic_publish("", queue, b"again")
    wait_deliveries(conn, received, 1)
    ch.basic_nack(received[0][0].delivery_tag, requeue=True)
    wait_deliveries(conn, received, 2)
    first, second = received[0][0], received[1][0]
    assert (first.redelivered, second.redelivered) == (False, True)
    assert second.delivery_tag != first.delivery_tag
    assert received[1][2] == b"again"


def test_basic_recover_requeue_redelivers_unacked_messages(ch: BlockingChannel, queue: str) -> None:
    publish_bodies(ch, queue, [b"a", b"b", b"c"])
    methods = take(ch, queue, 2)
    ch.basic_ack(methods[0].delivery_tag)
    ch.basic_recover(requeue=True)
    got = [get_message(ch, queue, auto_ack=True) for _ in range(2)]
    assert [(body, m.redelivered) for m, _p, body in got] == [(b"b", True), (b"c", False)]


def test_basic_recover_redelivers_to_the_consumer(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    _tag, received = start_consumer(ch, queue)
    publisher = conn.channel()
    publisher.basic_publish("", queue, b"a")
    wait_deliveries(conn, received, 1)
    ch.basic_recover(requeue=True)
    wait_deliveries(conn, received, 2)
    assert received[1][2] == b"a"
    assert received[1][0].redelivered is True


def test_unacked_messages_are_requeued_when_the_channel_closes(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b"])
    consumer_ch = conn.channel()
    _tag, received = start_consumer(consumer_ch, queue)
    wait_deliveries(conn, received, 2)
    consumer_ch.close()
    got = [get_message(ch, queue, auto_ack=True) for _ in range(2)]
    assert [(body, m.redelivered) for m, _p, body in got] == [(b"a", True), (b"b", True)]


def test_unacked_messages_are_requeued_when_the_connection_closes(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a", b"b"])
    other = connect(broker)
    try:
        other_ch = other.channel()
        _tag, received = start_consumer(other_ch, queue)
        wait_deliveries(other, received, 2)
        other_ch.basic_ack(received[0][0].delivery_tag)
    finally:
        other.close()
    method, _props, body = get_message(ch, queue, auto_ack=True)
    assert (body, method.redelivered) == (b"b", True)
    assert ch.basic_get(queue) == (None, None, None)


def test_unacked_basic_get_messages_are_requeued_when_the_connection_closes(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    publish_bodies(ch, queue, [b"a"])
    other = connect(broker)
    try:
        assert get_message(other.channel(), queue)[2] == b"a"
    finally:
        other.close()
    method, _props, body = get_message(ch, queue, auto_ack=True)
    assert (body, method.redelivered) == (b"a", True)


# --- message content ------------------------------------------------------------------------


def test_message_properties_arrive_intact(ch: BlockingChannel, queue: str) -> None:
    props = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"h": "v"},
        delivery_mode=2,
        priority=7,
        correlation_id="corr-1",
        reply_to="reply-queue",
        expiration="600000",
        message_id="msg-1",
        timestamp=1_700_000_000,
        type="order.created",
        user_id="guest",
        app_id="pika-tests",
    )
    ch.basic_publish("", queue, b"{}", props)
    _method, got, body = get_message(ch, queue, auto_ack=True)
    assert body == b"{}"
    for name in (
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    ):
        assert getattr(got, name) == getattr(props, name), name


def test_message_without_properties_arrives_with_none_properties(
    ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"bare")
    _method, got, body = get_message(ch, queue, auto_ack=True)
    assert body == b"bare"
    assert (got.content_type, got.headers, got.delivery_mode, got.message_id) == (
        None,
        None,
        None,
        None,
    )


def test_header_table_values_of_every_type_arrive_intact(ch: BlockingChannel, queue: str) -> None:
    headers = {
        "str": "text é ü",
        "int": 42,
        "negative": -7,
        "big": 2**40,
        "bool_true": True,
        "bool_false": False,
        "decimal": decimal.Decimal("1.25"),
        "none": None,
        "bytes": b"\x00\xff raw",
        "list": [1, "two", [3], {"four": 4}],
        "nested": {"a": {"b": {"c": "deep"}}, "n": 1},
        "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "empty": "",
        "empty_table": {},
        "empty_list": [],
    }
    ch.basic_publish("", queue, b"x", pika.BasicProperties(headers=headers))
    _method, got, _body = get_message(ch, queue, auto_ack=True)
    assert got.headers == headers


def test_large_body_bigger_than_frame_max_arrives_intact(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    body = random.Random(1234).randbytes(1024 * 1024 + 17)
    # A small frame_max makes the body go out as hundreds of body frames.
    with connection(broker, frame_max=4096) as conn:
        ch = conn.channel()
        q = cleanup.queue(uid)
        ch.queue_declare(q)
        ch.basic_publish("", q, body)
        _method, _props, got = get_message(ch, q, auto_ack=True)
    assert len(got) == len(body)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()


def test_large_body_arrives_intact_through_a_consumer(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    bodies = [random.Random(seed).randbytes(300_000 + seed) for seed in range(3)]
    for body in bodies:
        ch.basic_publish("", queue, body)
    _tag, received = start_consumer(ch, queue, auto_ack=True)
    wait_deliveries(conn, received, 3)
    assert [got for _m, _p, got in received] == bodies


def test_empty_body_arrives_as_empty_bytes(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"", pika.BasicProperties(message_id="empty"))
    _method, props, body = get_message(ch, queue, auto_ack=True)
    assert body == b""
    assert props.message_id == "empty"
    _tag, received = start_consumer(ch, queue, auto_ack=True)
    ch.basic_publish("", queue, b"")
    wait_deliveries(conn, received, 1)
    assert received[0][2] == b""


def test_body_of_exactly_frame_max_payload_arrives_intact(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    with connection(broker, frame_max=4096) as conn:
        ch = conn.channel()
        q = cleanup.queue(uid)
        ch.queue_declare(q)
        # frame_max minus the 8 bytes of frame overhead, and one byte either side of it.
        bodies = [bytes([n % 256]) * n for n in (4087, 4088, 4089, 8176, 8177)]
        for body in bodies:
            ch.basic_publish("", q, body)
        got = [get_message(ch, q, auto_ack=True)[2] for _ in bodies]
    assert got == bodies
