"""The node link over trio TCP: a listener for mirrors, a connector for leaders, framed messages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from amqplite.cluster.link import Hello, LinkDecoder, LinkError, Message, encode

log = logging.getLogger("amqplite.cluster")

Handler = Callable[[list[Message], "LinkStream", str], Awaitable[list[Message]]]
Closed = Callable[[str, "LinkStream"], Awaitable[None]]
READ_BYTES = 256 * 1024


class LinkStream:
    """One link connection: send messages, receive them in batches (all that one read completed)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = LinkDecoder()
        self._send_lock = trio.StrictFIFOLock()
        self._held: list[Message] = []  # decoded but not handed out yet (after a hello)

    async def send(self, *messages: Message) -> None:
        """Send messages as frames, in order, under a lock (several tasks may send)."""
        data = b"".join(encode(m) for m in messages)
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive(self) -> list[Message]:
        """The next messages (at least one); [] when the peer closed."""
        if self._held:
            held, self._held = self._held, []
            return held
        while True:
            data = await self.stream.receive_some(READ_BYTES)
            if not data:
                return []
            batch = list(self.decoder.feed(data))
            if batch:
                return batch

    def hold(self, messages: list[Message]) -> None:
        """Messages the next receive() returns first."""
        self._held = messages + self._held

    async def aclose(self) -> None:
        """Close the connection."""
        await self.stream.aclose()


async def hello(link: LinkStream, node: str) -> Hello:
    """Exchange hellos: send ours, wait for the peer's (LinkError if something else comes)."""
    await link.send(Hello(node))
    batch = await link.receive()
    if not batch or not isinstance(batch[0], Hello):
        raise LinkError(f"expected a hello, got {batch[:1]}")
    link.hold(batch[1:])  # what came in the same read goes to the next receive()
    return batch[0]


async def connect(address: str, node: str) -> tuple[LinkStream, Hello]:
    """Open a link to host:port and exchange hellos."""
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    link = LinkStream(stream)
    try:
        with trio.fail_after(5):
            peer = await hello(link, node)
    except BaseException:
        await link.aclose()
        raise
    return link, peer


async def serve(
    host: str,
    port: int,
    node: str,
    handler: Handler,
    closed: Closed | None = None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept links on host:port; each gets our hello, then its batches go to handler in order.

    handler(batch, link, peer node) returns the replies to send; closed(peer node, link) runs
    when a link that carried a batch after its hello ends, however it ends.
    """

    async def one(stream: trio.SocketStream) -> None:
        link = LinkStream(stream)
        peer: Hello | None = None
        carried = False  # a link that only said hello (a liveness probe) ends without news
        try:
            peer = await hello(link, node)
            log.info("node link from %s", peer.node)
            while batch := await link.receive():
                carried = True
                replies = await handler(batch, link, peer.node)
                if replies:
                    await link.send(*replies)
        except (LinkError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.warning("node link closed: %s", exc)
        except Exception:  # this link ends; the node and its other links go on
            log.exception("node link from %s failed", peer.node if peer else "?")
        finally:
            await link.aclose()
            if peer is not None and closed is not None and carried:
                await closed(peer.node, link)  # (probes answering probes would never end)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(one, listeners)
