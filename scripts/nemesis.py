"""A randomized fault run in Jepsen's manner: confirmed publishes must survive kills, pauses, partitions.

Starts its own etcd and --nodes nodes (lease TTL 2 s, in-sync timeout 0.5 s) with every
node-to-node and node-to-etcd byte through a fault-injecting proxy (tests/cluster/fault_proxy.py),
declares --queues mirrored queues (x-replicas = nodes) and runs, for --seconds:

  - publishers (persistent, confirms, a timeout per confirm) and consumers (manual acks), spread
    over the queues; with --any-node they use random nodes (needs forwarding), else each follows
    its queue's leader (read from etcd, as a client follows the 404 hint) and reconnects after a
    failover;
  - a seeded nemesis that, one fault at a time, SIGKILLs a node and restarts it, pauses one
    (SIGSTOP/SIGCONT), isolates one from the others and etcd (blackhole or reset), from the
    other nodes only, or from etcd only; leaders are picked more often than mirrors.

Then it heals everything, lets the consumers drain the queues and checks: lost (confirmed, never
received: must be 0), duplicated (received more than once: allowed, counted), unexpected
(received, never published: must be 0). Exit status 1 when lost or unexpected is not 0.

    .venv/bin/python scripts/nemesis.py --seconds 300 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "cluster")]

from cluster_helpers import start_etcd  # noqa: E402
from proxied_cluster import ProxiedCluster  # noqa: E402

SETTINGS = "  lease_ttl: 2\n  insync_timeout_ms: 500\n"
CONFIRM_TIMEOUT = 5.0  # seconds a publisher waits for one confirm before it reconnects
FAULTS = ("kill", "pause", "partition", "partition-nodes", "partition-etcd")


class Run:
    """The shared state of one run: the cluster, what was attempted, confirmed and received."""

    def __init__(self, cluster: ProxiedCluster, queues: list[str], any_node: bool, seed: int):
        self.cluster = cluster
        self.queues = queues
        self.any_node = any_node
        self.rng = random.Random(seed)
        self.attempted: set[str] = set()
        self.confirmed: set[str] = set()
        self.received: collections.Counter[str] = collections.Counter()
        self.stop_publishing = asyncio.Event()
        self.stop_consuming = asyncio.Event()
        self.faults: collections.Counter[str] = collections.Counter()
        self.reconnects = 0
        self.started = time.monotonic()

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.2f}] {text}", flush=True)

    async def node_for(self, queue: str) -> str | None:
        """The node a client of the queue should use now."""
        names = list(self.cluster.amqp_ports)
        if self.any_node:
            return self.rng.choice(names)
        leader = await asyncio.to_thread(self.cluster.leader, queue)
        return None if leader is None else leader[0]


async def _close(connection: Any) -> None:
    with contextlib.suppress(Exception):  # a dead or paused node: the socket goes anyway
        await asyncio.wait_for(connection.close(), 2.0)


async def publisher(run: Run, index: int) -> None:
    """Publish numbered persistent messages with confirms; reconnect on any trouble."""
    queue = run.queues[index % len(run.queues)]
    seq = 0
    while not run.stop_publishing.is_set():
        node = await run.node_for(queue)
        if node is None:
            await asyncio.sleep(0.2)
            continue
        connection = None
        try:
            connection = await aio_pika.connect(run.cluster.url(node), timeout=3)
            channel = await connection.channel(publisher_confirms=True)
            while not run.stop_publishing.is_set():
                body = f"{index}-{seq}"
                seq += 1
                run.attempted.add(body)
                message = aio_pika.Message(
                    body.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                await channel.default_exchange.publish(
                    message, routing_key=queue, timeout=CONFIRM_TIMEOUT
                )
                run.confirmed.add(body)
        except Exception:  # a nack, a timeout, a closed connection: try the leader again
            run.reconnects += 1
        finally:
            if connection is not None:
                await _close(connection)
        await asyncio.sleep(0.2)


async def consumer(run: Run, index: int) -> None:
    """Consume with manual acks; record each body before acking; follow the leader."""
    queue = run.queues[index % len(run.queues)]

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        run.received[message.body.decode()] += 1
        await message.ack()

    while not run.stop_consuming.is_set():
        node = await run.node_for(queue)
        if node is None:
            await asyncio.sleep(0.2)
            continue
        connection = None
        try:
            connection = await aio_pika.connect(run.cluster.url(node), timeout=3)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=50)
            q = await channel.get_queue(queue, ensure=False)
            await q.consume(on_message)
            while not run.stop_consuming.is_set() and not channel.is_closed:
                await asyncio.sleep(0.5)
                if not run.any_node and await run.node_for(queue) != node:
                    break  # the queue moved: its old leader serves it no longer
        except Exception:
            run.reconnects += 1
        finally:
            if connection is not None:
                await _close(connection)
        await asyncio.sleep(0.2)


async def nemesis(run: Run, seconds: float) -> None:
    """One fault at a time until the time is up; every kind comes once per shuffled round."""
    cluster, rng = run.cluster, run.rng
    names = list(cluster.amqp_ports)
    deadline = run.started + seconds
    kinds: list[str] = []
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1.0, 3.0))  # quiet between faults
        if not kinds:
            kinds = list(FAULTS)
            rng.shuffle(kinds)
        kind = kinds.pop()
        leaders = [
            leader[0]
            for leader in await asyncio.gather(
                *(asyncio.to_thread(cluster.leader, q) for q in run.queues)
            )
            if leader is not None
        ]
        target = rng.choice(leaders if leaders and rng.random() < 0.7 else names)
        hold = rng.uniform(1.0, 5.0)
        run.faults[kind] += 1
        mode = rng.choice(("blackhole", "reset"))
        run.log(f"nemesis: {kind} {target}" + (f" ({mode})" if "partition" in kind else ""))
        if kind == "kill":
            await asyncio.to_thread(cluster.kill, target)
            await asyncio.sleep(hold)
            await asyncio.to_thread(cluster.start, target)
        elif kind == "pause":
            cluster.signal(target, signal.SIGSTOP)
            await asyncio.sleep(hold)
            cluster.signal(target, signal.SIGCONT)
        else:
            if kind == "partition":
                cluster.proxy.isolate(target, mode)
            elif kind == "partition-nodes":
                cluster.proxy.isolate(target, mode, from_etcd=False)
            else:
                cluster.proxy.cut(target, "etcd", mode)
            await asyncio.sleep(hold)
            cluster.proxy.heal()
        run.log(f"nemesis: healed {target}")


async def settle(run: Run, replicas: int, within: float = 60.0) -> bool:
    """Wait for every queue to have a live leader and a full in-sync set."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ok = True
        for queue in run.queues:
            leader = await asyncio.to_thread(run.cluster.leader, queue)
            in_sync = await asyncio.to_thread(run.cluster.in_sync, queue)
            ok = ok and leader is not None and len(in_sync) == replicas
        if ok:
            return True
        await asyncio.sleep(0.5)
    return False


