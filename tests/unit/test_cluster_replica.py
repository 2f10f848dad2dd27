"""Replication state (pure): the leader's confirmable offset over in-sync mirrors, lag, a mirror's log."""

from __future__ import annotations

from amqplite.cluster.link import Ack, Append, QueueRef, Refuse, SnapshotEnd
from amqplite.cluster.replica import Cut, MirrorLog, ReplicaSet, Write

Q = QueueRef("/", "q")


def test_committed_is_the_minimum_of_the_leader_disk_and_every_in_sync_ack() -> None:
    rs = ReplicaSet("a", ("a", "b", "c"), ("a", "b", "c"))
    assert rs.appended(5, 0.0) == (0, 5)
    rs.local_synced(5)
    assert rs.committed == 0  # neither mirror acked
    rs.acked("b", 5)
    assert rs.committed == 0  # c still holds it
    rs.acked("c", 3)
    assert rs.committed == 3
    rs.acked("c", 5)
    assert rs.committed == 5
    rs.appended(2, 0.0)
    rs.acked("b", 7)
    rs.acked("c", 7)
    assert rs.committed == 5  # the leader's own fsync has not covered 7 yet
    rs.local_synced(7)
    assert rs.committed == 7


def test_an_overdue_mirror_is_named_and_once_dropped_no_longer_holds_confirms() -> None:
    rs = ReplicaSet("a", ("a", "b", "c"), ("a", "b", "c"))
    rs.appended(1, now=10.0)
    rs.local_synced(1)
    rs.acked("b", 1)
    assert rs.overdue(now=10.5, timeout=1.0) == []
    assert rs.overdue(now=11.5, timeout=1.0) == ["c"]
    assert rs.committed == 0
    rs.dropped("c")
    assert rs.committed == 1
    assert rs.overdue(now=20.0, timeout=1.0) == []


def test_a_dropped_mirror_that_catches_up_is_offered_back_then_counts_again() -> None:
    rs = ReplicaSet("a", ("a", "b"), ("a",))
    rs.appended(4, 0.0)
    rs.local_synced(4)
    assert rs.committed == 4  # b is out of sync: not waited for
    assert rs.catching_up() == []
    assert rs.acked("b", 4) is True
    assert rs.catching_up() == ["b"]
    rs.rejoined("b")
    rs.appended(1, 0.0)
    rs.local_synced(5)
    assert rs.committed == 4


def test_lag_is_what_each_member_lacks_of_the_leaders_appends() -> None:
    rs = ReplicaSet("a", ("a", "b", "c"), ("a", "b", "c"))
    assert rs.lag() == {"a": 0, "b": 0, "c": 0}
    rs.appended(5, 0.0)
    assert rs.lag() == {"a": 5, "b": 5, "c": 5}  # not on the leader's disk yet either
    rs.local_synced(5)
    rs.acked("b", 3)
    rs.acked("c", 5)
    assert rs.lag() == {"a": 0, "b": 2, "c": 0}
    rs.acked("b", 2)  # an older ack does not undo a newer one
    assert rs.lag()["b"] == 2


def test_acks_from_strangers_are_ignored() -> None:
    rs = ReplicaSet("a", ("a", "b"), ("a", "b"))
    assert rs.acked("z", 10) is False
    rs.rejoined("z")
    assert rs.in_sync == {"b"}


def test_a_mirror_writes_appends_in_order_and_acks_what_it_fsynced() -> None:
    log = MirrorLog(Q)
    assert log.receive(Append(Q, 1, 0, (b"a", b"b"))) == [Write(0, (b"a", b"b"))]
    assert log.receive(Append(Q, 1, 1, (b"b", b"c"))) == [Write(2, (b"c",))]  # resent: skipped
    assert log.synced(3) == Ack(Q, 1, 3)
    assert log.synced(99) == Ack(Q, 1, 3)  # never past what it wrote


def test_a_mirror_refuses_a_lower_epoch_and_a_gap() -> None:
    log = MirrorLog(Q, epoch=4, end=2)
    refused = log.receive(Append(Q, 3, 2, (b"x",)))
    assert isinstance(refused, Refuse)
    assert refused.epoch == 4
    assert log.end == 2
    gap = log.receive(Append(Q, 4, 5, (b"x",)))
    assert isinstance(gap, Refuse)
    assert "gap" in gap.reason


def test_a_new_leader_cuts_a_tail_it_never_had() -> None:
    log = MirrorLog(Q, epoch=1, end=5)
    assert log.receive(Append(Q, 2, 3, (b"n",))) == [Cut(3), Write(3, (b"n",))]
    assert (log.epoch, log.end) == (2, 4)


def test_a_snapshot_sets_the_log_end() -> None:
    log = MirrorLog(Q, epoch=1, end=1)
    assert log.receive(SnapshotEnd(Q, 2, 40)) == []
    assert (log.epoch, log.end, log.durable) == (2, 40, 40)
