"""Stream queues end to end with pika: declare rules, replay by offset spec, retention, restarts,
named consumers that resume, filtering (a broker of our own per module, restarted where needed)."""

from __future__ import annotations

import datetime
import json
import math
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, free_port, start_broker
from mgmt_helpers import ctl
from pika.adapters.blocking_connection import BlockingChannel

STREAM = {"x-queue-type": "stream"}
DEADLINE_S = 20.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the tests that do not restart it (each uses its own queue names)."""
    process = start_broker(tmp_path_factory.mktemp("streams") / "data")
    yield process
    process.stop(signal.SIGKILL)


@pytest.fixture
def own(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of our own on a fresh data directory, for restarts."""
    process = start_broker(tmp_path / "data")
    yield process
    process.stop(signal.SIGKILL)


@pytest.fixture
def q(request: pytest.FixtureRequest) -> str:
    """A stream name unique to the test."""
    return re.sub(r"\W", "-", request.node.name)


def _next_second() -> datetime.datetime:
    """The next whole second, once the wall clock has passed it (a polled deadline)."""
    stamp = math.ceil(time.time())
    while time.time() < stamp:
        time.sleep(0.02)
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC)


def _channel(broker: BrokerProcess) -> BlockingChannel:
    return pika.BlockingConnection(pika.URLParameters(broker.url)).channel()


def _publish(ch: BlockingChannel, queue: str, count: int, start: int = 0, **headers: Any) -> None:
    ch.confirm_delivery()
    for i in range(start, start + count):
        props = pika.BasicProperties(headers={"n": i, **headers}, delivery_mode=2)
        ch.basic_publish("", queue, f"m{i}".encode(), props)


