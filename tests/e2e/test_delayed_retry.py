"""Retry with backoff (x-delayed-retry-*): a nacked message is held back, then dead-lettered."""

from __future__ import annotations

import time

import pika
import pika.exceptions
import pytest
from broker_process import Serve
from mgmt_helpers import call, q
from pika_helpers import connection, watchdog

MIN_MS, MAX_MS, LIMIT = 500, 1000, 3
# delay = min(min x delivery count, max) after the 1st, 2nd and 3rd delivery
EXPECTED_DELAYS_MS = [min(MIN_MS * n, MAX_MS) for n in range(1, LIMIT + 1)]


def test_a_nacked_message_comes_back_after_growing_delays_then_goes_to_the_dlx(
    serve: Serve,
) -> None:
    broker = serve()
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.queue_declare("dead")
        channel.queue_declare(
            "work",
            arguments={
                "x-delayed-retry-type": "failed",
                "x-delayed-retry-min": MIN_MS,
                "x-delayed-retry-max": MAX_MS,
                "x-delivery-limit": LIMIT,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "dead",
            },
        )
        channel.basic_publish("", "work", b"job")
        seen: list[tuple[int, float]] = []  # (x-delivery-count, when it arrived)
        for method, props, _body in channel.consume("work"):
            seen.append((int((props.headers or {}).get("x-delivery-count", 0)), time.monotonic()))
            channel.basic_nack(method.delivery_tag, requeue=True)
            if len(seen) == 1:  # held back: shown as delayed, not ready
                row = call(broker.management_url, "GET", f"/api/queues/{q('/')}/work").json
                assert row["messages_delayed"] == 1
                assert row["messages_ready"] == 0
            if len(seen) == LIMIT + 1:
                break
        channel.cancel()
        assert [count for count, _ in seen] == list(range(LIMIT + 1))
        for i, delay_ms in enumerate(EXPECTED_DELAYS_MS):
            gap = seen[i + 1][1] - seen[i][1]
            assert gap >= delay_ms / 1000, (i, gap, delay_ms)  # never back before its delay
        # the fourth nack spends the limit: dead-lettered, not requeued
        for _method, props, body in channel.consume("dead", auto_ack=True):
            assert body == b"job"
            assert props.headers["x-death"][0]["reason"] == "delivery_limit"
            break
        channel.cancel()
        assert channel.queue_declare("work", passive=True).method.message_count == 0


def test_lavinmq_exponential_form_and_policy_keys(serve: Serve) -> None:
    """x-delayed-retry-multiplier 2 doubles the delay; a policy (keys without x-) turns it on."""
    broker = serve()
    reply = call(
        broker.management_url,
        "PUT",
        f"/api/policies/{q('/')}/retry",
        {
            "pattern": "^retried$",
            "apply-to": "queues",
            "definition": {
                "delayed-retry-min": 200,
                "delayed-retry-multiplier": 2,
                "delivery-limit": 2,
            },
        },
    )
    assert reply.status in (201, 204), reply.raw
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.queue_declare("retried")
        channel.basic_publish("", "retried", b"job")
        seen: list[float] = []
        for method, _props, _body in channel.consume("retried"):
            seen.append(time.monotonic())
            channel.basic_nack(method.delivery_tag, requeue=True)
            if len(seen) == 3:
                break
        channel.cancel()
        assert seen[1] - seen[0] >= 0.2
        assert seen[2] - seen[1] >= 0.4  # 200 x 2 ** (2 - 1)


def test_channel_close_requeues_at_once_unless_the_type_is_all(serve: Serve) -> None:
    broker = serve()
    with watchdog(), connection(broker) as conn:
        for name, kind in (("returned-q", "returned"), ("all-q", "all")):
            channel = conn.channel()
            channel.queue_declare(
                name,
                arguments={"x-delayed-retry-type": kind, "x-delayed-retry-min": 60_000},
            )
            channel.basic_publish("", name, b"x")
            method, _props, _body = channel.basic_get(name)
            assert method is not None
            channel.close()  # unacked: requeued by the broker, not by the consumer
        channel = conn.channel()
        assert channel.queue_declare("returned-q", passive=True).method.message_count == 1
        assert channel.queue_declare("all-q", passive=True).method.message_count == 0
        row = call(broker.management_url, "GET", f"/api/queues/{q('/')}/all-q").json
        assert row["messages_delayed"] == 1


def test_bad_retry_arguments_are_refused_with_406(serve: Serve) -> None:
    broker = serve()
    with watchdog(), connection(broker) as conn:
        for arguments in (
            {"x-delayed-retry-type": "sometimes", "x-delayed-retry-min": 10},
            {"x-delayed-retry-type": "all"},
            {"x-delayed-retry-min": 0},
        ):
            channel = conn.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
                channel.queue_declare("bad", arguments=arguments)
            assert caught.value.reply_code == 406
            assert "x-delayed-retry" in caught.value.reply_text
