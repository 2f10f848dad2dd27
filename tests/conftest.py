"""Shared fixtures: a live `amqplite serve` subprocess on a free port (or AMQPLITE_TEST_URL)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess, Serve, external_broker, start_broker, start_configured


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker shared by the whole session; tests use unique names to stay apart."""
    external = external_broker()
    if external is not None:
        yield external
        return
    b = start_broker(tmp_path_factory.mktemp("broker-data"))
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker of the test's own, for tests that restart, kill or fill it."""
    b = start_broker(tmp_path / "data")
    yield b
    b.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start brokers of the test's own from config text (restarts too); every one stopped after."""
    started: list[BrokerProcess] = []

    def start(config: str | None = None, *extra_args: str, **options: Any) -> BrokerProcess:
        broker = start_configured(tmp_path, config, *extra_args, **options)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def uid(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, for queues and exchanges on the shared broker."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in request.node.name[:60])
    return f"{name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
