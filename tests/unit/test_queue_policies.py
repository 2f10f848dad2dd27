"""Policies: queue and exchange settings by name pattern; own arguments take precedence."""

from __future__ import annotations

import pytest
from queue_helpers import FakeClock, get_all, make_broker, msg

from amqplite.broker.broker import Broker
from amqplite.broker.plugin_api import Destination
from amqplite.broker.policy import Policy


@pytest.fixture
def broker() -> Broker:
    return make_broker(FakeClock())


def test_policy_applies_to_matching_queues_declared_later(broker: Broker) -> None:
    broker.set_policy(Policy("/", "limit", "^jobs\\.", {"max-length": 1}))
    vhost = broker.vhosts["/"]
    vhost.declare_queue("jobs.a")
    vhost.declare_queue("other")
    for body in (b"1", b"2"):
        vhost.publish("", msg(body, "jobs.a"))
        vhost.publish("", msg(body, "other"))
    assert get_all(broker, "jobs.a") == [b"2"]
    assert get_all(broker, "other") == [b"1", b"2"]


def test_setting_a_policy_reapplies_to_existing_queues_at_once(broker: Broker) -> None:
    vhost = broker.vhosts["/"]
    vhost.declare_queue("q")
    for body in (b"1", b"2", b"3"):
        vhost.publish("", msg(body))
    broker.set_policy(Policy("/", "p", "q", {"max-length": 1}))
    assert get_all(broker, "q") == [b"3"]


def test_queue_argument_takes_precedence_over_policy(broker: Broker) -> None:
    vhost = broker.vhosts["/"]
    broker.set_policy(
        Policy("/", "p", ".*", {"dead-letter-exchange": "from-policy", "overflow": "drop-head"})
    )
    queue = vhost.declare_queue(
        "q", arguments={"x-dead-letter-exchange": "own", "x-overflow": "reject-publish"}
    )
    assert queue.settings.dead_letter_exchange == "own"
    assert queue.settings.overflow == "reject-publish"


def test_numeric_limits_from_policy_and_argument_take_the_smaller(broker: Broker) -> None:
    broker.set_policy(Policy("/", "p", ".*", {"max-length": 5, "message-ttl": 100}))
    queue = broker.vhosts["/"].declare_queue(
        "q", arguments={"x-max-length": 10, "x-message-ttl": 50}
    )
    assert queue.settings.max_length == 5
    assert queue.settings.message_ttl == 50


def test_highest_priority_policy_wins(broker: Broker) -> None:
    broker.set_policy(Policy("/", "low", ".*", {"max-length": 1}, priority=0))
    broker.set_policy(Policy("/", "high", "^q$", {"max-length": 7}, priority=5))
    queue = broker.vhosts["/"].declare_queue("q")
    assert queue.settings.max_length == 7


def test_clearing_a_policy_restores_the_queue_arguments(broker: Broker) -> None:
    queue = broker.vhosts["/"].declare_queue("q")
    broker.set_policy(Policy("/", "p", "q", {"message-ttl": 10}))
    assert queue.settings.message_ttl == 10
    broker.clear_policy("/", "p")
    assert queue.settings.message_ttl is None
    with pytest.raises(KeyError):
        broker.clear_policy("/", "p")


def test_policy_for_exchanges_only_does_not_touch_queues(broker: Broker) -> None:
    broker.set_policy(Policy("/", "p", ".*", {"max-length": 1}, apply_to="exchanges"))
    assert broker.vhosts["/"].declare_queue("q").settings.max_length is None


def test_list_policies_by_vhost(broker: Broker) -> None:
    broker.add_vhost("other")
    broker.set_policy(Policy("/", "b", ".*", {"expires": 1000}))
    broker.set_policy(Policy("other", "a", ".*", {"expires": 1000}))
    assert [p.name for p in broker.list_policies("/")] == ["b"]
    assert [p.name for p in broker.list_policies()] == ["b", "a"]


