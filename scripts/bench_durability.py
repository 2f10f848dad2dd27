"""Durability benchmark: confirmed publish throughput, fsyncs, recovery time, disk use after churn.

Examples (from the repository root):

    .venv/bin/python scripts/bench_durability.py                       # everything, default sizes
    .venv/bin/python scripts/bench_durability.py throughput --messages 50000
    .venv/bin/python scripts/bench_durability.py recovery --counts 100000 1000000
    .venv/bin/python scripts/bench_durability.py disk --messages 1000000
    .venv/bin/python scripts/bench_durability.py restart --counts 100000 --baseline /path/to/main
    .venv/bin/python scripts/bench_durability.py restart --counts 100000 --baseline /old /older
    .venv/bin/python scripts/bench_durability.py recovery-cpu --counts 100000 --baseline /path/to/main
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # the amqplite to measure: this tree, or another one (recovery-cpu runs a baseline's code)
    sys.path.insert(
        0, os.environ.get("AMQPLITE_TREE") or str(Path(__file__).resolve().parent.parent)
    )

from benchlib.client import Client, publish_frames, send_confirmed
from benchlib.ports import free_port

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message
from amqplite.config.models import StoreConfig
from amqplite.store.journal import SegmentWriter, SyncJob
from amqplite.store.records import encode_enqueue
from amqplite.store.store import Store

try:
    from amqplite.server.restore import recover_into
except ImportError:  # a baseline tree from before recovery moved out of the store

    def recover_into(broker: Broker, store: Store) -> object:  # type: ignore[misc]
        """The old API: the store recovered into the broker itself."""
        return store.recover_into(broker)  # type: ignore[attr-defined]


ROOT = Path(__file__).resolve().parent.parent
BODY = b"x" * 1024
PERSISTENT_PROPS = b"\x10\x00\x02"


# -- a broker subprocess -------------------------------------------------------------------


class Broker_:
    """`amqplite serve` on a data directory, started and stopped by the benchmark."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "amqplite",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--management-port",
            str(free_port()),
            *extra,
        ]
        self.started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.ready_after = self._wait()

    @property
    def url(self) -> str:
        """The amqp:// URL of the broker."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _wait(self, timeout: float = 600.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return time.monotonic() - self.started
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("broker did not listen")

    def rss_mb(self) -> float:
        """Resident memory of the broker process in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> str:
        """SIGTERM, wait, and return the broker's log."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return self.log_path.read_text()


# -- throughput ----------------------------------------------------------------------------


def publish_confirmed(url: str, queue: str, count: int, persistent: bool, window: int) -> float:
    """Publish `count` 1 KB messages with at most `window` unconfirmed; seconds it took."""
    client = Client(url)
    client.open_channel()
    client.confirm_select()
    frames = publish_frames("", queue, BODY, persistent=persistent)
    started = time.perf_counter()
    confirms = send_confirmed(client, frames, count, window, timeout=60)
    elapsed = time.perf_counter() - started
    assert confirms.nacked == 0
    client.close()
    return elapsed


def throughput(messages: int, window: int, fsync: bool) -> None:
    """Transient and persistent confirmed publish in the same broker run, and its group commits."""
    with tempfile.TemporaryDirectory() as tmp:
        extra: list[str] = []
        if not fsync:
            config = Path(tmp) / "amqplite.yaml"
            config.write_text("store:\n  fsync: false\n")
            extra = ["--config", str(config)]
        broker = Broker_(Path(tmp) / "data", *extra)
        setup = Client(broker.url)
        setup.open_channel()
        setup.declare_queue("bench-transient", durable=False)
        setup.declare_queue("bench-durable", durable=True)
        setup.close()
        transient = publish_confirmed(broker.url, "bench-transient", messages, False, window)
        persistent = publish_confirmed(broker.url, "bench-durable", messages, True, window)
        log = broker.stop()
    match = re.search(r"store closed: (\d+) group commits, (\d+) fsync calls", log)
    commits, fsyncs = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    print(f"confirmed publish, 1 KB, {window} in flight, {messages} messages, fsync={fsync}")
    print(f"  transient  (non-durable queue): {messages / transient:10,.0f} msg/s")
    print(f"  persistent (durable queue)    : {messages / persistent:10,.0f} msg/s")
    print(
        f"  group commits: {commits} ({commits / persistent:,.0f}/s, "
        f"{messages / max(commits, 1):,.0f} messages per commit); fsync calls: {fsyncs} "
        f"({fsyncs / persistent:,.0f}/s)"
    )


# -- recovery ------------------------------------------------------------------------------


def build_backlog(data_dir: Path, count: int) -> None:
    """A data directory holding one durable queue with `count` persistent 1 KB messages."""
    broker = Broker()
    broker.add_vhost("/")
    store = Store(data_dir, StoreConfig())
    recover_into(broker, store)
    broker.vhosts["/"].declare_queue("backlog", durable=True)
    journal = store.journals[("/", "backlog")]
    store.close()
    writer = SegmentWriter(journal.directory, 1, StoreConfig().segment_bytes)
    job = SyncJob(0)
    for seq in range(count):
        writer.append(encode_enqueue(seq, 0, 0, None, "", "backlog", PERSISTENT_PROPS, BODY))
        if seq % 10_000 == 9_999:
            writer.write(job)
    writer.write(job)
    writer.rotate(job)
    job.run()


def recovery(counts: list[int]) -> None:
    """Boot time (until the port listens) and memory of a broker recovering a backlog."""
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            started = time.perf_counter()
            build_backlog(data_dir, count)
            built = time.perf_counter() - started
            on_disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
            broker = Broker_(data_dir)
            rss = broker.rss_mb()
            log = broker.stop()
            match = re.search(r"recovered .* (\d+) messages from .* in ([\d.]+) s", log)
            replay = float(match.group(2)) if match else float("nan")
            print(
                f"recovery of {count:,} messages of 1 KB ({on_disk / 1e6:,.0f} MB journal, built in "
                f"{built:.1f} s): listening after {broker.ready_after:.2f} s "
                f"(replay {replay:.2f} s), RSS {rss:,.0f} MB"
            )


# -- restart: spawn to ready ---------------------------------------------------------------


def compile_bytecode(tree: Path) -> None:
    """Write the tree's .pyc files first, as an installed package has them.

    Without them (PYTHONDONTWRITEBYTECODE set, or a fresh checkout) every start compiles each
    module from source, and the start-up figure measures the compiler rather than the broker.
    """
    packages = [
        str(tree / name) for name in ("amqplite", "amqplite_plugins") if (tree / name).is_dir()
    ]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux's /proc; nan elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn_until_ready(
    tree: Path, data_dir: Path, queue: str
) -> tuple[subprocess.Popen[bytes], float, int, float]:
    """Start the broker of a source tree; seconds until its port accepts and a passive declare of
    `queue` is answered, the message count it gave, and the CPU seconds the broker used until
    then (less sensitive than wall time to other work on the machine)."""
    port, management = free_port(), free_port()
    cmd = [sys.executable, "-m", "amqplite", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--management-port", str(management)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    log = open(data_dir.parent / f"restart-{port}.log", "wb")  # noqa: SIM115 - the broker's log
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited: see {data_dir.parent}")
        try:
            client = Client(url, timeout=30)
        except OSError:
            time.sleep(0.002)
            continue
        client.open_channel()
        depth = client.queue_depth(queue) if queue else 0
        ready = time.monotonic() - started
        cpu = cpu_seconds(proc.pid)
        client.close()
        return proc, ready, depth, cpu


def stop_broker(proc: subprocess.Popen[bytes], sig: int) -> None:
    """SIGTERM (graceful: snapshots written) or SIGKILL, and wait for the exit."""
    proc.send_signal(sig)
    proc.wait(timeout=300)


def restart_cycle(
    tree: Path, backlog: Path, work: Path, count: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds from spawn to ready, and the broker's CPU seconds until then: empty, first boot
    from the journal, after SIGTERM, after SIGKILL."""
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    empty = work / "empty"
    shutil.rmtree(work, ignore_errors=True)
    empty.mkdir(parents=True)
    proc, times["empty"], _, cpu["empty"] = spawn_until_ready(tree, empty, "")
    stop_broker(proc, signal.SIGTERM)
    data = work / "data"
    shutil.copytree(backlog, data)
    proc, times["first"], depth, cpu["first"] = spawn_until_ready(tree, data, "backlog")
    for sig, name in ((signal.SIGTERM, "sigterm"), (signal.SIGKILL, "sigkill")):
        stop_broker(proc, sig)
        proc, times[name], depth, cpu[name] = spawn_until_ready(tree, data, "backlog")
        assert depth == count, f"{tree}: {depth} messages after {name}, expected {count}"
    stop_broker(proc, signal.SIGTERM)
    return times, cpu


