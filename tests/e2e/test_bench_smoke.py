"""A tiny run of scripts/bench.py against the test broker, so the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _bench(broker: Any, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--url", broker.url, "--quiet"]
    if broker.proc is not None:
        cmd += ["--broker-pid", str(broker.proc.pid)]
    done = subprocess.run(
        [*cmd, "--json", "-", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_bench_flows_report_rates_latencies_and_broker_cpu(broker: Any) -> None:
    doc = _bench(
        broker, "-s", "transient", "-s", "manual-ack", "-s", "latency-1k", "--count", "1500"
    )
    results = {r["scenario"]: r for r in doc["results"]}
    assert set(results) == {"transient", "manual-ack", "latency-1k"}
    for result in results.values():
        assert result["error"] is None
        assert result["metrics"]["msg_per_s"] > 0
        assert "lost" not in result["metrics"]
        assert result["metrics"]["cpu_us_per_msg"] > 0
    latency = results["latency-1k"]["metrics"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]


def test_bench_topology_scenarios_deliver_every_message(broker: Any) -> None:
    doc = _bench(broker, "-s", "confirms", "-s", "fanout", "-s", "topic", "--count", "2000")
    for result in doc["results"]:
        assert result["error"] is None, result
        assert "lost" not in result["metrics"]
        assert result["metrics"]["msg_per_s"] > 0


def test_bench_backlog_and_idle_connections_read_broker_memory(broker: Any) -> None:
    doc = _bench(
        broker,
        "-s",
        "idle-connections",
        "-s",
        "backlog",
        "--connections",
        "20",
        "--backlog-count",
        "5000",
    )
    results = {r["scenario"]: r for r in doc["results"]}
    assert results["idle-connections"]["metrics"]["connections_per_s"] > 0
    assert "kb_per_connection" in results["idle-connections"]["metrics"]
    backlog = results["backlog"]["metrics"]
    assert "lost" not in backlog
    assert backlog["publish_per_s"] > 0
    assert backlog["drain_per_s"] > 0
    assert "backlog_mb" in backlog
