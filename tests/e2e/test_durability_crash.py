"""Crash test: confirmed persistent messages survive kill -9 of the broker, round after round."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from broker_process import free_port, start_broker
from pika_helpers import watchdog

BrokerProcess = Any

QUEUE = "crash-test"
ROUNDS = 4
BODY_PAD = 1000


def _message_id(body: bytes) -> str:
    return body[:32].decode().strip()


class Traffic:
    """One round of traffic: a confirming publisher and a consumer that leaves some unacked."""

    def __init__(self, broker: BrokerProcess, round_no: int) -> None:
        self.broker = broker
        self.round_no = round_no
        self.confirmed: list[str] = []
        self.received: list[tuple[str, bool]] = []
        self.acked: set[str] = set()
        self.unacked: set[str] = set()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._consume, daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive(), "client thread did not notice the broker was gone"

    def _publish(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.broker.url))
            channel = conn.channel()
            channel.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2)
            i = 0
            while not self.stop.is_set():
                message_id = f"{self.round_no}-{i}"
                body = message_id.ljust(BODY_PAD).encode()
                channel.basic_publish("", QUEUE, body, props, mandatory=True)
                self.confirmed.append(message_id)  # basic_publish returned: the broker confirmed
                i += 1
        except (pika.exceptions.AMQPError, OSError):
            return

    def _consume(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.broker.url))
            channel = conn.channel()
            channel.basic_qos(prefetch_count=0)
            for method, _props, body in channel.consume(QUEUE, inactivity_timeout=0.1):
                if self.stop.is_set():
                    return
                if method is None:
                    continue
                message_id = _message_id(body)
                self.received.append((message_id, bool(method.redelivered)))
                if int(message_id.split("-")[1]) % 4 == 0:
                    self.unacked.add(message_id)  # held unacked until the crash
                else:
                    channel.basic_ack(method.delivery_tag)
                    self.acked.add(message_id)
        except (pika.exceptions.AMQPError, OSError):
            return


def _declare(broker: BrokerProcess) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    conn.channel().queue_declare(QUEUE, durable=True)
    conn.close()


def _drain(broker: BrokerProcess) -> list[tuple[str, bool]]:
    """Every message in the queue (id, redelivered), acked so the next round starts empty."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = conn.channel()
    found: list[tuple[str, bool]] = []
    last_tag = 0
    while True:
        method, _props, body = channel.basic_get(QUEUE)
        if method is None:
            break
        found.append((_message_id(body), bool(method.redelivered)))
        last_tag = method.delivery_tag
    if last_tag:
        channel.basic_ack(last_tag, multiple=True)
    conn.close()
    return found


def _check_round(traffic: Traffic, found: list[tuple[str, bool]]) -> int:
    """Assert the promise for one round and return how many confirmed messages were lost."""
    ids = [message_id for message_id, _ in found]
    assert len(ids) == len(set(ids)), "a message came back twice"
    present = dict(found)
    delivered_before = {message_id for message_id, _ in traffic.received}
    lost = [m for m in traffic.confirmed if m not in present and m not in traffic.acked]
    # A delivery may happen before the fsync that makes a message durable (as in RabbitMQ), so only
    # unacked messages whose publish was confirmed are promised to come back.
    confirmed = set(traffic.confirmed)
    for message_id in traffic.unacked & confirmed:
        assert present.get(message_id) is True, f"unacked confirmed {message_id} not redelivered"
    for message_id, redelivered in found:
        if message_id in delivered_before:
            assert redelivered, f"{message_id} was delivered before but came back as new"
    published = {f"{traffic.round_no}-{i}" for i in range(len(traffic.confirmed) + 1)}
    assert set(ids) <= published, "a message that was never published appeared"
    return len(lost)


def test_confirmed_persistent_messages_survive_kill_9(tmp_path: Path) -> None:
    rng = random.Random(4)
    data_dir = tmp_path / "data"
    config = tmp_path / "amqplite.yaml"
    config.write_text(
        "store:\n  segment_bytes: 65536\n"
    )  # small segments: snapshots during the run
    port = free_port()
    total_confirmed = total_lost = 0
    with watchdog(90):
        broker = start_broker(data_dir, "--config", str(config), port=port)
        _declare(broker)
        for round_no in range(ROUNDS):
            traffic = Traffic(broker, round_no)
            traffic.start()
            time.sleep(rng.uniform(0.6, 1.6))
            broker.stop(signal.SIGKILL)
            traffic.join()
            broker = start_broker(data_dir, "--config", str(config), port=port)
            found = _drain(broker)
            total_lost += _check_round(traffic, found)
            total_confirmed += len(traffic.confirmed)
            assert traffic.confirmed, f"round {round_no}: nothing was confirmed before the kill"
        broker.stop()
    print(f"\nrounds: {ROUNDS}, confirmed: {total_confirmed}, confirmed lost: {total_lost}")
    assert total_lost == 0
