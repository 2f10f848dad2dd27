"""End-to-end fixtures: pika and raw clients, cleanup, a hang watchdog, the management API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mgmt_helpers import Reply, call
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import Cleanup, connection, watchdog
from raw_client import RawClient, connected


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    """Fail a test that hangs waiting for a broker reply instead of blocking the run."""
    with watchdog():
        yield


@pytest.fixture
def conn(broker: Any) -> Iterator[BlockingConnection]:
    """A pika connection closed at teardown."""
    with connection(broker) as c:
        yield c


@pytest.fixture
def ch(conn: BlockingConnection) -> BlockingChannel:
    """A channel on `conn`."""
    return conn.channel()


@pytest.fixture
def other_conn(broker: Any) -> Iterator[BlockingConnection]:
    """A second connection, for exclusivity checks."""
    with connection(broker) as c:
        yield c


@pytest.fixture
def cleanup(broker: Any) -> Iterator[Cleanup]:
    """Queues and exchanges to delete at teardown."""
    c = Cleanup()
    yield c
    c.run(broker)


@pytest.fixture
def queue(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> str:
    """A fresh, empty queue named after the test."""
    ch.queue_declare(cleanup.queue(uid))
    return uid


@pytest.fixture
def api(broker: Any) -> Any:
    """call() bound to the shared broker's management URL."""
    if not broker.is_amqplite:
        pytest.skip("management tests run against amqplite's own endpoint")
    base = broker.management_url

    def bound(method: str, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return call(base, method, path, body, **kwargs)

    return bound


@pytest.fixture
def raw(broker: Any) -> Iterator[RawClient]:
    """A raw client that has completed the handshake (heartbeats off)."""
    client = connected(broker)
    try:
        yield client
    finally:
        client.close()
