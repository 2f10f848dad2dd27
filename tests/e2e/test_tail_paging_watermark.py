"""A backlog larger than the memory watermark fits: the queue's tail pages out whole, comes back in order."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker_process import start_configured
from memory_helpers import MB, alarms_config, idle_rss, rss
from pika_helpers import connect, watchdog

COUNT = 60_000
SIZE = 100
# the watermark sits this far above an idle broker's RSS: 60,000 paged messages at the ~320 B
# each that paging bodies alone kept would not fit under it
MARGIN = 16 * MB


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    with watchdog(150.0):
        yield


def body(i: int) -> bytes:
    return (b"%07d:" % i).ljust(SIZE, bytes([97 + i % 26]))


def test_a_backlog_beyond_the_watermark_pages_its_tail_and_drains_in_order(
    tmp_path: Path, uid: str
) -> None:
    watermark = idle_rss(tmp_path) + MARGIN
    # paging from half the watermark (below an idle broker): the tail pages out at once
    broker = start_configured(tmp_path, alarms_config(watermark))
    try:
        # held by a memory alarm for 20 s, the publisher fails (ConnectionBlockedTimeout)
        conn = connect(broker, blocked_connection_timeout=20)
        blocked: list[str] = []
        conn.add_on_connection_blocked_callback(
            lambda _c, frame: blocked.append(frame.method.reason)
        )
        ch = conn.channel()
        ch.queue_declare(uid)
        peak = 0
        for i in range(COUNT):
            ch.basic_publish("", uid, body(i))
            if i % 5000 == 0:
                conn.process_data_events(0)
                peak = max(peak, rss(broker))
        assert ch.queue_declare(uid, passive=True).method.message_count == COUNT
        peak = max(peak, rss(broker))
        assert blocked == []  # the backlog fit: no memory alarm
        assert peak < watermark, (peak, watermark)

        ch.basic_qos(prefetch_count=500)
        received: list[bytes] = []

        def on_message(channel, method, _properties, payload):  # type: ignore[no-untyped-def]
            received.append(payload)
            if len(received) % 250 == 0 or len(received) == COUNT:
                channel.basic_ack(method.delivery_tag, multiple=True)
            if len(received) == COUNT:
                channel.stop_consuming()

        ch.basic_consume(uid, on_message)
        conn.call_later(100, ch.stop_consuming)
        ch.start_consuming()
        assert len(received) == COUNT  # none lost
        assert received == [body(i) for i in range(COUNT)]  # in order, intact
        assert ch.queue_declare(uid, passive=True).method.message_count == 0
        conn.close()
    finally:
        assert broker.stop(signal.SIGTERM) == 0
    assert "memory alarm set" not in broker.output()
