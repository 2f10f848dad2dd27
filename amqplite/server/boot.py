"""Boot: build the broker core from the configuration (vhosts, users, definitions)."""

from __future__ import annotations

from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.session.connection import SessionSettings


def build_broker(config: Config) -> Broker:
    """A broker with the configured vhosts and users."""
    broker = Broker()
    for vhost in config.vhosts:
        broker.add_vhost(vhost)
    for user in config.users:
        broker.add_user(user.name, user.password, user.tags)
    return broker


def session_settings(config: Config) -> SessionSettings:
    """What each session offers clients, from the limits section."""
    limits = config.limits
    return SessionSettings(
        heartbeat=limits.heartbeat,
        frame_max=limits.frame_max,
        channel_max=limits.channel_max,
        max_message_size=limits.max_message_size,
        max_outbound_bytes=limits.max_outbound_bytes,
    )
