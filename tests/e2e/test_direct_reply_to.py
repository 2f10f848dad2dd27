"""Direct reply-to: the amq.rabbitmq.reply-to pseudo-queue, as RabbitMQ's tutorials use it for RPC."""

from __future__ import annotations

import time
import uuid
from typing import Any

import mgmt_helpers
import pika
import pika.exceptions
from pamqp import commands, header
from pamqp import frame as pamqp_frame
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import channel_error, connection
from raw_client import body_frame, connected, method_frame

PSEUDO = "amq.rabbitmq.reply-to"


def call(
    client: BlockingChannel,
    server: BlockingChannel,
    request_queue: str,
    body: bytes,
) -> tuple[pika.BasicProperties, bytes, pika.BasicProperties]:
    """One RPC: request with reply_to=PSEUDO; the server answers to the name it received."""
    replies: list[tuple[Any, pika.BasicProperties, bytes]] = []
    tag = client.basic_consume(PSEUDO, lambda _ch, m, p, b: replies.append((m, p, b)), True)
    correlation_id = str(uuid.uuid4())
    client.basic_publish(
        "",
        request_queue,
        body,
        pika.BasicProperties(reply_to=PSEUDO, correlation_id=correlation_id),
    )
    request = get_within(server, request_queue)
    _, request_props, request_body = request
    server.basic_publish(
        "",
        request_props.reply_to,
        request_body.upper(),
        pika.BasicProperties(correlation_id=request_props.correlation_id),
    )
    deadline = time.monotonic() + 5
    while not replies:
        assert time.monotonic() < deadline, "no reply within 5s"
        client.connection.process_data_events(time_limit=0.1)
    client.basic_cancel(tag)
    deliver, reply_props, reply_body = replies[0]
    assert deliver.exchange == ""
    assert deliver.routing_key == request_props.reply_to
    assert deliver.redelivered is False
    assert reply_props.correlation_id == correlation_id
    return request_props, reply_body, reply_props


def get_within(ch: BlockingChannel, queue: str, within: float = 5.0) -> Any:
    """basic.get (auto-ack) polled until a message arrives."""
    deadline = time.monotonic() + within
    while True:
        got = ch.basic_get(queue, auto_ack=True)
        if got[0] is not None:
            return got
        assert time.monotonic() < deadline, f"nothing in {queue} within {within}s"
        time.sleep(0.02)


def test_reply_reaches_the_requesting_channels_consumer_with_no_queue(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    with connection(broker) as server_conn:
        server = server_conn.channel()
        request_props, reply_body, _ = call(ch, server, queue, b"ping")
    # The request carried a name of the requester's channel in place of the pseudo-queue.
    assert request_props.reply_to.startswith(PSEUDO + ".")
    assert reply_body == b"PING"


def test_each_channel_gets_a_reply_to_name_of_its_own(
    broker: Any, conn: BlockingConnection, queue: str
) -> None:
    with connection(broker) as server_conn:
        server = server_conn.channel()
        first = call(conn.channel(), server, queue, b"a")[0].reply_to
        second = call(conn.channel(), server, queue, b"b")[0].reply_to
    assert first != second


def test_consuming_the_pseudo_queue_with_acks_is_406(ch: BlockingChannel) -> None:
    with channel_error(406, "PRECONDITION_FAILED", "reply consumer cannot acknowledge"):
        ch.basic_consume(PSEUDO, lambda *_: None, auto_ack=False)


def test_publishing_with_reply_to_without_a_reply_consumer_is_406(
    ch: BlockingChannel, queue: str
) -> None:
    with channel_error(406, "PRECONDITION_FAILED", "fast reply consumer does not exist"):
        ch.basic_publish("", queue, b"x", pika.BasicProperties(reply_to=PSEUDO))
        ch.queue_declare(queue, passive=True)  # a round trip, so the close arrives in the block


def test_a_reply_to_a_consumer_that_has_gone_is_dropped_and_the_publisher_carries_on(
    broker: Any, queue: str
) -> None:
    # The requester vanishes without cancelling its consumer or closing its channel.
    requester = connected(broker)
    requester.open_channel(1)
    requester.send_method(1, commands.Basic.Consume(queue=PSEUDO, consumer_tag="r", no_ack=True))
    requester.expect(commands.Basic.ConsumeOk, channel=1)
    request = commands.Basic.Properties(reply_to=PSEUDO, correlation_id="1")
    requester.send(
        method_frame(1, commands.Basic.Publish(exchange="", routing_key=queue))
        + pamqp_frame.marshal(header.ContentHeader(0, 3, request), 1)
        + body_frame(1, b"req")
    )
    with connection(broker) as server_conn:
        _, props, _ = get_within(server_conn.channel(), queue)
    requester.abort()
    with connection(broker) as server_conn:
        server = server_conn.channel()
        server.confirm_delivery()
        deadline = time.monotonic() + 5
        while True:  # the broker notices the requester's end of stream soon, not at once
            try:
                server_conn.channel().queue_declare(props.reply_to, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                code = exc.reply_code
            else:
                code = 200
            if code == 404:
                break
            assert time.monotonic() < deadline, "the reply-to name outlived its connection"
            time.sleep(0.02)
        server.basic_publish("", props.reply_to, b"too late")  # confirmed, not an error
        assert server.is_open
    if broker.is_amqplite:
        assert_dropped_counted(broker)


def assert_dropped_counted(broker: Any) -> None:
    """/metrics counts the dropped direct replies."""
    reply = mgmt_helpers.call(broker.management_url, "GET", "/metrics")
    assert reply.status == 200
    text = reply.raw.decode()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("amqplite_direct_replies_dropped_total ")
    ]
    assert lines, text[:2000]
    assert float(lines[0].split()[-1]) >= 1


def test_passive_declare_of_the_pseudo_queue_and_of_a_live_reply_name_succeeds(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    assert ch.queue_declare(PSEUDO, passive=True).method.queue == PSEUDO
    ch.basic_consume(PSEUDO, lambda *_: None, auto_ack=True)
    ch.basic_publish("", queue, b"req", pika.BasicProperties(reply_to=PSEUDO))
    with connection(broker) as server_conn:
        _, props, _ = get_within(server_conn.channel(), queue)
        ok = server_conn.channel().queue_declare(props.reply_to, passive=True)
        assert ok.method.queue == props.reply_to
