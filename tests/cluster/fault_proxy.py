"""A fault-injecting TCP proxy for cluster tests: node links and etcd traffic through it, cut and healed.

Each route listens on a loopback port and forwards to a target port. A route knows the node it
leads to (`dst`); the node at the other end (`src`) is fixed for an etcd route (one route per
node, given to that node as its --etcd URL) and read from the link's hello frame for a node-link
route (one route per node, advertised as its `cluster.advertise` address). Links between two
names can then be cut and healed:

- "blackhole": nothing more is forwarded between them (both directions; a new connection is
  accepted and held); the TCP connections stay open, as in a real partition. Healing resumes them.
- "reset": their connections are closed and new ones closed at once.

The proxy runs trio in a thread of its own, so synchronous tests (pika) drive it directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from amqplite.cluster.link import Hello, LinkDecoder, LinkError

ETCD = "etcd"  # the name etcd goes by in cuts
T = TypeVar("T")
CHUNK = 64 * 1024


class _Pair:
    """The state of the links between two names: open, or cut in some mode."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.open.set()
        self.mode = ""
        self.scopes: set[trio.CancelScope] = set()


class FaultProxy:
    """Routes with cuttable links, served by trio in a background thread."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._pairs: dict[frozenset[str], _Pair] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self.accepted = 0  # connections accepted over every route (for checks)

    # -- the controlling thread's side -----------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start the proxy's thread; return once it serves."""
        self._thread.start()
        self._ready.wait(10)
        return self

    def close(self) -> None:
        """Stop every route and the thread."""
        if self._nursery is not None:
            self._call(self._nursery.cancel_scope.cancel)
        self._thread.join(10)

    def etcd_route(self, node: str, etcd_port: int) -> str:
        """A URL of etcd for `node` (its --etcd) whose traffic can be cut from etcd."""
        port = self._run(self._listen, etcd_port, ETCD, node)
        return f"http://127.0.0.1:{port}"

    def link_route(self, node: str, link_port: int) -> str:
        """host:port for the others to reach `node`'s link at (its cluster.advertise)."""
        return f"127.0.0.1:{self._run(self._listen, link_port, node, None)}"

    def cut(self, a: str, b: str, mode: str = "blackhole") -> None:
        """Stop traffic between a and b (both ways), as `mode` says."""
        self._call(self._cut, a, b, mode)

    def isolate(self, node: str, mode: str = "blackhole", *, from_etcd: bool = True) -> None:
        """Cut node from every other name (etcd too unless from_etcd is false)."""
        for other in sorted(self.names | {ETCD}):
            if other != node and (from_etcd or other != ETCD):
                self.cut(node, other, mode)

    def partition(self, side: Iterable[str], mode: str = "blackhole") -> None:
        """Cut the names of `side` from every other name (etcd included, unless it is in side)."""
        inside = set(side)
        for a in sorted(inside):
            for b in sorted((self.names | {ETCD}) - inside):
                self.cut(a, b, mode)

    def heal(self) -> None:
        """Every cut link carries traffic again."""
        self._call(self._heal)

    def is_cut(self, a: str, b: str) -> bool:
        """Whether the links between a and b are cut now."""
        return self._call(lambda: not self._pair(a, b).open.is_set())

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._token is not None
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    # -- trio's side -----------------------------------------------------------------------------

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

    def _pair(self, a: str, b: str) -> _Pair:
        return self._pairs.setdefault(frozenset((a, b)), _Pair())

    def _cut(self, a: str, b: str, mode: str) -> None:
        if mode not in ("blackhole", "reset"):
            raise ValueError(f"unknown cut mode {mode!r}")
        pair = self._pair(a, b)
        if pair.open.is_set():
            pair.open = trio.Event()
        pair.mode = mode
        if mode == "reset":
            for scope in list(pair.scopes):
                scope.cancel()

    def _heal(self) -> None:
        for pair in self._pairs.values():
            pair.mode = ""
            pair.open.set()

    async def _listen(self, target: int, dst: str, src: str | None) -> int:
        assert self._nursery is not None
        self.names.add(dst)
        if src is not None:
            self.names.add(src)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

        async def handle(stream: trio.SocketStream) -> None:
            await self._serve(stream, target, dst, src)

        self._nursery.start_soon(trio.serve_listeners, handle, listeners)
        return int(listeners[0].socket.getsockname()[1])

    async def _serve(
        self, client: trio.SocketStream, target: int, dst: str, src: str | None
    ) -> None:
        """One accepted connection: find who it is from, then forward while the pair is open."""
        self.accepted += 1
        first = b""
        with trio.CancelScope() as scope:
            try:
                if src is None:
                    src, first = await _read_hello(client)
                pair = self._pair(src, dst)
                pair.scopes.add(scope)
                while not pair.open.is_set():  # cut before it could connect
                    if pair.mode == "reset":
                        return
                    await pair.open.wait()
                await self._forward(client, target, first, pair)
            except (OSError, LinkError, trio.TooSlowError, trio.BrokenResourceError):
                pass
            finally:
                if src is not None:
                    self._pair(src, dst).scopes.discard(scope)
                await trio.aclose_forcefully(client)

    async def _forward(
        self, client: trio.SocketStream, target: int, first: bytes, pair: _Pair
    ) -> None:
        """Connect to the target and copy both ways until either end closes or a reset cut ends it."""
        upstream = await trio.open_tcp_stream("127.0.0.1", target)
        try:
            async with upstream, trio.open_nursery() as nursery:
                if first:
                    await upstream.send_all(first)
                nursery.start_soon(self._pump, client, upstream, pair, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, pair, nursery.cancel_scope)
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        pair: _Pair,
        done: trio.CancelScope,
    ) -> None:
        """Copy one direction; a cut holds what arrives until it heals; either end closing ends both."""
        try:
            while data := await source.receive_some(CHUNK):
                while not pair.open.is_set():
                    await pair.open.wait()
                await sink.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()


async def _read_hello(stream: trio.SocketStream) -> tuple[str, bytes]:
    """The node a link connection comes from (its first frame) and the bytes read so far."""
    decoder = LinkDecoder()
    seen = b""
    with trio.fail_after(10):
        while True:
            data = await stream.receive_some(CHUNK)
            if not data:
                raise LinkError("closed before its hello")
            seen += data
            for message in decoder.feed(data):
                if not isinstance(message, Hello):
                    raise LinkError(f"expected a hello, got {message!r}")
                return message.node, seen
