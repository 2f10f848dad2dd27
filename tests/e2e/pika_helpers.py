"""Helpers shared by the pika (BlockingConnection) end-to-end tests."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.spec import Basic, BasicProperties

# How long a test waits for something the broker does asynchronously (a requeue, a deletion).
DEADLINE = 5.0
# pika's BlockingConnection waits forever for a reply; a test that takes longer than this fails.
TEST_WATCHDOG = 30.0


@contextlib.contextmanager
def watchdog(seconds: float = TEST_WATCHDOG) -> Iterator[None]:
    """Raise TimeoutError in the block if it runs longer than `seconds` (e.g. a reply never came)."""

    def on_alarm(_signum: int, _frame: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 5.0)  # fire again if the cleanup hangs as well
        raise TimeoutError(f"test still running after {seconds}s: did the broker stop answering?")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def parameters(broker: Any, **overrides: Any) -> pika.URLParameters:
    """Connection parameters for `broker`, with attributes such as heartbeat overridden."""
    params = pika.URLParameters(broker.url)
    params.connection_attempts = 1
    params.blocked_connection_timeout = 10
    for name, value in overrides.items():
        setattr(params, name, value)
    return params


def connect(broker: Any, **overrides: Any) -> BlockingConnection:
    """Open a BlockingConnection to `broker`."""
    return pika.BlockingConnection(parameters(broker, **overrides))


def close_quietly(conn: BlockingConnection) -> None:
    """Close `conn` if it is still open, ignoring a connection the broker already dropped."""
    with contextlib.suppress(pika.exceptions.AMQPError):
        if conn.is_open:
            conn.close()


@contextlib.contextmanager
def connection(broker: Any, **overrides: Any) -> Iterator[BlockingConnection]:
    """A connection that is closed when the block ends."""
    conn = connect(broker, **overrides)
    try:
        yield conn
    finally:
        close_quietly(conn)


class Cleanup:
    """Names of queues and exchanges a test created, deleted at teardown on a fresh connection."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        """Remember queue `name` for deletion and return it."""
        self.queues.append(name)
        return name

    def exchange(self, name: str) -> str:
        """Remember exchange `name` for deletion and return it."""
        self.exchanges.append(name)
        return name

    def run(self, broker: Any) -> None:
        """Delete everything remembered; a missing object is not an error."""
        if not self.queues and not self.exchanges:
            return
        with contextlib.suppress(pika.exceptions.AMQPError), connection(broker) as conn:
            ch = conn.channel()
            for kind, names in (("queue", self.queues), ("exchange", self.exchanges)):
                for name in names:
                    try:
                        if kind == "queue":
                            ch.queue_delete(name)
                        else:
                            ch.exchange_delete(name)
                    except pika.exceptions.ChannelClosed:
                        ch = conn.channel()


def get_message(
    ch: BlockingChannel, queue: str, *, auto_ack: bool = False, timeout: float = DEADLINE
) -> tuple[Basic.GetOk, BasicProperties, bytes]:
    """basic.get from `queue` until a message comes, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        if time.monotonic() > deadline:
            raise AssertionError(f"no message arrived on {queue!r} within {timeout}s")
        ch.connection.sleep(0.02)


def drain(ch: BlockingChannel, queue: str) -> list[bytes]:
    """Take (and ack) every ready message of `queue`, in order, with basic.get."""
    bodies: list[bytes] = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def ready_count(ch: BlockingChannel, queue: str) -> int:
    """The number of ready messages in `queue` (passive queue.declare)."""
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def wait_ready_count(
    ch: BlockingChannel, queue: str, count: int, timeout: float = DEADLINE
) -> None:
    """Wait until `queue` holds exactly `count` ready messages, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        current = ready_count(ch, queue)
        if current == count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue!r} has {current} ready messages, expected {count}")
        ch.connection.sleep(0.02)


def _passively_declared(
    conn: BlockingConnection, declare: Callable[[BlockingChannel], Any]
) -> bool:
    """True if the passive declare succeeds on a throwaway channel, False on a 404."""
    ch = conn.channel()
    try:
        declare(ch)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return False
    ch.close()
    return True


def queue_exists(conn: BlockingConnection, queue: str) -> bool:
    """True if a passive declare of `queue` succeeds (uses a throwaway channel)."""
    return _passively_declared(conn, lambda ch: ch.queue_declare(queue, passive=True))


def exchange_exists(conn: BlockingConnection, exchange: str) -> bool:
    """True if a passive declare of `exchange` succeeds (uses a throwaway channel)."""
    return _passively_declared(conn, lambda ch: ch.exchange_declare(exchange, passive=True))


def wait_queue_gone(conn: BlockingConnection, queue: str, timeout: float = DEADLINE) -> None:
    """Wait until `queue` no longer exists, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while queue_exists(conn, queue):
        if time.monotonic() > deadline:
            raise AssertionError(f"queue {queue!r} still exists after {timeout}s")
        conn.sleep(0.05)


def pump_until(
    conn: BlockingConnection, predicate: Callable[[], bool], timeout: float = DEADLINE
) -> None:
    """Process I/O events until `predicate()` holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        conn.process_data_events(time_limit=0.01)


@contextlib.contextmanager
def channel_error(code: int, *words: str) -> Iterator[list[pika.exceptions.ChannelClosedByBroker]]:
    """Expect the block to end with the broker closing the channel with `code`; check text words."""
    caught: list[pika.exceptions.ChannelClosedByBroker] = []
    try:
        yield caught
    except pika.exceptions.ChannelClosedByBroker as exc:
        caught.append(exc)
    else:
        raise AssertionError(f"expected channel.close {code}, but the block succeeded")
    _check_close(caught[0], code, words)


@contextlib.contextmanager
def connection_error(
    code: int, *words: str
) -> Iterator[list[pika.exceptions.ConnectionClosedByBroker]]:
    """Expect the block to end with the broker closing the connection with `code`."""
    caught: list[pika.exceptions.ConnectionClosedByBroker] = []
    try:
        yield caught
    except pika.exceptions.ConnectionClosedByBroker as exc:
        caught.append(exc)
    else:
        raise AssertionError(f"expected connection.close {code}, but the block succeeded")
    _check_close(caught[0], code, words)


def _check_close(exc: pika.exceptions.AMQPError, code: int, words: tuple[str, ...]) -> None:
    """Assert that a close by the broker carries `code` and each of `words` in its text."""
    assert exc.reply_code == code, f"expected {code}, got {exc.reply_code} {exc.reply_text!r}"
    for word in words:
        assert word in exc.reply_text, f"{word!r} not in {exc.reply_text!r}"


def declare_delayed_route(
    ch: BlockingChannel, kind: str = "direct", routing_key: str = "k", durable: bool = False
) -> None:
    """Exchange "later" (x-delayed-message of `kind`) bound with routing_key to queue "due"."""
    ch.exchange_declare(
        "later", "x-delayed-message", durable=durable, arguments={"x-delayed-type": kind}
    )
    ch.queue_declare("due", durable=durable)
    ch.queue_bind("due", "later", routing_key=routing_key)