@pytest.mark.parametrize(
    ("definition", "words"),
    [
        ({"max-lenght": 1}, "unknown policy key"),
        ({"max-length": -1}, "at least 0"),
        ({"message-ttl": "10"}, "integer"),
        ({"expires": 0}, "at least 1"),
        ({"overflow": "explode"}, "overflow"),
        ({"dead-letter-exchange": 5}, "string"),
        ({}, "empty"),
    ],
)
def test_invalid_policy_is_refused(broker: Broker, definition: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        broker.set_policy(Policy("/", "bad", ".*", definition))
    assert broker.list_policies() == []


def test_invalid_pattern_or_apply_to_is_refused(broker: Broker) -> None:
    with pytest.raises(ValueError, match="pattern"):
        broker.set_policy(Policy("/", "bad", "(", {"max-length": 1}))
    with pytest.raises(ValueError, match="apply-to"):
        broker.set_policy(Policy("/", "bad", ".*", {"max-length": 1}, apply_to="topics"))


# -- alternate-exchange from a policy (apply-to exchanges or all) -------------------------------


def _ae_setup(broker: Broker) -> None:
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("orders", "direct")
    vhost.declare_exchange("unrouted", "fanout")
    vhost.declare_queue("lost")
    vhost.bind("unrouted", Destination("queue", "lost"), "")


def test_policy_alternate_exchange_routes_unroutable_messages(broker: Broker) -> None:
    _ae_setup(broker)
    vhost = broker.vhosts["/"]
    assert broker.route(vhost, "orders", msg(b"before", "nowhere")).queues == []
    broker.set_policy(
        Policy("/", "ae", "^orders$", {"alternate-exchange": "unrouted"}, apply_to="exchanges")
    )
    assert vhost.exchanges["orders"].policy == "ae"
    assert [q.name for q in broker.route(vhost, "orders", msg(b"after", "nowhere")).queues] == [
        "lost"
    ]
    assert get_all(broker, "lost") == [b"after"]
    broker.clear_policy("/", "ae")
    assert vhost.exchanges["orders"].policy is None
    assert broker.route(vhost, "orders", msg(b"cleared", "nowhere")).queues == []


def test_policy_alternate_exchange_applies_to_exchanges_declared_later(broker: Broker) -> None:
    broker.set_policy(
        Policy("/", "ae", "^orders", {"alternate-exchange": "unrouted"}, apply_to="all")
    )
    _ae_setup(broker)
    routed = broker.route(broker.vhosts["/"], "orders", msg(b"m", "nowhere"))
    assert [q.name for q in routed.queues] == ["lost"]


def test_exchange_argument_takes_precedence_over_policy_alternate(broker: Broker) -> None:
    _ae_setup(broker)
    vhost = broker.vhosts["/"]
    vhost.declare_exchange("own-ae", "fanout")
    vhost.declare_queue("own")
    vhost.bind("own-ae", Destination("queue", "own"), "")
    vhost.declare_exchange("tagged", "direct", arguments={"alternate-exchange": "own-ae"})
    broker.set_policy(
        Policy("/", "ae", ".*", {"alternate-exchange": "unrouted"}, apply_to="exchanges")
    )
    assert [q.name for q in broker.route(vhost, "tagged", msg(b"m", "x")).queues] == ["own"]


def test_queue_only_policy_alternate_exchange_does_not_apply_to_exchanges(broker: Broker) -> None:
    _ae_setup(broker)
    broker.set_policy(Policy("/", "ae", ".*", {"alternate-exchange": "unrouted"}))  # queues
    assert broker.route(broker.vhosts["/"], "orders", msg(b"m", "x")).queues == []


def test_only_the_highest_priority_exchange_policy_applies(broker: Broker) -> None:
    _ae_setup(broker)
    broker.set_policy(
        Policy("/", "ae", ".*", {"alternate-exchange": "unrouted"}, apply_to="exchanges")
    )
    broker.set_policy(
        Policy("/", "other", "^orders$", {"max-length": 3}, priority=9, apply_to="all")
    )
    assert broker.vhosts["/"].exchanges["orders"].policy == "other"
    assert broker.route(broker.vhosts["/"], "orders", msg(b"m", "x")).queues == []


def test_invalid_alternate_exchange_in_policy_is_refused(broker: Broker) -> None:
    with pytest.raises(ValueError, match="alternate-exchange"):
        broker.set_policy(Policy("/", "bad", ".*", {"alternate-exchange": 5}, apply_to="all"))


def test_deleting_a_vhost_deletes_its_policies_as_rabbitmq_does(broker: Broker) -> None:
    broker.add_vhost("staging")
    broker.set_policy(Policy("staging", "p", ".*", {"max-length": 1}))
    broker.set_policy(Policy("/", "kept", ".*", {"max-length": 2}))
    broker.delete_vhost("staging")
    assert [(p.vhost, p.name) for p in broker.list_policies()] == [("/", "kept")]
