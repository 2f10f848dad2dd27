"""Fixtures shared by the end-to-end tests: pika connections and channels, cleanup, a hang watchdog."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import Cleanup, connection, watchdog


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