KIND_NAMES = {
    "empty": "empty broker",
    "first": "first boot from the journal",
    "sigterm": "after SIGTERM",
    "sigkill": "after SIGKILL",
}


def labelled_trees(baselines: list[Path]) -> list[tuple[str, Path]]:
    """This tree, then each baseline: "baseline" (the first, that ratios refer to), "other 1", ..."""
    labels = ["baseline"] + [f"other {i}" for i in range(1, len(baselines))]
    return [("this tree", ROOT), *zip(labels, baselines, strict=True)]


def restart(counts: list[int], baselines: list[Path], repeats: int) -> None:
    """Restart time with a backlog after SIGTERM and SIGKILL: this tree and baselines, interleaved."""
    trees = labelled_trees(baselines)
    kinds = ("empty", "first", "sigterm", "sigkill")
    for _, tree in trees:
        compile_bytecode(tree)
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            backlog = Path(tmp) / "backlog"
            build_backlog(backlog, count)
            walls: dict[str, dict[str, list[float]]] = {
                label: {kind: [] for kind in kinds} for label, _ in trees
            }
            cpus: dict[str, dict[str, list[float]]] = {
                label: {kind: [] for kind in kinds} for label, _ in trees
            }
            for _ in range(repeats):  # the trees take turns, so that load on the machine hits both
                for label, tree in trees:
                    wall, cpu = restart_cycle(tree, backlog, Path(tmp) / "work", count)
                    for kind in kinds:
                        walls[label][kind].append(wall[kind])
                        cpus[label][kind].append(cpu[kind])
            print(
                f"restart with {count:,} persistent 1 KB messages, seconds from spawn to ready "
                f"(port accepting + passive declare answered), median of {repeats}; in brackets "
                f"the broker's CPU seconds until then:"
            )
            medians: dict[str, dict[str, float]] = {}
            for label, tree in trees:
                med = medians[label] = {k: statistics.median(v) for k, v in walls[label].items()}
                cpu_med = {k: statistics.median(v) for k, v in cpus[label].items()}
                print(
                    f"  {label:10} ({tree}): "
                    + ", ".join(
                        f"{KIND_NAMES[kind]} {med[kind]:.2f} ({cpu_med[kind]:.2f})"
                        for kind in kinds
                    )
                )
            for label, _ in trees if baselines else []:
                if label != "baseline":
                    print_ratios(label, medians, kinds)


