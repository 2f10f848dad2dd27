"""A broker's resident memory, read from /proc, and that of an idle broker to set watermarks by."""

from __future__ import annotations

import os
from pathlib import Path

from broker_process import BrokerProcess, start_broker
from mgmt_helpers import wait_for
from pika_helpers import connection

MB = 2**20


def rss(broker: BrokerProcess) -> int:
    """The broker process's resident set size in bytes."""
    assert broker.proc is not None
    pages = int(Path(f"/proc/{broker.proc.pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def idle_rss(tmp_path: Path) -> int:
    """The RSS of a broker like the one under test, with a connection open and nothing queued."""
    probe = start_broker(tmp_path / "probe")
    try:
        with connection(probe) as conn:
            conn.channel()
            readings = [rss(probe)]

            def settled() -> bool:
                readings.append(rss(probe))
                return abs(readings[-1] - readings[-2]) < MB

            wait_for(settled, interval=0.2)
            return readings[-1]
    finally:
        probe.stop()


def alarms_config(watermark: int, more: str = "") -> str:
    """A config file's alarms section: the memory watermark, checked every 50 ms, and `more` lines."""
    return f"alarms:\n  memory_high_watermark_bytes: {watermark}\n  check_interval: 0.05\n{more}"
