"""Topic permissions and user/vhost limits set over the management API survive a restart."""

from __future__ import annotations

from pathlib import Path

import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, start_broker
from mgmt_helpers import call

CAROL = "amqp://carol:carol@127.0.0.1:{port}/%2F"


def _carol(proc: BrokerProcess) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(CAROL.format(port=proc.port)))


def _publish_refused(proc: BrokerProcess, routing_key: str) -> bool:
    """True when carol's publish to amq.topic with this key is refused (403 closes the channel)."""
    with _carol(proc) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        refusal: pika.exceptions.ChannelClosedByBroker | None = None
        try:
            channel.basic_publish("amq.topic", routing_key, b"x")
        except pika.exceptions.ChannelClosedByBroker as exc:
            refusal = exc
    if refusal is None:
        return False
    assert refusal.reply_code == 403
    assert routing_key in refusal.reply_text
    return True


def test_set_over_the_api_kept_across_a_restart_and_deleted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = start_broker(data)
    try:
        base = proc.management_url
        assert (
            call(base, "PUT", "/api/users/carol", {"password": "carol", "tags": ""}).status == 201
        )
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        assert call(base, "PUT", "/api/permissions/%2F/carol", perms).status == 201
        topic = {"exchange": "amq.topic", "write": "^carol\\.", "read": ".*"}
        assert call(base, "PUT", "/api/topic-permissions/%2F/carol", topic).status == 201
        limit = {"value": 1}
        assert call(base, "PUT", "/api/user-limits/carol/max-connections", limit).status == 204
        assert call(base, "PUT", "/api/vhost-limits/%2F/max-queues", {"value": 50}).status == 204
        bad = call(base, "PUT", "/api/topic-permissions/%2F/carol", {**topic, "write": "("})
        assert bad.status == 400
    finally:
        proc.stop()

    proc = start_broker(data)
    try:
        base = proc.management_url
        assert call(base, "GET", "/api/topic-permissions/%2F/carol").json == [
            {"user": "carol", "vhost": "/", **topic}
        ]
        assert call(base, "GET", "/api/user-limits").json == [
            {"user": "carol", "value": {"max-connections": 1}}
        ]
        assert call(base, "GET", "/api/vhost-limits/%2F").json == [
            {"vhost": "/", "value": {"max-queues": 50}}
        ]
        # enforced after the restart: the topic permission and the connection limit
        assert not _publish_refused(proc, "carol.news")
        assert _publish_refused(proc, "dave.news")
        with _carol(proc), pytest.raises(pika.exceptions.AMQPConnectionError):
            _carol(proc)  # a second connection passes max-connections 1
        assert call(base, "DELETE", "/api/topic-permissions/%2F/carol").status == 204
        assert call(base, "DELETE", "/api/user-limits/carol/max-connections").status == 204
        assert call(base, "DELETE", "/api/vhost-limits/%2F/max-queues").status == 204
        assert call(base, "DELETE", "/api/vhost-limits/%2F/max-queues").status == 404
    finally:
        proc.stop()

    proc = start_broker(data)
    try:
        base = proc.management_url
        assert call(base, "GET", "/api/topic-permissions").json == []
        assert call(base, "GET", "/api/user-limits").json == []
        assert call(base, "GET", "/api/vhost-limits").json == []
        assert not _publish_refused(proc, "dave.news")
    finally:
        proc.stop()
