"""Lazy bodies end to end: a broker with a tiny memory budget serves a backlog from its journal."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pika
from broker_process import start_broker

QUEUE = "lazy-backlog"
COUNT = 400


def body(i: int) -> bytes:
    head = b"%06d:" % i
    return head + bytes((i * 7 + k) % 256 for k in range(1000))


def test_backlog_beyond_the_memory_budget_is_delivered_intact_across_restart(
    tmp_path: Path,
) -> None:
    config = tmp_path / "amqplite.yaml"
    config.write_text(
        "store:\n  fsync: false\n  segment_bytes: 65536\n  memory_budget_bytes: 20000\n"
    )
    data_dir = tmp_path / "data"
    broker = start_broker(data_dir, "--config", str(config))
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2, headers={"n": 1})
        for i in range(COUNT):
            channel.basic_publish("", QUEUE, body(i), props, mandatory=True)
        got = []
        for _ in range(100):  # basic.get, half of them requeued: redelivered from disk
            method, properties, payload = channel.basic_get(QUEUE)
            assert method is not None
            assert properties.headers == {"n": 1}
            got.append(payload)
            channel.basic_ack(method.delivery_tag)
        assert got == [body(i) for i in range(100)]
        method, _, payload = channel.basic_get(QUEUE)
        assert method is not None
        assert payload == body(100)
        channel.basic_nack(method.delivery_tag, requeue=True)
        conn.close()
    finally:
        assert broker.stop(signal.SIGTERM) == 0
    paged = re.search(r"(\d+) body bytes paged out", broker.output())
    assert paged is not None
    assert int(paged.group(1)) >= (COUNT - 30) * 1007
    broker = start_broker(data_dir, "--config", str(config))
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        channel.basic_qos(prefetch_count=50)
        received: list[tuple[bytes, bool]] = []

        def on_message(ch, method, properties, payload):  # type: ignore[no-untyped-def]
            received.append((payload, method.redelivered))
            ch.basic_ack(method.delivery_tag)
            if len(received) == COUNT - 100:
                ch.stop_consuming()

        channel.basic_consume(QUEUE, on_message)
        conn.call_later(30, channel.stop_consuming)
        channel.start_consuming()
        assert [payload for payload, _ in received] == [body(i) for i in range(100, COUNT)]
        assert received[0][1] is True  # the requeued one
        assert not any(redelivered for _, redelivered in received[1:])
        assert channel.queue_declare(QUEUE, passive=True).method.message_count == 0
        conn.close()
    finally:
        broker.stop(signal.SIGTERM)
