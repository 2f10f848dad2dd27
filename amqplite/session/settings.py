"""The limits and identity a session offers to clients (from the broker configuration)."""

from __future__ import annotations

import attrs


@attrs.frozen
class SessionSettings:
    """Limits and identity a session offers to clients (from the broker configuration)."""

    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * 1024 * 1024
    max_outbound_bytes: int = 1024 * 1024
    max_unfinished_content_bytes: int = 256 * 1024 * 1024  # per connection, across channels
    max_tx_bytes_per_channel: int = 256 * 1024 * 1024  # an uncommitted transaction's holdings
    max_consumers_per_channel: int = 0  # 0: no limit (here and below)
    max_queues_per_vhost: int = 0
    max_exchanges_per_vhost: int = 0
    max_bindings_per_vhost: int = 0
    loopback_users: tuple[str, ...] = ()  # users refused unless they connect via loopback
    product: str = "amqplite"
