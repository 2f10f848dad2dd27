"""What management reads of the running node: its broker, config and client connections."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.session.connection import Session


class ConnectionView(Protocol):
    """What management reads of a served client connection (server.connection.ClientConnection)."""

    @property
    def session(self) -> Session:
        """The AMQP session of the connection."""

    @property
    def stream(self) -> object:
        """The byte stream (a trio.SocketStream has the socket, for the local address)."""

    def wake(self) -> None:
        """Tell the writer there is output."""


class NodeView(Protocol):
    """What management reads of the running node (server.node.Node)."""

    @property
    def broker(self) -> Broker:
        """The broker core."""

    @property
    def config(self) -> Config:
        """The node's configuration."""

    @property
    def connections(self) -> Collection[ConnectionView]:
        """The client connections being served."""


def open_connections(node: NodeView) -> list[ConnectionView]:
    """Connections past the handshake (they have a vhost), in a stable order."""
    conns = [c for c in node.connections if c.session.vhost is not None and not c.session.closed]
    conns.sort(key=lambda c: c.session.peer)
    return conns


def alarm_snapshot(node: NodeView, mem_used: int) -> dict[str, Any]:
    """The node's resource alarms and their figures (server.alarms.Alarms), or none set."""
    alarms = getattr(node, "alarms", None)
    if alarms is None:
        return {"mem_used": mem_used, "mem_alarm": False, "disk_free_alarm": False}
    snapshot: dict[str, Any] = alarms.snapshot()
    return snapshot


def vhost_name(conn: ConnectionView) -> str:
    """The name of the vhost the connection opened ("" before connection.open)."""
    vhost = conn.session.vhost
    return vhost.name if vhost is not None else ""


def split_peer(peer: str) -> tuple[str, int]:
    """("host", port) from "host:port" (IPv6 hosts keep their colons)."""
    host, _, port = peer.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return peer, 0


def local_address(conn: ConnectionView) -> tuple[str, int]:
    """The broker-side address of a client connection's socket."""
    stream = getattr(conn.stream, "transport_stream", conn.stream)  # under TLS: the TCP stream
    sock = getattr(stream, "socket", None)
    if sock is not None:
        try:
            host, port = sock.getsockname()[:2]
            return str(host), int(port)
        except OSError:
            pass
    return "", 0


def connection_name(conn: ConnectionView) -> str:
    """RabbitMQ's connection name: "peer_host:peer_port -> host:port"."""
    host, port = local_address(conn)
    return f"{conn.session.peer} -> {host}:{port}"


def connection_details(conn: ConnectionView) -> dict[str, Any]:
    """RabbitMQ's connection_details object."""
    peer_host, peer_port = split_peer(conn.session.peer)
    return {"name": connection_name(conn), "peer_host": peer_host, "peer_port": peer_port}


def session_details(node: NodeView, session: object) -> dict[str, Any] | None:
    """{name, peer_host, peer_port} of the connection whose session this is."""
    for conn in node.connections:
        if conn.session is session:
            return connection_details(conn)
    return None
