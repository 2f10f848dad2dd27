"""run_node: build the broker from config, listen, serve connections, shut down gracefully."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

import trio

from amqplite import __version__
from amqplite.broker.broker import Broker
from amqplite.config.models import Config
from amqplite.config.source import ListenError
from amqplite.protocol.constants import ClassId, ReplyCode
from amqplite.protocol.errors import ConnectionException
from amqplite.server.alarms import Alarms
from amqplite.server.boot import apply_boot_definitions, build_broker, session_settings
from amqplite.server.committer import Committer, open_store
from amqplite.server.connection import ClientConnection
from amqplite.server.pacing import Pacer
from amqplite.server.quota import QuotaBook
from amqplite.server.spill import attach_pager, run_pager
from amqplite.server.stream_reads import run_stream_reads
from amqplite.server.timers import run_broker_timers
from amqplite.server.tls import peer_common_name, server_context
from amqplite.session.connection import Session
from amqplite.store.journal import SyncJob

if TYPE_CHECKING:  # cluster mode's modules (and httpx) load only when it is on
    from amqplite.cluster.agent import ClusterAgent
    from amqplite.cluster.membership import NodeRecord
    from amqplite.cluster.queue_roles import QueueRoles

log = logging.getLogger("amqplite.server")


class Node:
    """A running broker node: the broker core plus the connections served on its listeners."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.broker = broker or build_broker(config)
        self.settings = session_settings(config)
        self.connections: set[ClientConnection] = set()
        self.pacer = Pacer(self.broker.flow)
        self.quotas = QuotaBook(self.broker, trio.current_time)  # byte-rate quotas, shared
        self.shutting_down = False
        self.alarms = Alarms(config.alarms, config.data_dir)
        self.cluster: ClusterAgent | None = None  # set in cluster mode

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection."""
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        await self.serve_stream(stream, peer)

    async def handle_tls_stream(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        """Serve one accepted TLS connection once its handshake is done (bounded in time)."""
        try:
            host, port = stream.transport_stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "?"
        with trio.move_on_after(self.config.limits.handshake_timeout) as scope:
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:
                log.warning("TLS handshake with %s failed: %s", peer, exc.__cause__ or exc)
                await trio.aclose_forcefully(stream)
                return
        if scope.cancelled_caught:
            log.warning("TLS handshake with %s timed out", peer)
            await trio.aclose_forcefully(stream)
            return
        await self.serve_stream(stream, peer, external_identity=peer_common_name(stream))

    async def serve_stream(
        self, stream: trio.abc.Stream, peer: str, external_identity: str | None = None
    ) -> None:
        """Serve one connection over any stream (memory streams in tests)."""
        session = Session(self.broker, self.settings, peer=peer)
        session.external_identity = external_identity
        limit = self.config.limits.max_connections
        if limit and len(self.connections) >= limit:
            session.open_refusal = ConnectionException(
                ReplyCode.NOT_ALLOWED,
                f"connection limit ({limit}) is reached (limits.max_connections)",
                ClassId.CONNECTION,
                40,
            )
        conn = ClientConnection(
            stream,
            session,
            self.config.limits,
            alarms=self.alarms,
            pacer=self.pacer,
            quotas=self.quotas,
        )
        self.connections.add(conn)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)

    async def close_all(self, grace: float) -> None:
        """Send 320 CONNECTION_FORCED to every client; drop whoever is still there after `grace` s."""
        deadline = trio.current_time() + grace
        connections = list(self.connections)
        for conn in connections:
            conn.session.force_close(ReplyCode.CONNECTION_FORCED, "broker shutdown")
            conn.drop_at(deadline)  # a peer that stops reading cannot hold the close send
            conn.wake()
        with trio.move_on_at(deadline + 1.0):  # dropped ones finish at once; this is a backstop
            for conn in connections:
                await conn.finished.wait()


async def run_node(
    config: Config, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until SIGINT/SIGTERM: stop accepting, close clients with 320, exit; a second signal exits at once."""
    node = Node(config)
    if config.cluster.enabled:  # an unreachable etcd stops the start here, before any recovery
        from amqplite.cluster.agent import ClusterAgent

        node.cluster = await ClusterAgent.connect(config.cluster)
    if config.management.enabled:  # loaded only when on, and here: while collection is off
        from amqplite.management.server import run_management
    gc.collect()  # the garbage of start-up (cli.main._serve turns collection off), before
    # recovery freezes what is left
    committer = Committer(  # recover durable state before listening
        open_store(config, node.broker),
        lambda: list(node.broker.commit_waiters.values()),  # only the sessions that wait
        sync_hook=stall_hook(config.cluster.node_name),
    )
    apply_boot_definitions(node.broker, config)  # after recovery: durable entities reach the store
    pager = attach_pager(config, node.broker, node.alarms.mem_limit)
    node.alarms.pager = pager
    if node.cluster is not None:  # definitions are shared through etcd from here on
        node.cluster.attach(node.broker)
    tune_runtime()
    try:
        listeners = await trio.open_tcp_listeners(config.listener.port, host=config.listener.host)
    except OSError as exc:
        setting = "--port, AMQPLITE_PORT or listener.port"
        host, port, reason = config.listener.host, config.listener.port, exc.strerror or str(exc)
        raise ListenError("AMQP", host, port, setting, reason) from None
    ports = [listener.socket.getsockname()[1] for listener in listeners]
    log.info("amqplite listening on %s port %s", config.listener.host, ports[0])
    tls_listeners: list[trio.SSLListener[trio.SocketStream]] = []
    if config.tls.enabled:
        context = server_context(config.tls)
        tcp = await trio.open_tcp_listeners(config.tls.port, host=config.tls.host)
        tls_listeners = [trio.SSLListener(t, context, https_compatible=False) for t in tcp]
        tls_port = tcp[0].socket.getsockname()[1]
        log.info("amqplite listening for TLS on %s port %s", config.tls.host, tls_port)
    if node.cluster is not None:  # a name taken by a live node stops the start here
        await node.cluster.join(node_record(config, ports[0]))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as handlers:
            accept_scope = trio.CancelScope()

            async def accept() -> None:
                with accept_scope:
                    async with trio.open_nursery() as acceptors:
                        if tls_listeners:
                            acceptors.start_soon(
                                partial(
                                    trio.serve_listeners,
                                    node.handle_tls_stream,
                                    tls_listeners,
                                    handler_nursery=handlers,
                                )
                            )
                        await trio.serve_listeners(
                            node.handle_stream, listeners, handler_nursery=handlers
                        )

            handlers.start_soon(accept)
            handlers.start_soon(committer.run)
            handlers.start_soon(run_broker_timers, node.broker)
            handlers.start_soon(node.alarms.run)
            handlers.start_soon(run_pager, pager)
            handlers.start_soon(run_stream_reads, node.broker)
            if config.management.enabled:
                https = config.management.tls
                await handlers.start(
                    partial(
                        run_management,
                        node,
                        config.management,
                        store=committer.store,
                        wait_durable=committer.wait_durable,
                        tls_context=server_context(https, "management.tls")
                        if https.enabled
                        else None,
                    )
                )
            if node.cluster is not None:
                await handlers.start(node.cluster.run)
                await handlers.start(start_replication(node, committer).run)
            task_status.started(ports)
            async for signum in signals:
                log.info("%s: shutting down", signal.Signals(signum).name)
                break
            accept_scope.cancel()
            handlers.start_soon(_exit_on_second_signal, signals)
            await node.close_all(grace=5.0)
            handlers.cancel_scope.cancel()
    committer.close()
    log.info("amqplite stopped")


