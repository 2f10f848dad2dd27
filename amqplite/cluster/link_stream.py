"""The node link over trio TCP: a listener for mirrors, a connector for leaders, framed messages.

Each side's hello carries a fresh nonce; each then proves it knows the cluster secret with an
HMAC-SHA256 of the other's nonce, its own name and its role (dialler or listener, so a proof
cannot be reflected back), as Erlang nodes prove their cookie. The secret never crosses.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from amqplite.cluster.link import Hello, LinkDecoder, LinkError, Message, Proof, encode

log = logging.getLogger("amqplite.cluster")

Handler = Callable[[list[Message], "LinkStream", str], Awaitable[list[Message]]]
Closed = Callable[[str, "LinkStream"], Awaitable[None]]
READ_BYTES = 256 * 1024
NONCE_BYTES = 16
_secret = b""  # this process's cluster secret (cluster.secret), set once at start
_refused: set[str] = set()  # peers whose refusal was logged (once each until one gets in)
First = TypeVar("First", Hello, Proof)


class LinkRefused(LinkError):
    """The peer could not prove it knows the cluster secret."""

    def __init__(self, node: str) -> None:
        super().__init__(f"node {node!r} does not know this cluster's secret")
        self.node = node


def use_secret(secret: str) -> None:
    """Set the cluster secret every link of this process proves and checks."""
    global _secret
    _secret = secret.encode()


def proof(secret: bytes, role: bytes, nonce: bytes, node: str) -> bytes:
    """What `node`, in `role` (b"dial" or b"accept"), sends for the other side's nonce."""
    message = b"amqplite-link\0" + role + b"\0" + nonce + node.encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


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


async def _first(link: LinkStream, kind: type[First]) -> First:
    """The next message, which must be a `kind` (LinkError if something else comes)."""
    batch = await link.receive()
    if not batch or not isinstance(batch[0], kind):
        raise LinkError(f"expected a {kind.__name__.lower()}, got {batch[:1]}")
    link.hold(batch[1:])  # what came in the same read goes to the next receive()
    return batch[0]


async def hello(
    link: LinkStream, node: str, *, dialler: bool = True, secret: bytes | None = None
) -> Hello:
    """Exchange hellos and proofs of the secret; LinkRefused if the peer's proof is wrong."""
    secret = _secret if secret is None else secret
    nonce = os.urandom(NONCE_BYTES)
    await link.send(Hello(node, nonce=nonce))
    peer = await _first(link, Hello)
    ours, theirs = (b"dial", b"accept") if dialler else (b"accept", b"dial")
    await link.send(Proof(proof(secret, ours, peer.nonce, node)))
    answer = await _first(link, Proof)
    if not hmac.compare_digest(answer.mac, proof(secret, theirs, nonce, peer.node)):
        raise LinkRefused(peer.node)
    return peer


async def connect(address: str, node: str) -> tuple[LinkStream, Hello]:
    """Open a link to host:port and exchange hellos."""
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    link = LinkStream(stream)
    try:
        with trio.fail_after(5):
            peer = await hello(link, node, dialler=True)
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
            try:
                peer = await hello(link, node, dialler=False)
            except LinkRefused as exc:
                _log_refusal(stream, exc)
                return
            _refused.discard(peer.node)
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


def _log_refusal(stream: trio.SocketStream, refused: LinkRefused) -> None:
    """One warning per refused peer (it dials again and again), until a link from it gets in."""
    if refused.node in _refused:
        return
    _refused.add(refused.node)
    try:
        host, port = stream.socket.getpeername()[:2]
        where = f"{host}:{port}"
    except OSError:
        where = "?"
    log.warning(
        "node link from %s refused: %s (cluster.secret differs between the nodes)", where, refused
    )
