"""attrs models of conf/amqplite.yaml: every setting has a default, so no file is needed."""

from __future__ import annotations

import attrs


@attrs.frozen
class Listener:
    """Where AMQP clients connect."""

    host: str = "127.0.0.1"
    port: int = 5672


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
class Config:
    """The whole broker configuration."""

    listener: Listener = Listener()
    data_dir: str = "./data"
    log_level: str = "info"
    vhosts: tuple[str, ...] = ("/",)
    users: tuple[UserConfig, ...] = (UserConfig(),)
    limits: Limits = Limits()
