"""amqplite's benchmark suite: AMQP load from separate publisher and consumer processes.

Examples (from the repository root):

    .venv/bin/python scripts/bench.py --spawn --compare amqp://guest:guest@127.0.0.1:5672/%2F
    .venv/bin/python scripts/bench.py --url amqp://guest:guest@127.0.0.1:5672/%2F -s transient
    .venv/bin/python scripts/bench.py --spawn -s latency-1k --duration 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import urllib.parse
from pathlib import Path

import attrs

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.brokers import Broker
from benchlib.client import DEFAULT_URL
from benchlib.report import document, flow_table, memory_table, table
from benchlib.scenarios import COMPARE, SCENARIOS, Result, Settings, run_scenario

ROOT = Path(__file__).resolve().parent.parent


def parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(
        prog="amqplite bench",
        description="Benchmark an AMQP 0-9-1 broker (and compare it with another).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios: " + ", ".join(SCENARIOS),
    )
    p.add_argument(
        "--url", default=None, help=f"broker under test (default {DEFAULT_URL.replace('%', '%%')})"
    )
    p.add_argument(
        "--spawn",
        action="store_true",
        help="test `amqplite serve` started on a free port, afresh for every scenario",
    )
    p.add_argument(
        "--amqplite-root",
        metavar="DIR",
        default=str(ROOT),
        help="source tree whose `amqplite serve` --spawn starts (default this repository)",
    )
    p.add_argument("--compare", metavar="URL", help="run the same scenarios against this broker")
    p.add_argument("--broker-pid", type=int, help="pid of the --url broker (default: by port)")
    p.add_argument("--compare-pid", type=int, help="pid of the --compare broker (default: by port)")
    p.add_argument(
        "-s",
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="scenario to run (repeatable; default all, with --compare: "
        + ", ".join(COMPARE)
        + ")",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per flow (default 10)")
    p.add_argument("--count", type=int, help="publish exactly this many messages per flow instead")
    p.add_argument("--size", type=int, default=1024, help="message body bytes (default 1024)")
    p.add_argument(
        "--backlog-count", type=int, default=1_000_000, help="backlog messages (default 1,000,000)"
    )
    p.add_argument("--connections", type=int, default=1000, help="idle connections (default 1000)")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="give up when a consumer gets nothing for this long (default 60 s)",
    )
    p.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="write JSON (to stdout without PATH)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each scenario N times (brokers interleaved), report medians",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        metavar="N",
        help="hold publishers to N messages ahead of the consumer "
        "(default: none, they send as fast as the broker reads)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw rates, queue depth and RSS over time per broker (needs matplotlib; "
        "FILE-scenario.png per scenario when several run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p


def combine(runs: list[Result]) -> Result:
    """One result from repeated runs: the median of each metric over the runs that succeeded.

    Its time series is the one of the run whose delivered rate is the median.
    """
    good = [r for r in runs if r.error is None]
    if not good:
        return runs[0]
    names = dict.fromkeys(name for r in good for name in r.metrics)
    metrics = {
        name: statistics.median(r.metrics[name] for r in good if name in r.metrics)
        for name in names
    }
    key = "delivered_per_s" if "delivered_per_s" in metrics else "msg_per_s"
    ranked = sorted(good, key=lambda r: r.metrics.get(key, 0.0))
    median_run = ranked[(len(ranked) - 1) // 2]
    return attrs.evolve(median_run, metrics=metrics)


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urllib.parse.urlparse(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def run(args: argparse.Namespace, url: str | None, pid: int | None) -> int:
    """Run the chosen scenarios against the broker (and the --compare broker), then report."""
    settings = Settings(
        duration=args.duration,
        count=args.count,
        size=args.size,
        backlog_count=args.backlog_count,
        connections=args.connections,
        drain_timeout=args.drain_timeout,
        progress=not args.quiet,
        max_in_flight=args.max_in_flight,
    )
    taken: set[str] = set()
    root = Path(args.amqplite_root) if args.spawn else None
    brokers_under_test = [Broker(url, pid, root, taken)]
    if args.compare:
        brokers_under_test.append(Broker(args.compare, args.compare_pid, None, taken))
    targets = [b.target for b in brokers_under_test]
    names = args.scenario or list(COMPARE if args.compare else SCENARIOS)
    results: list[Result] = []
    for name in names:
        runs: list[list[Result]] = [[] for _ in brokers_under_test]
        for _ in range(args.repeat):
            # interleaved: each repetition visits every broker, so drifting load hits both
            for index, broker in enumerate(brokers_under_test):
                with broker.session() as target:
                    runs[index].append(run_scenario(name, target, settings))
        results.extend(combine(r) for r in runs)
    brokers = [t.name for t in targets]
    command = shlex.join(["scripts/bench.py", *sys.argv[1:]])
    if args.json:
        text = json.dumps(
            document(results, brokers, [redact(t.url) for t in targets], settings, command),
            indent=2,
        )
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.json != "-":
        print(table(results, brokers))
        if len(brokers) > 1 and any("delivered_per_s" in r.metrics for r in results):
            print()
            print(flow_table(results, brokers))
        if any("rss_start_mb" in r.metrics for r in results):
            print()
            print(memory_table(results, brokers))
    if args.plot:
        from benchlib.plot import plot

        for written in plot(results, brokers, Path(args.plot)):
            print(f"bench: wrote {written}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `scripts/bench.py` and `amqplite bench`."""
    args = parser().parse_args(argv)
    if args.list:
        for name, scenario in SCENARIOS.items():
            print(f"{name:<18} {(scenario.__doc__ or '').strip()}")
        return 0
    if args.spawn and args.url:
        raise SystemExit("bench: --spawn and --url exclude each other")
    return run(args, args.url, args.broker_pid)


if __name__ == "__main__":
    sys.exit(main())