async def queue_depth(run: Run, queue: str) -> int | None:
    """Ready messages of the queue on its leader (None if it cannot be asked now)."""
    node = await run.node_for(queue) if not run.any_node else None
    if node is None:
        leader = await asyncio.to_thread(run.cluster.leader, queue)
        node = None if leader is None else leader[0]
    if node is None:
        return None
    try:
        connection = await aio_pika.connect(run.cluster.url(node), timeout=3)
    except Exception:
        return None
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    except Exception:
        return None
    finally:
        await _close(connection)


async def drain(run: Run, within: float = 60.0) -> bool:
    """Wait until every queue is empty twice in a row and the consumers received nothing new."""
    deadline = time.monotonic() + within
    quiet = 0
    last = -1
    while time.monotonic() < deadline:
        depths = [await queue_depth(run, q) for q in run.queues]
        total = sum(run.received.values())
        quiet = quiet + 1 if all(d == 0 for d in depths) and total == last else 0
        if quiet >= 2:
            return True
        last = total
        await asyncio.sleep(1.0)
    return False


def check(run: Run) -> dict[str, Any]:
    """The checker: lost, duplicated and unexpected messages, and what the run did."""
    received = set(run.received)
    return {
        "attempted": len(run.attempted),
        "confirmed": len(run.confirmed),
        "received": len(received),
        "lost": len(run.confirmed - received),
        "lost_sample": sorted(run.confirmed - received)[:10],
        "duplicated": sum(n - 1 for n in run.received.values() if n > 1),
        "unexpected": len(received - run.attempted),
        "unconfirmed_received": len(received & (run.attempted - run.confirmed)),
        "faults": dict(run.faults),
        "reconnects": run.reconnects,
    }


async def main_async(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Start everything, run clients and nemesis, heal, drain, check."""
    etcd = await asyncio.to_thread(start_etcd, base / "etcd")
    names = [f"n{i + 1}" for i in range(args.nodes)]
    cluster = ProxiedCluster(base, etcd, names, SETTINGS)
    try:
        await asyncio.to_thread(cluster.start_all)
        queues = [f"jepsen-{i}" for i in range(args.queues)]
        connection = await aio_pika.connect(cluster.url(names[0]))
        channel = await connection.channel()
        for queue in queues:
            await channel.declare_queue(queue, durable=True, arguments={"x-replicas": args.nodes})
        await connection.close()
        run = Run(cluster, queues, args.any_node, args.seed)
        if not await settle(run, args.nodes):
            raise SystemExit("nemesis: the queues never got leaders and full in-sync sets")
        run.log(f"cluster up: {', '.join(names)}; queues {', '.join(queues)}")
        run.started = time.monotonic()
        clients = [
            *(asyncio.create_task(publisher(run, i)) for i in range(args.publishers)),
            *(asyncio.create_task(consumer(run, i)) for i in range(args.consumers)),
        ]
        await nemesis(run, args.seconds)
        cluster.proxy.heal()
        for name in names:
            if not cluster.alive(name):
                await asyncio.to_thread(cluster.start, name)
        settled = await settle(run, args.nodes)
        run.log(f"healed; settled: {settled}")
        run.stop_publishing.set()
        await asyncio.sleep(CONFIRM_TIMEOUT + 1)  # publishers finish or give up their last one
        drained = await drain(run)
        run.stop_consuming.set()
        await asyncio.gather(*clients, return_exceptions=True)
        result = check(run)
        result.update(settled=settled, drained=drained, seed=args.seed, seconds=args.seconds)
        return result
    finally:
        await asyncio.to_thread(cluster.close)
        await asyncio.to_thread(etcd.stop)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the checker's verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the nemesis runs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--queues", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--consumers", type=int, default=2)
    parser.add_argument("--any-node", action="store_true", help="clients use random nodes")
    parser.add_argument("--dir", help="keep data and logs here (default: a temporary dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the clients' reconnect tracebacks are expected
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nemesis-"))
    base.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(main_async(args, base))
    print(
        f"nemesis: seed {args.seed}, {args.seconds:.0f} s, faults {result['faults']}: "
        f"confirmed {result['confirmed']} of {result['attempted']} attempted, "
        f"received {result['received']}; lost {result['lost']}, "
        f"duplicated {result['duplicated']}, unexpected {result['unexpected']}"
    )
    print(json.dumps(result, sort_keys=True))
    failed = result["lost"] or result["unexpected"] or not result["drained"]
    if not failed and not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    elif failed:
        print(f"nemesis: logs kept in {base}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
