"""Partitions with consumer groups, end to end: x-consistent-hash and x-consumer-group with pika.

Members are separate processes (tests/e2e/group_member.py). Each prints a CLOCK_MONOTONIC stamp
(shared by the processes of this machine) when it has handled a message, just before acking it;
the broker hands a moved partition over only after those acks, so sorting the records of one key
by stamp gives the order in which that key's messages were processed across members.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import attrs
import pika
import pika.exceptions
import pytest
from broker_process import BrokerProcess, start_broker
from mgmt_helpers import call, wait_for
from pika_helpers import close_quietly, connect

MEMBER = Path(__file__).with_name("group_member.py")
KEYS = 10_000
MAX_SPREAD_RATIO = 1.25  # max/min queue share over KEYS keys, three equal-weight queues
DEADLINE = 25.0


@pytest.fixture(scope="module")
def hash_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with the consistent_hash plugin switched on."""
    root = tmp_path_factory.mktemp("groups")
    config = root / "amqplite.yaml"
    config.write_text("plugins: [consistent_hash]\n")
    broker = start_broker(root / "data", "--config", str(config))
    yield broker
    broker.stop()


@attrs.frozen
class Record:
    """One message a member handled."""

    stamp: int
    member: str
    queue: str
    key: str
    seq: int


class MemberProcess:
    """A group member process and the records it printed (read by a thread)."""

    def __init__(self, name: str, broker: BrokerProcess, group: str, queues: list[str], *args: str):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER), broker.url, group, ",".join(queues), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.records: list[Record] = []
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            parts = line.split()
            if parts == ["ready"]:
                self.ready.set()
            elif parts and parts[0] == "got":
                stamp, queue_name, key, seq = parts[1], parts[2], parts[3], parts[4]
                self.records.append(Record(int(stamp), self.name, queue_name, key, int(seq)))

    def wait_ready(self) -> None:
        assert self.ready.wait(DEADLINE), f"{self.name} not subscribed: {self.lines}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def members() -> Iterator[list[MemberProcess]]:
    started: list[MemberProcess] = []
    yield started
    for member in started:
        member.kill()


def partitioned(broker: BrokerProcess, uid: str, count: int = 3) -> list[str]:
    """An x-consistent-hash exchange `uid` bound to `count` partition queues (weight 1)."""
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.exchange_declare(uid, "x-consistent-hash", auto_delete=True)
        names = [f"{uid}.p{i}" for i in range(count)]
        for name in names:
            ch.queue_declare(name, auto_delete=True)
            ch.queue_bind(name, uid, routing_key="1")
        return names
    finally:
        close_quietly(conn)


def publish(broker: BrokerProcess, exchange: str, messages: list[tuple[str, int]]) -> None:
    """Publish "<key>:<seq>" with routing key <key>, confirmed."""
    conn = connect(broker)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for key, seq in messages:
            ch.basic_publish(exchange, key, f"{key}:{seq}".encode(), mandatory=True)
    finally:
        close_quietly(conn)


def wait_handled(members: list[MemberProcess], expected: set[tuple[str, int]]) -> None:
    """Poll until every expected (key, seq) was handled by some member."""
    deadline = time.monotonic() + DEADLINE
    while True:
        seen = {(r.key, r.seq) for m in members for r in m.records}
        if expected <= seen:
            return
        if time.monotonic() > deadline:
            missing = sorted(expected - seen)[:10]
            raise AssertionError(f"not handled within {DEADLINE}s, e.g. {missing}")
        time.sleep(0.02)


def first_handling_order(members: list[MemberProcess]) -> dict[str, list[int]]:
    """Per key, the seqs in the order first handled (a redelivered duplicate counts once)."""
    records = sorted((r for m in members for r in m.records), key=lambda r: r.stamp)
    order: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for r in records:
        if (r.key, r.seq) not in seen:
            seen.add((r.key, r.seq))
            order[r.key].append(r.seq)
    return order


