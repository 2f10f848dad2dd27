"""A broker with a store recovered from a directory into it, as boot does, for store tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amqplite.broker.broker import Broker
from amqplite.config.models import StoreConfig
from amqplite.server.restore import recover_into
from amqplite.store.store import Store


def recovered(directory: Path, broker: Broker | None = None, **config: Any) -> tuple[Broker, Store]:
    """broker (a new one with vhost "/" if None) with the store in `directory` recovered into it."""
    if broker is None:
        broker = Broker()
        broker.add_vhost("/")
    store = Store(directory, StoreConfig(**config))
    recover_into(broker, store)
    return broker, store
