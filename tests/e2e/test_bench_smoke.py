"""A tiny run of scripts/bench.py against the test broker, so the benchmark cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _run(broker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--url", broker.url]
    if broker.proc is not None:
        cmd += ["--broker-pid", str(broker.proc.pid)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _bench(broker: Any, *args: str) -> dict[str, Any]:
    return json.loads(_run(broker, "--quiet", "--json", "-", *args).stdout)


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


def test_bench_flows_report_accepted_and_delivered_depth_and_rss_over_time(broker: Any) -> None:
    doc = _bench(broker, "-s", "transient", "-s", "fanout", "--count", "3000")
    results = {r["scenario"]: r for r in doc["results"]}
    for name, fanout in (("transient", 1), ("fanout", 10)):
        metrics, series = results[name]["metrics"], results[name]["series"]
        assert metrics["accepted_per_s"] > 0
        assert metrics["delivered_per_s"] > 0
        assert metrics["drain_s"] >= 0
        assert metrics["depth_peak"] >= 0
        assert 0 < metrics["rss_start_mb"] <= metrics["rss_peak_mb"]
        assert metrics["rss_end_mb"] <= metrics["rss_peak_mb"]
        # the series ends drained: everything accepted was delivered (to every queue)
        assert series["accepted"][-1] == 3000
        assert series["delivered"][-1] == 3000 * fanout
        assert len(series["t"]) == len(series["accepted"]) == len(series["rss_mb"])
        assert series["t"] == sorted(series["t"])
        assert len(series["depth_t"]) == len(series["depth"]) >= 1
        assert series["window_end"] is not None


def test_bench_max_in_flight_bounds_the_queue_it_builds(broker: Any) -> None:
    doc = _bench(broker, "-s", "fanout", "--count", "10000", "--max-in-flight", "500")
    (result,) = doc["results"]
    assert result["error"] is None
    # the publisher waits while 500 messages (x 10 queues) are unconsumed, then sends a batch
    # of 100: no more is ready over the 10 queues (unbounded, fanout builds a backlog)
    assert 0 <= result["metrics"]["depth_peak"] <= 6000
    assert max(result["series"]["depth"]) <= 6000
    assert result["series"]["delivered"][-1] == 100_000


def test_bench_compare_interleaves_runs_and_prints_the_side_by_side_table(
    broker: Any, tmp_path: Path
) -> None:
    done = _run(
        broker,
        "--compare",
        broker.url,
        "-s",
        "transient",
        "--count",
        "1000",
        "--repeat",
        "2",
        "--plot",
        str(tmp_path / "run.png"),
    )
    # progress lines on stderr: one per run, the two brokers taking turns
    titles = [line[:34] for line in done.stderr.splitlines() if " @ " in line]
    runs = [title.split(" @ ")[1].strip() for title in titles]
    assert len(runs) == 4
    assert runs[0] != runs[1]
    assert runs[0::2] == [runs[0]] * 2
    assert runs[1::2] == [runs[1]] * 2
    header = next(line for line in done.stdout.splitlines() if "delivered ratio" in line)
    assert "accepted / delivered per s" in header
    row = next(line for line in done.stdout.splitlines() if line.startswith("| transient, one"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 5
    assert cells[3].endswith("x")
    assert "RSS start / peak / end MB" in done.stdout
    image = (tmp_path / "run.png").read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")


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


def test_backlog_memory_script_publishes_drains_and_reports_rss(
    broker: Any, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "bench_backlog_memory.py"),
        "--url",
        broker.url,
        "--count",
        "3333",
        "--settle",
        "0",
        "--quiet",
        "--json",
        str(tmp_path / "backlog.json"),
    ]
    if broker.proc is not None:
        cmd += ["--broker-pid", str(broker.proc.pid)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RSS before / peak / after drain and settle MB" in done.stdout
    (run,) = json.loads((tmp_path / "backlog.json").read_text())["runs"]
    assert run["enqueued"] == run["delivered"] == run["published"] == 3333
    assert run["held_at"] is None
    assert run["left_in_queue"] == 0
    assert 0 < run["rss_before_mb"] <= run["rss_peak_mb"]
    assert run["series"]["publish"]["depth"][-1] <= 3333
