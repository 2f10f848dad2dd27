"""Access control as RabbitMQ has it: the permission matrix, topic permissions, user_id, loopback."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, start_broker
from pika.adapters.blocking_connection import BlockingChannel
from pika_helpers import channel_error, connection

from amqplite.protocol.constants import ReplyCode

DEFINITIONS = """
users:
  - {name: full, password: pw, tags: []}
  - {name: noconf, password: pw, tags: []}
  - {name: nowrite, password: pw, tags: []}
  - {name: noread, password: pw, tags: []}
  - {name: topical, password: pw, tags: []}
  - {name: imp, password: pw, tags: [impersonator]}
permissions:
  - {user: full, vhost: /}
  - {user: noconf, vhost: /, configure: ""}
  - {user: nowrite, vhost: /, write: ""}
  - {user: noread, vhost: /, read: ""}
  - {user: topical, vhost: /}
  - {user: imp, vhost: /}
topic_permissions:
  - {user: topical, vhost: /, exchange: acl.topic, write: '^allowed\\.', read: '^{username}\\.'}
exchanges:
  - {name: acl.x, type: direct, durable: false}
  - {name: acl.topic, type: topic, durable: false}
queues:
  - {name: acl.q, durable: false}
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with one user per missing permission kind (this module's own fixture)."""
    tmp = tmp_path_factory.mktemp("acl")
    (tmp / "defs.yaml").write_text(DEFINITIONS)
    proc = start_broker(tmp / "data", "--definitions", str(tmp / "defs.yaml"))
    yield proc
    proc.stop()


def _as(broker: BrokerProcess, user: str) -> BrokerProcess:
    """The same broker, logging in as `user` (password pw)."""
    return attrs.evolve(broker, user=user, password="pw")


Operation = Callable[[BlockingChannel, str], None]


def _publish(ch: BlockingChannel, n: str) -> None:
    ch.basic_publish("acl.x", "k", b"m")
    ch.queue_declare("acl.q", passive=True)  # a round trip: a refusal arrives before its reply


# (operation, the permission kind it needs, the resource named in the refusal)
MATRIX: list[tuple[str, Operation, str, str]] = [
    ("exchange.declare", lambda ch, n: ch.exchange_declare(f"acl.x-{n}"), "configure", "acl.x-"),
    ("exchange.delete", lambda ch, n: ch.exchange_delete(f"acl.x-{n}"), "configure", "acl.x-"),
    ("queue.declare", lambda ch, n: ch.queue_declare(f"acl.q-{n}"), "configure", "acl.q-"),
    ("queue.delete", lambda ch, n: ch.queue_delete(f"acl.q-{n}"), "configure", "acl.q-"),
    ("queue.purge", lambda ch, n: ch.queue_purge("acl.q"), "read", "acl.q"),
    ("queue.bind/queue", lambda ch, n: ch.queue_bind("acl.q", "acl.x", n), "write", "acl.q"),
    ("queue.bind/exchange", lambda ch, n: ch.queue_bind("acl.q", "acl.x", n), "read", "acl.x"),
    ("queue.unbind/queue", lambda ch, n: ch.queue_unbind("acl.q", "acl.x", n), "write", "acl.q"),
    (
        "exchange.bind/destination",
        lambda ch, n: ch.exchange_bind("acl.topic", "acl.x", n),
        "write",
        "acl.topic",
    ),
    (
        "exchange.bind/source",
        lambda ch, n: ch.exchange_bind("acl.topic", "acl.x", n),
        "read",
        "acl.x",
    ),
    ("basic.publish", _publish, "write", "acl.x"),
    ("basic.get", lambda ch, n: ch.basic_get("acl.q", auto_ack=True), "read", "acl.q"),
    (
        "basic.consume",
        lambda ch, n: ch.basic_cancel(ch.basic_consume("acl.q", lambda *a: None)),
        "read",
        "acl.q",
    ),
]

USER_WITHOUT = {"configure": "noconf", "write": "nowrite", "read": "noread"}


@pytest.mark.parametrize(
    ("name", "operation", "kind", "resource"), MATRIX, ids=[m[0] for m in MATRIX]
)
def test_permission_matrix(
    broker: BrokerProcess, name: str, operation: Operation, kind: str, resource: str
) -> None:
    suffix = name.replace("/", "-").replace(".", "-")
    refused = f"{suffix}-r"
    creates = name in ("exchange.declare", "queue.declare")
    deletes = name in ("exchange.delete", "queue.delete")
    with connection(_as(broker, "full")) as conn:
        ch = conn.channel()
        if deletes:  # something to delete, twice
            for n in (suffix, refused):
                ch.exchange_declare(f"acl.x-{n}")
                ch.queue_declare(f"acl.q-{n}")
        operation(ch, suffix)  # allowed with every permission
    with connection(_as(broker, USER_WITHOUT[kind])) as conn:
        ch = conn.channel()
        with channel_error(ReplyCode.ACCESS_REFUSED, resource, USER_WITHOUT[kind]):
            operation(ch, refused)
    with connection(_as(broker, "full")) as conn:  # the refused attempt changed nothing
        ch = conn.channel()
        if creates:
            with channel_error(ReplyCode.NOT_FOUND):
                operation_passive = (
                    ch.exchange_declare if name == "exchange.declare" else ch.queue_declare
                )
                operation_passive(f"acl.{name[0]}-{refused}", passive=True)
            ch = conn.channel()
        if deletes:
            ch.exchange_declare(f"acl.x-{refused}", passive=True)
            ch.queue_declare(f"acl.q-{refused}", passive=True)
        for n in (suffix, refused):
            ch.exchange_delete(f"acl.x-{n}")
            ch.queue_delete(f"acl.q-{n}")


def test_topic_permissions_on_routing_keys(broker: BrokerProcess) -> None:
    with connection(_as(broker, "topical")) as conn:
        ch = conn.channel()
        queue = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queue, "acl.topic", "topical.#")  # read pattern, {username} expanded
        ch.confirm_delivery()
        ch.basic_publish("acl.topic", "allowed.one", b"m")
        assert ch.queue_declare(queue, passive=True).method.message_count == 0  # not bound
        ch.basic_publish("acl.x", "anything", b"m")  # not a topic exchange: no key check
        with channel_error(ReplyCode.ACCESS_REFUSED, "topic 'other.key'", "acl.topic"):
            ch.basic_publish("acl.topic", "other.key", b"m")
        ch = conn.channel()
        with channel_error(ReplyCode.ACCESS_REFUSED, "topic 'full.#'", "topical"):
            ch.queue_bind(queue, "acl.topic", "full.#")
    with connection(_as(broker, "full")) as conn:  # other users have no key limits
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("acl.topic", "other.key", b"m")


