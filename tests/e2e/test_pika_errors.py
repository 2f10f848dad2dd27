"""End-to-end tests with pika: error scopes, delivery tag errors, limits, auth, capabilities, heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest
from pika import spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    channel_error,
    connect,
    connection,
    connection_error,
    drain,
    get_message,
    parameters,
)


def send_raw(conn: BlockingConnection, channel_number: int, method: Any) -> None:
    """Send a method frame on any channel number, bypassing pika's channel state checks."""
    conn._impl._send_method(channel_number, method)


# --- channel errors close only their channel ------------------------------------------------


def fail_403(ch: BlockingChannel, uid: str, _other: BlockingConnection) -> None:
    """Declare an exchange with the reserved amq. prefix."""
    ch.exchange_declare(f"amq.{uid}", exchange_type="direct")


def fail_404(ch: BlockingChannel, uid: str, _other: BlockingConnection) -> None:
    """Passive declare of a queue that does not exist."""
    ch.queue_declare(f"{uid}-missing", passive=True)


def fail_405(ch: BlockingChannel, uid: str, other: BlockingConnection) -> None:
    """Use a queue that is exclusive to another connection."""
    other.channel().queue_declare(f"{uid}-exclusive", exclusive=True)
    ch.queue_declare(f"{uid}-exclusive", exclusive=True)


def fail_406(ch: BlockingChannel, uid: str, _other: BlockingConnection) -> None:
    """Ack a delivery tag that was never delivered."""
    ch.basic_ack(12345)
    ch.queue_declare("", exclusive=True)  # the ack has no reply: wait for the close here


@pytest.mark.parametrize(
    ("code", "trigger"),
    [(403, fail_403), (404, fail_404), (405, fail_405), (406, fail_406)],
    ids=["403", "404", "405", "406"],
)
def test_channel_error_closes_only_that_channel(
    conn: BlockingConnection,
    other_conn: BlockingConnection,
    cleanup: Cleanup,
    uid: str,
    code: int,
    trigger: Callable[[BlockingChannel, str, BlockingConnection], None],
) -> None:
    bystander = conn.channel()
    q = cleanup.queue(uid)
    bystander.queue_declare(q)
    consumed: list[bytes] = []
    bystander.basic_consume(q, lambda _c, _m, _p, body: consumed.append(body), auto_ack=True)
    victim = conn.channel()
    number = victim.channel_number

    with channel_error(code):
        trigger(victim, uid, other_conn)

    assert victim.is_closed
    assert conn.is_open
    assert bystander.is_open
    # The other channel keeps publishing and its consumer keeps receiving.
    bystander.basic_publish("", q, b"still working")
    deadline = time.monotonic() + 5
    while not consumed and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.01)
    assert consumed == [b"still working"]
    # The closed channel's number can be opened again.
    reopened = conn.channel(channel_number=number)
    assert reopened.queue_declare("", exclusive=True).method.queue.startswith("amq.gen-")


def test_channel_error_keeps_other_connections_working(
    conn: BlockingConnection,
    other_conn: BlockingConnection,
    ch: BlockingChannel,
    queue: str,
    uid: str,
) -> None:
    with channel_error(404):
        other_conn.channel().queue_declare(f"{uid}-missing", passive=True)
    ch.basic_publish("", queue, b"unaffected")
    assert get_message(ch, queue, auto_ack=True)[2] == b"unaffected"


def test_channel_error_requeues_the_channels_unacked_messages(
    conn: BlockingConnection, ch: BlockingChannel, queue: str, uid: str
) -> None:
    ch.basic_publish("", queue, b"unacked")
    victim = conn.channel()
    assert get_message(victim, queue)[2] == b"unacked"
    with channel_error(404):
        victim.queue_declare(f"{uid}-missing", passive=True)
    method, _props, body = get_message(ch, queue, auto_ack=True)
    assert (body, method.redelivered) == (b"unacked", True)


# --- delivery tag errors --------------------------------------------------------------------


@pytest.mark.parametrize("method_name", ["basic_ack", "basic_nack", "basic_reject"])
def test_unknown_delivery_tag_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, method_name: str
) -> None:
    with channel_error(406, "PRECONDITION_FAILED", "unknown delivery tag"):
        getattr(ch, method_name)(99)
        ch.queue_declare("", exclusive=True)
    assert conn.is_open


def test_double_ack_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"once")
    method, _props, _body = get_message(ch, queue)
    ch.basic_ack(method.delivery_tag)
    with channel_error(406, "PRECONDITION_FAILED", "unknown delivery tag"):
        ch.basic_ack(method.delivery_tag)
        ch.queue_declare("", exclusive=True)
    assert conn.is_open


def test_ack_after_auto_ack_delivery_is_precondition_failed(
    ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"auto")
    method, _props, _body = get_message(ch, queue, auto_ack=True)
    with channel_error(406, "unknown delivery tag"):
        ch.basic_ack(method.delivery_tag)
        ch.queue_declare("", exclusive=True)


def test_ack_of_a_tag_from_another_channel_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    ch.basic_publish("", queue, b"elsewhere")
    method, _props, _body = get_message(ch, queue)
    other = conn.channel()
    with channel_error(406, "unknown delivery tag"):
        other.basic_ack(method.delivery_tag)
        other.queue_declare("", exclusive=True)
    # The message is still unacked on its own channel, which can ack it.
    ch.basic_ack(method.delivery_tag)
    assert drain(ch, queue) == []