def print_ratios(label: str, medians: dict[str, dict[str, float]], kinds: tuple[str, ...]) -> None:
    """One line: the wall-time medians of `label` over the baseline's."""
    ratios = (medians[label][k] / medians["baseline"][k] for k in kinds)
    print(
        f"  wall time, {label} / baseline: "
        + ", ".join(f"{KIND_NAMES[k]} {r:.2f}" for k, r in zip(kinds, ratios, strict=True))
    )


def recovery_cpu_child(count: int) -> None:
    """In this process (the tree on PYTHONPATH): CPU seconds of recovering a backlog, printed."""
    import gc

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        build_backlog(data_dir, count)

        def boot() -> tuple[Broker, Store, float]:
            broker = Broker()
            broker.add_vhost("/")
            gc.disable()
            started = time.process_time()
            store = Store(data_dir, StoreConfig())
            recover_into(broker, store)
            elapsed = time.process_time() - started
            gc.enable()
            assert broker.vhosts["/"].queues["backlog"].message_count >= count
            return broker, store, elapsed

        _, store, journal = boot()
        store.close()
        clean = []
        for _ in range(3):
            _, store, elapsed = boot()
            clean.append(elapsed)
            store.close()
        broker, store, _ = boot()
        broker.vhosts["/"].publish(
            "", Message("", "backlog", PERSISTENT_PROPS, BODY, persistent=True)
        )
        store.commit()  # then a crash: no close
        crash = []
        for _ in range(3):
            _, store, elapsed = boot()
            crash.append(elapsed)
            store.commit()
    print(f"{journal:.2f} {min(clean):.2f} {min(crash):.2f}")


