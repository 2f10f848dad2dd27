"""/api/connections (GET, DELETE = close), /api/channels, /api/consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from amqplite.broker.consumer import Consumer
from amqplite.management.app import Call
from amqplite.management.http import HttpError, Response
from amqplite.management.json_values import jsonable
from amqplite.management.listing import render_list
from amqplite.management.routing import MANAGEMENT, Router
from amqplite.management.sockets import SocketCounters, socket_counters
from amqplite.management.views import (
    ConnectionView,
    connection_details,
    connection_name,
    local_address,
    open_connections,
    split_peer,
    vhost_name,
)
from amqplite.protocol.constants import ReplyCode
from amqplite.session.channel import ChannelSession

if TYPE_CHECKING:
    from amqplite.management.app import ManagementApp

CLOSED_VIA_MANAGEMENT = "Closed via management plugin"


def register(router: Router[Call]) -> None:
    """Routes of this resource."""
    router.add("GET", "/api/connections", list_connections, MANAGEMENT)
    router.add("GET", "/api/vhosts/{vhost}/connections", list_connections, MANAGEMENT)
    router.add("GET", "/api/connections/{name}", show_connection, MANAGEMENT)
    router.add("DELETE", "/api/connections/{name}", close_connection, MANAGEMENT)
    router.add("GET", "/api/connections/{name}/channels", connection_channels, MANAGEMENT)
    router.add("GET", "/api/channels", list_channels, MANAGEMENT)
    router.add("GET", "/api/vhosts/{vhost}/channels", list_channels, MANAGEMENT)
    router.add("GET", "/api/channels/{name}", show_channel, MANAGEMENT)
    router.add("GET", "/api/consumers", list_consumers, MANAGEMENT)
    router.add("GET", "/api/consumers/{vhost}", list_consumers, MANAGEMENT)


def _visible(call: Call, conn: ConnectionView) -> bool:
    """Users see their own connections; monitoring and administrators see all."""
    if "vhost" in call.params and vhost_name(conn) != call.params["vhost"]:
        return False
    user = call.user
    if user is None or {"monitoring", "administrator"}.intersection(user.tags):
        return True
    return conn.session.user is not None and conn.session.user.name == user.name


def render_connection(app: ManagementApp, conn: ConnectionView) -> dict[str, Any]:
    """A connection as RabbitMQ's JSON object."""
    session = conn.session
    peer_host, peer_port = split_peer(session.peer)
    host, port = local_address(conn)
    connected_at = app.connected_at.setdefault(session, app.wall_clock())
    user = session.user.name if session.user else ""
    item = {
        "name": connection_name(conn),
        "node": app.node_name,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": "running" if session.state.value == "open" else session.state.value,
        "vhost": vhost_name(conn),
        "user": user,
        "user_who_performed_action": user,
        "auth_mechanism": getattr(session, "auth_mechanism", "PLAIN"),
        "peer_host": peer_host,
        "peer_port": peer_port,
        "host": host,
        "port": port,
        **tls_fields(conn.stream),
        "ssl_hash": None,
        "peer_cert_subject": None,
        "peer_cert_issuer": None,
        "peer_cert_validity": None,
        "channels": len(session.channels),
        "channel_max": session.channel_max,
        "frame_max": session.frame_max,
        "timeout": session.heartbeat,
        "client_properties": jsonable(session.client_properties),
        "connected_at": int(connected_at * 1000),
    }
    provided = session.client_properties.get("connection_name")
    if provided:
        item["user_provided_name"] = jsonable(provided)
    item.update(socket_fields(app, conn))
    quota = getattr(conn, "quota", None)  # server.quota.ConnectionQuota: the byte-rate quotas
    if quota is not None:
        item.update(quota.snapshot())
    return item


def tls_fields(stream: object) -> dict[str, Any]:
    """ssl, ssl_protocol, ssl_key_exchange and ssl_cipher of an amqps connection, as RabbitMQ."""
    cipher = stream.cipher() if isinstance(stream, trio.SSLStream) else None
    if not cipher:
        return {"ssl": False, "ssl_protocol": None, "ssl_key_exchange": None, "ssl_cipher": None}
    name, protocol, _bits = cipher
    return {"ssl": True, "ssl_protocol": protocol, "ssl_key_exchange": None, "ssl_cipher": name}


def socket_fields(app: ManagementApp, conn: ConnectionView) -> dict[str, Any]:
    """recv_oct, send_oct (with rates), recv_cnt, send_cnt and send_pend, as RabbitMQ."""
    counters = socket_counters(conn.stream) or SocketCounters()
    recv_rate, send_rate = app.rates.observe(
        conn.session, app.clock(), (counters.recv_oct, counters.send_oct)
    )
    return {
        "recv_oct": counters.recv_oct,
        "recv_oct_details": {"rate": recv_rate},
        "recv_cnt": counters.recv_cnt,
        "send_oct": counters.send_oct,
        "send_oct_details": {"rate": send_rate},
        "send_cnt": counters.send_cnt,
        "send_pend": counters.send_pend,
    }


def _find_connection(call: Call) -> ConnectionView:
    name = call.params["name"]
    for conn in open_connections(call.app.node):
        if connection_name(conn) == name and _visible(call, conn):
            return conn
    raise HttpError(404, "Not Found", "Object Not Found")


def list_connections(call: Call) -> Response:
    """Open AMQP connections."""
    if "vhost" in call.params:
        call.vhost()
    conns = [c for c in open_connections(call.app.node) if _visible(call, c)]
    return Response.json(
        render_list(conns, connection_name, lambda c: render_connection(call.app, c), call.query)
    )


