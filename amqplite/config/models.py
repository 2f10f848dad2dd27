"""attrs models of conf/amqplite.yaml: every setting has a default, so no file is needed."""

from __future__ import annotations

from typing import Any

import attrs


def limit(
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    meaning: str = "",
) -> dict[str, Any]:
    """Field metadata the loader checks: a numeric range, the allowed words, or a text pattern."""
    return {"min": min, "max": max, "choices": choices, "pattern": pattern, "meaning": meaning}


PORT = limit(min=0, max=65535)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@attrs.frozen
class Listener:
    """Where AMQP clients connect."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=5672, metadata=PORT)


@attrs.frozen
class TlsConfig:
    """AMQP over TLS (amqps), on its own port beside the plain listener."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = attrs.field(default=5671, metadata=PORT)
    certfile: str = ""  # PEM: the server's certificate (chain)
    keyfile: str = ""  # PEM: its private key ("" = in certfile)
    cafile: str = ""  # PEM: CAs that client certificates are checked against
    verify_peer: bool = False  # ask clients for a certificate and check the one they send
    fail_if_no_peer_cert: bool = False  # with verify_peer: refuse clients that send none


@attrs.frozen
class ManagementConfig:
    """The HTTP management endpoint (API, metrics, dashboard, SQS-style messaging)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = attrs.field(default=15672, metadata=PORT)
    # rabbitmq_*-compatible metrics without auth: None = 15692 when free, 0 = off
    prometheus_port: int | None = attrs.field(default=None, metadata=PORT)
    # HTTPS on its own port beside the plain one (RabbitMQ's management.ssl.*, port 15671);
    # the same keys as the AMQP tls section
    tls: TlsConfig = TlsConfig(port=15671)
    # the metrics over HTTPS with management.tls's certificate (RabbitMQ's prometheus.ssl.port,
    # 15691); 0 = off
    prometheus_tls_port: int = attrs.field(default=0, metadata=PORT)


@attrs.frozen
class UserConfig:
    """A user created at boot, with full permissions on every configured vhost."""

    name: str = "guest"
    password: str = "guest"
    tags: tuple[str, ...] = ("administrator",)


@attrs.frozen
class Limits:
    """Protocol limits offered to clients."""

    heartbeat: int = attrs.field(default=60, metadata=limit(min=0, max=65535))
    frame_max: int = attrs.field(default=131072, metadata=limit(min=4096, max=2**31 - 1))
    channel_max: int = attrs.field(default=2047, metadata=limit(min=1, max=65535))
    max_message_size: int = attrs.field(default=128 * 1024 * 1024, metadata=limit(min=1))
    max_outbound_bytes: int = attrs.field(default=1024 * 1024, metadata=limit(min=4096))
    close_timeout: float = attrs.field(default=3.0, metadata=limit(min=0))
    # seconds from accept to connection.open; a client silent (or stalled) that long is dropped
    handshake_timeout: float = attrs.field(default=10.0, metadata=limit(min=0.1))
    # bytes of half-received message content one connection may hold, over all its channels
    max_unfinished_content_bytes: int = attrs.field(
        default=256 * 1024 * 1024, metadata=limit(min=1)
    )
    # bytes a channel's uncommitted transaction may hold (bodies, 64 per ack); past it: 406
    max_tx_bytes_per_channel: int = attrs.field(default=256 * 1024 * 1024, metadata=limit(min=1))
    # 0 = no limit, RabbitMQ's default for each of these
    max_connections: int = attrs.field(default=0, metadata=limit(min=0))
    max_consumers_per_channel: int = attrs.field(default=0, metadata=limit(min=0))
    max_queues_per_vhost: int = attrs.field(default=0, metadata=limit(min=0))
    max_exchanges_per_vhost: int = attrs.field(default=0, metadata=limit(min=0))
    max_bindings_per_vhost: int = attrs.field(default=0, metadata=limit(min=0))


@attrs.frozen
class QueueDefaults:
    """Broker-wide queue behaviour that a queue's arguments or a policy may override."""

    consumer_timeout_ms: int = attrs.field(default=30 * 60 * 1000, metadata=limit(min=0))


@attrs.frozen
class StoreConfig:
    """Durability: the journal of durable queues and its fsync policy."""

    fsync: bool = True  # false: survives a process crash, not a power loss
    segment_bytes: int = attrs.field(default=16 * 1024 * 1024, metadata=limit(min=4096))
    # snapshot when journal bytes exceed live bytes times this
    snapshot_ratio: float = attrs.field(default=2.0, metadata=limit(min=1.0))
    # beyond this, bodies are read back from disk
    memory_budget_bytes: int = attrs.field(default=256 * 1024 * 1024, metadata=limit(min=0))