def recovery_cpu(counts: list[int], baselines: list[Path], repeats: int) -> None:
    """CPU seconds of in-process recovery (less sensitive to a loaded machine than wall time)."""
    trees = labelled_trees(baselines)
    for count in counts:
        results: dict[str, list[list[float]]] = {label: [] for label, _ in trees}
        for _ in range(repeats):
            for label, tree in trees:
                cmd = [sys.executable, str(Path(__file__).resolve()), "recovery-cpu-child"]
                env = dict(os.environ, AMQPLITE_TREE=str(tree))
                out = subprocess.run(
                    [*cmd, "--counts", str(count)],
                    env=env,
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                results[label].append([float(x) for x in out])
        print(
            f"recovery of {count:,} persistent 1 KB messages in process, CPU s (best of {repeats}):"
        )
        for label, tree in trees:
            best = [min(run[i] for run in results[label]) for i in range(3)]
            print(
                f"  {label:10} ({tree}): from the journal {best[0]:.2f}, after a graceful close "
                f"{best[1]:.2f}, after a crash (one message since) {best[2]:.2f}"
            )


# -- disk use after churn ------------------------------------------------------------------


def disk(messages: int, batch: int) -> None:
    """Publish and ack `messages` persistent 1 KB messages through the store; bytes left on disk."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        broker = Broker()
        broker.add_vhost("/")
        store = Store(data_dir, StoreConfig())
        recover_into(broker, store)
        vhost = broker.vhosts["/"]
        queue = vhost.declare_queue("churn", durable=True)
        started = time.perf_counter()
        peak = 0
        for start in range(0, messages, batch):
            for _ in range(min(batch, messages - start)):
                vhost.publish("", Message("", "churn", PERSISTENT_PROPS, BODY, persistent=True))
            while (entry := queue.take()) is not None:
                queue.settle(entry)
            store.commit()
            if start % (100 * batch) == 0:
                peak = max(peak, sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()))
        elapsed = time.perf_counter() - started
        stats = store.statistics()
        store.close()
        on_disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
        files = sorted(p.name for p in data_dir.rglob("*") if p.is_file())
    print(
        f"publish/ack cycle of {messages:,} persistent 1 KB messages ({batch} per commit, "
        f"{elapsed:.1f} s): {stats.bytes_written / 1e9:.2f} GB written, {stats.snapshots} snapshots, "
        f"{on_disk:,} bytes on disk after (peak sampled {peak / 1e6:.1f} MB), files: {files}"
    )


def main() -> None:
    """Run the chosen benchmarks."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", nargs="*", default=["throughput", "recovery", "disk"])
    p.add_argument("--messages", type=int, default=None)
    p.add_argument("--window", type=int, default=1000)
    p.add_argument("--no-fsync", action="store_true", help="store.fsync: false")
    p.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument(
        "--baseline",
        type=Path,
        nargs="+",
        default=[],
        help="restart, recovery-cpu: source trees to compare with (ratios refer to the first)",
    )
    p.add_argument("--repeats", type=int, default=3, help="restart: runs per figure (median)")
    args = p.parse_args()
    for what in args.what:
        if what == "throughput":
            throughput(args.messages or 50_000, args.window, not args.no_fsync)
        elif what == "recovery":
            recovery(args.counts)
        elif what == "recovery-cpu":
            recovery_cpu(args.counts, args.baseline, args.repeats)
        elif what == "recovery-cpu-child":
            recovery_cpu_child(args.counts[0])
        elif what == "restart":
            restart(args.counts, args.baseline, args.repeats)
        elif what == "disk":
            disk(args.messages or 1_000_000, 1000)
        else:
            p.error(f"unknown benchmark {what!r}")


if __name__ == "__main__":
    main()
