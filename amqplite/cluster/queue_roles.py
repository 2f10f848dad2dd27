"""Which role this node plays for each mirrored queue: placement, election, leading, mirroring.

Every 100 ms the node looks at each durable queue with replicas > 1: it places the queue's
members once (rendezvous hashing over the registered nodes), and where etcd holds no leader, an
in-sync member campaigns (the live in-sync members in order, each a little later than the one
before it). The winner takes the messages its mirror copy holds into the local queue (with their
delivery counts, so those delivered before are redelivered) and starts feeding the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import trio

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message
from amqplite.broker.queue import Queue
from amqplite.cluster.agent import ClusterAgent
from amqplite.cluster.definitions_sync import ListenerTee
from amqplite.cluster.election import NotEligible, QueueElection, QueueKeys
from amqplite.cluster.etcd_codec import EtcdError, EtcdUnavailable, RangeResult
from amqplite.cluster.forwarder import FORWARDING, Forwarder
from amqplite.cluster.keys import cluster_prefix, node_key
from amqplite.cluster.link import Message as LinkMessage
from amqplite.cluster.link import QueueRef
from amqplite.cluster.link_stream import LinkRefused, LinkStream, connect, serve
from amqplite.cluster.mirror_host import MirrorHost
from amqplite.cluster.queue_proxy import QueueProxy
from amqplite.cluster.replicator import LINK_ERRORS, QueueLeader
from amqplite.protocol.properties import read_facts
from amqplite.store.queue_store import QueueStore
from amqplite.store.records import StoredMessage
from amqplite.store.store import Store

log = logging.getLogger("amqplite.cluster")

TICK = 0.1  # seconds between looks at the queues
PLACEMENT_WAIT = 3.0  # seconds a new queue waits for enough registered nodes before placement
RANK_DELAY = 0.3  # seconds each in-sync member waits after the one before it to campaign


def placement(
    vhost: str, queue: str, nodes: list[str], replicas: int, leads: Mapping[str, int] | None = None
) -> tuple[str, ...]:
    """The nodes to hold a queue, its likely leader first: the node leading fewest queues (`leads`),
    then the others by a hash of queue and node (ties too), so leaders spread over the nodes."""

    def weight(node: str) -> bytes:
        return hashlib.sha256(f"{vhost}\0{queue}\0{node}".encode()).digest()

    ranked = sorted(nodes, key=weight)
    if leads and ranked:
        first = min(ranked, key=lambda node: leads.get(node, 0))  # stable: hash order breaks ties
        ranked = [first, *(node for node in ranked if node != first)]
    return tuple(ranked[:replicas])


def first_members(result: RangeResult) -> dict[str, int]:
    """How many queues each node is placed first for (their likely leader), from a range of queues/."""
    counts: dict[str, int] = {}
    for kv in result.kvs:
        if kv.key.endswith(b"/members"):
            try:
                members = json.loads(kv.value)
            except ValueError:
                continue
            if isinstance(members, list) and members:
                counts[str(members[0])] = counts.get(str(members[0]), 0) + 1
    return counts


def to_message(stored: StoredMessage) -> Message:
    """A message of a mirror copy, as the queue takes it."""
    return Message(
        stored.exchange,
        stored.routing_key,
        stored.properties_bin,
        stored.body,
        persistent=True,
        priority=stored.priority,
        expiration_ms=stored.expiration_ms,
        headers=read_facts(stored.properties_bin).headers,
    )


def hold(queue: Queue) -> None:
    """Confirm nothing more of a mirrored queue this node does not lead (until it does)."""
    journal = queue.journal
    if isinstance(journal, QueueStore) and journal.domain.gate is None:
        domain = journal.domain
        domain.gate = lambda synced: domain.committed
        journal.writer.tap = None


class QueueRoles:
    """This node's part in every mirrored queue."""

    def __init__(
        self, agent: ClusterAgent, broker: Broker, store: Store, wake: Callable[[], None]
    ) -> None:
        self.agent = agent
        self.node = agent.config.node_name
        self.broker = broker
        self.store = store
        self.wake = wake
        self.mirrors = MirrorHost(Path(store.directory) / "mirrors")
        self.leaders: dict[QueueRef, tuple[QueueLeader, trio.CancelScope]] = {}
        self.placed: set[QueueRef] = set()
        self.first_seen: dict[QueueRef, float] = {}
        self.leaderless_since: dict[QueueRef, float] = {}
        # replicas up to this many: no leader (each node's own queue); 0 with queue_leaders "all"
        self.unled = 0 if agent.config.queue_leaders == "all" else 1
        self.forwarder = Forwarder(self.node, broker, self.leading, self.address_of, wake)
        tee = broker.metadata
        if isinstance(tee, ListenerTee):  # declares reach us before any publish can
            tee.declared = self.declared

    def declared(self, queue: Queue) -> None:
        """A queue was declared here: if it is mirrored, publishes wait for a leader to take them."""
        default = self.agent.config.default_replicas
        if queue.durable and (queue.settings.replicas or default) > self.unled:
            hold(queue)
            if not queue.auto_delete and not queue.exclusive:  # forwarded once a leader is known
                self.proxy_for(QueueRef(queue.vhost, queue.name), queue)
                queue.led_elsewhere = ""

    def address_of(self, node: str) -> str | None:
        """A registered node's link address."""
        record = self.agent.members.nodes.get(node)
        return None if record is None else record.cluster

    def leading(self, ref: QueueRef) -> Queue | None:
        """The queue, while this node leads it and may confirm (forwarded publishes go in)."""
        held = self.leaders.get(ref)
        if held is None or held[0].fenced_at is not None or held[0].queue.deleted:
            return None
        return held[0].queue

    def committed(self) -> None:
        """Records were committed (a local sync, or mirrors' acks): confirm forwarded publishes."""
        self.forwarder.committed()

    def _acked(self) -> None:
        """Mirrors acked: release local confirms and forwarded ones."""
        self.wake()
        self.forwarder.committed()

    def proxy_for(self, ref: QueueRef, queue: Queue) -> QueueProxy:
        """The queue's proxy (made and attached on first use): forwarding when led elsewhere."""
        proxy = self.forwarder.proxies.get(ref)
        if proxy is None or proxy.queue is not queue:
            if proxy is not None:
                self.forwarder.remove(ref)
            proxy = QueueProxy(ref, queue, self.node, self.store.note)
            self.forwarder.add(proxy)
            queue.remote = proxy
        return proxy

    def hand_over(self, queue: Queue) -> None:
        """Another node leads the queue now: nack publishes this node took but never confirmed, and
        drop its local copy (the leader's is the queue; it redelivers what was delivered here)."""
        journal = queue.journal
        if isinstance(journal, QueueStore):
            domain = journal.domain
            if domain.written > domain.committed:
                log.info(
                    "%s is led elsewhere now: its unconfirmed records here are nacked", queue.name
                )
                domain.refuse(domain.written)
                self.wake()
        queue.purge()

    async def handle(
        self, batch: list[LinkMessage], link: LinkStream, peer: str
    ) -> list[LinkMessage]:
        """A batch of an incoming link: forwarding to the forwarder, the rest to the mirror copies."""
        forwarded: list[LinkMessage] = [m for m in batch if isinstance(m, FORWARDING)]
        if not forwarded:
            return await self.mirrors.handle(batch)
        self.forwarder.incoming(peer, link, forwarded)
        rest: list[LinkMessage] = [m for m in batch if not isinstance(m, FORWARDING)]
        return await self.mirrors.handle(rest) if rest else []

    def lease_valid(self) -> bool:
        """Whether this node's etcd lease surely holds now (a leader confirms only then)."""
        return self.agent.lease_clock.valid(trio.current_time())

    def replicated(self) -> Iterator[tuple[QueueRef, Queue, int]]:
        """Durable, shared queues with a leader: more than one replica (or all, as configured)."""
        default = self.agent.config.default_replicas
        for vhost in list(self.broker.vhosts.values()):
            for queue in list(vhost.queues.values()):
                if not queue.durable or queue.auto_delete or queue.exclusive:
                    continue
                replicas = queue.settings.replicas or default
                if replicas > self.unled:
                    yield QueueRef(vhost.name, queue.name), queue, replicas

    def leader_of(self, ref: QueueRef) -> QueueLeader | None:
        """The term this node leads the queue in, if it does."""
        held = self.leaders.get(ref)
        return None if held is None else held[0]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the node link and tend every mirrored queue until cancelled."""
        listen = self.agent.config.listen
        async with trio.open_nursery() as nursery:
            await nursery.start(self.forwarder.run)  # before the link: it serves forwarding too
            await nursery.start(
                serve, listen.host, listen.port, self.node, self.handle, self.link_closed
            )
            task_status.started()
            while True:
                await trio.sleep(TICK)
                seen: set[QueueRef] = set()
                for ref, queue, replicas in list(self.replicated()):
                    seen.add(ref)
                    try:
                        await self.tend(nursery, ref, queue, replicas)
                    except (EtcdUnavailable, EtcdError, NotEligible) as exc:
                        log.debug("tending %s: %s", ref.name, exc)
                    except Exception:  # one queue's trouble never stops the node
                        log.exception("tending mirrored queue %s", ref.name)
                for ref in set(self.forwarder.proxies) - seen:
                    self.forwarder.remove(ref)  # deleted here: its waiting publishes are nacked

    async def link_closed(self, peer: str, link: LinkStream) -> None:
        """A node's link ended: if its port now refuses connections it died, so revoke its lease."""
        self.forwarder.ended(link)
        # The queues it led fail over now, not when its lease ends. Safe for confirmed messages
        # even were it alive: a leader that lost its key can change no in-sync set, and the
        # member that takes a queue over refuses the old term's appends.
        record = self.agent.members.nodes.get(peer)
        if record is None or peer == self.node:
            return
        try:  # a hello, not just a connect: a dying process's backlog may still accept
            with trio.fail_after(2.0):
                link, _ = await connect(record.cluster, self.node)
            await link.aclose()
            return  # it is alive: the link ended for another reason
        except LinkRefused:
            return  # alive, with another cluster secret: its lease is not ours to end
        except LINK_ERRORS:
            pass
        try:
            kv = await self.agent.client.get(node_key(self.agent.config.name, peer))
            if kv is not None and kv.lease and kv.value == record.encode():
                log.warning("node %s died (its link port refuses): revoking its lease", peer)
                await self.agent.client.lease_revoke(kv.lease)
        except EtcdError as exc:
            log.warning("could not revoke the lease of node %s: %s", peer, exc)

    async def tend(self, nursery: trio.Nursery, ref: QueueRef, queue: Queue, replicas: int) -> None:
        """Place, elect, or step down for one queue, as etcd says."""
        keys = QueueKeys.of(self.agent.config.name, ref.vhost, ref.name)
        election = QueueElection(self.agent.client, keys, self.node)
        if ref not in self.placed:
            nodes = list(self.agent.members.nodes)
            first_seen = self.first_seen.setdefault(ref, trio.current_time())
            if len(nodes) < replicas and trio.current_time() - first_seen < PLACEMENT_WAIT:
                return  # a node that just joined may not be in our view yet
            leads: dict[str, int] = {}
            if await self.agent.client.get(keys.members) is None:  # not placed yet: spread it
                prefix = cluster_prefix(self.agent.config.name) + b"queues/"
                leads = first_members(await self.agent.client.get_prefix(prefix))
            members = placement(ref.vhost, ref.name, nodes, replicas, leads)
            if await election.initialise(members):
                log.info("queue %s placed on %s", ref.name, ", ".join(members))
            self.placed.add(ref)
        proxy = self.proxy_for(ref, queue)
        current = await election.leader()
        mine = self.leader_of(ref)
        if mine is not None and current != (self.node, mine.term.epoch):
            self.step_down(
                ref, "its leader key is gone" if current is None else f"{current[0]} leads"
            )
        if not proxy.members:
            proxy.members = await election.members() or ()
        proxy.online = tuple(m for m in proxy.members if m in self.agent.members.nodes)
        if ref not in self.leaders:  # clients of this node are forwarded to where it is led
            hold(queue)
            elsewhere = None if current is None or current[0] == self.node else current[0]
            if elsewhere is not None and queue.led_elsewhere in (None, ""):
                self.hand_over(queue)  # (it led it, or took publishes before anyone did)
            proxy.follow(elsewhere)
            queue.led_elsewhere = "" if current is None else current[0]
        if current is not None:
            self.leaderless_since.pop(ref, None)
            return
        now = trio.current_time()
        since = self.leaderless_since.setdefault(ref, now)
        in_sync = await election.in_sync()
        alive = [m for m in in_sync.members if m in self.agent.members.nodes]
        if self.node not in alive or now - since < alive.index(self.node) * RANK_DELAY:
            return
        term = await election.campaign(self.agent.lease_id)
        if term is None:
            return
        journal = queue.journal
        if not isinstance(journal, QueueStore):
            await election.resign(term)
            return
        proxy.follow(self.node)  # publishes it forwarded and nobody confirmed: to itself now
        queue.led_elsewhere = None
        taken = self.take_over(ref, queue)
        self.mirrors.lead(ref, term.epoch)
        members = await election.members() or in_sync.members
        seen = await election.in_sync()
        gone = {m for m in seen.members if m != self.node and m not in self.agent.members.nodes}
        if gone:  # their leases ended: confirms need not wait the in-sync timeout for them
            kept = tuple(m for m in seen.members if m not in gone)
            if await election.set_in_sync(term, kept, seen):
                seen = await election.in_sync()
        leader = QueueLeader(ref, queue, journal, term, election, members, seen)
        leader.wake, leader.lease_valid = self._acked, self.lease_valid
        scope = trio.CancelScope()
        self.leaders[ref] = (leader, scope)
        proxy.replicating = leader.replication
        nursery.start_soon(self._lead, leader, scope, members)
        log.info("leading %s at epoch %d (%d messages taken over)", ref.name, term.epoch, taken)

    def take_over(self, ref: QueueRef, queue: Queue) -> int:
        """Put the mirror copy's messages into the local queue (this node leads it now)."""
        if not self.mirrors.path_of(ref).exists():
            return 0  # never a mirror of it: the local queue is the queue
        stored = self.mirrors.messages_of(ref)
        queue.purge()
        for item in stored:
            entry = queue.enqueue(to_message(item))
            if entry is not None:
                entry.delivery_count = item.delivery_count  # delivered before: redelivered
        queue.dispatch()
        return len(stored)

    def step_down(self, ref: QueueRef, why: str) -> None:
        """Stop leading a queue: confirm nothing more of this term."""
        held = self.leaders.pop(ref, None)
        if held is None:
            return
        leader, scope = held
        leader.stop()
        proxy = self.forwarder.proxies.get(ref)
        if proxy is not None and proxy.replicating == leader.replication:
            proxy.replicating = None
        scope.cancel()
        self.forwarder.stepped_down(ref)
        log.warning("no longer leading %s: %s", ref.name, why)
        self.wake()

    async def _lead(
        self, leader: QueueLeader, scope: trio.CancelScope, members: tuple[str, ...]
    ) -> None:
        nodes = self.agent.members.nodes

        def address_of(mirror: str) -> Callable[[], str | None]:
            def address() -> str | None:
                record = nodes.get(mirror)
                return None if record is None else record.cluster

            return address

        timeout = self.agent.config.insync_timeout_ms / 1000
        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    for mirror in members:
                        if mirror != self.node:
                            nursery.start_soon(leader.feed, mirror, address_of(mirror))
                    await leader.watch_in_sync(timeout)
                    nursery.cancel_scope.cancel()
            except Exception:  # the term ends; the node goes on (another member takes over)
                log.exception("leading %s failed", leader.ref.name)
                leader.stop()
                self.forwarder.stepped_down(leader.ref)
                self.wake()
