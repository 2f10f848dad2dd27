"""Per-queue leadership in etcd: leader under a lease, a monotonic epoch, the in-sync set, fencing.

Every change is one txn that compares what it was decided from (mod revisions of the epoch and
in-sync keys, the create revision of the leader key), so nothing is decided from a stale read.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import attrs

from amqplite.cluster.etcd_client import EtcdClient
from amqplite.cluster.etcd_codec import (
    Compare,
    Delete,
    EtcdError,
    Get,
    KeyValue,
    Operation,
    Put,
    RangeResult,
)
from amqplite.cluster.keys import cluster_prefix


@attrs.frozen
class QueueKeys:
    """The keys of one queue's leadership: leader (leased), epoch and isr (not leased)."""

    leader: bytes
    epoch: bytes
    isr: bytes

    @classmethod
    def of(cls, cluster: str, vhost: str, queue: str) -> QueueKeys:
        """/amqplite/<cluster>/queues/<vhost>/<queue>/{leader,epoch,isr}, names percent-encoded."""
        quoted = "/".join(urllib.parse.quote(p, safe="") for p in (vhost, queue))
        base = cluster_prefix(cluster) + f"queues/{quoted}/".encode()
        return cls(base + b"leader", base + b"epoch", base + b"isr")

    @property
    def members(self) -> bytes:
        """.../members: every node placed to hold the queue (written once, at placement)."""
        return self.isr[: -len(b"isr")] + b"members"


@attrs.frozen
class Leadership:
    """A term won: who, which epoch, and the leader key's create revision (the fencing token)."""

    node: str
    epoch: int
    token: int  # create_revision of the leader key: every later txn of this term compares it
    lease: int


@attrs.frozen
class InSync:
    """The in-sync set as etcd holds it, with the mod revision a change must compare."""

    epoch: int
    members: tuple[str, ...]
    mod_revision: int  # 0: no in-sync set was ever written


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def decode_in_sync(kv: KeyValue | None) -> InSync:
    """The in-sync record of a key (absent: an empty set at epoch 0)."""
    if kv is None:
        return InSync(0, (), 0)
    obj = json.loads(kv.value)
    return InSync(int(obj["epoch"]), tuple(str(m) for m in obj["members"]), kv.mod_revision)


def decode_epoch(kv: KeyValue | None) -> int:
    """The last epoch granted (0 if none ever was)."""
    return 0 if kv is None else int(json.loads(kv.value))


def leader_of(kv: KeyValue | None) -> tuple[str, int] | None:
    """(node, epoch) of a leader key, or None when there is no leader."""
    if kv is None:
        return None
    obj = json.loads(kv.value)
    return str(obj["node"]), int(obj["epoch"])


class NotEligible(Exception):
    """The candidate is not in the queue's in-sync set, so it may not lead."""


class QueueElection:
    """Campaign for, hold, and give up the leadership of one queue."""

    def __init__(self, client: EtcdClient, keys: QueueKeys, node: str) -> None:
        self.client = client
        self.keys = keys
        self.node = node

    async def _read(self, key: bytes) -> KeyValue | None:
        return await self.client.get(key)

    async def leader(self) -> tuple[str, int] | None:
        """The current leader and its epoch, or None."""
        return leader_of(await self._read(self.keys.leader))

    async def in_sync(self) -> InSync:
        """The in-sync set as etcd holds it now."""
        return decode_in_sync(await self._read(self.keys.isr))

    async def initialise(self, members: tuple[str, ...]) -> bool:
        """Write the members and first in-sync set of a new queue; False if they exist already."""
        absent = [Compare(self.keys.isr, "version", "==", 0)]
        put = Put(self.keys.isr, _json({"epoch": 0, "members": list(members)}))
        placed = Put(self.keys.members, _json(list(members)))
        return (await self.client.txn(absent, [put, placed])).succeeded

    async def members(self) -> tuple[str, ...]:
        """Every node placed to hold the queue (the in-sync set is a subset)."""
        kv = await self._read(self.keys.members)
        return () if kv is None else tuple(str(m) for m in json.loads(kv.value))

    async def campaign(self, lease: int) -> Leadership | None:
        """Try to lead: only with no leader, as an in-sync member; None if another won first."""
        epoch_kv = await self._read(self.keys.epoch)
        isr_kv = await self._read(self.keys.isr)
        in_sync = decode_in_sync(isr_kv)
        if in_sync.mod_revision and self.node not in in_sync.members:
            raise NotEligible(f"{self.node} is not in the in-sync set {list(in_sync.members)}")
        epoch = decode_epoch(epoch_kv) + 1
        compare = [
            Compare(self.keys.leader, "version", "==", 0),
            _unchanged(self.keys.epoch, epoch_kv),
            _unchanged(self.keys.isr, isr_kv),
        ]
        value = _json({"node": self.node, "epoch": epoch})
        success: list[Operation] = [
            Put(self.keys.leader, value, lease),
            Put(self.keys.epoch, _json(epoch)),
            Get(self.keys.leader),
        ]
        result = await self.client.txn(compare, success)
        if not result.succeeded:
            return None
        mine = result.responses[2]
        if not isinstance(mine, RangeResult) or not mine.kvs:
            raise EtcdError("a won campaign's txn did not return the leader key")
        return Leadership(self.node, epoch, mine.kvs[0].create_revision, lease)

    async def set_in_sync(self, term: Leadership, members: tuple[str, ...], seen: InSync) -> bool:
        """Change the in-sync set while still leading, from the set read as `seen`; False if not."""
        compare = [
            Compare(self.keys.leader, "create", "==", term.token),
            Compare(self.keys.isr, "mod", "==", seen.mod_revision),
        ]
        put = Put(self.keys.isr, _json({"epoch": term.epoch, "members": list(members)}))
        return (await self.client.txn(compare, [put])).succeeded

    async def still_leading(self, term: Leadership) -> bool:
        """Whether etcd still holds this term's leader key (a read, for checks and tests)."""
        kv = await self._read(self.keys.leader)
        return kv is not None and kv.create_revision == term.token

    async def resign(self, term: Leadership) -> bool:
        """Give the leadership up (only this term's key is deleted); False if it was already lost."""
        compare = [Compare(self.keys.leader, "create", "==", term.token)]
        return (await self.client.txn(compare, [Delete(self.keys.leader)])).succeeded


def _unchanged(key: bytes, kv: KeyValue | None) -> Compare:
    """The compare that the key is as it was read (absent stays absent)."""
    if kv is None:
        return Compare(key, "version", "==", 0)
    return Compare(key, "mod", "==", kv.mod_revision)
