"""A test plugin using every hook, loaded by name from the config by a real `amqplite serve`."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest
from broker_process import start_broker
from pika_helpers import connection, watchdog

PLUGIN = "tests.plugins.every_hook_plugin"


def test_the_every_hook_plugin_loaded_by_name_sees_each_hook_fire(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.log"
    monkeypatch.setenv("AMQPLITE_EVERY_HOOK_LOG", str(events_file))  # the broker inherits it
    config = tmp_path / "amqplite.yaml"
    config.write_text(f"plugins: [{PLUGIN}]\n")
    broker = start_broker(tmp_path / "data", "--config", str(config))
    try:
        with watchdog(), connection(broker) as conn:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.exchange_declare("ex", "x-every-hook", durable=True)
            channel.queue_declare("q", durable=True, arguments={"x-every-hook": True})
            channel.queue_bind("q", "ex", "k")
            for body, headers in (
                (b"held by the exchange", {"x-hold-ms": 200}),
                (b"dropped", {"x-verdict": "drop"}),
                (b"held by the queue", {"x-verdict": "hold", "x-queue-hold-ms": 100}),
            ):
                props = pika.BasicProperties(
                    delivery_mode=2, message_id=body.decode(), headers=headers
                )
                channel.basic_publish("ex", "k", body, props, mandatory=True)  # all confirmed
            received: list[bytes] = []
            for method, _props, body in channel.consume("q", inactivity_timeout=10):
                assert method is not None, f"only {received} arrived"
                received.append(body)
                channel.basic_ack(method.delivery_tag)
                if len(received) == 4:
                    break
            channel.cancel()
        assert sorted(received) == [
            b"acked:held by the exchange",
            b"acked:held by the queue",
            b"held by the exchange",
            b"held by the queue",
        ]
    finally:
        broker.stop()
    hooks = {line.split(" ")[0] for line in events_file.read_text().splitlines()}
    assert {
        "register",
        "validate",
        "create_router_in",
        "state.load",
        "attach",
        "validate_binding",
        "bind",
        "route",
        "hold",
        "state.put",
        "scheduler.fire",
        "before_enqueue",
        "queue",  # "queue release": a held message handed back to its queue
        "after_ack",
    } <= hooks
