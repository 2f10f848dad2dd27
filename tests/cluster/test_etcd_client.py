"""EtcdClient against a real etcd: keys, txn compares, leases, watches, unreachable endpoints."""

from __future__ import annotations

import itertools

import pytest
import trio
from broker_process import free_port
from cluster_helpers import EtcdProcess

from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import Compare, EtcdError, EtcdUnavailable, Get, Put, RangeResult

pytestmark = [pytest.mark.cluster, pytest.mark.trio]

_prefixes = itertools.count()


@pytest.fixture
def prefix() -> bytes:
    """A key prefix no other test of the module uses."""
    return f"/test/{next(_prefixes)}/".encode()


async def test_put_get_range_and_delete_round_trip_bytes(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    async with EtcdClient([shared_etcd.url]) as client:
        rev = await client.put(prefix + b"a", b"\x00\xffone")
        await client.put(prefix + b"b", b"two")
        kv = await client.get(prefix + b"a")
        assert kv is not None
        assert (kv.value, kv.mod_revision, kv.version) == (b"\x00\xffone", rev, 1)
        assert await client.get(prefix + b"missing") is None
        listed = await client.get_prefix(prefix)
        assert [k.key for k in listed.kvs] == [prefix + b"a", prefix + b"b"]
        assert listed.count == 2
        assert await client.delete(prefix + b"a") == 1
        assert [k.key for k in (await client.get_prefix(prefix)).kvs] == [prefix + b"b"]


async def test_txn_writes_only_when_the_mod_revision_still_matches(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    key = prefix + b"leader"
    async with EtcdClient([shared_etcd.url]) as client:
        rev = await client.put(key, b"epoch-1")
        won = await client.txn([Compare(key, "mod", "==", rev)], [Put(key, b"epoch-2")])
        assert won.succeeded
        lost = await client.txn(
            [Compare(key, "mod", "==", rev)], [Put(key, b"epoch-3")], [Get(key)]
        )
        assert not lost.succeeded
        current = lost.responses[0]
        assert isinstance(current, RangeResult)
        assert current.kvs[0].value == b"epoch-2"


async def test_txn_create_if_absent_and_compare_on_value(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    key = prefix + b"k"
    async with EtcdClient([shared_etcd.url]) as client:
        absent = [Compare(key, "version", "==", 0)]
        assert (await client.txn(absent, [Put(key, b"first")])).succeeded
        assert not (await client.txn(absent, [Put(key, b"second")])).succeeded
        same = await client.txn([Compare(key, "value", "==", b"first")], [Put(key, b"third")])
        assert same.succeeded
        kv = await client.get(key)
        assert kv is not None
        assert kv.value == b"third"


async def test_lease_keys_vanish_on_revoke_and_keepalive_reports_the_end(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    async with EtcdClient([shared_etcd.url]) as client:
        lease = await client.lease_grant(30)
        assert lease.id != 0
        assert lease.ttl == 30
        await client.put(prefix + b"node", b"x", lease=lease.id)
        refreshed = await client.lease_keepalive(lease.id)
        assert (refreshed.id, refreshed.ttl) == (lease.id, 30)
        await client.lease_revoke(lease.id)
        assert await client.get(prefix + b"node") is None
        assert (await client.lease_keepalive(lease.id)).ttl == 0
        await client.lease_revoke(lease.id)  # already gone: not an error
        with pytest.raises(EtcdError) as info:
            await client.put(prefix + b"node", b"x", lease=lease.id)
        assert info.value.code == 5
        assert "lease not found" in str(info.value)


async def test_watch_streams_puts_and_deletes_of_a_prefix(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    async with EtcdClient([shared_etcd.url]) as client:
        await client.put(prefix + b"before", b"0")
        start = (await client.get_prefix(prefix)).revision + 1
        seen: list[tuple[str, bytes, bytes]] = []
        with trio.fail_after(10):
            async with client.watch(prefix, prefix + b"\xff", start_revision=start) as stream:
                await client.put(prefix + b"w", b"1")
                await client.put(b"/elsewhere", b"not watched")
                await client.delete(prefix + b"w")
                async for response in stream:
                    seen += [(e.type, e.kv.key, e.kv.value) for e in response.events]
                    if len(seen) == 2:
                        break
        assert seen == [("put", prefix + b"w", b"1"), ("delete", prefix + b"w", b"")]


async def test_a_dead_first_endpoint_falls_through_to_a_live_one(
    shared_etcd: EtcdProcess, prefix: bytes
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient([dead, shared_etcd.url]) as client:
        assert await client.health() == shared_etcd.url
        await client.put(prefix + b"x", b"y")
        kv = await client.get(prefix + b"x")
        assert kv is not None


async def test_no_reachable_endpoint_raises_unavailable_naming_every_endpoint() -> None:
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    async with EtcdClient(dead, timeout=1.0) as client:
        with pytest.raises(EtcdUnavailable) as info:
            await client.health()
        with pytest.raises(EtcdUnavailable):
            await client.put(b"k", b"v")
    assert all(url in str(info.value) for url in dead)
