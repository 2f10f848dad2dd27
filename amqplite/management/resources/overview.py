"""/api/overview, /api/nodes, /api/vhosts, /api/whoami, health checks and the aliveness test."""

from __future__ import annotations

import os
import resource
from typing import Any

from amqplite import __version__
from amqplite.broker.publishing import make_message
from amqplite.management.app import Call, ManagementApp
from amqplite.management.http import HttpError, Response
from amqplite.management.listing import render_list
from amqplite.management.node_info import node_extras, overview_extras, vhost_traffic
from amqplite.management.publishing import encode_json_properties
from amqplite.management.queue_rows import (
    STAT_FIELDS,
    message_stats,
    queue_totals,
    stat_counts,
    totals_only_stats,
    totals_sample,
)
from amqplite.management.routing import ADMINISTRATOR, MANAGEMENT, Router
from amqplite.management.sqs import management_channel
from amqplite.management.views import alarm_snapshot

ALIVENESS_QUEUE = "aliveness-test"
RABBITMQ_COMPATIBLE_VERSION = "3.10.0"


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/overview", overview, MANAGEMENT)
    router.add("GET", "/api/whoami", whoami, MANAGEMENT)
    router.add("GET", "/api/nodes", list_nodes, MANAGEMENT)
    router.add("GET", "/api/nodes/{node}", show_node, MANAGEMENT)
    router.add("GET", "/api/vhosts", list_vhosts, MANAGEMENT)
    router.add("GET", "/api/vhosts/{vhost}", show_vhost, MANAGEMENT)
    router.add("PUT", "/api/vhosts/{vhost}", put_vhost, ADMINISTRATOR)
    router.add("DELETE", "/api/vhosts/{vhost}", delete_vhost, ADMINISTRATOR)
    router.add("GET", "/api/health/checks/alarms", health_alarms, MANAGEMENT)
    router.add("GET", "/api/health/checks/local-alarms", health_alarms, MANAGEMENT)
    router.add("GET", "/api/aliveness-test/{vhost}", aliveness_test, MANAGEMENT)


def memory_used() -> int:
    """Resident memory of the broker process in bytes."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fd_used() -> int:
    """Open file descriptors of the broker process."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _object_totals(app: ManagementApp, consumers: int) -> dict[str, int]:
    conns = [c for c in app.node.connections if c.session.vhost is not None]
    vhosts = app.broker.vhosts.values()
    return {
        "connections": len(conns),
        "channels": sum(len(c.session.channels) for c in conns),
        "exchanges": sum(len(v.exchanges) for v in vhosts),
        "queues": sum(len(v.queues) for v in vhosts),
        "consumers": consumers,
    }


def overview(call: Call) -> Response:
    """The broker at a glance: versions, object and message totals with rates, listeners."""
    app = call.app
    totals = queue_totals(app)  # one pass over the queues serves both totals
    counts = totals_sample(app, totals)
    rates = app.rates.observe(app.broker.totals, app.clock(), counts)
    n = len(STAT_FIELDS)
    config = app.node.config
    return Response.json(
        {
            "management_version": __version__,
            "rates_mode": "basic",
            "product_name": "amqplite",
            "product_version": __version__,
            "rabbitmq_version": RABBITMQ_COMPATIBLE_VERSION,
            "cluster_name": app.node_name,
            "node": app.node_name,
            "message_stats": {
                **message_stats(counts[:n], rates[:n]),
                **totals_only_stats(counts[n + 3 :], rates[n + 3 :]),
            },
            "queue_totals": {
                "messages": counts[n],
                "messages_details": {"rate": rates[n]},
                "messages_ready": counts[n + 1],
                "messages_ready_details": {"rate": rates[n + 1]},
                "messages_unacknowledged": counts[n + 2],
                "messages_unacknowledged_details": {"rate": rates[n + 2]},
            },
            "object_totals": _object_totals(app, totals[2]),
            "listeners": [
                {
                    "node": app.node_name,
                    "protocol": "amqp",
                    "ip_address": config.listener.host,
                    "port": config.listener.port,
                },
                {
                    "node": app.node_name,
                    "protocol": "http",
                    "ip_address": config.management.host,
                    "port": config.management.port,
                },
            ],
            "contexts": [
                {
                    "node": app.node_name,
                    "description": "amqplite management",
                    "path": "/",
                    "port": str(config.management.port),
                }
            ],
            **overview_extras(app),
        }
    )


def whoami(call: Call) -> Response:
    """The authenticated user and its tags."""
    assert call.user is not None
    return Response.json({"name": call.user.name, "tags": list(call.user.tags)})


def _node(app: ManagementApp) -> dict[str, Any]:
    return {
        "name": app.node_name,
        "type": "disc",
        "running": True,
        "being_drained": False,
        "uptime": int((app.clock() - app.started) * 1000),
        **alarm_snapshot(app.node, memory_used()),
        "fd_used": fd_used(),
        "fd_total": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "sockets_used": len(app.node.connections),
        "proc_used": 1,
        "processors": os.cpu_count() or 1,
        "partitions": [],
        "applications": [
            {"name": "amqplite", "description": "AMQP 0-9-1 broker", "version": __version__}
        ],
        **node_extras(app, memory_used(), fd_used()),
    }


