"""The node link over a stream (memory streams, no sockets): hellos, proofs, shared reads."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from amqplite.cluster.link import (
    Ack,
    Append,
    Hello,
    LinkDecoder,
    LinkError,
    Proof,
    QueueRef,
    encode,
)
from amqplite.cluster.link_stream import LinkRefused, LinkStream, hello, proof

Q = QueueRef("/", "q")
SECRET = b"cookie"


@pytest.mark.trio
async def test_frames_that_arrive_with_the_hello_are_not_lost() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = LinkStream(ours)
    append = Append(Q, 2, 0, (b"r",))

    async def leader() -> None:
        (our_hello,) = LinkDecoder().feed(await theirs.receive_some())
        assert isinstance(our_hello, Hello)
        mac = proof(SECRET, b"accept", our_hello.nonce, "leader")
        frames = [Hello("leader", nonce=b"n"), Proof(mac), append, Ack(Q, 2, 1)]
        await theirs.send_all(b"".join(encode(f) for f in frames))

    with trio.fail_after(5):  # (lost frames would leave receive() waiting)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            peer = await hello(link, "mirror", secret=SECRET)
        assert peer == Hello("leader", nonce=b"n")
        assert await link.receive() == [append, Ack(Q, 2, 1)]
        await theirs.send_all(encode(Ack(Q, 2, 2)))
        assert await link.receive() == [Ack(Q, 2, 2)]


@pytest.mark.trio
async def test_a_peer_that_does_not_start_with_a_hello_is_refused() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(encode(Ack(Q, 1, 1)))
    with pytest.raises(LinkError, match="expected a hello"):
        await hello(LinkStream(ours), "mirror")


async def _both(dialler_secret: bytes, listener_secret: bytes) -> list[object]:
    """Run both ends' hellos; what each returned or raised (dialler first)."""
    ours, theirs = trio.testing.memory_stream_pair()
    outcome: list[object] = [None, None]

    async def side(i: int, stream: trio.abc.Stream, node: str, secret: bytes) -> None:
        try:
            outcome[i] = await hello(LinkStream(stream), node, dialler=i == 0, secret=secret)
        except LinkError as exc:
            outcome[i] = exc

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, 0, ours, "b", dialler_secret)
            nursery.start_soon(side, 1, theirs, "a", listener_secret)
    return outcome


@pytest.mark.trio
async def test_nodes_with_the_same_secret_link_and_a_wrong_secret_is_refused_on_both_ends() -> None:
    dialler, listener = await _both(SECRET, SECRET)
    assert isinstance(dialler, Hello)
    assert dialler.node == "a"
    assert isinstance(listener, Hello)
    assert listener.node == "b"
    assert len(dialler.nonce) == 16
    dialler, listener = await _both(b"other", SECRET)
    assert isinstance(dialler, LinkRefused)
    assert dialler.node == "a"
    assert isinstance(listener, LinkRefused)
    assert listener.node == "b"


@pytest.mark.trio
async def test_a_proof_reflected_back_at_its_maker_is_refused() -> None:
    """A peer that cannot compute proofs sends back the listener's own: it names the wrong role."""
    ours, theirs = trio.testing.memory_stream_pair()

    async def impostor() -> None:
        (hello_a,) = LinkDecoder().feed(await theirs.receive_some())
        assert isinstance(hello_a, Hello)
        # the proof "a" would make as listener for its own nonce, obtained elsewhere
        stolen = proof(SECRET, b"accept", hello_a.nonce, "a")
        await theirs.send_all(encode(Hello("a", nonce=hello_a.nonce)) + encode(Proof(stolen)))

    refused: list[LinkRefused] = []

    async def listener() -> None:
        try:
            await hello(LinkStream(ours), "a", dialler=False, secret=SECRET)
        except LinkRefused as exc:
            refused.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(impostor)
            nursery.start_soon(listener)
    assert [exc.node for exc in refused] == ["a"]