@attrs.frozen
class LoggingConfig:
    """How the broker logs: the line format and where the lines go."""

    format: str = attrs.field(default="text", metadata=limit(choices=("text", "json")))
    file: str = ""  # "" = standard error


NODE_NAME = limit(pattern=r"[A-Za-z0-9_.@-]{1,200}", meaning="a name of letters, digits, _.@-")
ETCD_URL = limit(pattern=r"https?://[^/\s]+/?", meaning="an etcd client URL like http://host:2379")


@attrs.frozen
class ClusterListener:
    """Where the node-to-node link of a cluster listens."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=25672, metadata=PORT)


@attrs.frozen
class ClusterConfig:
    """Cluster mode (nodes coordinated through etcd); disabled means one node, no external service."""

    enabled: bool = False
    name: str = attrs.field(default="amqplite", metadata=NODE_NAME)  # the etcd key prefix
    node_name: str = attrs.field(default="amqplite@localhost", metadata=NODE_NAME)
    etcd_endpoints: tuple[str, ...] = attrs.field(
        default=("http://127.0.0.1:2379",), metadata=ETCD_URL
    )
    listen: ClusterListener = ClusterListener()
    default_replicas: int = attrs.field(default=1, metadata=limit(min=1, max=99))
    lease_ttl: int = attrs.field(default=10, metadata=limit(min=2, max=3600))  # seconds
    # a mirror that has not acked for this long is dropped from the in-sync set before a confirm
    insync_timeout_ms: int = attrs.field(default=1000, metadata=limit(min=10, max=600_000))
    # host:port the other nodes reach this node's link at ("" = listen's): a proxy or NAT in between
    advertise: str = attrs.field(
        default="", metadata=limit(pattern=r"(|[^\s:]+:[0-9]{1,5})", meaning="host:port or empty")
    )
    # which durable queues have one leader node: "all" (every shared queue is owned by one node;
    # the others forward to it) or "mirrored" (replicas > 1; each node keeps its own single copy)
    queue_leaders: str = attrs.field(default="all", metadata=limit(choices=("mirrored", "all")))
    # the node link's shared secret (as Erlang's cookie): a node proves it, never sends it; nodes
    # with another secret are refused. secret_file: read it from a file instead (one of the two)
    secret: str = attrs.field(default="", repr=False)
    secret_file: str = ""


@attrs.frozen
class AlarmsConfig:
    """Resource alarms: past either limit, publishing connections stop being read (as RabbitMQ)."""

    # a fraction of the memory the process may use: physical memory or its cgroup's limit
    memory_high_watermark: float = attrs.field(default=0.4, metadata=limit(min=0.0, max=1.0))
    memory_high_watermark_bytes: int = attrs.field(default=0, metadata=limit(min=0))  # > 0 wins
    disk_free_limit: int = attrs.field(default=50_000_000, metadata=limit(min=0))  # bytes free
    check_interval: float = attrs.field(default=1.0, metadata=limit(min=0.01))  # seconds
    # transient bodies page out to disk past this fraction of the watermark (RabbitMQ's
    # vm_memory_high_watermark_paging_ratio); above 1 the alarm comes first
    memory_paging_ratio: float = attrs.field(default=0.5, metadata=limit(min=0.0))


@attrs.frozen
class Config:
    """The whole broker configuration."""

    listener: Listener = Listener()
    tls: TlsConfig = TlsConfig()
    management: ManagementConfig = ManagementConfig()
    data_dir: str = "./data"
    log_level: str = attrs.field(default="info", metadata=limit(choices=LOG_LEVELS))
    definitions: str = ""  # path of a definitions YAML applied at boot ("" = none)
    vhosts: tuple[str, ...] = ("/",)
    users: tuple[UserConfig, ...] = (UserConfig(),)
    loopback_users: tuple[str, ...] = ("guest",)  # may log in only from 127.0.0.0/8 or ::1
    limits: Limits = Limits()
    queues: QueueDefaults = QueueDefaults()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    plugins: tuple[str, ...] = ()  # plugin names (bundled or by entry point) loaded at boot
    cluster: ClusterConfig = ClusterConfig()
    alarms: AlarmsConfig = AlarmsConfig()
