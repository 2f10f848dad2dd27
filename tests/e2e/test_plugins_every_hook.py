"""A test plugin using every hook, loaded by name from the config by a real `amqplite serve`."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest
from broker_process import Serve
from mgmt_helpers import call, q
from pika_helpers import connection, watchdog

PLUGIN = "tests.plugins.every_hook_plugin"
HOUR_MS = 3_600_000


def test_the_every_hook_plugin_loaded_by_name_sees_each_hook_fire(
    tmp_path: Path, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    events_file = tmp_path / "events.log"
    monkeypatch.setenv("AMQPLITE_EVERY_HOOK_LOG", str(events_file))  # the broker inherits it
    broker = serve(f"plugins: [{PLUGIN}]\n")
    with watchdog(), connection(broker) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.exchange_declare("ex", "x-every-hook", durable=True)
        channel.exchange_declare("plain", "x-every-hook-plain")
        channel.queue_declare("q", durable=True, arguments={"x-every-hook": True})
        channel.queue_bind("q", "ex", "k")
        channel.queue_bind("q", "plain", "k")

        # route_message reads the `type` property: "nowhere" is unroutable, so returned
        props = pika.BasicProperties(message_id="lost", type="nowhere")
        with pytest.raises(pika.exceptions.UnroutableError):
            channel.basic_publish("ex", "k", b"lost", props, mandatory=True)

        # spooled messages show through the management API, and one is cancelled there
        for body in (b"spooled 1", b"spooled 2"):
            props = pika.BasicProperties(
                delivery_mode=2, message_id=body.decode(), headers={"x-spool-ms": HOUR_MS}
            )
            channel.basic_publish("ex", "k", body, props, mandatory=True)
        api, base = broker.management_url, f"/api/amqplite/scheduled/{q('/')}/ex"
        listed = call(api, "GET", "/api/amqplite/scheduled").json
        assert [(i["exchange"], i["type"], i["scheduled"]) for i in listed] == [
            ("ex", "x-every-hook", 2)
        ]
        assert listed[0]["next_due_ms"] is not None
        shown = call(api, "GET", base).json["messages"]
        assert [m["properties"]["message_id"] for m in shown] == ["spooled 1", "spooled 2"]
        first = shown[0]["id"]
        assert call(api, "GET", f"{base}/{first}").json["payload"] == "spooled 1"
        assert call(api, "DELETE", f"{base}/{first}").status == 204
        assert call(api, "GET", f"{base}/{first}").status == 404
        assert call(api, "GET", base).json["scheduled"] == 1

        for exchange, body, headers in (
            ("ex", b"held by the exchange", {"x-hold-ms": 200}),
            ("ex", b"held by the spool", {"x-spool-ms": 100}),
            ("ex", b"dropped", {"x-verdict": "drop"}),
            ("ex", b"held by the queue", {"x-verdict": "hold", "x-queue-hold-ms": 100}),
            ("plain", b"routed by the plain type", {}),
        ):
            props = pika.BasicProperties(delivery_mode=2, message_id=body.decode(), headers=headers)
            channel.basic_publish(exchange, "k", body, props, mandatory=True)  # all confirmed
        received: list[bytes] = []
        for method, _props, body in channel.consume("q", inactivity_timeout=10):
            assert method is not None, f"only {received} arrived"
            received.append(body)
            channel.basic_ack(method.delivery_tag)
            if len(received) == 8:
                break
        channel.cancel()
    assert sorted(received) == [
        b"acked:held by the exchange",
        b"acked:held by the queue",
        b"acked:held by the spool",
        b"acked:routed by the plain type",
        b"held by the exchange",
        b"held by the queue",
        b"held by the spool",
        b"routed by the plain type",
    ]
    hooks = {line.split(" ")[0] for line in events_file.read_text().splitlines()}
    assert {
        "register",
        "validate",
        "create_router",
        "create_router_in",
        "state.load",
        "spool.restored",
        "attach",
        "validate_binding",
        "bind",
        "route_message",
        "route",
        "hold",
        "state.put",
        "scheduler.fire",
        "spool.add",
        "spool.cancel",
        "spool.release",
        "before_enqueue",
        "queue",  # "queue release": a held message handed back to its queue
        "after_ack",
    } <= hooks
