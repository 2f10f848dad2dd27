"""End-to-end queue features with pika: priorities, TTL, dead-lettering, limits, consumers, policies."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from broker_process import start_broker
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    connection,
    drain,
    get_message,
    pump_until,
    ready_count,
    wait_ready_count,
)


def _start_broker(data_dir: Path, *args: str) -> Any:
    """A broker of the test's own, started with extra command-line arguments."""
    return start_broker(data_dir, *args)


@pytest.fixture
def cleanup(broker: Any) -> Iterator[Cleanup]:
    """Queues the test declared, deleted at teardown."""
    c = Cleanup()
    yield c
    c.run(broker)


def _dead_letter_pair(ch: BlockingChannel, cleanup: Cleanup, uid: str, **arguments: Any) -> str:
    """Declare `uid` dead-lettering into the queue `uid`.dead (through the default exchange)."""
    dead = cleanup.queue(f"{uid}.dead")
    ch.queue_declare(dead)
    ch.queue_declare(
        cleanup.queue(uid),
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead, **arguments},
    )
    return dead


def test_priority_queue_delivers_highest_priority_first(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    ch.queue_declare(cleanup.queue(uid), arguments={"x-max-priority": 10})
    for body, priority in [("low", 1), ("high", 9), ("mid", 5), ("high2", 9), ("over", 200)]:
        ch.basic_publish("", uid, body, pika.BasicProperties(priority=priority))
    assert drain(ch, uid) == [b"over", b"high", b"high2", b"mid", b"low"]


def test_short_ttl_message_behind_long_ones_expires_on_time(
    broker: Any, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    if not broker.is_amqplite:
        pytest.skip("RabbitMQ expires messages only at the head of the queue")
    ch.queue_declare(cleanup.queue(uid))
    for i in range(3):
        ch.basic_publish("", uid, f"long{i}", pika.BasicProperties(expiration="60000"))
    ch.basic_publish("", uid, "short", pika.BasicProperties(expiration="30"))
    wait_ready_count(ch, uid, 3)
    assert drain(ch, uid) == [b"long0", b"long1", b"long2"]


def test_per_message_expiration_shorter_than_the_queue_ttl_wins(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    ch.queue_declare(cleanup.queue(uid), arguments={"x-message-ttl": 60_000})
    ch.basic_publish("", uid, "short", pika.BasicProperties(expiration="20"))
    ch.basic_publish("", uid, "kept", pika.BasicProperties(expiration="90000"))
    ch.basic_publish("", uid, "plain")
    wait_ready_count(ch, uid, 2)
    assert drain(ch, uid) == [b"kept", b"plain"]


def test_queue_ttl_shorter_than_the_per_message_expiration_wins(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    kept = cleanup.queue(f"{uid}.kept")  # the same message where no queue TTL applies
    ch.queue_declare(kept)
    ch.queue_declare(cleanup.queue(uid), arguments={"x-message-ttl": 20})
    for queue in (uid, kept):
        ch.basic_publish("", queue, "long", pika.BasicProperties(expiration="90000"))
    wait_ready_count(ch, uid, 0)
    assert drain(ch, kept) == [b"long"]


def test_message_ttl_zero_expires_without_a_consumer(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    ch.queue_declare(cleanup.queue(uid), arguments={"x-message-ttl": 0})
    ch.basic_publish("", uid, "gone")
    wait_ready_count(ch, uid, 0)


def test_message_ttl_zero_reaches_a_consumer_waiting_for_it(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(cleanup.queue(uid), arguments={"x-message-ttl": 0})
        got: list[bytes] = []
        ch.basic_consume(uid, lambda c, m, p, b: got.append(b), auto_ack=True)
        ch.basic_publish("", uid, "taken")
        pump_until(conn, lambda: got == [b"taken"])


def _queue_gone(conn: BlockingConnection, queue: str) -> bool:
    """True once `queue` is deleted; probes with queue.bind, which is no use of the queue.

    (Not with queue.unbind: that answers unbind-ok for a missing queue, as in RabbitMQ.)
    """
    ch = conn.channel()
    try:
        ch.queue_bind(queue, "amq.fanout")
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return True
    ch.queue_unbind(queue, "amq.fanout")
    ch.close()
    return False


def test_unused_queue_expires_after_its_period(broker: Any, cleanup: Cleanup, uid: str) -> None:
    with connection(broker) as conn:
        declared_before = time.monotonic()
        conn.channel().queue_declare(cleanup.queue(uid), arguments={"x-expires": 1000})
        pump_until(conn, lambda: _queue_gone(conn, uid))
        # A lower bound only (load makes it later, never earlier): not deleted before its period.
        assert time.monotonic() - declared_before >= 1.0


def test_rejected_message_is_dead_lettered_with_rabbitmq_x_death(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    dead = _dead_letter_pair(ch, cleanup, uid)
    ch.basic_publish("", uid, "bad", pika.BasicProperties(headers={"app": "kept"}))
    method, _, _ = get_message(ch, uid)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get_message(ch, dead, auto_ack=True)
    assert body == b"bad"
    assert method.exchange == ""
    assert method.routing_key == dead
    headers = props.headers
    assert headers["app"] == "kept"
    [death] = headers["x-death"]
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == uid
    assert death["exchange"] == ""
    assert death["routing-keys"] == [uid]
    assert isinstance(death["time"], datetime.datetime)
    assert abs(death["time"].timestamp() - time.time()) < 120
    assert headers["x-first-death-reason"] == "rejected"
    assert headers["x-first-death-queue"] == uid
    assert headers["x-first-death-exchange"] == ""


def test_expired_message_is_dead_lettered_with_reason_expired(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    dead = _dead_letter_pair(ch, cleanup, uid)
    ch.basic_publish("", uid, "late", pika.BasicProperties(expiration="10"))
    _, props, body = get_message(ch, dead, auto_ack=True)
    assert body == b"late"
    assert props.expiration is None
    [death] = props.headers["x-death"]
    assert death["reason"] == "expired"
    assert death["original-expiration"] == "10"


def test_max_length_drop_head_dead_letters_with_reason_maxlen(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    dead = _dead_letter_pair(ch, cleanup, uid, **{"x-max-length": 2})
    for body in ("1", "2", "3"):
        ch.basic_publish("", uid, body)
    _, props, body = get_message(ch, dead, auto_ack=True)
    assert body == b"1"
    assert props.headers["x-death"][0]["reason"] == "maxlen"
    assert drain(ch, uid) == [b"2", b"3"]


def test_max_length_bytes_keeps_the_newest_bytes(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    ch.queue_declare(cleanup.queue(uid), arguments={"x-max-length-bytes": 10})
    for body in ("aaaa", "bbbb", "cccc"):
        ch.basic_publish("", uid, body)
    assert drain(ch, uid) == [b"bbbb", b"cccc"]


def test_reject_publish_nacks_a_confirming_publisher(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    ch.queue_declare(
        cleanup.queue(uid), arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    ch.confirm_delivery()
    ch.basic_publish("", uid, "fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", uid, "refused")
    assert drain(ch, uid) == [b"fits"]


def test_reject_publish_dlx_dead_letters_the_refused_message(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    dead = _dead_letter_pair(
        ch, cleanup, uid, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"}
    )
    ch.confirm_delivery()
    ch.basic_publish("", uid, "fits")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", uid, "refused")
    _, props, body = get_message(ch, dead, auto_ack=True)
    assert body == b"refused"
    assert props.headers["x-death"][0]["reason"] == "maxlen"


def test_delivery_limit_moves_a_poison_message_to_the_dead_letter_queue(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    # quorum + durable so that the same test runs against RabbitMQ (classic queues lack it there)
    dead = cleanup.queue(f"{uid}.dead")
    ch.queue_declare(dead)
    ch.queue_declare(
        cleanup.queue(uid),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead,
        },
    )
    ch.basic_publish("", uid, "poison")
    counts = []
    for _ in range(3):
        method, props, _ = get_message(ch, uid)
        counts.append((props.headers or {}).get("x-delivery-count"))
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert counts == [0, 1, 2]
    _, props, body = get_message(ch, dead, auto_ack=True)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert ready_count(ch, uid) == 0


def test_single_active_consumer_hands_over_when_it_leaves(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(cleanup.queue(uid), arguments={"x-single-active-consumer": True})
        got: list[tuple[str, bytes]] = []
        first = ch.basic_consume(uid, lambda c, m, p, b: got.append(("first", b)), auto_ack=True)
        ch.basic_consume(uid, lambda c, m, p, b: got.append(("second", b)), auto_ack=True)
        for body in ("1", "2", "3"):
            ch.basic_publish("", uid, body)
        pump_until(conn, lambda: len(got) == 3)
        ch.basic_cancel(first)
        ch.basic_publish("", uid, "4")
        pump_until(conn, lambda: len(got) == 4)
        assert got == [("first", b"1"), ("first", b"2"), ("first", b"3"), ("second", b"4")]


def test_higher_priority_consumer_receives_while_it_has_credit(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    with connection(broker) as conn:
        low_ch, high_ch = conn.channel(), conn.channel()
        low_ch.queue_declare(cleanup.queue(uid))
        high_ch.basic_qos(prefetch_count=3)
        got: dict[str, list[bytes]] = {"low": [], "high": []}
        # The low one subscribes first and has no prefetch limit: neither order nor credit
        # would favour the high one, only its priority.
        low_ch.basic_consume(uid, lambda c, m, p, b: got["low"].append(b))
        high_ch.basic_consume(
            uid, lambda c, m, p, b: got["high"].append(b), arguments={"x-priority": 10}
        )
        for i in range(5):
            low_ch.basic_publish("", uid, str(i))
        pump_until(conn, lambda: len(got["low"]) + len(got["high"]) == 5)
        assert got == {"high": [b"0", b"1", b"2"], "low": [b"3", b"4"]}


def test_consumer_timeout_closes_the_channel_and_requeues(
    broker: Any, cleanup: Cleanup, uid: str
) -> None:
    if not broker.is_amqplite:
        pytest.skip("x-consumer-timeout as a queue argument needs RabbitMQ 3.12+")
    with connection(broker) as conn:
        ch = conn.channel()
        ch.queue_declare(cleanup.queue(uid), arguments={"x-consumer-timeout": 100})
        ch.basic_publish("", uid, "slow")
        reasons: list[Any] = []
        ch._impl.add_on_close_callback(lambda c, reason: reasons.append(reason))
        ch.basic_consume(uid, lambda c, m, p, b: None)
        pump_until(conn, lambda: bool(reasons))
        assert reasons[0].reply_code == 406
        assert "delivery acknowledgement on channel" in reasons[0].reply_text
        assert "timed out" in reasons[0].reply_text
        other = conn.channel()
        method, _, body = get_message(other, uid, auto_ack=True)
        assert body == b"slow"
        assert method.redelivered


def test_policy_from_definitions_limits_matching_queues(tmp_path: Path, uid: str) -> None:
    definitions = tmp_path / "definitions.yaml"
    definitions.write_text(
        "policies:\n"
        "  - name: short\n"
        '    pattern: "^limited\\\\."\n'
        "    apply-to: queues\n"
        "    definition: {max-length: 2}\n"
    )
    b = _start_broker(tmp_path / "data", "--definitions", str(definitions))
    try:
        with connection(b) as conn:
            ch = conn.channel()
            ch.queue_declare("limited.jobs")
            ch.queue_declare("unlimited", arguments={"x-max-length": 5})
            for body in ("1", "2", "3"):
                ch.basic_publish("", "limited.jobs", body)
                ch.basic_publish("", "unlimited", body)
            assert drain(ch, "limited.jobs") == [b"2", b"3"]
            assert drain(ch, "unlimited") == [b"1", b"2", b"3"]
    finally:
        b.stop()