def stream(keys: int, seqs: range) -> list[tuple[str, int]]:
    """Messages of `keys` keys, each key's seqs in order, the keys interleaved."""
    return [(f"k{k}", seq) for seq in seqs for k in range(keys)]


def test_ten_thousand_keys_spread_evenly_and_keep_their_partition(
    hash_broker: BrokerProcess, uid: str
) -> None:
    names = partitioned(hash_broker, uid)
    publish(hash_broker, uid, [(f"customer-{i}", 0) for i in range(KEYS)])
    conn = connect(hash_broker)
    try:
        ch = conn.channel()
        depths = [ch.queue_declare(n, passive=True).method.message_count for n in names]
        assert sum(depths) == KEYS
        assert max(depths) / min(depths) <= MAX_SPREAD_RATIO, depths
        where: dict[str, set[str]] = defaultdict(set)
        for name in names:
            ch.queue_purge(name)
        publish(hash_broker, uid, [(f"customer-{i}", s) for s in range(3) for i in range(200)])
        for name in names:
            while (got := ch.basic_get(name, auto_ack=True))[0] is not None:
                where[got[2].decode().split(":")[0]].add(name)
        assert len(where) == 200
        assert all(len(queues) == 1 for queues in where.values())  # key affinity
    finally:
        close_quietly(conn)


def test_hash_header_exchange_and_argument_errors(hash_broker: BrokerProcess, uid: str) -> None:
    conn = connect(hash_broker)
    try:
        ch = conn.channel()
        for arguments, text in [
            ({"hash-header": "a", "hash-property": "message_id"}, "mutually exclusive"),
            ({"hash-property": "app_id"}, "Unsupported property: app_id"),
        ]:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                ch.exchange_declare(uid, "x-consistent-hash", arguments=arguments)
            assert info.value.reply_code == 406
            assert text in info.value.reply_text
            ch = conn.channel()
        ch.exchange_declare(
            uid, "x-consistent-hash", auto_delete=True, arguments={"hash-header": "c"}
        )
        names = [f"{uid}.h{i}" for i in range(3)]
        for name in names:
            ch.queue_declare(name, auto_delete=True)
            ch.queue_bind(name, uid, routing_key="1")
        for i in range(300):
            props = pika.BasicProperties(headers={"c": f"c{i % 30}"})
            ch.basic_publish(uid, f"random-{i}", f"c{i % 30}".encode(), props)
        where: dict[bytes, set[str]] = defaultdict(set)
        for name in names:
            while (got := ch.basic_get(name, auto_ack=True))[0] is not None:
                where[got[2]].add(name)
        assert len(where) == 30
        assert all(len(queues) == 1 for queues in where.values())
        assert len(set().union(*where.values())) == 3
    finally:
        close_quietly(conn)


def test_hash_property_message_id_keeps_each_id_on_one_queue(
    hash_broker: BrokerProcess, uid: str
) -> None:
    conn = connect(hash_broker)
    try:
        ch = conn.channel()
        arguments = {"hash-property": "message_id"}
        ch.exchange_declare(uid, "x-consistent-hash", auto_delete=True, arguments=arguments)
        names = [f"{uid}.m{i}" for i in range(3)]
        for name in names:
            ch.queue_declare(name, auto_delete=True)
            ch.queue_bind(name, uid, routing_key="1")
        for i in range(300):
            props = pika.BasicProperties(message_id=f"m{i % 30}")
            ch.basic_publish(uid, f"random-{i}", b"x", props)
        ch.basic_publish(uid, "no-message-id", b"x")  # not routed: nothing to hash
        where: dict[str, set[str]] = defaultdict(set)
        for name in names:
            while (got := ch.basic_get(name, auto_ack=True))[0] is not None:
                where[got[1].message_id].add(name)
        assert len(where) == 30
        assert all(len(queues) == 1 for queues in where.values())
        assert len(set().union(*where.values())) == 3
    finally:
        close_quietly(conn)