def list_nodes(call: Call) -> Response:
    """Every node: this one, or in cluster mode each node registered in etcd."""
    return Response.json(_nodes(call.app))


def show_node(call: Call) -> Response:
    """One node by name."""
    for node in _nodes(call.app):
        if node["name"] == call.params["node"]:
            return Response.json(node)
    raise HttpError(404, "Not Found", "Object Not Found")


def _nodes(app: ManagementApp) -> list[dict[str, Any]]:
    """This node's details, plus (cluster mode) every registered node's addresses."""
    cluster = getattr(app.node, "cluster", None)  # server.node.Node's ClusterAgent, when on
    if cluster is None:
        return [_node(app)]
    nodes = []
    for record in cluster.node_list():
        if record["name"] == app.node_name:
            nodes.append({**_node(app), **record})
        else:
            nodes.append({"name": record["name"], "type": "disc", "running": True, **record})
    if not any(n["name"] == app.node_name for n in nodes):  # not (yet, or no longer) in etcd
        nodes.append({**_node(app), "this_node": True, "registered": False})
    return sorted(nodes, key=lambda n: str(n["name"]))


def _render_vhost(app: ManagementApp, name: str) -> dict[str, Any]:
    vhost = app.broker.vhosts[name]
    ready = unacked = 0
    stats = [0] * len(STAT_FIELDS)
    for queue in vhost.queues.values():
        ready += len(queue.ready)
        unacked += queue.unacked_count
        for i, count in enumerate(stat_counts(queue.stats)):
            stats[i] += count
    recv, send = vhost_traffic(app, name)
    counts = (*stats, ready + unacked, ready, unacked, recv, send)
    rates = app.rates.observe(vhost, app.clock(), counts)
    n = len(STAT_FIELDS)
    return {
        "name": name,
        "description": "",
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "default_queue_type": "classic",
        "tracing": False,
        "cluster_state": {app.node_name: "running"},
        "message_stats": message_stats(counts[:n], rates[:n]),
        "messages": ready + unacked,
        "messages_details": {"rate": rates[n]},
        "messages_ready": ready,
        "messages_ready_details": {"rate": rates[n + 1]},
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": {"rate": rates[n + 2]},
        "recv_oct": recv,
        "recv_oct_details": {"rate": rates[n + 3]},
        "send_oct": send,
        "send_oct_details": {"rate": rates[n + 4]},
        "queues": len(vhost.queues),
        "exchanges": len(vhost.exchanges),
    }


def list_vhosts(call: Call) -> Response:
    """Vhosts the user may see."""
    names = [v.name for v in call.app.visible_vhosts(call.user)]
    return Response.json(render_list(names, str, lambda n: _render_vhost(call.app, n), call.query))


def show_vhost(call: Call) -> Response:
    """One vhost."""
    vhost = call.vhost()
    return Response.json(_render_vhost(call.app, vhost.name))


def put_vhost(call: Call) -> Response:
    """Create a vhost (201, the creating user gets full permissions) or accept an existing one (204)."""
    name = call.params["vhost"]
    if not name:
        raise HttpError(400, "a vhost name is required")
    call.json_object()
    broker = call.broker
    existed = name in broker.vhosts
    broker.add_vhost(name)
    if not existed and call.user is not None and hasattr(broker, "set_permissions"):
        from amqplite.broker.auth import Permission

        broker.set_permissions(call.user.name, name, Permission())
    return Response.empty(204 if existed else 201)


def delete_vhost(call: Call) -> Response:
    """Delete a vhost with everything in it."""
    name = call.params["vhost"]
    broker = call.broker
    if name not in broker.vhosts:
        raise HttpError(404, "Not Found", "Object Not Found")
    delete = getattr(broker, "delete_vhost", None)
    if delete is None:
        raise HttpError(405, "this broker cannot delete vhosts yet")
    for conn in list(call.app.node.connections):
        if conn.session.vhost is not None and conn.session.vhost.name == name:
            from amqplite.protocol.constants import ReplyCode

            conn.session.force_close(ReplyCode.CONNECTION_FORCED, "vhost deleted")
            conn.wake()
    delete(name)
    return Response.empty()


def health_alarms(call: Call) -> Response:
    """200 {"status": "ok"} without resource alarms, 503 naming them while any is set."""
    snapshot = alarm_snapshot(call.app.node, memory_used())
    names = [
        kind
        for kind, key in (("memory", "mem_alarm"), ("disk", "disk_free_alarm"))
        if snapshot[key]
    ]
    if not names:
        return Response.json({"status": "ok"})
    reason = f"resource alarm(s) in effect: {', '.join(names)}"
    return Response.json({"status": "failed", "reason": reason, "alarms": names}, 503)


def aliveness_test(call: Call) -> Response:
    """Declare `aliveness-test`, publish a message to it and get it back."""
    vhost = call.vhost("configure", ALIVENESS_QUEUE)
    queue = vhost.declare_queue(ALIVENESS_QUEUE, durable=False)
    message = make_message("", ALIVENESS_QUEUE, encode_json_properties({}), b"test_message")
    call.broker.publish(vhost, "", message)
    channel = management_channel()
    for _ in range(len(queue.ready)):
        got = channel.get(queue, True)
        if got is not None and got[1].message is message:
            return Response.json({"status": "ok"})
    return Response.json({"status": "failed", "reason": "test message not received"}, 503)
