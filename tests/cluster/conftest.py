"""Fixtures of the cluster tests: a real etcd on loopback ports, three real nodes on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess
from cluster_helpers import (
    INSYNC_SETTINGS,
    EtcdProcess,
    StartNode,
    running_nodes,
    start_etcd,
    start_node,
    stop_nodes,
)


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    """One etcd for a module's tests; they keep to key prefixes of their own."""
    etcd = start_etcd(tmp_path_factory.mktemp("etcd") / "data")
    yield etcd
    etcd.stop()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """An etcd of the test's own, for tests that stop, restart or wipe it."""
    process = start_etcd(tmp_path / "etcd")
    yield process
    process.stop()


@pytest.fixture
def nodes(etcd: EtcdProcess, tmp_path: Path) -> Iterator[dict[str, BrokerProcess]]:
    """Nodes a, b, c (lease TTL 2 s, in-sync timeout 500 ms), stopped (resumed first) after."""
    with running_nodes(etcd, tmp_path, cluster_settings=INSYNC_SETTINGS) as started:
        yield started


@pytest.fixture
def node(etcd: EtcdProcess, tmp_path: Path) -> Iterator[StartNode]:
    """start_node on the test's etcd, data in tmp_path/<name>; every node started is stopped after."""
    started: list[BrokerProcess] = []

    def start(name: str, *extra_args: str, **options: Any) -> BrokerProcess:
        started.append(start_node(tmp_path / name, name, etcd, *extra_args, **options))
        return started[-1]

    yield start
    stop_nodes(started)
