"""Exactly-once publishing: confirms and broker-side deduplication, and an idempotent consumer (pika).

Needs a broker with a deduplication plugin: amqplite with `plugins: [deduplication]` in its
configuration (or RabbitMQ with the community rabbitmq-message-deduplication plugin). The
producer publishes each payment as a persistent message whose message_id (and
x-deduplication-header) is the payment id, with publisher confirms; on a connection error it
reconnects and re-sends every payment not yet confirmed. To show what the broker does with a
re-sent message, it sends each payment twice, as a producer does whose confirm was lost. The
consumer applies each payment once, keyed by message_id, and acks it after applying it.

    python examples/exactly_once/payments.py --count 100
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pika
import pika.exceptions

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
QUEUE = "payments"
ARGUMENTS = {
    "x-message-deduplication": True,
    "x-cache-size": 1_000_000,  # keys remembered (oldest out first)
    "x-cache-ttl": 24 * 3600 * 1000,  # ms: longer than any producer keeps retrying
}


def declare(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """The durable, deduplicating queue (producer and consumer both declare it)."""
    channel.queue_declare(QUEUE, durable=True, arguments=ARGUMENTS)


def publish_payments(
    url: str, payments: dict[str, int], copies: int = 2, retry_for: float = 60.0
) -> int:
    """Publish each payment `copies` times, each copy confirmed (re-sent after errors); publishes sent."""
    pending = [pid for pid in payments for _ in range(copies)]
    sent = 0
    give_up = time.monotonic() + retry_for
    while pending:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)  # the broker is restarting
            continue
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            declare(channel)
            while pending:
                pid = pending[0]
                props = pika.BasicProperties(
                    delivery_mode=2,  # persistent: on disk before the confirm
                    message_id=pid,
                    headers={"x-deduplication-header": pid},
                )
                body = json.dumps({"payment": pid, "cents": payments[pid]}).encode()
                sent += 1
                channel.basic_publish("", QUEUE, body, props)  # returns once confirmed
                pending.pop(0)
        except (pika.exceptions.AMQPError, OSError):
            if time.monotonic() > give_up:
                raise
            continue  # reconnect and re-send what was not confirmed
        finally:
            if conn.is_open:
                conn.close()
    return sent


def apply_payments(url: str, idle_timeout: float = 1.0) -> tuple[dict[str, int], int]:
    """Apply payments until none comes for idle_timeout s; (applied by id, duplicates seen)."""
    applied: dict[str, int] = {}  # in real life: a table whose primary key is the message_id,
    duplicates = 0  # written in the same database transaction as the payment's effect
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = conn.channel()
        declare(channel)
        channel.basic_qos(prefetch_count=100)
        for method, props, body in channel.consume(QUEUE, inactivity_timeout=idle_timeout):
            if method is None:
                break
            if props.message_id in applied:
                duplicates += 1  # already applied: ack it again, do nothing
            else:
                applied[props.message_id] = json.loads(body)["cents"]
            channel.basic_ack(method.delivery_tag)  # after applying, never before
        channel.cancel()
    finally:
        conn.close()
    return applied, duplicates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("AMQP_URL", DEFAULT_URL))
    parser.add_argument("--count", type=int, default=100, help="payments to make")
    args = parser.parse_args()
    payments = {f"pay-{i}": 100 * i for i in range(1, args.count + 1)}
    sent = publish_payments(args.url, payments)
    applied, duplicates = apply_payments(args.url)
    print(
        f"sent {sent} publishes for {len(payments)} payments; applied {len(applied)}, "
        f"{duplicates} duplicates delivered"
    )


if __name__ == "__main__":
    main()
