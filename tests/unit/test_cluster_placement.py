"""Placement of queues on nodes: the likely leader is the node leading fewest queues, then hash order."""

from __future__ import annotations

import json

from amqplite.cluster.etcd_codec import KeyValue, RangeResult
from amqplite.cluster.queue_roles import first_members, placement

NODES = ["a", "b", "c"]


def test_without_loads_placement_is_the_hash_order_of_queue_and_node() -> None:
    three = placement("/", "q", NODES, 3)
    assert sorted(three) == NODES
    assert placement("/", "q", NODES, 2) == three[:2]
    assert placement("/", "q", list(reversed(NODES)), 3) == three  # not the listing order


def test_the_node_leading_fewest_queues_comes_first() -> None:
    for queue in (f"q{i}" for i in range(20)):
        hashed = placement("/", queue, NODES, 3)
        busy = {hashed[0]: 5, hashed[1]: 5}  # the third leads nothing yet
        members = placement("/", queue, NODES, 3, busy)
        assert members[0] == hashed[2]
        assert sorted(members) == NODES


def test_queues_placed_one_after_another_spread_their_leaders_evenly() -> None:
    leads: dict[str, int] = {}
    for i in range(12):
        first = placement("/", f"q{i}", NODES, 1, leads)[0]
        leads[first] = leads.get(first, 0) + 1
    assert leads == {"a": 4, "b": 4, "c": 4}


def test_first_members_counts_the_first_node_of_each_members_key() -> None:
    def kv(key: str, value: object) -> KeyValue:
        return KeyValue(key.encode(), json.dumps(value).encode(), 1, 1, 1, 0)

    result = RangeResult(
        kvs=(
            kv("/amqplite/x/queues/%2F/q1/members", ["a", "b"]),
            kv("/amqplite/x/queues/%2F/q2/members", ["a", "c"]),
            kv("/amqplite/x/queues/%2F/q3/members", ["b"]),
            kv("/amqplite/x/queues/%2F/q3/isr", {"epoch": 0, "members": ["b"]}),
            kv("/amqplite/x/queues/%2F/q4/members", "not a list"),
        ),
        revision=9,
        count=5,
        more=False,
    )
    assert first_members(result) == {"a": 2, "b": 1}
