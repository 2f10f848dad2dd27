"""Node and vhost facts of /api/nodes, /api/overview and /api/vhosts that RabbitMQ's tools read."""

from __future__ import annotations

import os
import resource
from typing import TYPE_CHECKING, Any

from amqplite.management.sockets import SocketCounters, socket_counters

if TYPE_CHECKING:
    from amqplite.management.app import ManagementApp

BUILTIN_DESCRIPTIONS = {
    "direct": "AMQP direct exchange, as per the AMQP specification",
    "fanout": "AMQP fanout exchange, as per the AMQP specification",
    "headers": "AMQP headers exchange, as per the AMQP specification",
    "topic": "AMQP topic exchange, as per the AMQP specification",
}
AUTH_MECHANISMS = (
    ("AMQPLAIN", "QPid AMQPLAIN mechanism"),
    ("PLAIN", "SASL PLAIN authentication mechanism"),
)
PROCESS_LIMIT = 1_048_576  # RabbitMQ's default Erlang process limit: amqplite has no such limit


def exchange_types(app: ManagementApp) -> list[dict[str, Any]]:
    """The exchange types this node offers (built-in and plugins'), as RabbitMQ lists them."""
    registry = app.broker.registry
    out = []
    for name in registry.names():
        description = BUILTIN_DESCRIPTIONS.get(name)
        if description is None:
            doc = type(registry.get(name)).__doc__ or ""
            description = doc.strip().splitlines()[0] if doc.strip() else f"{name} exchange"
        out.append({"name": name, "description": description, "enabled": True})
    return out


def node_extras(app: ManagementApp, memory: int, fds: int) -> dict[str, Any]:
    """The /api/nodes fields beyond the basics: limits, process, plugins, mechanisms, churn."""
    config = app.node.config
    fd_total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    gauges = (memory, fds, len(app.node.connections), 1)
    rates = app.rates.observe(app, app.clock(), gauges)
    details = ("mem_used", "fd_used", "sockets_used", "proc_used")
    return {
        **{f"{name}_details": {"rate": rate} for name, rate in zip(details, rates, strict=True)},
        **churn_rates(app),
        "cluster_links": [],
        "os_pid": str(os.getpid()),
        "proc_total": PROCESS_LIMIT,
        "sockets_total": fd_total,
        "rates_mode": "basic",
        "exchange_types": exchange_types(app),
        "auth_mechanisms": [
            {"name": name, "description": text, "enabled": True} for name, text in AUTH_MECHANISMS
        ],
        "enabled_plugins": list(config.plugins),
        "db_dir": os.path.abspath(config.data_dir),
        "config_files": [],
        "log_files": [config.logging.file] if config.logging.file else ["<stderr>"],
        "net_ticktime": 0,
        "mem_calculation_strategy": "rss",
        "contexts": [
            {"description": "amqplite management", "path": "/", "port": str(config.management.port)}
        ],
    }


CHURN_FIELDS = (
    "channel_closed",
    "channel_created",
    "connection_closed",
    "connection_created",
    "queue_created",
    "queue_declared",
    "queue_deleted",
)


def churn_rates(app: ManagementApp) -> dict[str, Any]:
    """Connections, channels and queues created and closed since boot, with rates."""
    churn = app.broker.churn
    counts = tuple(getattr(churn, name) for name in CHURN_FIELDS)
    rates = app.rates.observe(churn, app.clock(), counts)
    out: dict[str, Any] = {}
    for name, count, rate in zip(CHURN_FIELDS, counts, rates, strict=True):
        out[name] = count
        out[name + "_details"] = {"rate": rate}
    return out


def overview_extras(app: ManagementApp) -> dict[str, Any]:
    """The /api/overview fields beyond the basics."""
    return {
        "churn_rates": churn_rates(app),
        "exchange_types": exchange_types(app),
        "disable_stats": False,
        "enable_queue_totals": False,
        "statistics_db_event_queue": 0,
    }


def vhost_traffic(app: ManagementApp, name: str) -> tuple[int, int]:
    """(recv_oct, send_oct) summed over the vhost's open connections."""
    received = sent = 0
    for conn in app.node.connections:
        vhost = conn.session.vhost
        if vhost is not None and vhost.name == name:
            counters = socket_counters(conn.stream) or SocketCounters()
            received += counters.recv_oct
            sent += counters.send_oct
    return received, sent
