"""Behaviours where the AMQP spec and RabbitMQ part ways, and clients' own suites rely on RabbitMQ's."""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions
import pytest
from pamqp import commands
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import Cleanup, channel_error, connection, connection_error
from raw_client import (
    RawClient,
    assert_connection_closed_with,
    content_header_frame,
    method_frame,
)

from amqplite.protocol.constants import ReplyCode

LOCKED_TEXT = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{queue}' in vhost '/'. "
    "It could be originally declared on another connection or the exclusive property value does "
    "not match that of the original declaration."
)


def rabbitmq_version(conn: BlockingConnection) -> tuple[int, ...]:
    """The server's version from connection.start (amqplite's or RabbitMQ's)."""
    version = conn._impl.server_properties.get("version", b"0")
    text = version.decode() if isinstance(version, bytes) else str(version)
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def wait_queue_gone(broker: Any, name: str, within: float = 5.0) -> None:
    """Poll with passive declares until the queue no longer exists."""
    deadline = time.monotonic() + within
    while True:
        with connection(broker) as conn:
            try:
                conn.channel().queue_declare(name, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                code = exc.reply_code
            else:
                code = 200
        if code == 404:
            return
        assert time.monotonic() < deadline, f"queue {name} still there after {within}s"
        time.sleep(0.05)


# --- unbind of what no longer exists ---------------------------------------------------------


def test_queue_unbind_of_a_missing_queue_is_unbind_ok(ch: BlockingChannel, uid: str) -> None:
    assert isinstance(
        ch.queue_unbind(f"{uid}-missing", "amq.direct", "key").method, pika.spec.Queue.UnbindOk
    )
    assert ch.is_open


def test_queue_unbind_from_a_missing_exchange_is_unbind_ok(
    ch: BlockingChannel, queue: str, uid: str
) -> None:
    assert isinstance(
        ch.queue_unbind(queue, f"{uid}-missing-x", "key").method, pika.spec.Queue.UnbindOk
    )
    assert ch.is_open


def test_queue_unbind_of_a_missing_binding_leaves_other_bindings(
    ch: BlockingChannel, queue: str
) -> None:
    ch.queue_bind(queue, "amq.direct", "kept")
    ch.queue_unbind(queue, "amq.direct", "never-bound")
    ch.basic_publish("amq.direct", "kept", b"still routed")
    body = ch.basic_get(queue, auto_ack=True)[2]
    assert body == b"still routed"


def test_exchange_unbind_of_missing_exchanges_is_unbind_ok(ch: BlockingChannel, uid: str) -> None:
    assert isinstance(
        ch.exchange_unbind(f"{uid}-missing-dest", "amq.direct", "k").method,
        pika.spec.Exchange.UnbindOk,
    )
    assert isinstance(
        ch.exchange_unbind("amq.fanout", f"{uid}-missing-src", "k").method,
        pika.spec.Exchange.UnbindOk,
    )


def test_unbind_after_an_auto_delete_queue_left_with_its_last_consumer_is_unbind_ok(
    broker: Any, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    # aio-pika's RPC pattern and teardowns: the reply queue went with its consumer, then unbind.
    ch.exchange_declare(cleanup.exchange(uid), "direct", auto_delete=False)
    ch.queue_declare(uid, auto_delete=True)
    ch.queue_bind(uid, uid, "rpc")
    tag = ch.basic_consume(uid, lambda *_: None)
    ch.basic_cancel(tag)
    wait_queue_gone(broker, uid)
    assert isinstance(ch.queue_unbind(uid, uid, "rpc").method, pika.spec.Queue.UnbindOk)


# --- connection close --------------------------------------------------------------------------


def test_after_close_ok_the_socket_is_left_for_the_client_to_close(raw: RawClient) -> None:
    raw.open_channel(1)
    raw.send_method(
        0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    raw.expect(commands.Connection.CloseOk, channel=0)
    # Not closed at once: a read meets silence, not the end of the stream.
    with pytest.raises(TimeoutError):
        raw.read_next(timeout=0.5)


def test_a_client_that_never_closes_after_close_ok_is_dropped_after_a_grace(
    broker: Any, raw: RawClient
) -> None:
    if not broker.is_amqplite:
        pytest.skip("RabbitMQ waits far longer than amqplite's close_timeout")
    raw.send_method(
        0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    raw.expect(commands.Connection.CloseOk, channel=0)
    assert raw.wait_closed(timeout=20), "the broker kept the socket after close-ok"


# --- connection.update-secret ------------------------------------------------------------------


def test_update_secret_is_answered_and_the_connection_stays_open(
    conn: BlockingConnection, ch: BlockingChannel, queue: str
) -> None:
    conn.update_secret("guest", "token refreshed")
    ch.basic_publish("", queue, b"after update-secret")
    assert ch.basic_get(queue, auto_ack=True)[2] == b"after update-secret"


def test_update_secret_over_a_raw_socket_gets_update_secret_ok(raw: RawClient) -> None:
    raw.send_method(0, commands.Connection.UpdateSecret(new_secret="guest", reason="refresh"))
    raw.expect(commands.Connection.UpdateSecretOk, channel=0)
    raw.open_channel(1)


# --- not implemented, and said so ----------------------------------------------------------------


def test_publish_with_immediate_closes_the_connection_with_540(raw: RawClient, uid: str) -> None:
    raw.open_channel(1)
    publish = commands.Basic.Publish(exchange="", routing_key=uid, immediate=True)
    raw.send(method_frame(1, publish) + content_header_frame(1, 0))
    close = assert_connection_closed_with(raw, ReplyCode.NOT_IMPLEMENTED, "immediate=true")
    assert (close.class_id, close.method_id) == (60, 40)


def test_qos_with_a_prefetch_size_closes_the_connection_with_540(ch: BlockingChannel) -> None:
    with connection_error(540, "NOT_IMPLEMENTED", "prefetch_size!=0 (10)"):
        ch.basic_qos(prefetch_size=10)


def test_recover_without_requeue_closes_the_connection_with_540(ch: BlockingChannel) -> None:
    with connection_error(540, "NOT_IMPLEMENTED", "requeue=false"):
        ch.basic_recover(requeue=False)


# --- the default exchange ------------------------------------------------------------------------


@pytest.mark.parametrize("passive", [False, True])
def test_declaring_the_default_exchange_is_403(ch: BlockingChannel, passive: bool) -> None:
    with channel_error(403, "ACCESS_REFUSED - operation not permitted on the default exchange"):
        ch.exchange_declare("", "direct", passive=passive)


# --- exclusive queues ------------------------------------------------------------------------


@pytest.mark.parametrize("first_exclusive", [True, False])
def test_redeclaring_a_queue_with_the_other_exclusive_flag_is_405_from_its_own_connection(
    conn: BlockingConnection, cleanup: Cleanup, uid: str, first_exclusive: bool
) -> None:
    name = cleanup.queue(f"excl-{uid[-24:]}")  # short: the reply text is a shortstr
    ch = conn.channel()
    ch.queue_declare(name, exclusive=first_exclusive, auto_delete=True)
    with channel_error(405) as caught:
        ch.queue_declare(name, exclusive=not first_exclusive, auto_delete=True)
    assert caught[0].reply_text == LOCKED_TEXT.format(queue=name)


# --- channel_max -------------------------------------------------------------------------------


def test_channel_max_bounds_open_channels_not_channel_numbers(broker: Any) -> None:
    with connection(broker, channel_max=2) as conn:
        # Numbers above channel_max are fine while fewer than channel_max channels are open.
        first = conn.channel(channel_number=7)
        conn.channel(channel_number=9).queue_declare("", exclusive=True)
        first.close()
        third = conn.channel(channel_number=11)
        third.queue_declare("", exclusive=True)
        with connection_error(530, "NOT_ALLOWED", "channel_max"):
            conn.channel(channel_number=1)


# --- queue.delete and its own consumers ----------------------------------------------------------


def test_queue_delete_ok_comes_before_the_cancel_of_the_channels_own_consumer(
    raw: RawClient, uid: str
) -> None:
    raw.open_channel(1)
    raw.send_method(1, commands.Queue.Declare(queue=uid, auto_delete=False))
    raw.expect(commands.Queue.DeclareOk, channel=1)
    raw.send_method(1, commands.Basic.Consume(queue=uid, consumer_tag="own", no_ack=True))
    raw.expect(commands.Basic.ConsumeOk, channel=1)
    raw.send_method(1, commands.Queue.Delete(queue=uid))
    raw.expect(commands.Queue.DeleteOk, channel=1)
    cancel = raw.expect(commands.Basic.Cancel, channel=1)
    assert cancel.consumer_tag == "own"


def test_another_channels_consumer_is_cancelled_when_a_queue_is_deleted(
    raw: RawClient, uid: str
) -> None:
    raw.open_channel(1)
    raw.open_channel(2)
    raw.send_method(1, commands.Queue.Declare(queue=uid))
    raw.expect(commands.Queue.DeclareOk, channel=1)
    raw.send_method(2, commands.Basic.Consume(queue=uid, consumer_tag="other", no_ack=True))
    raw.expect(commands.Basic.ConsumeOk, channel=2)
    raw.send_method(1, commands.Queue.Delete(queue=uid))
    got = [raw.read_next(), raw.read_next()]
    kinds = sorted((type(f.value).__name__, f.channel) for f in got)
    assert kinds == [("Cancel", 2), ("DeleteOk", 1)]


# --- exchange types --------------------------------------------------------------------------


def test_unknown_exchange_type_is_a_406_channel_close(
    broker: Any, conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    if not broker.is_amqplite and rabbitmq_version(conn) < (3, 12):
        pytest.skip("RabbitMQ before 3.12 closes the connection with 503 instead")
    with channel_error(406, "PRECONDITION_FAILED", "invalid exchange type 'ZZwwInvalid'"):
        ch.exchange_declare(uid, exchange_type="ZZwwInvalid")
    assert conn.is_open
    # The exchange was not created.
    with channel_error(404):
        conn.channel().exchange_declare(uid, passive=True)
