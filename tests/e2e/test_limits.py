"""Limits from config: each one hit by a client and answered with its reply code and its name."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, start_broker
from pamqp import commands
from pika_helpers import connect, connection
from raw_client import (
    PeerClosed,
    RawClient,
    assert_connection_closed_with,
    body_frame,
    connected,
    content_header_frame,
    method_frame,
)

from amqplite.protocol.constants import PROTOCOL_HEADER, ReplyCode

LIMITS = """
limits:
  handshake_timeout: 1.0
  max_unfinished_content_bytes: 100000
  max_message_size: 80000
  max_consumers_per_channel: 2
  max_queues_per_vhost: 3
  max_exchanges_per_vhost: 2
  max_bindings_per_vhost: 2
"""


def _start(tmp: Path, config: str) -> BrokerProcess:
    path = tmp / "amqplite.yaml"
    path.write_text(config)
    return start_broker(tmp / "data", "--config", str(path))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with small limits (this module's own, shadowing the shared fixture)."""
    proc = _start(tmp_path_factory.mktemp("limits"), LIMITS)
    yield proc
    proc.stop()


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True once the server closes the socket before `deadline` (monotonic), polling reads."""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


@pytest.mark.parametrize("stage", ["nothing", "protocol header", "start-ok"])
def test_handshake_timeout_closes_a_silent_or_stalled_client(
    broker: BrokerProcess, stage: str
) -> None:
    client = RawClient.for_broker(broker)
    try:
        if stage == "protocol header":
            client.send(PROTOCOL_HEADER)
        elif stage == "start-ok":
            client.start(broker.user, broker.password, "PLAIN")
            client.read_tune()  # then stops: no tune-ok, no connection.open
        assert _closed_by_server(client.sock, time.monotonic() + 20)
    finally:
        client.close()
    assert "handshake not finished within 1 s (limits.handshake_timeout)" in broker.output()


def test_an_open_connection_outlives_the_handshake_timeout(broker: BrokerProcess) -> None:
    client = connected(broker)
    try:
        deadline = time.monotonic() + 2.5  # > handshake_timeout: the open connection stays
        while time.monotonic() < deadline:
            client.open_channel(1)
            client.send_method(
                1, commands.Channel.Close(reply_code=200, reply_text="ok", class_id=0, method_id=0)
            )
            client.expect(commands.Channel.CloseOk, channel=1)
    finally:
        client.close()


def test_unfinished_content_over_the_connection_limit_closes_530(broker: BrokerProcess) -> None:
    client = connected(broker)
    try:
        for channel in (1, 2):
            client.open_channel(channel)
        for channel in (1, 2):  # each message is within max_message_size; together they are not
            client.send(
                method_frame(channel, commands.Basic.Publish(routing_key="q"))
                + content_header_frame(channel, 70000)
                + body_frame(channel, b"x" * 60000)
            )
        assert_connection_closed_with(
            client, ReplyCode.NOT_ALLOWED, "limits.max_unfinished_content_bytes", "100000"
        )
    finally:
        client.close()


def test_message_over_max_message_size_is_406(broker: BrokerProcess) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        ch.basic_publish("", "nowhere", b"x" * 80001)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.queue_declare("", exclusive=True)  # a round trip: the close arrives first
        assert err.value.reply_code == ReplyCode.PRECONDITION_FAILED
        assert "max size 80000" in err.value.reply_text


def test_consumers_per_channel_limit_is_530(broker: BrokerProcess) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_consume(queue, lambda *a: None)
        ch.basic_consume(queue, lambda *a: None)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
            ch.basic_consume(queue, lambda *a: None)
        assert err.value.reply_code == ReplyCode.NOT_ALLOWED
        assert "limits.max_consumers_per_channel" in err.value.reply_text
        assert "(2)" in err.value.reply_text


def test_queue_limit_per_vhost_is_406_and_redeclare_is_allowed(broker: BrokerProcess) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        names = [f"lim-q{i}" for i in range(3)]
        for name in names:
            ch.queue_declare(name, exclusive=True)
        ch.queue_declare(names[0], exclusive=True)  # an existing queue does not count again
        ch.queue_declare(names[0], passive=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.queue_declare("one-too-many")
        assert err.value.reply_code == ReplyCode.PRECONDITION_FAILED
        assert "queue limit (3) is reached (limits.max_queues_per_vhost)" in err.value.reply_text
    with connection(broker) as conn:  # the exclusive queues went with their connection
        conn.channel().queue_declare("", exclusive=True)


def test_exchange_and_binding_limits_are_406(broker: BrokerProcess) -> None:
    with connection(broker) as conn:
        ch = conn.channel()
        ch.exchange_declare("lim-x1", "direct", auto_delete=True)
        ch.exchange_declare("lim-x2", "fanout", auto_delete=True)
        ch.exchange_declare("lim-x2", "fanout", auto_delete=True)  # existing: fine
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.exchange_declare("lim-x3", "direct")
        assert err.value.reply_code == ReplyCode.PRECONDITION_FAILED
        assert "exchange limit (2)" in err.value.reply_text
        assert "limits.max_exchanges_per_vhost" in err.value.reply_text

        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queue, "lim-x1", "a")
        ch.exchange_bind("lim-x1", "lim-x2")
        ch.queue_bind(queue, "lim-x1", "a")  # existing: fine
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as err:
            ch.queue_bind(queue, "lim-x1", "b")
        assert err.value.reply_code == ReplyCode.PRECONDITION_FAILED
        assert "binding limit (2)" in err.value.reply_text
        assert "limits.max_bindings_per_vhost" in err.value.reply_text
        ch = conn.channel()
        ch.exchange_delete("lim-x2")
        ch.exchange_delete("lim-x1")


def test_connection_limit_is_530_at_open(tmp_path: Path) -> None:
    proc = _start(tmp_path, "limits:\n  max_connections: 2\n")
    try:
        # start_broker's port probe counts until the broker reads its close: wait for room
        first, second = connected_when_room(proc), connected_when_room(proc)
        third = RawClient.for_broker(proc)
        try:
            third.start(proc.user, proc.password, "PLAIN")
            third.read_tune()
            third.tune_ok()
            third.open_vhost("/")
            assert_connection_closed_with(
                third, ReplyCode.NOT_ALLOWED, "connection limit (2)", "limits.max_connections"
            )
        finally:
            third.close()
        first.close()
        connected_when_room(proc).close()  # the broker notices the close; then one more fits
        second.close()
    finally:
        proc.stop()


def connected_when_room(proc: BrokerProcess, timeout: float = 10.0) -> RawClient:
    """A handshaken client, retried while the connection limit is still held by closed ones."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connected(proc)
        except (AssertionError, PeerClosed):
            assert time.monotonic() < deadline, "no room after a connection closed"


