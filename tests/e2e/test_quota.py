"""Byte-rate quotas with pika: a publisher held to its quota while another user's is not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pika
import pytest
from broker_process import BrokerProcess, start_broker
from mgmt_helpers import call, q

LIMIT = 50_000  # bytes/s for alice
SIZE = 5_000  # bytes per message
WINDOW = 3.0  # seconds the rates are measured over
BOB_MAX = 2_000  # bob stops after 10 MB (far past alice's 150 kB in the window)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with users alice (a publish quota, set over the API) and bob (none)."""
    proc = start_broker(tmp_path_factory.mktemp("quota") / "data")
    base = proc.management_url
    for user in ("alice", "bob"):
        assert call(base, "PUT", f"/api/users/{user}", {"password": user, "tags": ""}).status == 201
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        assert call(base, "PUT", f"/api/permissions/%2F/{user}", perms).status == 201
    path = "/api/user-limits/alice/max-publish-bytes-per-second"
    assert call(base, "PUT", path, {"value": LIMIT}).status == 204
    yield proc
    proc.stop()


def _depth(proc: BrokerProcess, queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(proc.url)) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)


class Publisher(threading.Thread):
    """Publishes SIZE-byte messages with confirms, one at a time, to its own queue.

    With confirms pika holds no backlog of its own: what is confirmed is what the broker read.
    """

    def __init__(self, proc: BrokerProcess, user: str, most: int) -> None:
        super().__init__(daemon=True)
        params = pika.URLParameters(proc.url.replace("guest:guest", f"{user}:{user}"))
        self.conn = pika.BlockingConnection(params)
        self.channel = self.conn.channel()
        self.queue = f"quota-{user}"
        self.channel.queue_declare(self.queue)
        self.channel.confirm_delivery()
        self.confirmed = 0
        self.most = most
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            body = b"x" * SIZE
            for _ in range(self.most):
                if self.stop.is_set():
                    return
                self.channel.basic_publish("", self.queue, body)
                self.confirmed += 1
        except BaseException as exc:
            self.error = exc


def test_a_publisher_is_held_to_its_quota_while_another_user_is_not(
    broker: BrokerProcess,
) -> None:
    alice = Publisher(broker, "alice", most=1_000_000)
    bob = Publisher(broker, "bob", most=BOB_MAX)
    start = time.monotonic()
    alice.start()
    bob.start()
    # measure over a window: poll until it has passed (a deadline, no sleeps)
    deadline = start + WINDOW
    while time.monotonic() < deadline:
        _depth(broker, "quota-alice")
    alice_count, bob_count = alice.confirmed, bob.confirmed
    elapsed = time.monotonic() - start
    connections = call(broker.management_url, "GET", "/api/connections").json
    alice.stop.set()
    bob.stop.set()
    alice_rate = alice_count * SIZE / elapsed
    bob_rate = bob_count * SIZE / elapsed
    assert 0.5 * LIMIT <= alice_rate <= 1.5 * LIMIT, (alice_count, elapsed)
    assert bob_rate > 10 * LIMIT, (bob_count, elapsed)
    # held, never closed: alice's connection is open and shows the quota and the time it waited
    held = [c for c in connections if c["user"] == "alice"]
    assert len(held) == 1
    assert held[0]["quota"]["max-publish-bytes-per-second"] == LIMIT
    assert held[0]["quota_wait"] > 1.0
    assert [c["quota_wait"] for c in connections if c["user"] == "bob"] == [0]
    alice.join(timeout=10)
    bob.join(timeout=10)
    assert alice.error is None
    assert bob.error is None
    assert alice.conn.is_open
    assert _depth(broker, "quota-alice") >= alice_count  # confirmed = in the queue
    alice.conn.close()
    bob.conn.close()


def test_limits_show_in_the_api_and_a_bad_one_is_refused(broker: BrokerProcess) -> None:
    base = broker.management_url
    limits = call(base, "GET", "/api/user-limits/alice").json
    assert limits == [{"user": "alice", "value": {"max-publish-bytes-per-second": LIMIT}}]
    assert call(base, "GET", "/api/users/alice").json["limits"] == limits[0]["value"]
    bad = call(base, "PUT", "/api/user-limits/alice/max-bytes", {"value": 1})
    assert bad.status == 400
    assert "max-publish-bytes-per-second" in bad.json["reason"]
    assert call(base, "PUT", f"/api/vhost-limits/{q('/')}/max-queues", {"value": "x"}).status == 400
