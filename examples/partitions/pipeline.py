"""A three-partition order pipeline with two consumer groups and a consumer killed mid-stream.

    python pipeline.py demo      # set up, start four members, publish, kill one, check the order
    python pipeline.py member billing --name billing-1   # one member of a group, until stopped

Orders go to the fanout exchange `orders`, which feeds one x-consistent-hash exchange per group
(`orders.billing`, `orders.shipping`) hashing on the `customer` header, each bound to three
partition queues. Every member consumes all three partitions of its group with the consume
argument `x-consumer-group`; the broker gives each partition to one member and moves it when a
member joins or dies, only after the old member's unacked messages are settled or returned, so
the events of one customer are handled in order. Needs a broker with the consistent_hash plugin
(`amqplite serve --config examples/partitions/amqplite.yaml`). AMQP_URL or --url names it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pika

DEFAULT_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
GROUPS = ("billing", "shipping")
PARTITIONS = 3
EVENTS = ("created", "paid", "packed", "shipped")


def names(prefix: str, group: str) -> tuple[str, list[str]]:
    """The group's hash exchange and its partition queues."""
    return f"{prefix}orders.{group}", [f"{prefix}{group}.p{i}" for i in range(PARTITIONS)]


def set_up(url: str, prefix: str = "") -> None:
    """Declare orders -> orders.<group> (x-consistent-hash on `customer`) -> <group>.p0..p2."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(f"{prefix}orders", "fanout")
        for group in GROUPS:
            exchange, queues = names(prefix, group)
            channel.exchange_declare(
                exchange, "x-consistent-hash", arguments={"hash-header": "customer"}
            )
            channel.exchange_bind(exchange, f"{prefix}orders")
            for queue in queues:
                channel.queue_declare(queue)
                channel.queue_bind(queue, exchange, routing_key="1")  # weight 1


def tear_down(url: str, prefix: str = "") -> None:
    """Delete what set_up() declared."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        for group in GROUPS:
            exchange, queues = names(prefix, group)
            for queue in queues:
                channel.queue_delete(queue)
            channel.exchange_delete(exchange)
        channel.exchange_delete(f"{prefix}orders")


def publish_orders(url: str, customers: int, events: int, prefix: str = "") -> int:
    """Publish `events` events per customer, customers interleaved, with confirms."""
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for seq in range(events):
            for c in range(customers):
                customer = f"customer-{c}"
                body = {"customer": customer, "seq": seq, "event": EVENTS[seq % len(EVENTS)]}
                properties = pika.BasicProperties(headers={"customer": customer})
                channel.basic_publish(f"{prefix}orders", "", json.dumps(body).encode(), properties)
    return customers * events


