"""The cluster task of a node: register under a lease, keep it alive, watch members, share definitions."""

from __future__ import annotations

import logging
from typing import Any

import trio

from amqplite.broker.broker import Broker
from amqplite.cluster.definitions_sync import DefinitionsSync
from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import Compare, EtcdError, Get, Put, RangeResult
from amqplite.cluster.keys import node_key, nodes_prefix, range_of
from amqplite.cluster.membership import ClusterError, LeaseClock, MemberView, NodeRecord
from amqplite.config.models import ClusterConfig

log = logging.getLogger("amqplite.cluster")

RETRY_INTERVAL = 0.5  # seconds between attempts while etcd is unreachable


class ClusterAgent:
    """One node in the cluster: its lease and registration, the member view, the definitions sync."""

    def __init__(self, config: ClusterConfig, client: EtcdClient) -> None:
        self.config = config
        self.client = client
        self.members = MemberView(config.name)
        self.lease_id = 0
        self.lease_clock = LeaseClock()
        self.etcd_reachable = True
        self.record: NodeRecord | None = None
        self._watch_scope: trio.CancelScope | None = None
        self.definitions: DefinitionsSync | None = None

    def attach(self, broker: Broker) -> None:
        """Share the broker's durable definitions through etcd (after the store is attached)."""
        self.definitions = DefinitionsSync(self.config.name, self.client, broker)
        self.definitions.attach()

    @classmethod
    async def connect(cls, config: ClusterConfig) -> ClusterAgent:
        """An agent whose etcd answered; EtcdUnavailable (naming the endpoints) if none does."""
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per etcd request
        client = EtcdClient(config.etcd_endpoints)
        try:
            await client.health()
        except BaseException:
            await client.aclose()
            raise
        return cls(config, client)

    @property
    def key(self) -> bytes:
        """This node's key."""
        return node_key(self.config.name, self.config.node_name)

    async def join(self, record: NodeRecord) -> None:
        """Register this node (ClusterError if a live node at another address has the name)."""
        self.record = record
        try:
            await self.register()
            self.members.reset(await self._list_nodes())
        except BaseException:
            await self._leave()
            raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """After join: keep the lease alive and the member view current; leave when cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_alive)
                nursery.start_soon(self._watch_members)
                if self.definitions is not None:
                    nursery.start_soon(self.definitions.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await self._leave()

    async def register(self) -> None:
        """Put this node's record under a new lease; refuse a name a live node at another address holds."""
        assert self.record is not None
        sent_at = trio.current_time()
        lease = await self.client.lease_grant(self.config.lease_ttl)
        value = self.record.encode()
        absent = [Compare(self.key, "version", "==", 0)]
        put = Put(self.key, value, lease.id)
        result = await self.client.txn(absent, [put], [Get(self.key)])
        if not result.succeeded:
            current = result.responses[0]
            holder = _holder(current)
            if holder is not None and holder.amqp != self.record.amqp:
                await self.client.lease_revoke(lease.id)
                raise ClusterError(
                    f"node name {self.config.node_name!r} is registered by a live node at "
                    f"{holder.amqp} (cluster {self.config.name!r}); choose another --node-name"
                )
            await self.client.put(self.key, value, lease=lease.id)  # our previous incarnation's
        self.lease_id = lease.id
        self.lease_clock.expired()  # a new lease: only its own grant counts
        self.lease_clock.renewed(sent_at, lease.ttl)
        log.info(
            "cluster: registered %s in cluster %s (lease %x, ttl %ss)",
            self.config.node_name,
            self.config.name,
            lease.id,
            lease.ttl,
        )

    async def _keep_alive(self) -> None:
        """Refresh the lease at a third of its TTL; after an expiry or an etcd loss, register again."""
        interval = self.config.lease_ttl / 3
        while True:
            await trio.sleep(interval if self.etcd_reachable else RETRY_INTERVAL)
            try:
                sent_at = trio.current_time()
                lease = await self.client.lease_keepalive(self.lease_id)
                if lease.ttl == 0:
                    self.lease_clock.expired()
                    log.warning("cluster: lease %x expired; registering again", self.lease_id)
                    await self.register()
                else:
                    self.lease_clock.renewed(sent_at, lease.ttl)
            except ClusterError as exc:
                self._lost(str(exc))
                continue
            except EtcdError as exc:
                self._lost(str(exc))
                continue
            if not self.etcd_reachable:
                log.info("cluster: etcd reachable again")
                self.etcd_reachable = True
                if self._watch_scope is not None:
                    self._watch_scope.cancel()  # a watch may have died silently: resync
                if self.definitions is not None:
                    self.definitions.resync()

    def _lost(self, reason: str) -> None:
        if self.etcd_reachable:
            log.warning("cluster: etcd unreachable, serving on and retrying: %s", reason)
        self.etcd_reachable = False

    async def _watch_members(self) -> None:
        """Keep the member view current: a range, then a watch from the revision after it."""
        first = True
        while True:
            with trio.CancelScope() as scope:
                self._watch_scope = scope
                try:
                    if not first:
                        self.members.reset(await self._list_nodes())
                    first = False
                    key, end = range_of(nodes_prefix(self.config.name))
                    start = self.members.revision + 1
                    async with self.client.watch(key, end, start_revision=start) as stream:
                        async for response in stream:
                            if response.canceled:
                                break  # compacted past our revision: resync from a range
                            self.members.apply(response)
                except EtcdError as exc:
                    log.debug("cluster: member watch ended: %s", exc)
            first = False
            await trio.sleep(RETRY_INTERVAL)

    async def _list_nodes(self) -> RangeResult:
        key, end = range_of(nodes_prefix(self.config.name))
        return await self.client.range(key, end)

    async def _leave(self) -> None:
        """Revoke the lease (so the others see this node leave at once) and close the client."""
        try:
            if self.lease_id:
                await self.client.lease_revoke(self.lease_id)
                log.info("cluster: %s left the cluster", self.config.node_name)
        except EtcdError as exc:
            log.warning("cluster: could not revoke the lease (it expires by itself): %s", exc)
        finally:
            await self.client.aclose()

    def node_list(self) -> list[dict[str, Any]]:
        """Every registered node as JSON, this one first-class (`this_node`), for management."""
        return [
            {**record.as_json(), "this_node": record.name == self.config.node_name}
            for record in self.members.sorted()
        ]


def _holder(current: object) -> NodeRecord | None:
    """The record in a failed create's read, if it decodes."""
    if not isinstance(current, RangeResult) or not current.kvs:
        return None
    try:
        return NodeRecord.decode(current.kvs[0].value)
    except ValueError:
        return None