def test_user_id_must_be_the_login_unless_impersonator(broker: BrokerProcess) -> None:
    with connection(_as(broker, "full")) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "acl.q", b"m", pika.BasicProperties(user_id="full"))
        with channel_error(ReplyCode.PRECONDITION_FAILED, "user_id property set to 'boss'"):
            ch.basic_publish("", "acl.q", b"m", pika.BasicProperties(user_id="boss"))
    with connection(_as(broker, "imp")) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", "acl.q", b"m", pika.BasicProperties(user_id="boss"))
        ch.queue_purge("acl.q")


def test_failed_login_is_403_and_logged(broker: BrokerProcess) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as err:
        pika.BlockingConnection(pika.URLParameters(broker.url.replace("guest:guest", "full:bad")))
    assert "ACCESS_REFUSED" in str(err.value)
    assert "login refused from 127.0.0.1" in broker.output()
    assert "user 'full'" in broker.output()


def _non_loopback_address() -> str | None:
    """An address of this host that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # sends nothing: it only picks a source address
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_guest_only_via_loopback(tmp_path: Path) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    (tmp_path / "defs.yaml").write_text(DEFINITIONS)
    proc = start_broker(
        tmp_path / "data", "--host", "0.0.0.0", "--definitions", str(tmp_path / "defs.yaml")
    )
    try:
        outside = pika.URLParameters(proc.url.replace("127.0.0.1", address))
        outside.connection_attempts = 1
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as err:
            pika.BlockingConnection(outside)
        assert "(403)" in str(err.value)
        assert "User 'guest' can only connect via localhost" in str(err.value)
        with connection(proc):  # guest from 127.0.0.1: allowed
            pass
        other = pika.URLParameters(
            proc.url.replace("127.0.0.1", address).replace("guest:guest", "full:pw")
        )
        pika.BlockingConnection(other).close()  # other users: from anywhere
        assert "may only connect via localhost" in proc.output()
    finally:
        proc.stop()
