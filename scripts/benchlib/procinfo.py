"""The broker process seen from /proc: find it by its listening port, read its CPU and memory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
_LISTEN: Final = "0A"


@attrs.frozen
class ProcSample:
    """CPU seconds (user + system) and resident memory of a process at one moment."""

    cpu_seconds: float
    rss_bytes: int


def sample(pid: int, proc: Path = Path("/proc")) -> ProcSample:
    """Read utime + stime and the resident set size of ``pid``."""
    stat = (proc / str(pid) / "stat").read_text()
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_pages = int((proc / str(pid) / "statm").read_text().split()[1])
    return ProcSample((utime + stime) / CLOCK_TICKS, rss_pages * PAGE_SIZE)


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[int]:
    """Socket inodes of TCP listeners on ``port`` (IPv4 and IPv6 tables)."""
    inodes: set[int] = set()
    for table in ("net/tcp", "net/tcp6"):
        path = proc / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(int(fields[9]))
    return inodes


def find_listener_pid(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of the process holding a listening socket on ``port``, if /proc lets us see it."""
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not wanted:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except (PermissionError, FileNotFoundError, NotADirectoryError):
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    return int(entry.name)
            except OSError:
                continue
    return None


def system_busy_seconds(proc: Path = Path("/proc")) -> float:
    """CPU seconds all cores have spent busy (not idle or waiting for I/O) since boot."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