def _consume(
    ch: BlockingChannel,
    queue: str,
    count: int,
    arguments: dict[str, Any] | None = None,
    tag: str | None = None,
    prefetch: int = 10,
    ack: bool = True,
) -> list[tuple[int, bytes, dict[str, Any]]]:
    """Up to `count` deliveries (offset, body, headers); stops at count or after a quiet second."""
    ch.basic_qos(prefetch_count=prefetch)
    got: list[tuple[int, bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + DEADLINE_S
    for method, props, body in ch.consume(
        queue, arguments=arguments or {}, inactivity_timeout=1.0, consumer_tag=tag
    ):
        if method is None:
            if got or time.monotonic() > deadline:
                break
            continue
        got.append((int(props.headers["x-stream-offset"]), body, props.headers))
        if ack:
            ch.basic_ack(method.delivery_tag)
        if len(got) >= count:
            break
    ch.cancel()
    return got


def _declare(ch: BlockingChannel, name: str, **arguments: Any) -> None:
    ch.queue_declare(name, durable=True, arguments={**STREAM, **arguments})


# -- declare and consume rules, as RabbitMQ 3.10 answers them ------------------------------------


@pytest.mark.parametrize(
    ("options", "arguments", "text"),
    [
        ({"durable": False}, {}, "invalid property 'non-durable' for queue 'bad' in vhost '/'"),
        ({"exclusive": True}, {}, "invalid property 'exclusive-owner' for queue 'bad'"),
        ({"auto_delete": True}, {}, "invalid property 'auto-delete' for queue 'bad'"),
        ({}, {"x-max-priority": 5}, "invalid arg 'x-max-priority' for queue 'bad' in vhost '/' "),
        ({}, {"x-message-ttl": 5}, "invalid arg 'x-message-ttl' for queue 'bad'"),
        ({}, {"x-max-age": "7X"}, "invalid arg 'x-max-age' for queue 'bad' in vhost '/': invalid"),
    ],
)
def test_declare_refuses_what_rabbitmq_refuses(
    shared: BrokerProcess, q: str, options: dict[str, Any], arguments: dict[str, Any], text: str
) -> None:
    ch = _channel(shared)
    settings = {"durable": True, **options}
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
        ch.queue_declare("bad", arguments={**STREAM, **arguments}, **settings)
    assert caught.value.reply_code == 406
    assert text in caught.value.reply_text


def test_get_no_prefetch_and_auto_ack_are_refused(shared: BrokerProcess, q: str) -> None:
    ch = _channel(shared)
    _declare(ch, q)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as get:
        ch.basic_get(q)
    assert get.value.reply_code == 540
    assert f"basic.get not supported by stream queues queue '{q}'" in get.value.reply_text
    ch = _channel(shared)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as prefetch:
        ch.basic_consume(q, lambda *a: None)
    assert prefetch.value.reply_code == 406
    assert f"consumer prefetch count is not set for 'queue '{q}' in vhost '/''" in (
        prefetch.value.reply_text
    )
    ch = _channel(shared)
    ch.basic_qos(prefetch_count=5)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as auto_ack:
        ch.basic_consume(q, lambda *a: None, auto_ack=True)
    assert auto_ack.value.reply_code == 540


# -- replay ------------------------------------------------------------------------------------


def test_replay_from_first_last_next_offset_and_timestamp(shared: BrokerProcess, q: str) -> None:
    ch = _channel(shared)
    _declare(ch, q, **{"x-stream-max-segment-size-bytes": 2000})
    _publish(ch, q, 50)
    first = _consume(ch, q, 50, {"x-stream-offset": "first"})
    assert [o for o, _, _ in first] == list(range(50))
    assert [b for _, b, _ in first] == [f"m{i}".encode() for i in range(50)]
    assert first[7][2]["n"] == 7  # the publisher's headers stay, x-stream-offset is added
    assert [o for o, _, _ in _consume(ch, q, 5, {"x-stream-offset": 42})] == list(range(42, 47))
    assert [o for o, _, _ in _consume(ch, q, 5, {"x-stream-offset": "last"})] == [49]
    stamp = _next_second()  # AMQP timestamps count whole seconds
    _publish(ch, q, 3, start=50)
    by_time = _consume(ch, q, 10, {"x-stream-offset": stamp})
    assert [o for o, _, _ in by_time] == [50, 51, 52]
    # next: only what is published after the consumer started
    ch2 = _channel(shared)
    ch2.basic_qos(prefetch_count=10)
    received: list[int] = []
    ch2.basic_consume(
        q,
        lambda c, m, p, b: (
            received.append(p.headers["x-stream-offset"]),
            c.basic_ack(m.delivery_tag),
        ),
        arguments={"x-stream-offset": "next"},
    )
    ch2.connection.process_data_events(0.2)
    _publish(ch, q, 2, start=53)
    deadline = time.monotonic() + DEADLINE_S
    while len(received) < 2 and time.monotonic() < deadline:
        ch2.connection.process_data_events(0.1)
    assert received == [53, 54]


def test_two_consumers_read_at_their_own_positions(shared: BrokerProcess, q: str) -> None:
    ch = _channel(shared)
    _declare(ch, q)
    _publish(ch, q, 30)
    a, b = _channel(shared), _channel(shared)
    got_a = _consume(a, q, 10, {"x-stream-offset": "first"})
    got_b = _consume(b, q, 10, {"x-stream-offset": 20})
    assert [o for o, _, _ in got_a] == list(range(10))
    assert [o for o, _, _ in got_b] == list(range(20, 30))
    again = _consume(a, q, 30, {"x-stream-offset": "first"})  # consumption removed nothing
    assert len(again) == 30


def test_prefetch_bounds_unacked_deliveries_and_acks_return_credit(
    shared: BrokerProcess, q: str
) -> None:
    ch = _channel(shared)
    _declare(ch, q)
    _publish(ch, q, 20)
    unacked = _consume(ch, q, 20, {"x-stream-offset": "first"}, prefetch=4, ack=False)
    assert len(unacked) == 4  # no ack: no more credit


# -- retention ---------------------------------------------------------------------------------


def _segments(shared: BrokerProcess) -> int:
    assert shared.data_dir is not None
    return len(list((shared.data_dir / "queues").glob("*/*.seg")))


def test_retention_by_size_deletes_whole_old_segments(own: BrokerProcess, q: str) -> None:
    ch = _channel(own)
    size = {"x-stream-max-segment-size-bytes": 1000, "x-max-length-bytes": 3000}
    _declare(ch, q, **size)
    _publish(ch, q, 200)
    assert _segments(own) <= 5  # 3000 bytes of closed segments, plus the open one
    got = _consume(ch, q, 1, {"x-stream-offset": "first"})
    assert got[0][0] > 100  # the oldest messages went with their segments


def test_retention_by_age_deletes_segments_older_than_max_age(own: BrokerProcess, q: str) -> None:
    ch = _channel(own)
    _declare(ch, q, **{"x-stream-max-segment-size-bytes": 1000, "x-max-age": "1s"})
    _publish(ch, q, 100)
    before = _segments(own)
    assert before > 3
    deadline = time.monotonic() + DEADLINE_S
    while _segments(own) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a deadline: the own's timer checks every max-age / 4
    assert _segments(own) == 1  # only the open segment stays
    got = _consume(ch, q, 1, {"x-stream-offset": "first"})
    assert got[0][0] > 80


def test_a_policy_sets_retention(shared: BrokerProcess, q: str) -> None:

    response = httpx.put(
        f"{shared.management_url}/api/policies/%2F/streams",
        json={
            "pattern": "^pol",
            "definition": {"max-length-bytes": 3000, "stream-max-segment-size-bytes": 1000},
            "apply-to": "queues",
        },
        auth=("guest", "guest"),
    )
    assert response.status_code in (201, 204), response.text
    ch = _channel(shared)
    _declare(ch, f"pol-{q}")
    _publish(ch, f"pol-{q}", 200)
    got = _consume(ch, f"pol-{q}", 1, {"x-stream-offset": "first"})
    assert got[0][0] > 100


# -- restarts and named consumers --------------------------------------------------------------


def _restart(own: BrokerProcess, sig: int, ch: BlockingChannel) -> BrokerProcess:
    ch.connection.close()
    own.stop(sig)
    assert own.data_dir is not None
    return start_broker(own.data_dir, port=own.port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stream_survives_restart_with_every_confirmed_message(
    own: BrokerProcess, q: str, sig: int
) -> None:
    ch = _channel(own)
    _declare(ch, q, **{"x-stream-max-segment-size-bytes": 4000})
    _publish(ch, q, 150)  # each basic_publish returned after its confirm
    restarted = _restart(own, sig, ch)
    try:
        ch = _channel(restarted)
        got = _consume(ch, q, 150, {"x-stream-offset": "first"}, prefetch=100)
        assert [o for o, _, _ in got] == list(range(150))
        _publish(ch, q, 1, start=150)  # offsets go on after the restart
        assert _consume(ch, q, 1, {"x-stream-offset": "last"})[0][0] == 150
    finally:
        restarted.stop()


def _ack_then_sync(ch: BlockingChannel, queue: str, name: str, upto: int) -> None:
    """Consume and ack offsets 0..upto as `name`; a confirmed publish after them on the same
    channel proves the offset is on disk (same commit domain, appended after)."""
    got = _consume(
        ch, queue, upto + 1, {"x-stream-consumer-name": name, "x-stream-offset": "first"}
    )
    assert got[-1][0] == upto
    _publish(ch, queue, 1, start=1000)


def test_named_consumer_resumes_after_reconnect(shared: BrokerProcess, q: str) -> None:
    ch = _channel(shared)
    _declare(ch, q)
    _publish(ch, q, 20)
    _ack_then_sync(ch, q, "reader", 9)
    ch.connection.close()
    ch = _channel(shared)
    got = _consume(ch, q, 5, {"x-stream-consumer-name": "reader", "x-stream-offset": "first"})
    assert [o for o, _, _ in got] == [10, 11, 12, 13, 14]
    other = _consume(ch, q, 1, {"x-stream-consumer-name": "another", "x-stream-offset": "first"})
    assert other[0][0] == 0  # names are independent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_named_consumer_resumes_after_restart(own: BrokerProcess, q: str, sig: int) -> None:
    ch = _channel(own)
    _declare(ch, q, **{"x-stream-max-segment-size-bytes": 500})  # tracks cross segment rolls
    _publish(ch, q, 40)
    _ack_then_sync(ch, q, "reader", 24)
    restarted = _restart(own, sig, ch)
    try:
        ch = _channel(restarted)
        got = _consume(ch, q, 3, {"x-stream-consumer-name": "reader"})
        assert [o for o, _, _ in got] == [25, 26, 27]
    finally:
        restarted.stop()


def test_lavinmq_automatic_offset_tracking_uses_the_consumer_tag(
    shared: BrokerProcess, q: str
) -> None:
    ch = _channel(shared)
    _declare(ch, q)
    _publish(ch, q, 10)
    lavin = {"x-stream-automatic-offset-tracking": True}
    got = _consume(ch, q, 4, {**lavin, "x-stream-offset": "first"}, tag="tagged")
    assert [o for o, _, _ in got] == [0, 1, 2, 3]
    _publish(ch, q, 1, start=100)
    ch.connection.close()
    ch = _channel(shared)
    assert _consume(ch, q, 1, lavin, tag="tagged")[0][0] == 4
    null_offset = _consume(ch, q, 1, {"x-stream-offset": None}, tag="fresh")
    assert null_offset[0][0] == 0  # LavinMQ's null offset: tracked, from the first message


# -- filtering ---------------------------------------------------------------------------------


def test_filtered_consumer_receives_only_its_values(shared: BrokerProcess, q: str) -> None:
    ch = _channel(shared)
    _declare(ch, q, **{"x-stream-max-segment-size-bytes": 800})
    _publish(ch, q, 60, **{"x-stream-filter-value": "blue"})
    _publish(ch, q, 5, start=60, **{"x-stream-filter-value": "red"})
    _publish(ch, q, 5, start=65)
    got = _consume(ch, q, 100, {"x-stream-offset": "first", "x-stream-filter": "red"})
    assert [o for o, _, _ in got] == [60, 61, 62, 63, 64]
    both = _consume(
        ch,
        q,
        100,
        {
            "x-stream-offset": 58,
            "x-stream-filter": ["red", "blue"],
            "x-stream-match-unfiltered": True,
        },
    )
    assert [o for o, _, _ in both] == list(range(58, 70))


# -- management API, amqplite ctl, /metrics -----------------------------------------------------


def test_management_ctl_and_metrics_show_offsets_bytes_segments_and_lag(
    tmp_path: Path,
) -> None:

    metrics_port = free_port()
    broker = start_broker(tmp_path / "data", "--prometheus-port", str(metrics_port))
    try:
        ch = _channel(broker)
        _declare(ch, "m", **{"x-stream-max-segment-size-bytes": 600})
        _publish(ch, "m", 30)
        _consume(ch, "m", 10, {"x-stream-consumer-name": "billing", "x-stream-offset": "first"})
        _publish(ch, "m", 1, start=30)  # the acks' offset is now committed too
        row = httpx.get(f"{broker.management_url}/api/queues/%2F/m", auth=("guest", "guest")).json()
        assert row["type"] == "stream"
        stream = row["stream"]
        assert stream["messages"] == 31
        assert (stream["first_offset"], stream["last_offset"]) == (0, 30)
        assert stream["segments"] > 1
        assert stream["bytes_on_disk"] > 31 * 20
        assert stream["consumer_offsets"] == {"billing": {"offset": 9, "lag": 21}}
        listed = json.loads(ctl(broker, "--json", "list", "streams"))
        assert [item["name"] for item in listed] == ["m"]
        assert "billing" in ctl(broker, "list", "streams")
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'amqplite_stream_messages{vhost="/",queue="m"} 31' in text
        assert 'amqplite_stream_consumer_lag{vhost="/",queue="m",consumer="billing"} 21' in text
    finally:
        broker.stop(signal.SIGKILL)


# -- compaction --------------------------------------------------------------------------------


def test_compaction_keeps_the_newest_message_per_key_and_drops_tombstones(
    own: BrokerProcess, q: str
) -> None:
    ch = _channel(own)
    compaction = {
        "x-stream-compaction": "key",
        "x-stream-tombstone-max-age": "1s",
        "x-stream-max-segment-size-bytes": 400,
    }
    _declare(ch, q, **compaction)
    ch.confirm_delivery()
    for round_no in range(6):
        for key in ("a", "b", "c"):
            props = pika.BasicProperties(headers={"key": key})
            ch.basic_publish("", q, f"{key}{round_no}".encode() * 5, props)
    ch.basic_publish("", q, b"", pika.BasicProperties(headers={"key": "b"}))  # b's tombstone
    _publish(ch, q, 20, start=100)  # messages without a key: kept; they close the keyed segments
    total = 6 * 3 + 1 + 20
    deadline = time.monotonic() + DEADLINE_S
    while True:
        got = _consume(ch, q, total, {"x-stream-offset": "first"}, prefetch=50)
        keyed = [(h.get("key"), body) for _, body, h in got if h.get("key")]
        if keyed == [("a", b"a5" * 5), ("c", b"c5" * 5)] or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling a deadline: compaction runs as segments close, tombstones age
    assert keyed == [("a", b"a5" * 5), ("c", b"c5" * 5)]  # newest of each key, b deleted
    assert [body for _, body, h in got if not h.get("key")] == [
        f"m{i}".encode() for i in range(100, 120)
    ]
