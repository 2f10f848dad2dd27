"""Boot: build the broker core from the configuration (vhosts, users, definitions)."""

from __future__ import annotations

import logging
import time

from amqplite.broker.auth import FULL_ACCESS
from amqplite.broker.broker import Broker
from amqplite.broker.exchange_types import builtin_registry
from amqplite.config.models import Config
from amqplite.server.plugin_loader import load_plugin
from amqplite.session.connection import SessionSettings

log = logging.getLogger("amqplite.boot")


def build_broker(config: Config) -> Broker:
    """A broker with the configured plugins, vhosts and users (full access to those vhosts)."""
    registry = builtin_registry()
    for name in config.plugins:
        load_plugin(name).register(registry)
    broker = Broker(
        registry,
        clock=time.monotonic,
        wall_clock=time.time,
        consumer_timeout_ms=config.queues.consumer_timeout_ms or None,
    )
    for vhost in config.vhosts:
        broker.add_vhost(vhost)
    for user in config.users:
        broker.add_user(user.name, user.password, user.tags)
        for vhost in config.vhosts:
            broker.set_permissions(user.name, vhost, FULL_ACCESS)
    return broker


def apply_boot_definitions(broker: Broker, config: Config) -> None:
    """Apply config.definitions (after recovery, so durable entities reach the store).

    Conflicts are logged as warnings and change nothing; a bad file raises ConfigError.
    """
    if not config.definitions:
        return
    from amqplite.broker.definitions import apply_definitions  # only with a definitions file
    from amqplite.config.definitions import load_definitions

    path = config.definitions
    report = apply_definitions(broker, load_definitions(path))
    log.info(
        "definitions %s: %d created, %d unchanged, %d conflicts",
        path,
        len(report.created),
        report.unchanged,
        len(report.conflicts),
    )
    for conflict in report.conflicts:
        log.warning("definitions %s: %s", path, conflict)


def session_settings(config: Config) -> SessionSettings:
    """What each session offers clients, from the limits section."""
    limits = config.limits
    return SessionSettings(
        heartbeat=limits.heartbeat,
        frame_max=limits.frame_max,
        channel_max=limits.channel_max,
        max_message_size=limits.max_message_size,
        max_outbound_bytes=limits.max_outbound_bytes,
        max_unfinished_content_bytes=limits.max_unfinished_content_bytes,
        max_tx_bytes_per_channel=limits.max_tx_bytes_per_channel,
        max_consumers_per_channel=limits.max_consumers_per_channel,
        max_queues_per_vhost=limits.max_queues_per_vhost,
        max_exchanges_per_vhost=limits.max_exchanges_per_vhost,
        max_bindings_per_vhost=limits.max_bindings_per_vhost,
        loopback_users=config.loopback_users,
    )
