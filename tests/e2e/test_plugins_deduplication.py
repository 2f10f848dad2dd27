"""The deduplication plugin with a real `amqplite serve` and pika: duplicates dropped, also across kill -9."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
from broker_process import Serve, free_port
from pika_helpers import DEADLINE, connection, watchdog

QUEUE = "orders"
DEDUP_ARGS = {"x-message-deduplication": True, "x-cache-size": 100_000}
PUBLISHERS = 4
CONSUMED_FIRST = 100  # ids published, consumed and acked before the crash
PER_PUBLISHER = 400  # ids each publisher thread sends after them
KILL_AFTER = 150  # confirms of the threads' ids before the kill


PLUGINS = "plugins: [deduplication]\n"  # the config file of every broker here


def persistent(message_id: str, **headers: Any) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers or None)


def test_a_duplicate_is_confirmed_but_enqueued_once(serve: Serve) -> None:
    broker = serve(PLUGINS)
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.queue_declare(QUEUE, durable=True, arguments=DEDUP_ARGS)
        for body in (b"first", b"retry", b"retry again"):
            # mandatory and confirmed: a dropped duplicate is neither returned nor nacked
            channel.basic_publish("", QUEUE, body, persistent("order-1"), mandatory=True)
        channel.basic_publish("", QUEUE, b"other", persistent("order-2"), mandatory=True)
        assert channel.queue_declare(QUEUE, passive=True).method.message_count == 2
        channel.exchange_declare(
            "dedup-x", "x-message-deduplication", arguments={"x-cache-size": 10}
        )
        channel.queue_declare("from-x")
        channel.queue_bind("from-x", "dedup-x")
        for _ in range(3):
            props = pika.BasicProperties(headers={"x-deduplication-header": "h-1"})
            channel.basic_publish("dedup-x", "", b"x", props, mandatory=True)
        assert channel.queue_declare("from-x", passive=True).method.message_count == 1


class Publisher:
    """A thread publishing its ids with confirms until done or the broker goes away."""

    def __init__(self, url: str, ids: list[str]) -> None:
        self.url = url
        self.ids = ids
        self.confirmed: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = conn.channel()
            channel.confirm_delivery()
            for message_id in self.ids:
                channel.basic_publish("", QUEUE, message_id.encode(), persistent(message_id))
                self.confirmed.append(message_id)  # basic_publish returned: confirmed
        except (pika.exceptions.AMQPError, OSError):
            return


def publish_all(broker: Any, ids: list[str]) -> None:
    """Publish every id with confirms (each must be acked, duplicates included)."""
    with connection(broker) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for message_id in ids:
            channel.basic_publish("", QUEUE, message_id.encode(), persistent(message_id))


def drain(broker: Any) -> list[str]:
    """Every message in the queue, acked."""
    found: list[str] = []
    with connection(broker) as conn:
        channel = conn.channel()
        while True:
            method, _props, body = channel.basic_get(QUEUE)
            if method is None:
                return found
            found.append(body.decode())
            channel.basic_ack(method.delivery_tag)


def test_publishers_retrying_after_kill_9_leave_exactly_one_copy_of_each_id(
    serve: Serve,
) -> None:
    port = free_port()
    first = [f"first-{i}" for i in range(CONSUMED_FIRST)]
    with watchdog(120):
        broker = serve(PLUGINS, port=port)
        with connection(broker) as conn:
            channel = conn.channel()
            channel.queue_declare(QUEUE, durable=True, arguments=DEDUP_ARGS)
        publish_all(broker, first)
        consumed = drain(broker)  # their keys go to the plugin state as they are acked
        assert consumed == first
        with connection(broker) as conn:  # a declare-ok waits for the metadata log's commit,
            conn.channel().queue_declare("barrier", durable=True)  # which holds those keys

        publishers = [
            Publisher(broker.url, [f"p{p}-{i}" for i in range(PER_PUBLISHER)])
            for p in range(PUBLISHERS)
        ]
        for publisher in publishers:
            publisher.thread.start()
        deadline = time.monotonic() + 60
        while sum(len(p.confirmed) for p in publishers) < KILL_AFTER:  # a polled deadline
            assert time.monotonic() < deadline, "publishers too slow"
            time.sleep(0.01)
        broker.stop(signal.SIGKILL)
        for publisher in publishers:
            publisher.thread.join(DEADLINE * 2)
            assert not publisher.thread.is_alive(), "a publisher did not notice the kill"
        confirmed = [m for p in publishers for m in p.confirmed]
        assert len(confirmed) < PUBLISHERS * PER_PUBLISHER, "killed too late: nothing to retry"

        broker = serve(PLUGINS, port=port)
        # each producer re-sends everything it ever sent: unconfirmed ids (some of which
        # the broker may have stored before it died) and confirmed ones alike
        retry = first + [m for p in publishers for m in p.ids]
        publish_all(broker, retry)
        consumed += drain(broker)
        broker.stop()
    everything = first + [m for p in publishers for m in p.ids]
    counts: dict[str, int] = {}
    for message_id in consumed:
        counts[message_id] = counts.get(message_id, 0) + 1
    twice = sorted(m for m, n in counts.items() if n > 1)
    missing = sorted(set(everything) - set(counts))
    assert not twice, f"{len(twice)} ids consumed more than once, e.g. {twice[:5]}"
    assert not missing, f"{len(missing)} ids never consumed, e.g. {missing[:5]}"
    assert len(consumed) == len(everything)
    print(f"\nconfirmed before the kill: {len(confirmed)}; consumed once each: {len(consumed)}")


def test_the_exactly_once_example_applies_each_payment_once(serve: Serve) -> None:
    broker = serve(PLUGINS)
    example = Path(__file__).resolve().parents[2] / "examples/exactly_once/payments.py"
    done = subprocess.run(
        [sys.executable, str(example), "--url", broker.url, "--count", "50"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # every payment was sent twice; the broker kept one copy, so none reached the consumer twice
    assert done.stdout.strip() == (
        "sent 100 publishes for 50 payments; applied 50, 0 duplicates delivered"
    )
