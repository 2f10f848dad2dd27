"""Crash test: a durable exchange, queue or binding whose -ok the client got survives kill -9."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from broker_process import free_port, start_broker
from pika_helpers import watchdog

BrokerProcess = Any

ROUNDS = 4
LOAD_QUEUE = "declare-crash-load"


class Load:
    """Persistent publishes to a durable queue, so that a group commit is always in progress."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.url = broker.url
        self.stop = threading.Event()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(10), "the load publisher did not start"

    def _run(self) -> None:
        props = pika.BasicProperties(delivery_mode=2)
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = conn.channel()
            channel.queue_declare(LOAD_QUEUE, durable=True, arguments={"x-max-length": 1000})
            self.started.set()
            while not self.stop.is_set():
                for _ in range(50):
                    channel.basic_publish("", LOAD_QUEUE, b"x" * 200, props)
                conn.process_data_events(0)
        except (pika.exceptions.AMQPError, OSError):
            return
        finally:
            self.started.set()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the load publisher did not notice the broker was gone"


def _declare(broker: BrokerProcess, round_no: int) -> None:
    """Declare and bind this round's entities, delete the last round's queue; every -ok waited for."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = conn.channel()
    channel.exchange_declare(f"dx{round_no}", "direct", durable=True)
    channel.queue_declare(f"dq{round_no}", durable=True)
    channel.queue_bind(f"dq{round_no}", f"dx{round_no}", routing_key=f"r{round_no}")
    channel.exchange_bind(f"dx{round_no}", "amq.topic", routing_key=f"r{round_no}")
    if round_no:
        channel.queue_delete(f"gone{round_no - 1}")
    channel.queue_declare(f"gone{round_no}", durable=True)


def _check(broker: BrokerProcess, rounds_done: int) -> None:
    """Everything announced by an -ok before each kill is there; the deleted queues are gone."""
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    channel = conn.channel()
    channel.confirm_delivery()
    for round_no in range(rounds_done):
        channel.exchange_declare(f"dx{round_no}", passive=True)
        channel.queue_declare(f"dq{round_no}", passive=True)
        # the binding (and the exchange binding) route: an unroutable mandatory publish would raise
        try:
            channel.basic_publish("amq.topic", f"r{round_no}", b"m", mandatory=True)
        except pika.exceptions.UnroutableError:
            raise AssertionError(f"round {round_no}: a binding was lost") from None
        method, _props, body = channel.basic_get(f"dq{round_no}", auto_ack=True)
        assert method is not None, f"round {round_no}: binding lost"
        assert body == b"m"
    for round_no in range(rounds_done - 1):
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.queue_declare(f"gone{round_no}", passive=True)  # deleted with an -ok
        assert closed.value.reply_code == 404
        channel = conn.channel()
    channel.queue_declare(f"gone{rounds_done - 1}", passive=True)
    conn.close()


def test_durable_declares_survive_kill_9_right_after_their_ok(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with watchdog(60):
        broker = start_broker(data_dir, port=port, management=False)
        for round_no in range(ROUNDS):
            load = Load(broker)
            _declare(broker, round_no)
            broker.stop(signal.SIGKILL)  # at once: the -oks were just received
            load.join()
            broker = start_broker(data_dir, port=port, management=False)
            _check(broker, round_no + 1)
        broker.stop()
