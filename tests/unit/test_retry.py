"""Retry with backoff: the delay formulas of both argument forms, and their validation."""

from __future__ import annotations

import pytest

from amqplite.broker.retry import RetrySettings, parse_retry
from amqplite.protocol.errors import ChannelException


def test_rabbitmq_form_is_linear_and_capped() -> None:
    settings = parse_retry(
        {"x-delayed-retry-type": "all", "x-delayed-retry-min": 100, "x-delayed-retry-max": 250},
        None,
    )
    assert settings == RetrySettings(min_ms=100, max_ms=250, kind="all")
    assert [settings.delay_ms(n) for n in (1, 2, 3, 4)] == [100, 200, 250, 250]
    assert settings.applies(explicit=False)


def test_lavinmq_multiplier_constant_and_exponential() -> None:
    constant = parse_retry({"x-delayed-retry-min": 50, "x-delayed-retry-multiplier": 1}, None)
    assert constant is not None
    assert [constant.delay_ms(n) for n in (1, 2, 5)] == [50, 50, 50]
    exponential = parse_retry(
        {"x-delayed-retry-min": 50, "x-delayed-retry-multiplier": 3, "x-delayed-retry-max": 1000},
        None,
    )
    assert exponential is not None
    assert [exponential.delay_ms(n) for n in (1, 2, 3, 4)] == [50, 150, 450, 1000]
    assert not exponential.applies(explicit=False)  # returned: only basic.reject/nack
    assert exponential.applies(explicit=True)


def test_policy_keys_without_x_and_arguments_win() -> None:
    settings = parse_retry(
        {"x-delayed-retry-min": 10},
        {"delayed-retry-min": 99, "delayed-retry-max": 20, "delayed-retry-type": "failed"},
    )
    assert settings == RetrySettings(min_ms=10, max_ms=20, kind="failed")


def test_disabled_or_absent_is_off() -> None:
    assert parse_retry({}, None) is None
    assert parse_retry({"x-delayed-retry-type": "disabled", "x-delayed-retry-min": 5}, None) is None


@pytest.mark.parametrize(
    "arguments",
    [
        {"x-delayed-retry-type": "later", "x-delayed-retry-min": 5},
        {"x-delayed-retry-type": "failed"},
        {"x-delayed-retry-min": 0},
        {"x-delayed-retry-min": "5"},
    ],
)
def test_bad_arguments_are_a_406(arguments: dict[str, object]) -> None:
    with pytest.raises(ChannelException) as caught:
        parse_retry(arguments, None, "q", "/")
    assert caught.value.reply_code == 406
    assert "x-delayed-retry" in caught.value.reply_text
