"""x-replicas and the policy key replicas: validated like other queue settings, argument first."""

from __future__ import annotations

import pytest

from amqplite.broker.policy import Policy, validate_policy
from amqplite.broker.queue_settings import parse_settings
from amqplite.protocol.errors import ChannelException


def test_x_replicas_is_read_and_a_policy_fills_it_when_the_argument_is_absent() -> None:
    assert parse_settings({}).replicas is None
    assert parse_settings({"x-replicas": 3}).replicas == 3
    assert parse_settings({}, {"replicas": 2}).replicas == 2
    assert parse_settings({"x-replicas": 3}, {"replicas": 2}).replicas == 3


@pytest.mark.parametrize("value", [0, -1, "3", True])
def test_a_bad_x_replicas_is_a_406_naming_it(value: object) -> None:
    with pytest.raises(ChannelException) as info:
        parse_settings({"x-replicas": value}, queue="q")
    assert info.value.reply_code == 406
    assert "invalid arg 'x-replicas' for queue 'q'" in info.value.reply_text


def test_a_policy_with_replicas_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="replicas must be at least 1"):
        validate_policy(Policy("/", "p", ".*", {"replicas": 0}))
