"""Definitions: parse with precise errors, apply idempotently with conflicts, export/import."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from amqplite.broker.auth import Permission, check_password, hash_password, permits
from amqplite.broker.broker import Broker
from amqplite.broker.definitions import (
    apply_definitions,
    export_definitions,
    import_definitions,
)
from amqplite.broker.plugin_api import Destination
from amqplite.cli.main import main
from amqplite.config.definitions import (
    ConfigError,
    Definitions,
    load_definitions,
    parse_definitions,
)
from amqplite.config.source import Source, parse_yaml

ROOT = Path(__file__).resolve().parents[2]
ORDERS = ROOT / "examples" / "definitions" / "orders.yaml"


def new_broker() -> Broker:
    broker = Broker()
    broker.add_vhost("/")
    broker.add_user("guest", "guest", ("administrator",))
    broker.set_permissions("guest", "/", Permission())
    return broker


def parse(text: str) -> Definitions:
    return parse_definitions(parse_yaml(text, "defs.yaml"))


# -- parsing -------------------------------------------------------------------------------


def test_shipped_definitions_files_are_valid() -> None:
    conf = load_definitions(ROOT / "conf" / "definitions.yaml")
    orders = load_definitions(ORDERS)
    assert [e.name for e in conf.exchanges] == ["events", "events.unrouted"]
    assert {q.name for q in orders.queues} >= {"billing.orders", "billing.orders.retry"}
    assert orders.queues[1].arguments["x-message-ttl"] == 2000


def test_defaults_are_durable_direct_on_the_root_vhost() -> None:
    defs = parse(
        "exchanges: [{name: e}]\nqueues: [{name: q}]\nbindings: [{source: e, destination: q}]\n"
    )
    (exchange,), (queue,), (binding,) = defs.exchanges, defs.queues, defs.bindings
    assert (exchange.vhost, exchange.type, exchange.durable, exchange.auto_delete) == (
        "/",
        "direct",
        True,
        False,
    )
    assert (queue.durable, queue.arguments) == (True, {})
    assert (binding.destination_type, binding.routing_key) == ("queue", "")


@pytest.mark.parametrize(
    ("text", "line", "key", "value", "expected"),
    [
        (
            "exchanges:\n  - name: e\n    type: topical\n",
            3,
            "exchanges[0].type",
            "'topical'",
            "expected one of direct, fanout, topic, headers",
        ),
        (
            "queues:\n  - name: q\n    arguments:\n      x-message-ttl: -5\n",
            4,
            "queues[0].arguments.x-message-ttl",
            "-5",
            "expected an integer >= 0",
        ),
        (
            "queues:\n  - name: q\n    arguments:\n      x-mesage-ttl: 5\n",
            4,
            "queues[0].arguments.x-mesage-ttl",
            "'x-mesage-ttl'",
            "expected one of x-message-ttl",
        ),
        (
            "queues:\n  - name: q\n    arguments: {x-overflow: drop-tail}\n",
            3,
            "queues[0].arguments.x-overflow",
            "'drop-tail'",
            "expected one of drop-head, reject-publish, reject-publish-dlx",
        ),
        (
            "queues:\n  - name: q\n    arguments: {x-max-priority: 300}\n",
            3,
            "queues[0].arguments.x-max-priority",
            "300",
            "expected an integer from 0 to 255",
        ),
        ("queues:\n  - durable: true\n", 2, "queues[0]", None, "expected a 'name' key"),
        (
            "queues:\n  - name: q\n    duarble: true\n",
            3,
            "queues[0].duarble",
            "'duarble'",
            "expected one of the keys name, vhost, durable",
        ),
        (
            "exchanges: [{name: e}]\nqueues: [{name: q}]\nbindings:\n  - source: e\n"
            "    destination: qq\n",
            5,
            "bindings[0].destination",
            "'qq'",
            "expected a queue defined under queues in vhost '/'",
        ),
        (
            "queues: [{name: q}]\nbindings:\n  - source: nope\n    destination: q\n",
            3,
            "bindings[0].source",
            "'nope'",
            "expected an exchange defined under exchanges",
        ),
        (
            "queues:\n  - name: q\n    vhost: staging\n",
            3,
            "queues[0].vhost",
            "'staging'",
            "expected a vhost listed under vhosts (or /)",
        ),
        (
            "permissions:\n  - user: u\n    read: '[unclosed'\n",
            3,
            "permissions[0].read",
            "'[unclosed'",
            "expected a valid regular expression",
        ),
        (
            "policies:\n  - name: p\n    pattern: '.*'\n    definition: {message-tll: 5}\n",
            4,
            "policies[0].definition.message-tll",
            "'message-tll'",
            "expected one of message-ttl",
        ),
        (
            "policies:\n  - name: p\n    pattern: '.*'\n    apply-to: topics\n    definition: {}\n",
            4,
            "policies[0].apply-to",
            "'topics'",
            "expected one of queues, exchanges, all",
        ),
        (
            "users:\n  - name: u\n    tags: [a]\n",
            2,
            "users[0]",
            None,
            "expected a 'password' or 'password_hash' key",
        ),
        (
            "queues: [{name: q}, {name: q}]\n",
            1,
            "queues[1].name",
            "'q'",
            "expected a name not already used by queues[0]",
        ),
        ("exchanges: {name: e}\n", 1, "exchanges", "{'name': 'e'}", "expected a list of exchanges"),
        ("queus: []\n", 1, "queus", "'queus'", "expected one of the sections vhosts, users"),
        (
            "bindings:\n  - source: amq.headers\n    destination: amq.fanout\n"
            "    destination_type: exchange\n    arguments: {x-match: some}\n",
            5,
            "bindings[0].arguments.x-match",
            "'some'",
            "expected one of all, any",
        ),
    ],
)
def test_bad_definition_names_file_line_key_value_and_expectation(
    text: str, line: int, key: str, value: str | None, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    got = f"got {value}, " if value is not None else ""
    assert message.startswith(f"defs.yaml:{line}: {key}: {got}{expected}"), message


def test_validate_command_reports_each_bad_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  - name: e\n    type: topical\n")
    assert main(["definitions", "validate", str(ORDERS), str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"{ORDERS}: valid (1 vhosts, 1 users, 1 permissions, 3 exchanges, 6 queues" in (
        captured.out
    )
    assert f"{bad}:3: exchanges[0].type: got 'topical', expected one of direct" in captured.err
    assert "Traceback" not in captured.err


# -- applying ------------------------------------------------------------------------------


def test_apply_creates_exchanges_queues_bindings_users_and_permissions() -> None:
    broker = new_broker()
    report = apply_definitions(broker, load_definitions(ORDERS))
    vhost = broker.vhosts["/"]
    assert vhost.exchanges["orders"].type_name == "topic"
    assert vhost.queues["billing.orders.retry"].arguments == {
        "x-message-ttl": 2000,
        "x-dead-letter-exchange": "orders.requeue",
        "x-dead-letter-routing-key": "billing",
    }
    assert vhost.queues["billing.orders"].durable
    routed = vhost.route(vhost.exchanges["orders"], "order.paid.eu", None)
    assert {getattr(q, "name", q) for q in routed} >= {"billing.orders", "shipping.orders"}
    assert broker.authenticate("orders-service", "change-me") is not None
    assert broker.permissions_of("orders-service", "/") == Permission(
        "^$", "^(orders|amq\\.default)$", "^(billing|shipping|analytics)\\.orders$"
    )
    assert "exchange 'orders' in vhost '/'" in report.created
    assert "policy 'analytics-cap' in vhost '/'" in report.created
    assert report.conflicts == ()


def test_applying_twice_changes_nothing() -> None:
    broker = new_broker()
    defs = load_definitions(ORDERS)
    first = apply_definitions(broker, defs)
    before = export_definitions(broker)
    second = apply_definitions(broker, defs)
    assert second.created == ()
    assert first.conflicts == second.conflicts == ()
    assert second.unchanged == first.unchanged + len(first.created)
    assert export_definitions(broker) == before


def test_existing_entity_with_other_settings_is_a_conflict_and_left_unchanged() -> None:
    broker = new_broker()
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("orders", "direct", durable=True)
    vhost.declare_queue("billing.orders", durable=True, arguments={"x-message-ttl": 5})
    report = apply_definitions(broker, load_definitions(ORDERS))
    assert (
        "exchange 'orders' in vhost '/' exists with type 'direct', the definitions say 'topic' "
        "(left unchanged)" in report.conflicts
    )
    assert any(
        c.startswith("queue 'billing.orders' in vhost '/' exists with arguments")
        for c in report.conflicts
    )
    assert vhost.exchanges["orders"].type_name == "direct"
    assert vhost.queues["billing.orders"].arguments == {"x-message-ttl": 5}
    assert vhost.queues["shipping.orders"].durable  # the rest was still applied


def test_user_with_another_password_is_a_conflict() -> None:
    broker = new_broker()
    report = apply_definitions(
        broker, parse("users: [{name: guest, password: other, tags: [administrator]}]\n")
    )
    assert report.conflicts == ("user 'guest' exists with a different password",)
    assert broker.authenticate("guest", "guest") is not None
    same = apply_definitions(
        broker, parse("users: [{name: guest, password: guest, tags: [administrator]}]\n")
    )
    assert (same.created, same.conflicts, same.unchanged) == ((), (), 1)


def test_binding_to_a_missing_queue_is_reported_not_raised() -> None:
    broker = new_broker()
    defs = parse_definitions(
        Source(
            "x",
            {
                "bindings": [
                    {
                        "source": "amq.topic",
                        "destination": "amq.fanout",
                        "destination_type": "exchange",
                        "routing_key": "k",
                    }
                ]
            },
        )
    )
    report = apply_definitions(broker, defs)
    assert report.created == (
        "binding from exchange 'amq.topic' to exchange 'amq.fanout' with routing key 'k' in "
        "vhost '/'",
    )


# -- export and import ---------------------------------------------------------------------


def test_export_import_round_trip_gives_the_same_document() -> None:
    broker = new_broker()
    apply_definitions(broker, load_definitions(ORDERS))
    vhost = broker.vhosts["/"]
    vhost.bind(
        "amq.headers",
        Destination("queue", "orders.parked"),
        "",
        {"x-match": "any", "kind": "parked"},
    )
    vhost.declare_queue("transient", durable=False, auto_delete=True)
    vhost.declare_queue("mine", exclusive=True, owner=object())
    exported = export_definitions(broker)
    assert json.loads(json.dumps(exported)) == exported  # plain JSON
    assert "mine" not in {q["name"] for q in exported["queues"]}
    other = Broker()  # a wiped broker
    other.add_vhost("/")
    conflicts = import_definitions(other, copy.deepcopy(exported))
    assert conflicts == []
    assert export_definitions(other) == exported
    assert other.authenticate("orders-service", "change-me") is not None


def test_export_has_rabbitmq_shape() -> None:
    exported = export_definitions(new_broker())
    assert exported["users"] == [
        {
            "name": "guest",
            "password_hash": hash_password("guest"),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": ["administrator"],
        }
    ]
    assert exported["permissions"] == [
        {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    ]
    assert exported["vhosts"] == [{"name": "/"}]
    assert exported["exchanges"] == []  # built-in amq.* and the default exchange are implicit


def test_import_accepts_a_rabbitmq_export() -> None:
    document = {  # from `rabbitmqctl export_definitions -` on RabbitMQ 3.10
        "rabbit_version": "3.10.8",
        "rabbitmq_version": "3.10.8",
        "users": [
            {
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "limits": {},
                "name": "guest",
                "password_hash": "8UpYvZmfMG5qJliwZfslYgMvqKVdjiNi8gzRHrWPv80hbXjH",
                "tags": ["administrator"],
            }
        ],
        "vhosts": [
            {
                "limits": [],
                "metadata": {"description": "Default virtual host", "tags": []},
                "name": "/",
            }
        ],
        "permissions": [
            {"configure": ".*", "read": ".*", "user": "guest", "vhost": "/", "write": ".*"}
        ],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        "queues": [
            {
                "arguments": {},
                "auto_delete": False,
                "durable": False,
                "name": "mgmtprobe",
                "type": "classic",
                "vhost": "/",
            }
        ],
        "exchanges": [
            {
                "arguments": {},
                "auto_delete": False,
                "durable": False,
                "name": "celery.pidbox",
                "type": "fanout",
                "vhost": "/",
            }
        ],
        "bindings": [],
    }
    broker = Broker()
    assert import_definitions(broker, document) == []
    assert broker.authenticate("guest", "guest") is not None
    assert broker.vhosts["/"].exchanges["celery.pidbox"].type_name == "fanout"
    assert not broker.vhosts["/"].queues["mgmtprobe"].durable


def test_import_of_a_malformed_document_changes_nothing() -> None:
    broker = new_broker()
    before = export_definitions(broker)
    with pytest.raises(ConfigError, match=r"queues\[1\]\.durable: got 'yes', expected true"):
        import_definitions(broker, {"queues": [{"name": "a"}, {"name": "b", "durable": "yes"}]})
    assert export_definitions(broker) == before


# -- passwords and permission patterns -----------------------------------------------------


def test_password_hash_is_rabbitmq_compatible() -> None:
    assert check_password("guest", "8UpYvZmfMG5qJliwZfslYgMvqKVdjiNi8gzRHrWPv80hbXjH")
    assert not check_password("Guest", "8UpYvZmfMG5qJliwZfslYgMvqKVdjiNi8gzRHrWPv80hbXjH")
    assert check_password("s3cret", hash_password("s3cret", salt=b"\x01\x02\x03\x04"))
    assert not check_password("x", "not base64!")


@pytest.mark.parametrize(
    ("pattern", "name", "allowed"),
    [
        (".*", "anything", True),
        ("", "anything", False),
        ("^$", "q", False),
        ("^app\\.", "app.jobs", True),
        ("^app\\.", "other.app.jobs", False),
        ("jobs", "app.jobs.x", True),
    ],
)
def test_permission_patterns_follow_rabbitmq(pattern: str, name: str, allowed: bool) -> None:
    assert permits(pattern, name) is allowed
