"""Stream queue arguments without sockets: x-max-age, x-stream-offset, declare refusals."""

from __future__ import annotations

import datetime

import pytest

from amqplite.broker.stream_arguments import check_stream_declare, parse_age, parse_offset
from amqplite.protocol.errors import ChannelException


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7D", 7 * 86_400_000),
        ("12h", 43_200_000),
        ("30m", 1_800_000),
        ("10s", 10_000),
        ("1Y", 31_536_000_000),
    ],
)
def test_max_age_units(text: str, ms: int) -> None:
    assert parse_age(text) == ms


@pytest.mark.parametrize("text", ["7X", "D", "-1h", "1.5h", 7, ""])
def test_malformed_max_age(text: object) -> None:
    assert parse_age(text) is None


def test_offset_specs() -> None:
    assert parse_offset("first").kind == "first"  # type: ignore[union-attr]
    assert parse_offset(None).kind == "next"  # type: ignore[union-attr]
    numeric = parse_offset(42)
    assert numeric is not None
    assert (numeric.kind, numeric.value) == ("offset", 42)
    stamp = parse_offset(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    assert stamp is not None
    assert (stamp.kind, stamp.value) == ("timestamp", 1_704_067_200_000)
    assert parse_offset(datetime.datetime(2024, 1, 1)).value == 1_704_067_200_000  # type: ignore[union-attr]
    for bad in ("bogus", -1, True, 1.5):
        assert parse_offset(bad) is None


def test_declare_checks_in_rabbitmq_order() -> None:
    ok = {"x-queue-type": "stream", "x-max-age": "1D", "x-max-length-bytes": 10}
    check_stream_declare("q", "/", True, False, False, ok)
    with pytest.raises(ChannelException, match="invalid property 'non-durable'"):
        check_stream_declare("q", "/", False, True, True, ok)
    with pytest.raises(ChannelException, match="of queue type rabbit_stream_queue"):
        check_stream_declare("q", "/", True, False, False, {**ok, "x-overflow": "drop-head"})
    with pytest.raises(ChannelException, match="x-max-length-bytes"):
        check_stream_declare("q", "/", True, False, False, {**ok, "x-max-length-bytes": "big"})
