"""Definitions in etcd, without etcd: keys, the shared subset, what to write, applying items."""

from __future__ import annotations

from amqplite.broker.broker import Broker
from amqplite.broker.definitions import export_definitions
from amqplite.broker.plugin_api import Destination
from amqplite.cluster.definitions import (
    DefinitionsState,
    Write,
    decode_item,
    defs_prefix,
    durable_items,
    encode_item,
    item_key,
    kind_of_key,
)
from amqplite.cluster.definitions_apply import apply_delete, apply_put


def broker() -> Broker:
    b = Broker()
    b.add_vhost("/")
    return b


def test_keys_percent_encode_names_and_name_their_kind() -> None:
    key = item_key("c", "queues", {"vhost": "/", "name": "a/b c"})
    assert key == b"/amqplite/c/defs/queues/%2F/a%2Fb%20c"
    assert kind_of_key("c", key) == "queues"
    assert kind_of_key("c", b"/amqplite/c/nodes/n1") is None
    assert kind_of_key("c", defs_prefix("c") + b"widgets/x") is None
    binding = {"vhost": "/", "source": "x", "destination_type": "queue", "destination": "q"}
    one = item_key("c", "bindings", {**binding, "routing_key": "a", "arguments": {}})
    two = item_key("c", "bindings", {**binding, "routing_key": "b", "arguments": {}})
    assert one != two
    assert one.startswith(b"/amqplite/c/defs/bindings/%2F/x/queue/q/")


def test_only_durable_entities_that_do_not_auto_delete_and_their_bindings_are_shared() -> None:
    b = broker()
    vhost = b.vhosts["/"]
    vhost.declare_exchange("dx", "topic", durable=True)
    vhost.declare_exchange("tx", "fanout", durable=False)
    vhost.declare_queue("dq", durable=True)
    vhost.declare_queue("tq", durable=False)
    vhost.declare_queue("adq", durable=True, auto_delete=True)
    vhost.bind("dx", Destination.queue("dq"), "k", {})
    vhost.bind("dx", Destination.queue("tq"), "k", {})
    vhost.bind("amq.direct", Destination.queue("dq"), "k", {})
    vhost.bind("tx", Destination.queue("dq"), "k", {})
    shared = durable_items("c", export_definitions(b))
    items = {(kind_of_key("c", k), decode_item(v).get("name")) for k, v in shared.items()}
    assert ("queues", "dq") in items
    assert ("exchanges", "dx") in items
    assert ("queues", "tq") not in items
    assert ("queues", "adq") not in items
    assert ("exchanges", "tx") not in items
    sources = sorted(
        decode_item(v)["source"] for k, v in shared.items() if kind_of_key("c", k) == "bindings"
    )
    assert sources == ["amq.direct", "dx"]


def test_writes_create_new_items_and_agree_with_equal_ones() -> None:
    state = DefinitionsState(remote={b"k1": b"v1"})
    assert state.writes({b"k1": b"v1", b"k2": b"v2"}) == [Write("create", b"k2", b"v2")]
    assert state.agreed == {b"k1": b"v1"}


def test_a_local_change_to_an_agreed_item_is_an_update() -> None:
    state = DefinitionsState(remote={b"k": b"old"}, agreed={b"k": b"old"})
    assert state.writes({b"k": b"new"}) == [Write("update", b"k", b"new")]


def test_a_conflicting_local_item_is_kept_but_never_written() -> None:
    state = DefinitionsState(remote={b"k": b"theirs"})
    assert state.writes({b"k": b"ours"}) == []
    assert state.agreed == {b"k": b"ours"}
    assert state.writes({b"k": b"ours"}) == []  # and stays quiet


def test_a_local_delete_removes_only_the_version_etcd_holds_from_us() -> None:
    state = DefinitionsState(
        remote={b"a": b"1", b"b": b"theirs"}, agreed={b"a": b"1", b"b": b"ours"}
    )
    assert state.writes({}) == [Write("delete", b"a", b"1")]
    assert b"b" not in state.agreed


def test_apply_put_creates_and_reports_a_conflicting_queue() -> None:
    b = broker()
    item = {"vhost": "/", "name": "q", "durable": True, "auto_delete": False, "arguments": {}}
    assert apply_put(b, "queues", item) is None
    assert b.vhosts["/"].queues["q"].durable
    other = {**item, "arguments": {"x-max-length": 3}}
    conflict = apply_put(b, "queues", other)
    assert conflict is not None
    assert "queue 'q'" in conflict


def test_apply_put_replaces_users_permissions_and_policies() -> None:
    b = broker()
    b.add_user("u", "one", ["management"])
    source = broker()
    source.add_user("u", "two", ["administrator"])
    exported = export_definitions(source)["users"][0]
    assert apply_put(b, "users", exported) is None
    assert b.users["u"].tags == ("administrator",)
    assert b.authenticate("u", "two") is not None
    perm = {"user": "u", "vhost": "/", "configure": "^x", "write": ".*", "read": ".*"}
    assert apply_put(b, "permissions", perm) is None
    assert b.permissions_of("u", "/").configure == "^x"  # type: ignore[union-attr]
    pol = {"vhost": "/", "name": "p", "pattern": "^q", "apply-to": "queues", "priority": 1}
    assert apply_put(b, "policies", {**pol, "definition": {"max-length": 5}}) is None
    assert apply_put(b, "policies", {**pol, "definition": {"max-length": 9}}) is None
    assert b.policies[("/", "p")].definition == {"max-length": 9}


def test_a_binding_applies_with_its_ends_as_context_and_deletes_undo_each_kind() -> None:
    b = broker()
    exchange = {"vhost": "/", "name": "x", "type": "direct", "durable": True}
    exchange |= {"auto_delete": False, "internal": False, "arguments": {}}
    queue = {"vhost": "/", "name": "q", "durable": True, "auto_delete": False, "arguments": {}}
    assert apply_put(b, "exchanges", exchange) is None
    assert apply_put(b, "queues", queue) is None
    binding = {"vhost": "/", "source": "x", "destination_type": "queue", "destination": "q"}
    binding |= {"routing_key": "k", "arguments": {}}
    assert apply_put(b, "bindings", binding, {"exchanges": [exchange], "queues": [queue]}) is None
    assert len(list(b.vhosts["/"].bindings())) == 1
    apply_delete(b, "bindings", binding)
    assert list(b.vhosts["/"].bindings()) == []
    apply_delete(b, "queues", queue)
    apply_delete(b, "exchanges", exchange)
    assert "q" not in b.vhosts["/"].queues
    assert "x" not in b.vhosts["/"].exchanges
    apply_delete(b, "queues", queue)  # already gone: nothing to do


def test_items_encode_canonically() -> None:
    assert encode_item({"b": 1, "a": [1, 2]}) == b'{"a":[1,2],"b":1}'
