"""Forwarding over the node link (trio): links to the leaders our proxies follow, and from other nodes.

Outgoing: one link per node that leads a queue some local `QueueProxy` follows; it sends the
proxies' outboxes (publishes, consume windows, settles) and hands what comes back (confirms,
deliveries, refusals) to them. A lost link is dialled again; its proxies resend what is not
confirmed. Incoming: the forwarding messages of each link another node opened go to a
`LinkPeer` of that link (publishes into the queues this node leads, remote consumers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from amqplite.broker.broker import Broker
from amqplite.cluster.link import (
    Answer,
    Ask,
    Cancelled,
    Confirm,
    Consume,
    Deliver,
    NotLeading,
    Publish,
    QueueRef,
    Resolve,
    Settle,
)
from amqplite.cluster.link import (
    Message as LinkMessage,
)
from amqplite.cluster.link_stream import LinkStream, connect
from amqplite.cluster.queue_proxy import QueueProxy
from amqplite.cluster.remote_consumer import Leads, LinkPeer
from amqplite.cluster.replicator import LINK_ERRORS

log = logging.getLogger("amqplite.cluster")

TICK = 0.05  # seconds between looks at the proxies (retries, timeouts, links to open)
FORWARDING = (Publish, Consume, Settle, Ask, Resolve)  # what a leader receives
ANSWERS = (Confirm, NotLeading, Deliver, Cancelled, Answer)  # what a follower receives


class Forwarder:
    """This node's forwarding: proxies of queues led elsewhere, peers of incoming links."""

    def __init__(
        self,
        node: str,
        broker: Broker,
        leads: Leads,
        address_of: Callable[[str], str | None],
        wake: Callable[[], None],
    ) -> None:
        self.node = node
        self.broker = broker
        self.leads = leads
        self.address_of = address_of  # a node's link address, if registered
        self.wake = wake  # forwarded confirms were settled: sessions flush them
        self.proxies: dict[QueueRef, QueueProxy] = {}
        self.peers: dict[int, LinkPeer] = {}  # id(incoming link) -> its peer
        self.dialled: dict[str, trio.CancelScope] = {}  # node -> its outgoing link's scope
        self.kicked: dict[str, trio.Event] = {}
        self.nursery: trio.Nursery | None = None

    def add(self, proxy: QueueProxy) -> None:
        """Drive a proxy (its outbox goes out when it follows a leader)."""
        proxy.clock = trio.current_time
        proxy.wake = self.wake
        proxy.kick = lambda: self._kick(proxy.leader)
        self.proxies[proxy.ref] = proxy

    def remove(self, ref: QueueRef) -> None:
        """The queue is gone here: nack its waiting publishes."""
        proxy = self.proxies.pop(ref, None)
        if proxy is not None:
            proxy.abandon()

    def _kick(self, node: str | None) -> None:
        event = self.kicked.get(node or "")
        if event is not None:
            event.set()

    def committed(self) -> None:
        """Records were committed here: confirm the forwarded publishes they cover."""
        for peer in list(self.peers.values()):
            peer.committed()

    def stepped_down(self, ref: QueueRef) -> None:
        """This node stopped leading a queue: other nodes' consumers and publishes go elsewhere."""
        for peer in list(self.peers.values()):
            peer.stepped_down(ref)

    # -- outgoing -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick the proxies and keep a link to every leader they follow, until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            while True:
                now = trio.current_time()
                wanted: set[str] = set()
                for proxy in list(self.proxies.values()):
                    proxy.tick(now)
                    if proxy.leader is not None and (proxy.pending or proxy.leader != self.node):
                        wanted.add(proxy.leader)
                        if not proxy.linked:  # a link to its leader may be up already
                            self._kick(proxy.leader)
                for node in wanted - set(self.dialled):
                    scope = trio.CancelScope()
                    self.dialled[node] = scope
                    nursery.start_soon(self._dial, node, scope)
                for node in set(self.dialled) - wanted:
                    self.dialled.pop(node).cancel()
                await trio.sleep(TICK)

    async def _dial(self, node: str, scope: trio.CancelScope) -> None:
        """Keep a link to one node while some proxy follows it."""
        with scope:
            while True:
                address = self.address_of(node)
                if address is not None:
                    try:
                        link, _ = await connect(address, self.node)
                    except LINK_ERRORS as exc:
                        log.debug("forwarding link to %s: %s", node, exc)
                    else:
                        await self._serve(node, link)
                await trio.sleep(0.1)

    def _following(self, node: str) -> list[QueueProxy]:
        return [p for p in self.proxies.values() if p.leader == node]

    async def _serve(self, node: str, link: LinkStream) -> None:
        """Send the outboxes of the proxies following `node` as they fill, until the link ends."""
        linked: set[QueueRef] = set()
        kicked = self.kicked[node] = trio.Event()
        kicked.set()  # a first look at every proxy
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, link, nursery.cancel_scope)
                while True:
                    await kicked.wait()
                    kicked = self.kicked[node] = trio.Event()
                    out: list[LinkMessage] = []
                    for proxy in self._following(node):
                        if not proxy.linked:
                            linked.add(proxy.ref)
                            proxy.link_up()
                        out.extend(proxy.take_settled())
                    if out:
                        await link.send(*out)
        except* LINK_ERRORS as group:
            log.info("forwarding link to %s lost: %s", node, group)
        finally:
            self.kicked.pop(node, None)
            for ref in linked:
                lost = self.proxies.get(ref)
                if lost is not None and lost.leader == node:
                    lost.unlinked()
            with trio.CancelScope(shield=True):
                await link.aclose()

    async def _read(self, link: LinkStream, scope: trio.CancelScope) -> None:
        while batch := await link.receive():
            for message in batch:
                if isinstance(message, ANSWERS):
                    proxy = self.proxies.get(message.queue)
                    if proxy is not None:
                        proxy.received(message)
        scope.cancel()

    # -- incoming -----------------------------------------------------------------------

    def incoming(self, peer: str, link: LinkStream, batch: list[LinkMessage]) -> None:
        """Forwarding messages another node sent on a link it opened."""
        state = self.peers.get(id(link))
        if state is None:
            state = self.peers[id(link)] = LinkPeer(peer, self.broker, self.leads)
            assert self.nursery is not None
            self.nursery.start_soon(self._answer, state, link)
        for message in batch:
            state.received(message)

    async def _answer(self, peer: LinkPeer, link: LinkStream) -> None:
        """Send a peer's outbox as it fills, until its link ends."""
        try:
            while id(link) in self.peers:
                wakeup = trio.Event()
                peer.kick = wakeup.set
                out = peer.take()
                if out:
                    await link.send(*out)
                else:
                    await wakeup.wait()
        except LINK_ERRORS as exc:
            log.debug("forwarding answers to %s: %s", peer.node, exc)

    def ended(self, link: LinkStream) -> None:
        """An incoming link ended: its remote consumers' messages are requeued."""
        peer = self.peers.pop(id(link), None)
        if peer is not None:
            peer.close()
            peer.kick()