def show_connection(call: Call) -> Response:
    """One connection."""
    return call.one(render_connection(call.app, _find_connection(call)))


def close_connection(call: Call) -> Response:
    """DELETE: close the connection with 320 CONNECTION_FORCED (reason from the X-Reason header)."""
    conn = _find_connection(call)
    reason = call.request.headers.get("x-reason") or CLOSED_VIA_MANAGEMENT
    conn.session.force_close(ReplyCode.CONNECTION_FORCED, reason)
    conn.wake()
    return Response.empty()


def _channels(
    call: Call, conns: list[ConnectionView]
) -> list[tuple[ConnectionView, ChannelSession]]:
    return [
        (conn, channel)
        for conn in conns
        for channel in sorted(conn.session.channels.values(), key=lambda ch: ch.channel_id)
    ]


def channel_name(conn: ConnectionView, channel: ChannelSession) -> str:
    """RabbitMQ's channel name: "<connection name> (<number>)"."""
    return f"{connection_name(conn)} ({channel.channel_id})"


def render_channel(
    app: ManagementApp, conn: ConnectionView, channel: ChannelSession
) -> dict[str, Any]:
    """A channel as RabbitMQ's JSON object."""
    session = conn.session
    delivery = channel.delivery
    mode = getattr(channel.mode, "value", "none")
    return {
        "name": channel_name(conn, channel),
        "number": channel.channel_id,
        "node": app.node_name,
        "vhost": session.vhost.name if session.vhost else "",
        "user": session.user.name if session.user else "",
        "state": "running" if getattr(channel.state, "value", "open") == "open" else "closing",
        "connection_details": connection_details(conn),
        "consumer_count": len(delivery.consumers),
        "messages_unacknowledged": len(delivery.unacked),
        "prefetch_count": delivery.prefetch_count,
        "global_prefetch_count": delivery.global_prefetch,
        "confirm": mode == "confirm",
        "transactional": mode == "tx",
        "messages_unconfirmed": len(channel.pending_confirms),
        "messages_uncommitted": sum(1 for op in channel.tx_ops if op[0] == "publish"),
        "acks_uncommitted": sum(1 for op in channel.tx_ops if op[0] != "publish"),
        "pending_raft_commands": 0,
        "user_who_performed_action": session.user.name if session.user else "",
    }


def list_channels(call: Call) -> Response:
    """Open channels of visible connections."""
    if "vhost" in call.params:
        call.vhost()
    conns = [c for c in open_connections(call.app.node) if _visible(call, c)]
    pairs = _channels(call, conns)
    return Response.json(
        render_list(
            pairs,
            lambda p: channel_name(*p),
            lambda p: render_channel(call.app, *p),
            call.query,
        )
    )


def connection_channels(call: Call) -> Response:
    """The channels of one connection."""
    conn = _find_connection(call)
    pairs = _channels(call, [conn])
    return Response.json([render_channel(call.app, *p) for p in pairs])


def show_channel(call: Call) -> Response:
    """One channel by name."""
    name = call.params["name"]
    conns = [c for c in open_connections(call.app.node) if _visible(call, c)]
    for conn, channel in _channels(call, conns):
        if channel_name(conn, channel) == name:
            return call.one(render_channel(call.app, conn, channel))
    raise HttpError(404, "Not Found", "Object Not Found")


def render_consumer(
    app: ManagementApp, consumer: Consumer, conn: ConnectionView | None = None
) -> dict[str, Any]:
    """A consumer as RabbitMQ's JSON object."""
    sink = consumer.channel.sink
    if conn is None:
        conn = next((c for c in app.node.connections if c.session is sink), None)
    channel_details: dict[str, Any] = {"number": consumer.channel.channel_id, "node": app.node_name}
    if conn is not None:
        details = connection_details(conn)
        channel_details.update(
            {
                "name": f"{details['name']} ({consumer.channel.channel_id})",
                "connection_name": details["name"],
                "peer_host": details["peer_host"],
                "peer_port": details["peer_port"],
                "user": conn.session.user.name if conn.session.user else "",
            }
        )
    return {
        "consumer_tag": consumer.tag,
        "queue": {"name": consumer.queue.name, "vhost": consumer.queue.vhost},
        "channel_details": channel_details,
        "ack_required": not consumer.no_ack,
        "exclusive": consumer.exclusive,
        "prefetch_count": consumer.prefetch_count,
        "arguments": jsonable(consumer.arguments) if consumer.arguments else {},
        **_activity(consumer),
    }


def _activity(consumer: Consumer) -> dict[str, Any]:
    """Whether it receives: with single active consumer or a consumer group, only one does."""
    queue = consumer.queue
    if queue.partition is None and not queue.settings.single_active_consumer:
        return {"active": True, "activity_status": "up"}
    active = queue.active_consumer is consumer
    return {"active": active, "activity_status": "single_active" if active else "waiting"}


def list_consumers(call: Call) -> Response:
    """Every consumer of the visible vhosts (or one vhost)."""
    vhosts = [call.vhost()] if "vhost" in call.params else list(call.app.visible_vhosts(call.user))
    by_session = {id(c.session): c for c in call.app.node.connections}
    items: list[dict[str, Any]] = []
    for vhost in vhosts:
        for queue in vhost.queues.values():
            for consumer in queue.consumers:
                assert isinstance(consumer, Consumer)  # the queue knows them by a protocol
                conn = by_session.get(id(consumer.channel.sink))
                items.append(render_consumer(call.app, consumer, conn))
    return Response.json(
        render_list(items, lambda c: str(c["consumer_tag"]), lambda c: c, call.query)
    )