def run_member(
    url: str, group: str, name: str, prefix: str = "", die_after: int = 0, work_ms: float = 5
) -> None:
    """Consume every partition of `group` as one member; print each handled event, then ack.

    With die_after, SIGKILL this process after handling that many events, before the last ack
    (a crash with unacked messages in flight).
    """
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    handled = 0

    def on_message(ch: object, method: object, properties: object, body: bytes) -> None:
        nonlocal handled
        order = json.loads(body)
        time.sleep(work_ms / 1000)  # the work
        partition = method.consumer_tag  # type: ignore[attr-defined]
        stamp = time.monotonic_ns()  # CLOCK_MONOTONIC: comparable across processes
        print(f"handled {stamp} {name} {group} {partition} {order['customer']} {order['seq']}")
        handled += 1
        if die_after and handled >= die_after:
            print(f"{name}: killed after {handled} events", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    for queue in names(prefix, group)[1]:
        channel.basic_consume(
            queue, on_message, consumer_tag=queue, arguments={"x-consumer-group": group}
        )
    print(f"{name}: consuming {group} partitions", flush=True)
    channel.start_consuming()


class Member:
    """A member started by the demo as a subprocess; its lines read by a thread."""

    def __init__(self, url: str, group: str, name: str, prefix: str, *extra: str) -> None:
        self.name = name
        command = [sys.executable, "-u", __file__, "member", group, "--name", name]
        command += ["--url", url, "--prefix", prefix, *extra]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.handled: list[tuple[int, str, str, str, int]] = []  # stamp, group, queue, key, seq
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["handled"]:
                _, stamp, _, group, queue, key, seq = parts
                self.handled.append((int(stamp), group, queue, key, int(seq)))
            elif "consuming" in line:
                self.ready.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait()


def demo(url: str, customers: int, events: int, prefix: str, timeout: float) -> bool:
    """Run the whole pipeline; print what each member did; True if every order kept."""
    set_up(url, prefix)
    members = [
        Member(url, "billing", "billing-1", prefix, "--die-after", str(customers * events // 10)),
        Member(url, "billing", "billing-2", prefix),
        Member(url, "shipping", "shipping-1", prefix),
        Member(url, "shipping", "shipping-2", prefix),
    ]
    try:
        for member in members:
            if not member.ready.wait(timeout):
                raise SystemExit(f"{member.name} did not start")
        total = publish_orders(url, customers, events, prefix)
        print(f"published {total} order events for {customers} customers")
        expected = {(f"customer-{c}", s) for c in range(customers) for s in range(events)}
        deadline = time.monotonic() + timeout
        while any(
            expected - {(k, s) for m in members for _, g, _, k, s in m.handled if g == group}
            for group in GROUPS
        ):
            if time.monotonic() > deadline:
                raise SystemExit("not every event was handled in time")
            time.sleep(0.05)
        return report(members, customers, events)
    finally:
        for member in members:
            code = member.stop()
            print(f"{member.name}: {'killed' if code == -signal.SIGKILL else 'stopped'}")
        tear_down(url, prefix)


def report(members: list[Member], customers: int, events: int) -> bool:
    """Per group: who handled which partitions, and whether each customer's order held."""
    ok = True
    for group in GROUPS:
        records = sorted(
            (stamp, m.name, queue, key, seq)
            for m in members
            for stamp, g, queue, key, seq in m.handled
            if g == group
        )
        by_member: dict[str, set[str]] = defaultdict(set)
        order: dict[str, list[int]] = defaultdict(list)
        seen: set[tuple[str, int]] = set()
        for _, name, queue, key, seq in records:
            by_member[name].add(queue.rsplit(".", 1)[-1])
            if (key, seq) not in seen:  # a redelivery of the killed member's last event
                seen.add((key, seq))
                order[key].append(seq)
        kept = all(order[f"customer-{c}"] == list(range(events)) for c in range(customers))
        ok = ok and kept
        spread = ", ".join(f"{n} had {sorted(p)}" for n, p in sorted(by_member.items()))
        verdict = "per-customer order kept" if kept else "ORDER BROKEN"
        print(f"{group}: {len(seen)} events, {spread}: {verdict}")
    return ok


def main() -> None:
    """Command line: `demo` or `member GROUP`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--prefix", default="", help="prefix for exchange and queue names")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="the whole pipeline, checked")
    run.add_argument("--customers", type=int, default=30)
    run.add_argument("--events", type=int, default=20)
    run.add_argument("--timeout", type=float, default=30.0)
    member = commands.add_parser("member", help="one consumer-group member")
    member.add_argument("group", choices=GROUPS)
    member.add_argument("--name", default="member")
    member.add_argument("--die-after", type=int, default=0)
    member.add_argument("--url", dest="member_url")
    member.add_argument("--prefix", dest="member_prefix")
    args = parser.parse_args()
    url = getattr(args, "member_url", None) or args.url
    prefix = getattr(args, "member_prefix", None) or args.prefix
    if args.command == "demo":
        sys.exit(0 if demo(url, args.customers, args.events, prefix, args.timeout) else 1)
    run_member(url, args.group, args.name, prefix, args.die_after)


if __name__ == "__main__":
    main()
