"""The trio server over memory streams, on virtual time: heartbeats, silent peers, close timeout."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from stream_client import StreamClient

from amqplite.config.models import Config, Limits
from amqplite.protocol.constants import PROTOCOL_HEADER, ReplyCode
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import spec
from amqplite.server.node import Node


async def serve_one(node: Node, nursery: trio.Nursery) -> StreamClient:
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(node.serve_stream, server_end, "memory")
    return StreamClient(client_end)


@pytest.mark.trio
async def test_silent_peer_is_dropped_after_two_heartbeat_intervals(autojump_clock: Any) -> None:
    node = Node(Config())
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await client.handshake(heartbeat=5)
        start = trio.current_time()
        heartbeats = await client.wait_closed()
        waited = trio.current_time() - start
    assert 10 <= waited <= 12
    assert heartbeats >= 3  # the server kept sending its own heartbeats meanwhile
    assert not node.connections


@pytest.mark.trio
async def test_peer_that_never_answers_close_ok_is_dropped_after_the_close_timeout(
    autojump_clock: Any,
) -> None:
    node = Node(Config(limits=Limits(close_timeout=3.0)))
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await client.handshake(heartbeat=0)
        await client.send(5, spec.Queue.Declare())  # channel 5 is not open: 504
        close = await client.expect(spec.Connection.Close)
        start = trio.current_time()
        await client.wait_closed()
        waited = trio.current_time() - start
    assert close.reply_code == ReplyCode.CHANNEL_ERROR
    assert 3 <= waited <= 4


@pytest.mark.trio
async def test_shutdown_closes_clients_with_connection_forced(autojump_clock: Any) -> None:
    node = Node(Config())
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await client.handshake(heartbeat=0)
        nursery.start_soon(node.close_all, 5.0)
        close = await client.expect(spec.Connection.Close)
        await client.send(0, spec.Connection.CloseOk())
        await client.wait_closed()
    assert close.reply_code == ReplyCode.CONNECTION_FORCED
    assert not node.connections


async def serve_lockstep(node: Node, nursery: trio.Nursery) -> StreamClient:
    """A client whose stream has no buffer: the server's send_all waits until the client reads."""
    client_end, server_end = trio.testing.lockstep_stream_pair()
    nursery.start_soon(node.serve_stream, server_end, "lockstep")
    return StreamClient(client_end)


async def drain(client: StreamClient) -> None:
    """Read until the server closes the stream (lets a stuck server finish, so the test ends)."""
    with trio.move_on_after(600):
        await client.wait_closed()


@pytest.mark.trio
async def test_shutdown_drops_a_peer_that_stops_reading_when_the_grace_period_ends(
    autojump_clock: Any,
) -> None:
    node = Node(Config(limits=Limits(close_timeout=60.0)))
    async with trio.open_nursery() as nursery:
        client = await serve_lockstep(node, nursery)
        await client.handshake(heartbeat=0)
        (conn,) = node.connections
        start = trio.current_time()
        await node.close_all(grace=5.0)  # the client reads nothing more: connection.close blocks
        with trio.move_on_after(1.0):
            await conn.finished.wait()
        dropped_after = trio.current_time() - start if conn.finished.is_set() else None
        nursery.start_soon(drain, client)
    assert dropped_after is not None, "the connection outlived the shutdown grace period"
    assert 5.0 <= dropped_after <= 5.5
    assert not node.connections


@pytest.mark.trio
async def test_peer_that_stops_reading_is_dropped_after_the_close_timeout(
    autojump_clock: Any,
) -> None:
    node = Node(Config(limits=Limits(close_timeout=3.0)))
    async with trio.open_nursery() as nursery:
        client = await serve_lockstep(node, nursery)
        await client.handshake(heartbeat=0)
        (conn,) = node.connections
        start = trio.current_time()
        await client.send(5, spec.Queue.Declare())  # 504; the client never reads the close
        with trio.move_on_after(60.0):
            await conn.finished.wait()
        dropped_after = trio.current_time() - start if conn.finished.is_set() else None
        nursery.start_soon(drain, client)
    assert dropped_after is not None, "the connection outlived its close timeout"
    assert 3.0 <= dropped_after <= 4.0
    assert not node.connections


@pytest.mark.trio
@pytest.mark.parametrize("sends", ["nothing", "protocol header", "start-ok"])
async def test_handshake_timeout_drops_a_silent_or_stalled_client(
    autojump_clock: Any, sends: str
) -> None:
    node = Node(Config())  # limits.handshake_timeout: 10 s, as RabbitMQ
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        start = trio.current_time()
        if sends != "nothing":
            await client.stream.send_all(PROTOCOL_HEADER)
            await client.expect(spec.Connection.Start)
        if sends == "start-ok":
            await client.send(
                0, build(spec.Connection.StartOk, mechanism="PLAIN", response="\x00guest\x00guest")
            )
            await client.expect(spec.Connection.Tune)  # then no tune-ok, no open
        with trio.fail_after(60):  # virtual seconds: a client never dropped fails, not hangs
            await client.wait_closed()
        waited = trio.current_time() - start
    assert 10 <= waited <= 11
    assert not node.connections


@pytest.mark.trio
async def test_an_open_connection_is_not_subject_to_the_handshake_timeout(
    autojump_clock: Any,
) -> None:
    node = Node(Config())
    async with trio.open_nursery() as nursery:
        client = await serve_one(node, nursery)
        await client.handshake(heartbeat=0)
        with trio.move_on_after(60) as scope:
            await client.wait_closed()
        assert scope.cancelled_caught  # still open a minute later
        nursery.cancel_scope.cancel()