def test_group_failover_keeps_per_key_order_and_loses_nothing(
    hash_broker: BrokerProcess, uid: str, members: list[MemberProcess]
) -> None:
    names = partitioned(hash_broker, uid)
    opts = ("--prefetch", "10", "--work-ms", "2")
    doomed = MemberProcess("a", hash_broker, uid, names, *opts, "--die-after", "60")
    members.append(doomed)
    doomed.wait_ready()
    survivor = MemberProcess("b", hash_broker, uid, names, *opts)
    members.append(survivor)
    survivor.wait_ready()
    messages = stream(12, range(40))
    publish(hash_broker, uid, messages)
    wait_handled(members, set(messages))
    assert doomed.proc.wait(DEADLINE) == -9  # killed mid-stream, holding unacked messages
    assert len(doomed.records) == 60
    for key, seqs in first_handling_order(members).items():
        assert seqs == list(range(40)), key
    handled = Counter((r.key, r.seq) for m in members for r in m.records)
    duplicates = [item for item, n in handled.items() if n > 1]
    assert len(duplicates) <= 1  # only the message printed but not acked before the kill
    assert {r.queue for r in survivor.records} == set(names)  # it took over every partition


def test_a_joining_member_takes_its_share_without_breaking_per_key_order(
    hash_broker: BrokerProcess, uid: str, members: list[MemberProcess]
) -> None:
    names = partitioned(hash_broker, uid)
    opts = ("--prefetch", "20", "--work-ms", "5")
    for name in ("a", "b"):
        members.append(MemberProcess(name, hash_broker, uid, names, *opts))
        members[-1].wait_ready()
    # 24 keys: every partition surely has some (one of three gets none with p = 3 x (2/3)^24)
    first = stream(24, range(20))
    publish(hash_broker, uid, first)
    deadline = time.monotonic() + DEADLINE
    while sum(len(m.records) for m in members) < 40:  # mid-stream: a backlog remains
        assert time.monotonic() < deadline, [m.lines[-3:] for m in members]
        time.sleep(0.01)
    # a quick newcomer: without the handover it would overtake the old owner's unacked ones
    joiner = MemberProcess("c", hash_broker, uid, names, "--prefetch", "20", "--work-ms", "1")
    members.append(joiner)
    joiner.wait_ready()
    second = stream(24, range(20, 25))
    publish(hash_broker, uid, second)
    wait_handled(members, set(first) | set(second))
    for key, seqs in first_handling_order(members).items():
        assert seqs == list(range(25)), key
    handled = Counter((r.key, r.seq) for m in members for r in m.records)
    assert set(handled.values()) == {1}  # nobody died: each message handled exactly once
    assert len({r.queue for r in joiner.records}) == 1  # its share: one partition of three


def test_the_management_api_shows_which_member_receives_each_partition(
    hash_broker: BrokerProcess, uid: str, members: list[MemberProcess]
) -> None:
    names = partitioned(hash_broker, uid)
    for name in ("a", "b"):
        members.append(MemberProcess(name, hash_broker, uid, names))
        members[-1].wait_ready()

    def group_consumers() -> list[dict[str, object]]:
        reply = call(hash_broker.management_url, "GET", "/api/consumers")
        assert reply.status == 200
        mine = [c for c in reply.json if c["queue"]["name"] in names]
        return mine if len(mine) == 6 else []

    consumers = wait_for(group_consumers)
    assert all(c["arguments"] == {"x-consumer-group": uid} for c in consumers)
    for name in names:
        on_queue = [c for c in consumers if c["queue"]["name"] == name]
        statuses = sorted(str(c["activity_status"]) for c in on_queue)
        assert statuses == ["single_active", "waiting"], on_queue
    active_per_connection = Counter(
        c["channel_details"]["connection_name"] for c in consumers if c["active"]
    )
    assert sorted(active_per_connection.values()) == [1, 2]  # three partitions, two members
