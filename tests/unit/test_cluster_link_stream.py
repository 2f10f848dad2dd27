"""The node link over a stream (memory streams, no sockets): hellos, and frames that share a read."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from amqplite.cluster.link import Ack, Append, Hello, LinkError, QueueRef, encode
from amqplite.cluster.link_stream import LinkStream, hello

Q = QueueRef("/", "q")


@pytest.mark.trio
async def test_frames_that_arrive_with_the_hello_are_not_lost() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = LinkStream(ours)
    append = Append(Q, 2, 0, (b"r",))
    await theirs.send_all(encode(Hello("leader")) + encode(append) + encode(Ack(Q, 2, 1)))
    with trio.fail_after(5):  # (lost frames would leave receive() waiting)
        assert await hello(link, "mirror") == Hello("leader")
        assert await link.receive() == [append, Ack(Q, 2, 1)]
        await theirs.send_all(encode(Ack(Q, 2, 2)))
        assert await link.receive() == [Ack(Q, 2, 2)]


@pytest.mark.trio
async def test_a_peer_that_does_not_start_with_a_hello_is_refused() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    await theirs.send_all(encode(Ack(Q, 1, 1)))
    with pytest.raises(LinkError, match="expected a hello"):
        await hello(LinkStream(ours), "mirror")
