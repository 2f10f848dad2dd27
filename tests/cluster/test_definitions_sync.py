"""Definitions through etcd end to end: declared on one node, present on every node."""

from __future__ import annotations

import base64
import json
import signal
import urllib.request
from typing import Any

import pika
import pytest
from broker_process import BrokerProcess
from cluster_helpers import EtcdProcess, StartNode, api_get, wait_for

pytestmark = pytest.mark.cluster


def send(node: BrokerProcess, method: str, path: str, body: Any = None) -> int:
    """One management request as guest; the HTTP status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(node.management_url + path, data=data, method=method)
    request.add_header("authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def defs(node: BrokerProcess) -> dict[str, Any]:
    """The node's definitions export."""
    result: dict[str, Any] = api_get(node, "/api/definitions")
    return result


def names(node: BrokerProcess, kind: str) -> set[str]:
    """Names of one kind of entity on a node (exchanges without the built-ins)."""
    return {
        item["name"]
        for item in defs(node)[kind]
        if not item["name"].startswith("amq.") and item["name"]
    }


def bindings(node: BrokerProcess) -> set[tuple[str, str, str]]:
    """(source, destination, routing key) of every binding of a node."""
    return {(b["source"], b["destination"], b["routing_key"]) for b in defs(node)["bindings"]}


def test_entities_declared_on_one_node_appear_on_the_other(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    b = node("node-b")
    with pika.BlockingConnection(pika.URLParameters(a.url)) as conn:
        ch = conn.channel()
        ch.exchange_declare("orders", "topic", durable=True)
        ch.queue_declare("orders.eu", durable=True)
        ch.queue_bind("orders.eu", "orders", "eu.#")
        ch.queue_declare("scratch", durable=False)  # transient: stays on node-a
    send(a, "PUT", "/api/users/alice", {"password": "s3cret", "tags": "management"})
    send(a, "PUT", "/api/permissions/%2F/alice", {"configure": "", "write": ".*", "read": ".*"})
    send(
        a,
        "PUT",
        "/api/policies/%2F/cap",
        {"pattern": "^orders", "definition": {"max-length": 9}},
    )
    wait_for(lambda: "orders.eu" in names(b, "queues"), "queue on node-b")
    wait_for(lambda: ("orders", "orders.eu", "eu.#") in bindings(b), "binding on node-b")
    wait_for(lambda: "alice" in names(b, "users"), "user on node-b")
    wait_for(lambda: "cap" in names(b, "policies"), "policy on node-b")
    wait_for(lambda: any(p["user"] == "alice" for p in defs(b)["permissions"]), "permission")
    assert "orders" in names(b, "exchanges")
    assert "scratch" not in names(b, "queues")
    # alice's password works on node-b too
    params = pika.URLParameters(f"amqp://alice:s3cret@127.0.0.1:{b.port}/%2F")
    with pika.BlockingConnection(params) as conn:
        conn.channel().queue_declare("orders.eu", passive=True)


def test_a_node_that_joins_late_catches_up_and_deletes_reach_everyone(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    send(a, "PUT", "/api/exchanges/%2F/events", {"type": "fanout", "durable": True})
    send(a, "PUT", "/api/queues/%2F/audit", {"durable": True})
    send(a, "POST", "/api/bindings/%2F/e/events/q/audit", {"routing_key": ""})
    wait_for(lambda: ("events", "audit", "") in bindings(a), "binding on node-a")
    late = node("node-late")
    wait_for(lambda: ("events", "audit", "") in bindings(late), "late joiner caught up")
    assert {"events"} <= names(late, "exchanges")
    send(late, "DELETE", "/api/queues/%2F/audit")
    wait_for(lambda: "audit" not in names(a, "queues"), "delete reached node-a")
    assert ("events", "audit", "") not in bindings(a)
    assert "events" in names(a, "exchanges")


def test_definitions_are_offered_again_to_an_etcd_that_lost_every_key(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    send(a, "PUT", "/api/queues/%2F/kept", {"durable": True})
    etcd.stop()
    etcd.wipe()
    etcd.start()
    late = node("node-late")
    wait_for(lambda: "kept" in names(late, "queues"), "node-a's queue republished")
    assert "kept" in names(a, "queues")  # an empty etcd deletes nothing


def etcd_call(etcd: EtcdProcess, path: str, body: dict[str, str]) -> Any:
    """One etcd v3 JSON API call (keys and values base64, as the gateway takes them)."""
    data = json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in body.items()})
    request = urllib.request.Request(etcd.url + path, data=data.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def in_etcd(etcd: EtcdProcess, fragment: str) -> bool:
    """True when a key under /amqplite/ contains fragment."""
    answer = etcd_call(etcd, "/v3/kv/range", {"key": "/amqplite/", "range_end": "/amqplite0"})
    return any(fragment in base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", []))


def test_a_wiped_etcd_whose_revision_passed_ours_gets_our_definitions_again(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    send(a, "PUT", "/api/queues/%2F/kept", {"durable": True})
    wait_for(lambda: in_etcd(etcd, "kept"), "node-a's queue published")
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)  # it reconnects only once the new etcd is far ahead
    try:
        etcd.stop()
        etcd.wipe()
        etcd.start()  # the same member and cluster id, no keys, revision 1
        for n in range(100):
            etcd_call(etcd, "/v3/kv/put", {"key": f"/elsewhere/{n}", "value": "x"})
    finally:
        a.proc.send_signal(signal.SIGCONT)
    late = node("node-late")
    wait_for(lambda: "kept" in names(late, "queues"), "node-a's queue republished")
    assert "kept" in names(a, "queues")  # not taken for a delete made while it was away


def test_a_declare_during_an_etcd_outage_reaches_the_other_node_once_etcd_is_back(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    b = node("node-b")
    etcd.stop()
    assert send(a, "PUT", "/api/queues/%2F/during-outage", {"durable": True}) == 201
    etcd.start()
    wait_for(lambda: "during-outage" in names(b, "queues"), "queue on node-b after the outage")
    assert a.proc is not None
    assert a.proc.poll() is None


def test_a_consumer_on_one_node_is_cancelled_when_another_node_deletes_its_queue(
    node: StartNode, etcd: EtcdProcess
) -> None:
    a = node("node-a")
    b = node("node-b")
    with pika.BlockingConnection(pika.URLParameters(b.url)) as conn:
        ch = conn.channel()
        ch.queue_declare("watched", durable=True)
        cancelled: list[str] = []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        tag = ch.basic_consume("watched", lambda *args: None)
        wait_for(lambda: "watched" in names(a, "queues"), "queue on node-a")
        send(a, "DELETE", "/api/queues/%2F/watched")

        def seen() -> bool:
            conn.process_data_events(time_limit=0.1)
            return bool(cancelled)

        wait_for(seen, "basic.cancel on node-b")
        assert cancelled == [tag]
