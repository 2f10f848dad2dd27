"""A tiny run of scripts/bench_management.py, so the management benchmark cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_management_times_the_lists_and_compares_polled_phases() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_management.py"),
            *(
                "--queues",
                "30",
                "--duration",
                "0.5",
                "--rounds",
                "2",
                "--repeat",
                "1",
                "--retries",
                "0",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^/api/queues +[\d.]+ +[\d.]+ +[\d.]+ +[\d,]+$", out, re.M), out
    assert "/metrics" in out
    phases = re.findall(r"^ +(\d) (no polling|polled every second) +([\d,]+) ", out, re.M)
    assert [(r, p) for r, p, _ in phases] == [
        ("1", "no polling"),
        ("1", "polled every second"),
        ("2", "polled every second"),
        ("2", "no polling"),
    ]
    assert all(int(rate.replace(",", "")) > 0 for _, _, rate in phases)
    assert re.search(r"^paired ratios per round: [\d.]+, [\d.]+; median [\d.]+", out, re.M)
