"""Definitions through etcd: publish this node's durable entities, apply every other node's."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from amqplite.broker.broker import Broker
from amqplite.broker.definitions import export_definitions
from amqplite.cluster.definitions import (
    KINDS,
    DefinitionsState,
    Write,
    decode_item,
    defs_prefix,
    durable_items,
    item_key,
    kind_of_key,
)
from amqplite.cluster.definitions_apply import apply_delete, apply_put
from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import Compare, Delete, EtcdError, Get, Put, RangeResult
from amqplite.cluster.keys import incarnation_key, range_of

if TYPE_CHECKING:
    from amqplite.broker.auth import Permission, TopicPermission
    from amqplite.broker.durability import ConfigListener, MetadataListener
    from amqplite.broker.policy import Policy
    from amqplite.broker.queue import Queue
    from amqplite.broker.vhost import Binding, Exchange

log = logging.getLogger("amqplite.cluster")

RETRY_INTERVAL = 0.5


@attrs.frozen
class Change:
    """The last change etcd reported for one key (value b"" for a delete)."""

    key: bytes
    deleted: bool
    value: bytes


class DefinitionsSync:
    """Keeps the broker's durable definitions and etcd's defs/ keys the same, both ways."""

    def __init__(self, cluster: str, client: EtcdClient, broker: Broker) -> None:
        self.cluster = cluster
        self.client = client
        self.broker = broker
        self.state = DefinitionsState()
        self.pending: dict[bytes, Change] = {}  # from etcd, not yet applied (last change per key)
        self._wake = trio.Event()
        self._ready = trio.Event()  # the first range is in: local items may be published
        self._etcd_id = 0  # the cluster id of the etcd that `state` reflects
        self._incarnation = b""  # and its incarnation token (incarnation_key)
        self._watch_scope: trio.CancelScope | None = None

    def attach(self) -> None:
        """Hear of the broker's definition changes (beside the store, which keeps hearing them)."""
        tee = ListenerTee(self.broker.metadata, self.broker.config_listener, self.changed)
        self.broker.metadata = tee
        self.broker.config_listener = tee
        for vhost in self.broker.vhosts.values():
            vhost.metadata = tee

    def changed(self) -> None:
        """A local definition changed: publish on the next round."""
        self._wake.set()

    async def run(self) -> None:
        """Watch defs/ and publish local changes until cancelled; etcd outages are waited out."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            nursery.start_soon(self._sync)

    def resync(self) -> None:
        """Drop the watch and start again from a range (it may have died without a word)."""
        if self._watch_scope is not None:
            self._watch_scope.cancel()

    async def _watch(self) -> None:
        """A range of defs/ (the catch-up of a node that joins), then a watch from after it."""
        while True:
            with trio.CancelScope() as self._watch_scope:
                try:
                    await self._range_then_watch()
                except EtcdError as exc:
                    log.debug("cluster: definitions watch ended: %s", exc)
            await trio.sleep(RETRY_INTERVAL)

    async def _range_then_watch(self) -> None:
        key, end = range_of(defs_prefix(self.cluster))
        incarnation = await self._incarnation_token()
        self._resync(await self.client.range(key, end), incarnation)
        start = self.state.revision + 1
        async with self.client.watch(key, end, start_revision=start) as stream:
            async for response in stream:
                if response.canceled:
                    return  # compacted past our revision: a range again
                for event in response.events:
                    deleted = event.type == "delete"
                    value = b"" if deleted else event.kv.value
                    self.pending[event.kv.key] = Change(event.kv.key, deleted, value)
                self.state.revision = max(self.state.revision, response.revision)
                self._wake.set()

    async def _incarnation_token(self) -> bytes:
        """The etcd's incarnation token; an etcd without one (new, or wiped) gets ours now."""
        key = incarnation_key(self.cluster)
        token = secrets.token_hex(8).encode()
        absent = [Compare(key, "version", "==", 0)]
        result = await self.client.txn(absent, [Put(key, token)], [Get(key)])
        if result.succeeded:
            return token
        current = result.responses[0]
        assert isinstance(current, RangeResult)
        return current.kvs[0].value if current.kvs else b""

    def _resync(self, result: RangeResult, incarnation: bytes = b"") -> None:
        """Queue what changed in etcd while unwatched; after a data loss, offer ours again."""
        fresh = {kv.key: kv.value for kv in result.kvs}
        # etcd came back without our history: a new incarnation token (an etcd wiped and started
        # again keeps its cluster id, and its revision may already have passed ours), a new
        # cluster id, or a revision behind ours
        lost = (
            incarnation != self._incarnation
            or result.cluster_id != self._etcd_id
            or result.revision < self.state.revision
        )
        self._etcd_id = result.cluster_id
        self._incarnation = incarnation
        for key in list(self.state.remote):
            if key not in fresh:
                if lost:
                    self.state.agreed.pop(key, None)  # not a delete: publish ours again
                    self.state.remote.pop(key, None)
                else:
                    self.pending[key] = Change(key, True, b"")
        for key, value in fresh.items():
            if self.state.remote.get(key) != value:
                self.pending[key] = Change(key, False, value)
        self.state.revision = result.revision
        self._ready.set()
        self._wake.set()

    async def _sync(self) -> None:
        await self._ready.wait()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._apply_pending()
            current = durable_items(self.cluster, export_definitions(self.broker))
            try:
                for write in self.state.writes(current):
                    await self._write(write)
            except EtcdError as exc:
                log.debug("cluster: definitions not published yet: %s", exc)
                await trio.sleep(RETRY_INTERVAL)
                self._wake.set()

    def _apply_pending(self) -> None:
        """Apply etcd's changes: puts in dependency order, then deletes in reverse."""
        changes, self.pending = list(self.pending.values()), {}
        order = {kind: i for i, kind in enumerate(KINDS)}

        def rank(change: Change) -> int:
            return order.get(kind_of_key(self.cluster, change.key) or "", len(KINDS))

        puts = sorted((c for c in changes if not c.deleted), key=rank)
        deletes = sorted((c for c in changes if c.deleted), key=rank, reverse=True)
        for change in puts:
            self._apply_put(change)
        for change in deletes:
            self._apply_delete(change)

    def _apply_put(self, change: Change) -> None:
        kind = kind_of_key(self.cluster, change.key)
        self.state.remote[change.key] = change.value
        if kind is None:
            return
        try:
            item = decode_item(change.value)
        except ValueError as exc:
            log.warning("cluster: ignoring %s: %s", change.key.decode(errors="replace"), exc)
            return
        context = self._ends_of(item) if kind == "bindings" else None
        conflict = apply_put(self.broker, kind, item, context)
        if conflict is None:
            self.state.agreed[change.key] = change.value
        else:
            log.warning("cluster: definitions conflict, keeping this node's: %s", conflict)
            self.state.agreed.pop(change.key, None)

    def _ends_of(self, binding: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The exchange and queue items a binding joins, as etcd holds them."""
        vhost = binding["vhost"]
        ends = [("exchanges", binding["source"])]
        kind = "queues" if binding["destination_type"] == "queue" else "exchanges"
        ends.append((kind, binding["destination"]))
        context: dict[str, list[dict[str, Any]]] = {}
        for end_kind, name in ends:
            value = self.state.remote.get(
                item_key(self.cluster, end_kind, {"vhost": vhost, "name": name})
            )
            if value is not None:
                context.setdefault(end_kind, []).append(decode_item(value))
        return context

    def _apply_delete(self, change: Change) -> None:
        previous = self.state.remote.pop(change.key, None)
        kind = kind_of_key(self.cluster, change.key)
        if kind is None or previous is None:
            return
        if self.state.agreed.get(change.key) == previous:  # we hold what was deleted
            self.state.agreed.pop(change.key)
            try:
                apply_delete(self.broker, kind, decode_item(previous))
            except (ValueError, KeyError) as exc:
                log.warning("cluster: could not delete %s locally: %s", kind, exc)

    async def _write(self, write: Write) -> None:
        key, value = write.key, write.value
        if write.op == "create":
            absent = [Compare(key, "version", "==", 0)]
            result = await self.client.txn(absent, [Put(key, value)])
            if result.succeeded:
                self.state.remote[key] = value
            self.state.agreed[key] = value  # if someone was first, their version arrives by watch
        elif write.op == "update":
            await self.client.put(key, value)
            self.state.remote[key] = value
            self.state.agreed[key] = value
        else:
            same = [Compare(key, "value", "==", value)]
            result = await self.client.txn(same, [Delete(key)])
            if result.succeeded:
                self.state.remote.pop(key, None)
            self.state.agreed.pop(key, None)


class ListenerTee:
    """The broker's listeners as the store had them, plus a call when a definition changes."""

    def __init__(
        self,
        metadata: MetadataListener | None,
        config: ConfigListener | None,
        changed: Callable[[], None],
    ) -> None:
        self.metadata = metadata
        self.config = config
        self.changed = changed
        self.declared: Callable[[Queue], None] | None = None  # mirrored queues: hold confirms

    def queue_declared(self, queue: Queue) -> None:
        """Forwarded (the store may attach the queue's journal), then marked."""
        if self.metadata is not None:
            self.metadata.queue_declared(queue)
        if self.declared is not None:
            self.declared(queue)
        self.changed()

    def queue_deleted(self, queue: Queue) -> None:
        """Forwarded, then marked."""
        if self.metadata is not None:
            self.metadata.queue_deleted(queue)
        self.changed()

    def exchange_declared(self, exchange: Exchange) -> None:
        """Forwarded, then marked."""
        if self.metadata is not None:
            self.metadata.exchange_declared(exchange)
        self.changed()

    def exchange_deleted(self, exchange: Exchange) -> None:
        """Forwarded, then marked."""
        if self.metadata is not None:
            self.metadata.exchange_deleted(exchange)
        self.changed()

    def binding_added(self, binding: Binding) -> None:
        """Forwarded, then marked."""
        if self.metadata is not None:
            self.metadata.binding_added(binding)
        self.changed()

    def binding_removed(self, binding: Binding) -> None:
        """Forwarded, then marked."""
        if self.metadata is not None:
            self.metadata.binding_removed(binding)
        self.changed()

    def vhost_added(self, name: str) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.vhost_added(name)
        self.changed()

    def vhost_deleted(self, name: str) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.vhost_deleted(name)
        self.changed()

    def user_set(self, name: str, password_hash: str, tags: tuple[str, ...]) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.user_set(name, password_hash, tags)
        self.changed()

    def user_deleted(self, name: str) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.user_deleted(name)
        self.changed()

    def permissions_set(self, user: str, vhost: str, permission: Permission) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.permissions_set(user, vhost, permission)
        self.changed()

    def permissions_cleared(self, user: str, vhost: str) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.permissions_cleared(user, vhost)
        self.changed()

    def policy_set(self, policy: Policy) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.policy_set(policy)
        self.changed()

    def topic_permissions_set(
        self, user: str, vhost: str, permissions: Sequence[TopicPermission]
    ) -> None:
        """Forwarded (not shared through etcd yet), then marked."""
        if self.config is not None:
            self.config.topic_permissions_set(user, vhost, permissions)
        self.changed()

    def limits_set(self, kind: str, name: str, limits: Mapping[str, int]) -> None:
        """Forwarded (not shared through etcd yet), then marked."""
        if self.config is not None:
            self.config.limits_set(kind, name, limits)
        self.changed()

    def policy_cleared(self, vhost: str, name: str) -> None:
        """Forwarded, then marked."""
        if self.config is not None:
            self.config.policy_cleared(vhost, name)
        self.changed()
