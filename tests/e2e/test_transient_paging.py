"""Transient bodies beyond the memory budget go to spill files, come back in order, never survive."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pika
from broker_process import BrokerProcess, start_broker

COUNT = 3000
QUEUES = ("transient-backlog", "durable-queue-transient-messages")


def body(i: int) -> bytes:
    head = b"%06d:" % i
    return head + bytes((i * 7 + k) % 256 for k in range(1000))


def open_spill_files(broker: BrokerProcess) -> list[str]:
    """The spill files the broker process holds open (unlinked, so only /proc shows them)."""
    assert broker.proc is not None
    fd_dir = Path(f"/proc/{broker.proc.pid}/fd")
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(fd_dir / fd))
        except OSError:
            continue
    return [t for t in targets if re.search(r"/transient/\d+\.spill", t)]


def consume(
    conn: pika.BlockingConnection,
    channel: pika.adapters.blocking_connection.BlockingChannel,
    queue: str,
    count: int,
) -> list[bytes]:
    """Consume count messages from queue (acked one by one); their bodies in arrival order."""
    received: list[bytes] = []

    def on_message(ch, method, properties, payload):  # type: ignore[no-untyped-def]
        received.append(payload)
        ch.basic_ack(method.delivery_tag)
        if len(received) == count:
            ch.stop_consuming()

    tag = channel.basic_consume(queue, on_message)
    conn.call_later(60, channel.stop_consuming)
    channel.start_consuming()
    channel.basic_cancel(tag)
    return received


def start(tmp_path: Path) -> BrokerProcess:
    config = tmp_path / "amqplite.yaml"
    config.write_text("store:\n  fsync: false\n  memory_budget_bytes: 2000000\n")
    return start_broker(tmp_path / "data", "--config", str(config))


def test_a_transient_backlog_beyond_the_budget_pages_out_and_is_consumed_in_order(
    tmp_path: Path,
) -> None:
    broker = start(tmp_path)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        channel.queue_declare(QUEUES[0])
        channel.queue_declare(QUEUES[1], durable=True)
        for i in range(COUNT):
            for queue in QUEUES:
                channel.basic_publish("", queue, body(i))  # delivery_mode 1: transient
        deadline = time.monotonic() + 30
        while not open_spill_files(broker):  # the pager wrote bodies out (in its own thread)
            assert time.monotonic() < deadline, "no transient body was paged out"
            conn.sleep(0.05)
        assert channel.queue_declare(QUEUES[0], passive=True).method.message_count == COUNT
        channel.basic_qos(prefetch_count=100)
        for queue in QUEUES:
            received = consume(conn, channel, queue, COUNT)
            assert received == [body(i) for i in range(COUNT)]  # none lost, in order, intact
        conn.close()
    finally:
        assert broker.stop(signal.SIGTERM) == 0
    paged = re.search(r"(\d+) transient body bytes paged out", broker.output())
    assert paged is not None
    assert int(paged.group(1)) >= COUNT * 1007  # most of both backlogs went through disk


def test_spill_files_do_not_survive_a_crash_or_restart(tmp_path: Path) -> None:
    broker = start(tmp_path)
    spill_dir = tmp_path / "data" / "transient"
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        channel.queue_declare(QUEUES[1], durable=True)
        for i in range(COUNT):
            channel.basic_publish("", QUEUES[1], body(i))
        deadline = time.monotonic() + 30
        while not open_spill_files(broker):
            assert time.monotonic() < deadline, "no transient body was paged out"
            conn.sleep(0.05)
        assert list(spill_dir.iterdir()) == []  # unlinked at once: only descriptors hold them
    finally:
        broker.stop(signal.SIGKILL)
    (spill_dir / "00000001.spill").write_bytes(b"left by an older run")
    broker = start(tmp_path)
    try:
        assert list(spill_dir.iterdir()) == []  # dropped at boot
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        declared = channel.queue_declare(QUEUES[1], durable=True)
        assert declared.method.message_count == 0  # transient messages do not survive
        conn.close()
    finally:
        assert broker.stop(signal.SIGTERM) == 0