STALL_ENV = "AMQPLITE_FAULT_STALL_FSYNC"


def stall_hook(node_name: str) -> Callable[[SyncJob], None] | None:
    """Tests only: while the file $AMQPLITE_FAULT_STALL_FSYNC names exists, queue syncs hang."""
    path = os.environ.get(STALL_ENV, "").replace("{node}", node_name)
    if not path:
        return None
    log.warning("%s is set: queue journal syncs hang while %s exists", STALL_ENV, path)

    def hook(job: SyncJob) -> None:
        if job.domain.name == "metadata":
            return
        while os.path.exists(path):
            time.sleep(0.05)

    return hook


def start_replication(node: Node, committer: Committer) -> QueueRoles:
    """Cluster mode: the node link and this node's roles in mirrored queues."""
    from amqplite.cluster.link_stream import use_secret
    from amqplite.cluster.queue_roles import QueueRoles

    assert node.cluster is not None
    use_secret(node.config.cluster.secret)  # every node link proves and checks it

    def wake() -> None:  # replication acks release confirms as commits do
        for waiter in list(node.broker.commit_waiters.values()):
            waiter.on_commit()
        committer.committed_elsewhere()  # and HTTP answers waiting for a mark

    roles = QueueRoles(node.cluster, node.broker, committer.store, wake)
    committer.listeners.append(roles.committed)  # forwarded publishes confirmed back
    return roles


def node_record(config: Config, amqp_port: int) -> NodeRecord:
    """What this node registers in the cluster: its AMQP, management and node-link addresses."""
    from amqplite.cluster.membership import NodeRecord

    mgmt = config.management
    return NodeRecord(
        name=config.cluster.node_name,
        amqp=f"{config.listener.host}:{amqp_port}",
        management=f"http://{mgmt.host}:{mgmt.port}" if mgmt.enabled else "",
        cluster=config.cluster.advertise
        or f"{config.cluster.listen.host}:{config.cluster.listen.port}",
        started=time.time(),
        version=__version__,
    )


GC_THRESHOLDS = (10_000, 0, 100)
"""Cyclic GC thresholds of a serving node: messages die by reference counting, not the GC. One
young generation of at most 10,000 objects (a pass over it holds the event loop ~1-3 ms, where
a 50,000-object generation 0 held it 5-15 ms while a backlog grew); what survives a pass goes to
the old generation, collected in full at most every 100 passes, once it grew by a quarter."""

SWITCH_INTERVAL = 0.0005
"""Seconds the event loop waits for the GIL while a worker thread runs Python (a snapshot, a
page-in): Python's default, 5 ms, made every wake-up of the loop wait that long during a snapshot."""


def tune_runtime() -> None:
    """Keep boot's objects out of GC scans, collect in small steps, give the GIL back quickly."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()
    sys.setswitchinterval(SWITCH_INTERVAL)


async def _exit_on_second_signal(signals: AsyncIterator[int]) -> None:
    """A second SIGINT/SIGTERM during shutdown exits immediately."""
    async for _ in signals:
        log.warning("second signal: exiting now")
        os._exit(1)
