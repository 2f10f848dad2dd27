"""The randomized fault run (scripts/nemesis.py), short: kills, pauses and partitions lose nothing confirmed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SEED = 5  # its first faults: a partition, a kill, a pause (then the others)


def test_a_short_nemesis_run_loses_no_confirmed_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "nemesis.py"), "--seconds", "20",
         "--seed", str(SEED), "--dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-2000:]
    result = json.loads(lines[-1])
    print(lines[-2])
    assert result["lost"] == 0, result["lost_sample"]
    assert result["unexpected"] == 0
    assert result["drained"]
    assert result["settled"]
    assert {"kill", "pause", "partition"} <= set(result["faults"]), result["faults"]
    assert result["confirmed"] > 0
    assert result["received"] >= result["confirmed"]
    assert done.returncode == 0
