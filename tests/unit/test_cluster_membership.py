"""The member view (pure): rebuilt from a range, kept current by watch events; node records."""

from __future__ import annotations

import pytest

from amqplite.cluster.etcd_codec import KeyValue, RangeResult, WatchEvent, WatchResponse
from amqplite.cluster.keys import node_key, node_of_key, nodes_prefix
from amqplite.cluster.membership import LeaseClock, MemberView, NodeRecord


def record(name: str, port: int = 5672) -> NodeRecord:
    return NodeRecord(name, f"127.0.0.1:{port}", "", "127.0.0.1:25672", 1.5, "0.1.0")


def kv(key: bytes, value: bytes = b"", rev: int = 1) -> KeyValue:
    return KeyValue(key, value, rev, rev, 1, 7)


def watch(revision: int, *events: WatchEvent) -> WatchResponse:
    return WatchResponse(revision, False, False, 0, "", events)


def test_a_record_round_trips_and_garbage_is_refused() -> None:
    assert NodeRecord.decode(record("a").encode()) == record("a")
    for bad in (b"not json", b"{}", b'{"name": "a"}', b"[1]"):
        with pytest.raises(ValueError, match="not a node record"):
            NodeRecord.decode(bad)


def test_node_keys_live_under_the_clusters_nodes_prefix() -> None:
    assert node_key("c1", "n@h") == b"/amqplite/c1/nodes/n@h"
    assert node_of_key("c1", b"/amqplite/c1/nodes/n@h") == "n@h"
    assert node_of_key("c1", b"/amqplite/c2/nodes/n@h") is None
    assert node_of_key("c1", nodes_prefix("c1")) is None


def test_the_view_follows_a_range_then_joins_and_leaves() -> None:
    view = MemberView("c")
    view.reset(
        RangeResult(
            10,
            (
                kv(node_key("c", "b"), record("b").encode()),
                kv(node_key("c", "bad"), b"garbage"),
                kv(node_key("c", "a"), record("a").encode()),
            ),
            3,
            False,
        )
    )
    assert [r.name for r in view.sorted()] == ["a", "b"]
    assert view.revision == 10
    view.apply(
        watch(
            12,
            WatchEvent("put", kv(node_key("c", "c"), record("c", 5673).encode(), 11), None),
            WatchEvent("delete", kv(node_key("c", "a"), rev=12), None),
        )
    )
    assert [r.name for r in view.sorted()] == ["b", "c"]
    assert view.nodes["c"].amqp == "127.0.0.1:5673"
    assert view.revision == 12
    view.reset(RangeResult(20, (), 0, False))  # an empty etcd: nobody registered
    assert view.sorted() == []


def test_the_lease_clock_counts_from_when_the_keepalive_was_sent() -> None:
    clock = LeaseClock(margin=0.5)
    assert not clock.valid(0.0)
    clock.renewed(sent_at=10.0, ttl=2)
    assert clock.valid(11.4)
    assert not clock.valid(11.5)
    clock.renewed(sent_at=9.0, ttl=2)  # a late answer to an older keepalive never shortens it
    assert clock.valid(11.4)
    clock.expired()
    assert not clock.valid(10.0)
