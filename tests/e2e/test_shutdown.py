"""Graceful shutdown: SIGTERM closes clients with 320, keeps persistent messages, exits 0;
a second signal exits at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from broker_process import start_broker
from pika_helpers import connect

QUEUE = "shutdown-jobs"
COUNT = 50


def wait_for_log(broker: Any, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in broker.output():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} not in the broker log:\n{broker.output()}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_a_consumer_with_320_loses_no_persistent_message_and_exits_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    data = tmp_path / "data"
    broker = start_broker(data)
    try:
        conn = connect(broker)
        ch = conn.channel()
        ch.queue_declare(QUEUE, durable=True)
        ch.confirm_delivery()
        for i in range(COUNT):
            ch.basic_publish("", QUEUE, f"job-{i}".encode(), pika.BasicProperties(delivery_mode=2))
        ch.basic_qos(prefetch_count=10)
        received: list[bytes] = []
        ch.basic_consume(QUEUE, lambda c, m, p, body: received.append(body))  # never acks
        while len(received) < 10:
            conn.process_data_events(time_limit=1)
        broker.proc.send_signal(signum)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            conn.sleep(20)
        assert info.value.reply_code == 320
        assert "CONNECTION_FORCED" in info.value.reply_text
        assert broker.proc.wait(timeout=20) == 0
    finally:
        broker.stop()
    log = broker.output()
    assert f"{signal.Signals(signum).name}: shutting down" in log
    assert "amqplite stopped" in log
    assert "Traceback" not in log

    restarted = start_broker(data)
    try:
        conn = connect(restarted)
        ch = conn.channel()
        assert ch.queue_declare(QUEUE, durable=True, passive=True).method.message_count == COUNT
        bodies = []
        for _ in range(COUNT):
            method, _, body = ch.basic_get(QUEUE, auto_ack=True)
            assert method is not None
            bodies.append(body)
        assert sorted(bodies) == sorted(f"job-{i}".encode() for i in range(COUNT))
        conn.close()
    finally:
        restarted.stop()


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    config = tmp_path / "slow-close.yaml"
    config.write_text("limits: {close_timeout: 120}\n")  # a client that never answers holds us
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        conn = connect(broker)  # pika does not answer while we do not process its events
        conn.channel()
        broker.proc.send_signal(signal.SIGTERM)
        wait_for_log(broker, "SIGTERM: shutting down")
        broker.proc.send_signal(signal.SIGTERM)
        assert broker.proc.wait(timeout=20) == 1
        assert "second signal: exiting now" in broker.output()
    finally:
        broker.stop()
