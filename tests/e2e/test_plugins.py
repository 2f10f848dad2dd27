"""Plugins switched on by name in the config file, with a real `amqplite serve` and pika."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pika.exceptions
import pytest
from broker_process import start_broker
from pika_helpers import connection, watchdog


def test_a_bundled_plugin_enabled_by_name_adds_its_exchange_type(tmp_path: Path) -> None:
    config = tmp_path / "amqplite.yaml"
    config.write_text("plugins: [consistent_hash]\n")
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        with watchdog(), connection(broker) as conn:
            channel = conn.channel()
            channel.exchange_declare("hash", "x-consistent-hash")
            for name in ("p1", "p2"):
                channel.queue_declare(name)
                channel.queue_bind(name, "hash", routing_key="1")
            for i in range(20):
                channel.basic_publish("hash", f"key-{i}", b"x")
            depths = [
                channel.queue_declare(name, passive=True).method.message_count
                for name in ("p1", "p2")
            ]
            assert sum(depths) == 20  # each message went to exactly one partition
    finally:
        broker.stop()


def test_without_the_plugin_its_exchange_type_is_refused(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "data")
    try:
        with watchdog(), connection(broker) as conn:
            channel = conn.channel()
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
                channel.exchange_declare("hash", "x-consistent-hash")
            assert caught.value.reply_code == 503
    finally:
        broker.stop()


DELAYS_MS = (600, 200, 0, 400, 200)


def test_delayed_messages_arrive_in_due_order_and_not_before_their_delay(tmp_path: Path) -> None:
    """Tolerance: none below the delay (each message arrives at least x-delay ms after it was
    sent); no upper bound is asserted (timing belongs to the benchmarks)."""
    config = tmp_path / "amqplite.yaml"
    config.write_text("plugins: [delayed_message]\n")
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        with watchdog(), connection(broker) as conn:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.exchange_declare(
                "later", "x-delayed-message", arguments={"x-delayed-type": "direct"}
            )
            channel.queue_declare("due")
            channel.queue_bind("due", "later", routing_key="k")
            sent: dict[bytes, float] = {}
            for i, delay in enumerate(DELAYS_MS):
                body = f"{i}:{delay}".encode()
                sent[body] = time.monotonic()
                # mandatory: a held message is not unroutable, so no basic.return (UnroutableError)
                channel.basic_publish(
                    "later",
                    "k",
                    body,
                    pika.BasicProperties(headers={"x-delay": delay}),
                    mandatory=True,
                )
            arrived: list[tuple[bytes, float]] = []
            for _method, _props, body in channel.consume("due", auto_ack=True):
                arrived.append((body, time.monotonic()))
                if len(arrived) == len(DELAYS_MS):
                    break
            channel.cancel()
        order = [body for body, _ in arrived]
        assert order == [b"2:0", b"1:200", b"4:200", b"3:400", b"0:600"]
        for body, at in arrived:
            delay_ms = int(body.split(b":")[1])
            assert at - sent[body] >= delay_ms / 1000, body
    finally:
        broker.stop()
