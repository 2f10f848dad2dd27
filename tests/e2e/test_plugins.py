"""Plugins switched on by name in the config file, with a real `amqplite serve` and pika."""

from __future__ import annotations

import signal
import time

import pika
import pika.exceptions
import pytest
from broker_process import Serve
from pika_helpers import connection, declare_delayed_route, watchdog


def test_a_bundled_plugin_enabled_by_name_adds_its_exchange_type(serve: Serve) -> None:
    broker = serve("plugins: [consistent_hash]\n")
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.exchange_declare("hash", "x-consistent-hash")
        for name in ("p1", "p2"):
            channel.queue_declare(name)
            channel.queue_bind(name, "hash", routing_key="1")
        for i in range(20):
            channel.basic_publish("hash", f"key-{i}", b"x")
        depths = [
            channel.queue_declare(name, passive=True).method.message_count for name in ("p1", "p2")
        ]
        assert sum(depths) == 20  # each message went to exactly one partition


def test_without_the_plugin_its_exchange_type_is_refused(serve: Serve) -> None:
    broker = serve()
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as caught:
            channel.exchange_declare("hash", "x-consistent-hash")
        assert caught.value.reply_code == 406
        assert "x-consistent-hash" in caught.value.reply_text


DELAYS_MS = (600, 200, 0, 400, 200)


def test_delayed_messages_arrive_in_due_order_and_not_before_their_delay(serve: Serve) -> None:
    """Tolerance: none below the delay (each message arrives at least x-delay ms after it was
    sent); no upper bound is asserted (timing belongs to the benchmarks)."""
    broker = serve("plugins: [delayed_message]\n")
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        declare_delayed_route(channel)
        sent: dict[bytes, float] = {}
        for i, delay in enumerate(DELAYS_MS):
            body = f"{i}:{delay}".encode()
            sent[body] = time.monotonic()
            # mandatory: a held message is not unroutable, so no basic.return (UnroutableError)
            channel.basic_publish(
                "later",
                "k",
                body,
                pika.BasicProperties(headers={"x-delay": delay}),
                mandatory=True,
            )
        arrived: list[tuple[bytes, float]] = []
        for _method, _props, body in channel.consume("due", auto_ack=True):
            arrived.append((body, time.monotonic()))
            if len(arrived) == len(DELAYS_MS):
                break
        channel.cancel()
    order = [body for body, _ in arrived]
    assert order == [b"2:0", b"1:200", b"4:200", b"3:400", b"0:600"]
    for body, at in arrived:
        delay_ms = int(body.split(b":")[1])
        assert at - sent[body] >= delay_ms / 1000, body


PASSES_WHILE_DOWN_MS = 1500  # due while the broker is stopped: routed at boot
AFTER_RESTART_MS = 4000  # due after the restart: routed on time by the restored timer


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_confirmed_delayed_messages_of_a_durable_exchange_survive_a_restart(
    serve: Serve, sig: int
) -> None:
    broker = serve("plugins: [delayed_message]\n")
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        declare_delayed_route(channel, durable=True)
        sent = time.monotonic()
        for body, delay, mode in (
            (b"after-restart", AFTER_RESTART_MS, 2),
            (b"while-down", PASSES_WHILE_DOWN_MS, 2),
            (b"transient", PASSES_WHILE_DOWN_MS, 1),  # not persistent: held in memory only
        ):
            props = pika.BasicProperties(delivery_mode=mode, headers={"x-delay": delay})
            channel.basic_publish("later", "k", body, props)  # returns once confirmed
        assert channel.queue_declare("due", passive=True).method.message_count == 0
    broker.stop(sig)
    assert time.monotonic() - sent < PASSES_WHILE_DOWN_MS / 1000, "too slow to test boot"
    while time.monotonic() - sent < PASSES_WHILE_DOWN_MS / 1000:  # a polled deadline
        time.sleep(0.05)
    broker = serve("plugins: [delayed_message]\n", port=broker.port)
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        arrived: list[tuple[bytes, float]] = []
        # a failure bound only: a lost message ends the wait instead of the watchdog
        for _method, _props, body in channel.consume("due", auto_ack=True, inactivity_timeout=10):
            if body is None:
                break
            arrived.append((body, time.monotonic()))
            if len(arrived) == 2:
                break
        channel.cancel()
    assert [body for body, _ in arrived] == [b"while-down", b"after-restart"]
    assert arrived[1][1] - sent >= AFTER_RESTART_MS / 1000
