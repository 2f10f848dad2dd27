"""Plugins switched on by name in the config file, with a real `amqplite serve` and pika."""

from __future__ import annotations

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