PER_USER_AND_VHOST = """
vhosts:
  - {name: small, limits: {max-connections: 2, max-queues: 1}}
users:
  - {name: capped, password: pw, tags: [], limits: {max-connections: 1, max-channels: 2}}
  - {name: other, password: pw, tags: []}
permissions:
  - {user: capped, vhost: /}
  - {user: other, vhost: small}
  - {user: capped, vhost: small}
"""


def test_user_and_vhost_limits_from_definitions(tmp_path: Path) -> None:
    (tmp_path / "defs.yaml").write_text(PER_USER_AND_VHOST)
    proc = start_broker(tmp_path / "data", "--definitions", str(tmp_path / "defs.yaml"))
    capped = attrs.evolve(proc, user="capped", password="pw")
    other = attrs.evolve(proc, user="other", password="pw")
    try:
        with connection(capped) as conn:
            conn.channel()
            conn.channel()
            with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as err:
                conn.channel()  # a third channel: over the user's max-channels
            assert err.value.reply_code == ReplyCode.NOT_ALLOWED
            assert "max-channels" in err.value.reply_text
        refused = pika.exceptions.ProbableAccessDeniedError
        with connection(capped), pytest.raises(refused) as denied:
            connect(capped)  # a second connection of the user
        assert "(530)" in str(denied.value)
        assert "user 'capped' connection limit (1)" in str(denied.value)
        small = attrs.evolve(other, vhost="small")
        with connection(small) as conn, connection(small):
            with pytest.raises(refused) as denied:
                connect(attrs.evolve(capped, vhost="small"))
            assert "vhost 'small' connection limit (2)" in str(denied.value)
            ch = conn.channel()
            ch.queue_declare("only-one", exclusive=True)
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as qerr:
                ch.queue_declare("one-more", exclusive=True)
            assert qerr.value.reply_code == ReplyCode.PRECONDITION_FAILED
            assert "queue limit (1) is reached (vhost limit max-queues)" in qerr.value.reply_text
        with connection(capped):  # closed connections were uncounted
            pass
    finally:
        proc.stop()