# --- channel lifecycle errors ---------------------------------------------------------------


def test_method_on_a_channel_that_is_not_open_is_504_channel_error(
    conn: BlockingConnection,
) -> None:
    conn.channel()  # channel 1 is open, channel 7 is not
    send_raw(conn, 7, spec.Queue.Declare(queue="", exclusive=True))
    with connection_error(504, "CHANNEL_ERROR"):
        conn.process_data_events(time_limit=2)
        conn.channel().queue_declare("", exclusive=True)


def test_method_on_a_channel_the_client_closed_is_504_channel_error(
    conn: BlockingConnection,
) -> None:
    keep = conn.channel()
    closed = conn.channel()
    number = closed.channel_number
    closed.close()
    send_raw(conn, number, spec.Queue.Declare(queue="", exclusive=True))
    with connection_error(504, "CHANNEL_ERROR"):
        conn.process_data_events(time_limit=2)
        keep.queue_declare("", exclusive=True)


def test_second_channel_open_on_an_open_channel_is_504_channel_error(
    conn: BlockingConnection,
) -> None:
    ch = conn.channel()
    send_raw(conn, ch.channel_number, spec.Channel.Open())
    with connection_error(504, "CHANNEL_ERROR"):
        conn.process_data_events(time_limit=2)
        ch.queue_declare("", exclusive=True)


def test_pika_refuses_to_use_a_channel_closed_by_the_broker(ch: BlockingChannel, uid: str) -> None:
    with channel_error(404):
        ch.queue_declare(f"{uid}-missing", passive=True)
    with pytest.raises(pika.exceptions.ChannelWrongStateError):
        ch.queue_declare("", exclusive=True)


def test_channel_max_is_negotiated_down_to_the_client_value(broker: Any) -> None:
    with connection(broker, channel_max=3) as conn:
        assert conn._impl.params.channel_max == 3
        channels = [conn.channel() for _ in range(3)]
        assert [c.channel_number for c in channels] == [1, 2, 3]
        for c in channels:
            c.queue_declare("", exclusive=True)


def test_opening_a_channel_beyond_channel_max_is_530_not_allowed(broker: Any) -> None:
    with connection(broker, channel_max=2) as conn:
        conn.channel()
        conn.channel()
        # pika will not pick a number above channel_max itself, so ask for one explicitly.
        with connection_error(530, "NOT_ALLOWED", "channel_max"):
            conn.channel(channel_number=3)


# --- connection-level refusals --------------------------------------------------------------


def test_wrong_password_is_refused_with_403_access_refused(broker: Any) -> None:
    params = parameters(broker, credentials=pika.PlainCredentials(broker.user, "wrong-password"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params)
    assert "403" in str(info.value)
    assert "ACCESS_REFUSED" in str(info.value)


def test_unknown_user_is_refused_with_403_access_refused(broker: Any) -> None:
    params = parameters(broker, credentials=pika.PlainCredentials("no-such-user", "guest"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        pika.BlockingConnection(params)
    assert "ACCESS_REFUSED" in str(info.value)


def test_unknown_vhost_is_refused_with_530_not_allowed(broker: Any, uid: str) -> None:
    params = parameters(broker, virtual_host=f"no-such-vhost-{uid}")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(params)
    assert "530" in str(info.value)
    assert "NOT_ALLOWED" in str(info.value)
    assert f"no-such-vhost-{uid}" in str(info.value)


def test_refused_login_does_not_disturb_open_connections(
    broker: Any, ch: BlockingChannel, queue: str
) -> None:
    params = parameters(broker, credentials=pika.PlainCredentials(broker.user, "wrong-password"))
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)
    ch.basic_publish("", queue, b"fine")
    assert get_message(ch, queue, auto_ack=True)[2] == b"fine"


# --- server properties, tuning, heartbeats --------------------------------------------------


@pytest.mark.parametrize(
    "capability",
    [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "exchange_exchange_bindings",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ],
)
def test_server_properties_advertise_capability(conn: BlockingConnection, capability: str) -> None:
    capabilities = conn._impl.server_properties["capabilities"]
    assert capabilities.get(capability) is True


def test_server_properties_name_the_product_and_version(conn: BlockingConnection) -> None:
    props = conn._impl.server_properties
    assert props.get("product")
    assert props.get("version")


def test_connection_negotiates_client_frame_max(broker: Any) -> None:
    with connection(broker, frame_max=8192) as conn:
        assert conn._impl.params.frame_max == 8192
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        body = bytes(range(256)) * 100
        ch.basic_publish("", q, body)
        assert get_message(ch, q, auto_ack=True)[2] == body


def test_connection_with_short_heartbeat_stays_up_while_idle(broker: Any) -> None:
    conn = connect(broker, heartbeat=2)
    try:
        assert conn._impl.params.heartbeat == 2
        ch = conn.channel()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.5)
        assert conn.is_open
        # The broker sent heartbeats while the connection was idle (every heartbeat/2 seconds).
        assert conn._impl._heartbeat_checker._heartbeat_frames_received >= 1
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"after idling")
        assert get_message(ch, q, auto_ack=True)[2] == b"after idling"
    finally:
        conn.close()


def test_connection_close_is_answered_with_close_ok(broker: Any) -> None:
    conn = connect(broker)
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    assert conn.is_closed
