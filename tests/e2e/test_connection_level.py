"""Connection-level behaviour over raw sockets: handshake, SASL, tuning, heartbeats, close."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from pamqp import commands
from raw_client import (
    FRAME_BODY,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    HEARTBEAT_FRAME,
    PeerClosed,
    RawClient,
    assert_connection_closed_with,
    connected,
)

from amqplite.protocol.constants import ReplyCode


@pytest.fixture
def fresh_socket(broker: Any) -> Iterator[RawClient]:
    """A raw client that has only opened the TCP connection."""
    client = RawClient.for_broker(broker)
    try:
        yield client
    finally:
        client.close()


def close_method(code: int = 200, text: str = "bye") -> Any:
    """A connection.close or channel.close argument set with no failing method."""
    return {"reply_code": code, "reply_text": text, "class_id": 0, "method_id": 0}


# -- heartbeats --------------------------------------------------------------------------------


def test_silent_client_that_negotiated_heartbeat_1_is_disconnected(broker: Any) -> None:
    with connected(broker, heartbeat=1) as client:
        client.open_channel(1)
        # We never send a byte again. RabbitMQ drops the socket after ~2 missed heartbeats (~3 s),
        # without connection.close, as the spec asks for a heartbeat timeout.
        assert client.wait_closed(timeout=8.0), "a silent client was not disconnected"


def test_server_sends_heartbeats_to_an_idle_client_that_negotiated_heartbeat_1(
    broker: Any,
) -> None:
    with connected(broker, heartbeat=1) as client:
        frames = [client.read_frame(timeout=3.0) for _ in range(2)]
        for frame in frames:
            assert (frame.frame_type, frame.channel, frame.payload) == (FRAME_HEARTBEAT, 0, b"")


def test_client_heartbeats_keep_a_quiet_connection_open(broker: Any) -> None:
    with connected(broker, heartbeat=1) as client:
        deadline = time.monotonic() + 3.5  # longer than two heartbeat timeouts
        while time.monotonic() < deadline:
            client.send(HEARTBEAT_FRAME)
            try:
                frame = client.read_frame(timeout=0.3)
            except TimeoutError:
                continue
            assert frame.frame_type == FRAME_HEARTBEAT, frame
        client.open_channel(1)  # still alive and serving


def test_pika_client_with_heartbeat_1_stays_connected_while_it_processes_events(
    broker: Any, uid: str
) -> None:
    params = pika.URLParameters(broker.url)
    params.heartbeat = 1
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.queue_declare(uid, exclusive=True)
        connection.process_data_events(time_limit=2.5)
        channel.basic_publish("", uid, b"after a quiet while")
        method, _props, body = channel.basic_get(uid, auto_ack=True)
        deadline = time.monotonic() + 3.0
        while method is None and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
            method, _props, body = channel.basic_get(uid, auto_ack=True)
        assert body == b"after a quiet while"
    finally:
        connection.close()


# -- close handshakes --------------------------------------------------------------------------


def test_connection_close_from_client_gets_close_ok(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.send_method(0, commands.Connection.Close(**close_method()))
    raw.expect(commands.Connection.CloseOk, channel=0)


def test_nothing_but_close_ok_follows_a_client_connection_close(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.send_method(0, commands.Connection.Close(**close_method()))
    # Frames after connection.close are discarded by the server (spec 2.2.4 / 4.2.2).
    raw.send_method(1, commands.Queue.Declare(queue="", exclusive=True))
    raw.expect(commands.Connection.CloseOk, channel=0)
    with pytest.raises((TimeoutError, PeerClosed)):
        raw.read_next(timeout=0.3)


def test_channel_close_from_client_gets_close_ok(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.send_method(1, commands.Channel.Close(**close_method()))
    raw.expect(commands.Channel.CloseOk, channel=1)


def test_channel_id_can_be_reopened_after_close_ok(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.send_method(1, commands.Channel.Close(**close_method()))
    raw.expect(commands.Channel.CloseOk, channel=1)
    raw.open_channel(1)
    raw.send_method(1, commands.Queue.Declare(queue="", exclusive=True))
    raw.expect(commands.Queue.DeclareOk, channel=1)


def test_channel_open_twice_on_the_same_id_closes_connection_with_channel_error(
    raw: RawClient,
) -> None:
    raw.open_channel(1)
    raw.send_method(1, commands.Channel.Open())
    close = assert_connection_closed_with(raw, ReplyCode.CHANNEL_ERROR, "channel.open")
    assert (close.class_id, close.method_id) == (20, 10)


def test_channels_are_independent_of_each_other(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.open_channel(2)
    raw.send_method(1, commands.Queue.Declare(queue="", exclusive=True))
    raw.send_method(2, commands.Queue.Declare(queue="", exclusive=True))
    replies = [raw.read_next() for _ in range(2)]  # channels answer in either order
    assert sorted(frame.channel for frame in replies) == [1, 2]
    assert all(isinstance(frame.value, commands.Queue.DeclareOk) for frame in replies)


# -- authentication ----------------------------------------------------------------------------


def test_server_offers_plain_and_amqplain(fresh_socket: RawClient) -> None:
    fresh_socket.send_protocol_header()
    start = fresh_socket.read_start()
    assert (start.version_major, start.version_minor) == (0, 9)
    assert {"PLAIN", "AMQPLAIN"} <= set(fresh_socket.mechanisms)
    assert "en_US" in start.locales.split()


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
def test_sasl_mechanism_authenticates_guest(
    broker: Any, fresh_socket: RawClient, mechanism: str
) -> None:
    fresh_socket.start(broker.user, broker.password, mechanism=mechanism)
    fresh_socket.read_tune()
    fresh_socket.tune_ok()
    fresh_socket.open_vhost(broker.vhost)
    fresh_socket.expect(commands.Connection.OpenOk, channel=0)
    fresh_socket.open_channel(1)


@pytest.mark.parametrize("mechanism", ["PLAIN", "AMQPLAIN"])
@pytest.mark.parametrize(("user", "password"), [("guest", "wrong"), ("nobody-here", "guest")])
def test_bad_credentials_close_connection_with_access_refused(
    fresh_socket: RawClient, mechanism: str, user: str, password: str
) -> None:
    # Our client advertises the authentication_failure_close capability, so the broker says why.
    fresh_socket.start(user, password, mechanism=mechanism)
    assert_connection_closed_with(fresh_socket, ReplyCode.ACCESS_REFUSED, mechanism)


def test_bad_credentials_are_reported_to_pika(broker: Any) -> None:
    params = pika.URLParameters(broker.url)
    params.credentials = pika.PlainCredentials(broker.user, "definitely-wrong")
    params.connection_attempts = 1
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params)
    assert "ACCESS_REFUSED" in str(info.value)


def test_unknown_sasl_mechanism_closes_connection(broker: Any, fresh_socket: RawClient) -> None:
    fresh_socket.start(mechanism="NO-SUCH-MECHANISM", response=b"x")
    if broker.is_amqplite:
        assert_connection_closed_with(fresh_socket, ReplyCode.COMMAND_INVALID, "NO-SUCH-MECHANISM")
    else:
        # RabbitMQ logs command_invalid "unknown authentication mechanism" and closes the socket
        # without connection.close; DESIGN.md asks us to send the close with that code.
        fresh_socket.expect_silent_close()


def test_server_properties_advertise_authentication_failure_close(
    fresh_socket: RawClient,
) -> None:
    fresh_socket.send_protocol_header()
    fresh_socket.read_start()
    capabilities = fresh_socket.server_properties["capabilities"]
    assert capabilities["authentication_failure_close"] is True


# -- vhost and tuning --------------------------------------------------------------------------


def test_connection_open_to_a_missing_vhost_closes_with_not_allowed(
    broker: Any, fresh_socket: RawClient, uid: str
) -> None:
    fresh_socket.start(broker.user, broker.password)
    fresh_socket.read_tune()
    fresh_socket.tune_ok()
    fresh_socket.open_vhost(f"missing-{uid}")
    close = assert_connection_closed_with(fresh_socket, ReplyCode.NOT_ALLOWED, f"missing-{uid}")
    assert (close.class_id, close.method_id) == (10, 40)


def test_tune_proposes_usable_limits(broker: Any, fresh_socket: RawClient) -> None:
    fresh_socket.start(broker.user, broker.password)
    tuning = fresh_socket.read_tune()
    assert tuning.frame_max >= 4096
    assert tuning.channel_max >= 1


def test_tune_ok_with_frame_max_below_4096_is_refused(broker: Any, fresh_socket: RawClient) -> None:
    fresh_socket.start(broker.user, broker.password)
    fresh_socket.read_tune()
    fresh_socket.tune_ok(frame_max=1024)
    fresh_socket.open_vhost(broker.vhost)
    if broker.is_amqplite:
        assert_connection_closed_with(fresh_socket, ReplyCode.NOT_ALLOWED, "frame_max")
    else:
        # RabbitMQ raises not_allowed (530) "negotiated frame_max = 1024 is lower than the minimum
        # allowed value (4096)" but, before connection.open-ok, only logs it and drops the socket.
        fresh_socket.expect_silent_close()


def test_frame_max_of_4096_is_accepted(broker: Any) -> None:
    with connected(broker, frame_max=4096) as client:
        client.open_channel(1)


def test_deliveries_are_split_to_the_frame_max_the_client_negotiated(broker: Any, uid: str) -> None:
    body = bytes(range(256)) * 40  # 10240 octets: three body frames at frame_max 4096
    with connected(broker, frame_max=4096) as client:
        client.open_channel(1)
        client.send_method(1, commands.Queue.Declare(queue=uid, exclusive=True))
        client.expect(commands.Queue.DeclareOk, channel=1)
        client.publish(1, uid, body)
        client.send_method(1, commands.Basic.Consume(queue=uid, no_ack=True))
        client.expect(commands.Basic.ConsumeOk, channel=1)
        client.expect(commands.Basic.Deliver, channel=1)
        header = client.read_next()
        assert header.frame_type == FRAME_HEADER
        assert header.value.body_size == len(body)
        received = b""
        while len(received) < len(body):
            frame = client.read_next()
            assert frame.frame_type == FRAME_BODY
            assert len(frame.payload) + 8 <= 4096
            received += frame.payload
        assert received == body


def test_pika_with_frame_max_4096_round_trips_a_large_message(broker: Any, uid: str) -> None:
    params = pika.URLParameters(broker.url)
    params.frame_max = 4096
    body = b"0123456789abcdef" * 2000  # 32000 octets
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(uid, exclusive=True)
        channel.basic_publish("", uid, body, mandatory=True)
        method, _props, got = channel.basic_get(uid, auto_ack=True)
        assert method is not None
        assert got == body
    finally:
        connection.close()


# -- server identity ---------------------------------------------------------------------------


def test_server_properties_name_product_version_and_capabilities(
    fresh_socket: RawClient,
) -> None:
    fresh_socket.send_protocol_header()
    fresh_socket.read_start()
    props = fresh_socket.server_properties
    assert isinstance(props["product"], str)
    assert props["product"]
    assert isinstance(props["version"], str)
    assert props["version"]
    capabilities = props["capabilities"]
    for name in (
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "authentication_failure_close",
    ):
        assert capabilities.get(name) is True, name
