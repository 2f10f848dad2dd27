"""Mirror lag and the in-sync set, visible in /api/queues, `ctl cluster` and both /metrics.

Real etcd and three real `amqplite serve` nodes: a SIGSTOPped mirror falls behind (its lag grows
as the leader writes) and leaves the in-sync set in every view; after SIGCONT it catches up
(lag 0) and is back in sync.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_process import BrokerProcess, free_port
from cluster_helpers import INSYNC_SETTINGS, EtcdProcess, api_get, running_nodes, wait_for
from mirror_helpers import declare_replicated, publish_confirmed
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "mirrored"
# (in-sync members, lag per member) as one view shows them
View = tuple[list[str], dict[str, int]]


@pytest.fixture
def cluster(
    etcd: EtcdProcess, tmp_path: Path
) -> Iterator[tuple[dict[str, BrokerProcess], dict[str, int]]]:
    """Three nodes a, b, c with a short in-sync timeout, each with a Prometheus port."""
    prometheus = {name: free_port() for name in ("a", "b", "c")}
    args = {name: ("--prometheus-port", str(port)) for name, port in prometheus.items()}
    with running_nodes(etcd, tmp_path, cluster_settings=INSYNC_SETTINGS, extra_args=args) as nodes:
        yield nodes, prometheus


def api_view(leader: BrokerProcess) -> View:
    """The queue's in_sync and lag in the leader's /api/queues listing."""
    (queue,) = [q for q in api_get(leader, "/api/queues") if q["name"] == QUEUE]
    return queue["in_sync"], queue["lag"]


def ctl_view(node: BrokerProcess) -> View:
    """The queue's in-sync set and lag as `ctl cluster` prints them, asked of any node."""
    ctl = subprocess.run(
        [sys.executable, "-m", "amqplite", "ctl", "--url", node.management_url, "cluster"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ctl.returncode == 0, ctl.stderr
    lines = ctl.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("vhost")))
    assert lines[header].split() == [
        "vhost", "queue", "leader", "members", "online", "in_sync", "lag"
    ]  # fmt: skip
    (row,) = [line.split() for line in lines[header + 1 :] if line.split()[1:2] == [QUEUE]]
    lag = dict(cell.split("=") for cell in row[6:])
    return row[5].split(","), {member: int(n) for member, n in lag.items()}


def metrics_text(url: str, auth: bool) -> str:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(b"guest:guest").decode()
        request.add_header("authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def metrics_view(text: str) -> View:
    """The queue's in-sync set and lag from the amqplite_queue_* mirror gauges (parsed)."""
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("queue") == QUEUE and sample.labels.get("vhost") == "/":
                samples.setdefault(sample.name, []).append(sample)
    lag = {s.labels["member"]: int(s.value) for s in samples["amqplite_queue_mirror_lag"]}
    flags = samples["amqplite_queue_member_in_sync"]
    in_sync = sorted(s.labels["member"] for s in flags if s.value == 1)
    (count,) = samples["amqplite_queue_in_sync_members"]
    assert count.value == len(in_sync)
    return in_sync, lag


def views(
    nodes: dict[str, BrokerProcess], prometheus: dict[str, int], leader: str, asked: str
) -> dict[str, View]:
    """Every view of the queue: the leader's API and both /metrics, ctl asked of `asked`."""
    return {
        "api": api_view(nodes[leader]),
        "ctl": ctl_view(nodes[asked]),
        "metrics": metrics_view(metrics_text(nodes[leader].management_url + "/metrics", True)),
        "prometheus": metrics_view(
            metrics_text(f"http://127.0.0.1:{prometheus[leader]}/metrics", False)
        ),
    }


def test_a_paused_mirror_lags_and_leaves_the_in_sync_set_in_every_view_then_catches_up(
    etcd: EtcdProcess, cluster: tuple[dict[str, BrokerProcess], dict[str, int]]
) -> None:
    nodes, prometheus = cluster
    leader = declare_replicated(etcd.url, nodes["a"].url, QUEUE)
    paused, other = [n for n in sorted(nodes) if n != leader]
    publish_confirmed(nodes[leader].url, QUEUE, [b"before"])

    def all_in_sync_and_caught_up() -> dict[str, View] | None:
        seen = views(nodes, prometheus, leader, other)
        ok = all(v == (["a", "b", "c"], {"a": 0, "b": 0, "c": 0}) for v in seen.values())
        return seen if ok else None

    wait_for(all_in_sync_and_caught_up, "every view: three in sync, no lag")
    proc = nodes[paused].proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)
    # confirmed once it is dropped from the in-sync set
    publish_confirmed(nodes[leader].url, QUEUE, [f"p{i}".encode() for i in range(10)])
    first = api_view(nodes[leader])[1][paused]
    assert first >= 10
    publish_confirmed(nodes[leader].url, QUEUE, [f"q{i}".encode() for i in range(10)])
    behind = sorted(set(nodes) - {paused})

    def paused_out_of_sync() -> dict[str, View] | None:
        seen = views(nodes, prometheus, leader, other)
        ok = all(
            in_sync == behind and lag[paused] >= first + 10 and lag[other] == 0
            for in_sync, lag in seen.values()
        )
        return seen if ok else None

    seen = wait_for(paused_out_of_sync, "the paused mirror behind and out of sync in every view")
    assert all(lag[leader] == 0 for _, lag in seen.values())
    proc.send_signal(signal.SIGCONT)
    wait_for(all_in_sync_and_caught_up, "the resumed mirror caught up and in sync everywhere")
