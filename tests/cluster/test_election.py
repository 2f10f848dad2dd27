"""Queue leadership against a real etcd: one winner, epochs that only grow, in-sync only, fencing."""

from __future__ import annotations

import itertools

import pytest
from cluster_helpers import EtcdProcess

from amqplite.cluster.election import NotEligible, QueueElection, QueueKeys
from amqplite.cluster.etcd_client import EtcdClient

pytestmark = [pytest.mark.cluster, pytest.mark.trio]

_queues = itertools.count()


def keys() -> QueueKeys:
    """The keys of a queue no other test uses."""
    return QueueKeys.of("election-test", "/", f"q{next(_queues)}")


async def test_queue_keys_percent_encode_vhost_and_name() -> None:
    k = QueueKeys.of("c", "/", "a/b")
    assert k.leader == b"/amqplite/c/queues/%2F/a%2Fb/leader"
    assert k.isr == b"/amqplite/c/queues/%2F/a%2Fb/isr"


async def test_one_of_two_candidates_wins_and_the_other_sees_it(shared_etcd: EtcdProcess) -> None:
    k = keys()
    async with EtcdClient([shared_etcd.url]) as client:
        la, lb = (await client.lease_grant(30)).id, (await client.lease_grant(30)).id
        a, b = QueueElection(client, k, "a"), QueueElection(client, k, "b")
        assert await a.initialise(("a", "b"))
        assert not await b.initialise(("b",))  # the first in-sync set stays
        term = await a.campaign(la)
        assert term is not None
        assert (term.node, term.epoch) == ("a", 1)
        assert await b.campaign(lb) is None
        assert await b.leader() == ("a", 1)


async def test_a_leader_whose_lease_ends_is_replaced_with_a_higher_epoch_and_is_fenced(
    shared_etcd: EtcdProcess,
) -> None:
    k = keys()
    async with EtcdClient([shared_etcd.url]) as client:
        la, lb = (await client.lease_grant(30)).id, (await client.lease_grant(30)).id
        a, b = QueueElection(client, k, "a"), QueueElection(client, k, "b")
        await a.initialise(("a", "b"))
        old = await a.campaign(la)
        assert old is not None
        seen = await a.in_sync()
        await client.lease_revoke(la)  # a's node lost its lease: its leader key is gone
        new = await b.campaign(lb)
        assert new is not None
        assert new.epoch == old.epoch + 1
        # the old term can change nothing any more, even with a fresh read of the in-sync set
        assert not await a.set_in_sync(old, ("a",), seen)
        assert not await a.set_in_sync(old, ("a",), await a.in_sync())
        assert not await a.resign(old)
        assert not await a.still_leading(old)
        assert await b.still_leading(new)
        assert await b.leader() == ("b", 2)


async def test_only_an_in_sync_member_may_campaign(shared_etcd: EtcdProcess) -> None:
    k = keys()
    async with EtcdClient([shared_etcd.url]) as client:
        la, lc = (await client.lease_grant(30)).id, (await client.lease_grant(30)).id
        a, c = QueueElection(client, k, "a"), QueueElection(client, k, "c")
        await a.initialise(("a", "b", "c"))
        term = await a.campaign(la)
        assert term is not None
        seen = await a.in_sync()
        assert await a.set_in_sync(term, ("a", "b"), seen)  # c dropped: it lagged
        assert not await a.set_in_sync(term, ("a",), seen)  # decided from a stale read: refused
        assert (await a.in_sync()).members == ("a", "b")
        assert await a.resign(term)
        with pytest.raises(NotEligible):
            await c.campaign(lc)
        assert await a.leader() is None


async def test_resigning_frees_the_queue_for_the_next_epoch(shared_etcd: EtcdProcess) -> None:
    k = keys()
    async with EtcdClient([shared_etcd.url]) as client:
        lease = (await client.lease_grant(30)).id
        a = QueueElection(client, k, "a")
        epochs = []
        for _ in range(3):
            term = await a.campaign(lease)
            assert term is not None
            epochs.append(term.epoch)
            assert await a.resign(term)
        assert epochs == [1, 2, 3]
