"""Fixtures of the cluster tests: a real etcd on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import EtcdProcess, start_etcd


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
