"""attrs models of conf/amqplite.yaml: every setting has a default, so no file is needed."""

from __future__ import annotations

import attrs


@attrs.frozen
class Listener:
    """Where AMQP clients connect."""

    host: str = "127.0.0.1"
    port: int = 5672


@attrs.frozen
class ManagementConfig:
    """The HTTP management endpoint (API, metrics, dashboard, SQS-style messaging)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 15672


@attrs.frozen
class UserConfig:
    """A user created at boot."""

    name: str = "guest"
    password: str = "guest"
    tags: tuple[str, ...] = ("administrator",)


@attrs.frozen
class Limits:
    """Protocol limits offered to clients."""

    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * 1024 * 1024
    max_outbound_bytes: int = 1024 * 1024
    close_timeout: float = 3.0


@attrs.frozen
class QueueDefaults:
    """Broker-wide queue behaviour that a queue's arguments or a policy may override."""

    consumer_timeout_ms: int = 30 * 60 * 1000


@attrs.frozen
class StoreConfig:
    """Durability: the journal of durable queues and its fsync policy."""

    fsync: bool = True  # false: survives a process crash, not a power loss
    segment_bytes: int = 16 * 1024 * 1024
    snapshot_ratio: float = 2.0  # snapshot when journal bytes exceed live bytes times this
    memory_budget_bytes: int = 256 * 1024 * 1024  # beyond this, bodies are read back from disk


@attrs.frozen
class Config:
    """The whole broker configuration."""

    listener: Listener = Listener()
    management: ManagementConfig = ManagementConfig()
    data_dir: str = "./data"
    log_level: str = "info"
    definitions: str = ""  # path of a definitions YAML applied at boot ("" = none)
    vhosts: tuple[str, ...] = ("/",)
    users: tuple[UserConfig, ...] = (UserConfig(),)
    limits: Limits = Limits()
    queues: QueueDefaults = QueueDefaults()
    store: StoreConfig = StoreConfig()
