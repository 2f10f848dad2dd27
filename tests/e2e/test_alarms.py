"""Resource alarms end to end: a publisher past the memory watermark is blocked, then unblocked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess, Serve, start_configured
from memory_helpers import MB, alarms_config, idle_rss
from mgmt_helpers import call, wait_for
from pamqp import commands
from pika_helpers import connect, connection, watchdog
from raw_client import (
    FRAME_HEARTBEAT,
    RawClient,
    connected,
    plain_response,
    start_ok_frame,
)

BODY = b"x" * (256 * 1024)
MARGIN = 48 * MB  # the watermark sits this far above an idle broker's RSS


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """Two brokers and a 50 MB backlog: a longer watchdog than the other e2e tests."""
    with watchdog(150.0):
        yield


def _publish_until_blocked(broker: BrokerProcess, queue: str, out: dict[str, Any]) -> None:
    """Publish until connection.blocked arrives, wait for connection.unblocked, publish once more.

    Heartbeats every second: a blocked connection must stay up although it is not read.
    """
    events: list[tuple[str, str]] = out["events"]
    conn = connect(broker, blocked_connection_timeout=None, heartbeat=1)
    try:
        conn.add_on_connection_blocked_callback(
            lambda _c, frame: events.append(("blocked", frame.method.reason))
        )
        conn.add_on_connection_unblocked_callback(lambda _c, _f: events.append(("unblocked", "")))
        ch = conn.channel()
        sent = 0
        while not events and sent < 800:
            ch.basic_publish("", queue, BODY)
            sent += 1
            conn.process_data_events(0)
        out["sent_before_block"] = sent
        deadline = time.monotonic() + 100
        while len(events) < 2 and time.monotonic() < deadline:
            conn.process_data_events(0.1)
        ch.basic_publish("", queue, b"after the alarm")  # publishing goes on once unblocked
        sent += 1
        ch.queue_declare(queue, passive=True)  # a round trip: the broker has read every publish
        out["sent"] = sent
    except Exception as exc:  # reported by the test thread
        out["error"] = repr(exc)
    finally:
        conn.close()


def _alarm_status(broker: BrokerProcess) -> int:
    return call(broker.management_url, "GET", "/api/health/checks/alarms").status


def test_publisher_is_blocked_past_the_watermark_and_unblocked_as_a_consumer_drains(
    tmp_path: Path, uid: str
) -> None:
    watermark = idle_rss(tmp_path) + MARGIN
    # no transient paging before the alarm: it must fire
    broker = start_configured(tmp_path, alarms_config(watermark, "  memory_paging_ratio: 2.0\n"))
    try:
        with connection(broker) as admin:
            admin.channel().queue_declare(uid)
            assert _alarm_status(broker) == 200
            out: dict[str, Any] = {"events": []}
            publisher = threading.Thread(target=_publish_until_blocked, args=(broker, uid, out))
            publisher.start()

            # the memory alarm goes up: health check, node figures, metrics
            wait_for(lambda: _alarm_status(broker) == 503, timeout=60)
            health = call(broker.management_url, "GET", "/api/health/checks/alarms").json
            assert health["status"] == "failed"
            assert health["alarms"] == ["memory"]
            node = call(broker.management_url, "GET", "/api/nodes").json[0]
            assert node["mem_alarm"] is True
            assert node["mem_limit"] == watermark
            assert node["mem_used"] > watermark
            assert node["disk_free_alarm"] is False
            assert node["disk_free"] > node["disk_free_limit"] > 0
            metrics = call(broker.management_url, "GET", "/metrics").raw.decode()
            assert "amqplite_alarm_memory 1\n" in metrics
            assert f"amqplite_memory_high_watermark_bytes {watermark}\n" in metrics

            # a second publisher, without the connection.blocked capability and heartbeats of
            # 1 s it never sends: blocked for 3 s, it is sent heartbeats, told nothing, not dropped
            with connected(broker, heartbeat=1) as raw:
                raw.open_channel()
                raw.publish(1, uid, b"raw")
                frames = []
                held_until = time.monotonic() + 3.0
                while time.monotonic() < held_until:
                    frames.append(raw.read_frame(timeout=2.0))
                assert sum(f.frame_type == FRAME_HEARTBEAT for f in frames) >= 2
                assert all(f.frame_type == FRAME_HEARTBEAT for f in frames), frames
                assert _alarm_status(broker) == 503
            assert publisher.is_alive(), out
            assert "error" not in out, out

            # a consumer still drains (its acks are read) although the publisher is not
            received = 0
            with connection(broker) as consumer_conn:
                ch = consumer_conn.channel()
                ch.basic_qos(prefetch_count=10)
                for method, _props, _body in ch.consume(uid, inactivity_timeout=0.5):
                    if method is not None:
                        ch.basic_ack(method.delivery_tag)
                        received += 1
                    if not publisher.is_alive() and received >= out.get("sent", 0) + 1:
                        break
                ch.cancel()
            publisher.join(10)

        assert "error" not in out, out
        assert out["events"] == [("blocked", "low on memory"), ("unblocked", "")]
        assert received - 1 == out["sent"] > out["sent_before_block"] > 0  # and the raw one
        assert _alarm_status(broker) == 200
        node = call(broker.management_url, "GET", "/api/nodes").json[0]
        assert node["mem_alarm"] is False
        log = broker.output()
        assert "memory alarm set" in log
        assert "memory alarm cleared" in log
    finally:
        broker.stop()


def test_a_disk_alarm_blocks_publishers_that_published_and_not_other_clients(
    serve: Serve, uid: str
) -> None:
    broker = serve(f"alarms:\n  disk_free_limit: {2**62}\n  check_interval: 0.05\n")
    wait_for(lambda: _alarm_status(broker) == 503)
    health = call(broker.management_url, "GET", "/api/health/checks/alarms").json
    assert health["alarms"] == ["disk"]
    node = call(broker.management_url, "GET", "/api/nodes").json[0]
    assert node["disk_free_alarm"] is True
    assert node["mem_alarm"] is False
    assert node["disk_free_limit"] == 2**62 > node["disk_free"]
    with connection(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(uid)
        # a client announcing the capability: its first publish is read, then it is held
        with RawClient.for_broker(broker) as raw:
            raw.send_protocol_header()
            raw.read_start()
            capabilities = {"capabilities": {"connection.blocked": True}}
            raw.send(start_ok_frame("PLAIN", plain_response("guest", "guest"), capabilities))
            raw.read_tune()
            raw.tune_ok()
            raw.open_vhost()
            raw.expect(commands.Connection.OpenOk, channel=0)
            raw.open_channel()
            raw.publish(1, uid, b"before the hold")
            blocked = raw.expect(commands.Connection.Blocked, channel=0)
            assert blocked.reason == "low on disk"
            raw.publish(1, uid, b"held")
            # a client that has not published is still read: it declares and gets
            method, _props, body = ch.basic_get(uid, auto_ack=True)
            assert method is not None
            assert body == b"before the hold"
            assert ch.queue_declare(uid, passive=True).method.message_count == 0
    assert "disk alarm set" in broker.output()
