"""Memory and disk alarms: usage read on a timer; while one is set, publishing connections wait.

As RabbitMQ's: past the memory high watermark or under the free-disk limit, every connection
that publishes stops being read (after `connection.blocked` when its client announced that
capability) until the alarm clears (`connection.unblocked`); consumers keep draining.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from amqplite.config.models import AlarmsConfig
from amqplite.protocol.methods import spec
from amqplite.session.connection import Session

log = logging.getLogger("amqplite.server")

CGROUP = Path("/sys/fs/cgroup")
TRIM_GROWTH = 32 * 2**20  # memory this far above the lowest seen: freed pages may be held
TRIM_EVERY = 5.0  # seconds between such trims at most
_UNLIMITED = 1 << 60  # cgroup v1 says "no limit" with a number near 2**63


def cgroup_memory_limit(root: Path = CGROUP) -> int | None:
    """The memory limit of this process's cgroup (v2 or v1), None when there is none."""
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
        return None
    return None


def physical_memory() -> int:
    """Bytes of RAM on the machine."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_limit(config: AlarmsConfig, cgroup_root: Path = CGROUP) -> int:
    """The high watermark in bytes: absolute when set, else a fraction of what we may use."""
    if config.memory_high_watermark_bytes:
        return config.memory_high_watermark_bytes
    available = physical_memory()
    limit = cgroup_memory_limit(cgroup_root)
    if limit is not None:
        available = min(available, limit)
    return int(available * config.memory_high_watermark)


def process_memory() -> int:
    """Resident memory of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_free(path: str) -> int:
    """Bytes free for unprivileged use on the file system holding ``path``."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    stat = os.statvfs(path or ".")
    return stat.f_bavail * stat.f_frsize


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): give freed heap pages back to the system (a no-op elsewhere)."""
    try:  # the symbols already loaded into the process (libc's among them); find_library("c")
        loaded = ctypes.CDLL(None)  # would spawn ldconfig at every start
    except OSError:
        return lambda: None
    trim = getattr(loaded, "malloc_trim", None)
    if trim is None:
        return lambda: None
    return lambda: trim(0) and None


def announces_blocked(client_properties: dict[str, Any]) -> bool:
    """True when the client's capabilities include connection.blocked."""
    capabilities = client_properties.get("capabilities")
    return isinstance(capabilities, dict) and bool(capabilities.get("connection.blocked"))


class MemoryObserver(Protocol):
    """Told each measured memory figure (the transient pager decides with it)."""

    def observe(self, memory_used: int) -> None:
        """The process's resident memory, just measured."""


class Holdable(Protocol):
    """What `Alarms.hold` needs of a connection (server.connection.ClientConnection)."""

    session: Session
    blocked: bool


class Alarms:
    """The node's alarm state; `run` checks it on a timer, `hold` parks a publisher's reader."""

    def __init__(
        self,
        config: AlarmsConfig,
        data_dir: str,
        *,
        read_memory: Callable[[], int] = process_memory,
        read_disk: Callable[[str], int] = disk_free,
    ) -> None:
        self.interval = config.check_interval
        self.data_dir = data_dir
        self.mem_limit = memory_limit(config)
        self.disk_free_limit = config.disk_free_limit
        self.mem_used = 0
        self.disk_free = 0
        self.mem_alarm = False
        self.disk_free_alarm = False
        self._read_memory = read_memory
        self._read_disk = read_disk
        self._trim = _malloc_trim()
        self.pager: MemoryObserver | None = None
        self.mem_low = 0  # the lowest memory seen (what a drained node returns towards)
        self._trimmed_at = -TRIM_EVERY
        self._clear = trio.Event()
        self._clear.set()

    @property
    def active(self) -> bool:
        """True while any alarm is set."""
        return self.mem_alarm or self.disk_free_alarm

    def reason(self) -> str:
        """The connection.blocked reason, as RabbitMQ words it."""
        return "low on memory" if self.mem_alarm else "low on disk"

    def check(self) -> None:
        """Read memory and disk, set or clear the alarms, log every change."""
        was = self.active
        self.mem_used = self._read_memory()
        if self.mem_used > self.mem_limit:
            self._trim()  # freed message bodies may still be held by the allocator
            self.mem_used = self._read_memory()
        self.mem_low = min(self.mem_low or self.mem_used, self.mem_used)
        if self.pager is not None:
            self.pager.observe(self.mem_used)
        self.disk_free = self._read_disk(self.data_dir)
        mem_alarm = self.mem_used > self.mem_limit
        disk_alarm = self.disk_free < self.disk_free_limit
        if mem_alarm != self.mem_alarm:
            self.mem_alarm = mem_alarm
            mb = f"{self.mem_used / 2**20:.0f} MB used, watermark {self.mem_limit / 2**20:.0f} MB"
            if mem_alarm:
                log.warning("memory alarm set (%s): publishers blocked", mb)
            else:
                log.warning("memory alarm cleared (%s)", mb)
        if disk_alarm != self.disk_free_alarm:
            self.disk_free_alarm = disk_alarm
            free = f"{self.disk_free / 1e6:.0f} MB free, limit {self.disk_free_limit / 1e6:.0f} MB"
            if disk_alarm:
                log.warning("disk alarm set (%s): publishers blocked", free)
            else:
                log.warning("disk alarm cleared (%s)", free)
        if self.active and not was:
            self._clear = trio.Event()
        elif was and not self.active:
            self._clear.set()

    def snapshot(self) -> dict[str, Any]:
        """The figures management shows (RabbitMQ's /api/nodes names)."""
        return {
            "mem_used": self.mem_used,
            "mem_limit": self.mem_limit,
            "mem_alarm": self.mem_alarm,
            "disk_free": self.disk_free,
            "disk_free_limit": self.disk_free_limit,
            "disk_free_alarm": self.disk_free_alarm,
        }

    async def run(self) -> None:
        """Check every `interval` seconds, forever."""
        log.info(
            "memory high watermark %.0f MB, disk free limit %.0f MB on %s",
            self.mem_limit / 2**20,
            self.disk_free_limit / 1e6,
            self.data_dir,
        )
        while True:
            self.check()
            if self.trim_due(time.monotonic()):
                await trio.to_thread.run_sync(self._trim)  # walks the heap: not on the loop
                self.mem_used = self._read_memory()
            await trio.sleep(self.interval)

    def trim_due(self, now: float) -> bool:
        """True when freed memory should go back to the system (a drained backlog's bodies).

        glibc keeps freed chunks in the middle of its heap; malloc_trim(0) gives their pages
        back. Worth it only well above the lowest figure seen, and at most every TRIM_EVERY s.
        """
        if self.mem_used <= self.mem_low + TRIM_GROWTH or now - self._trimmed_at < TRIM_EVERY:
            return False
        self._trimmed_at = now
        return True

    async def hold(self, conn: Holdable) -> None:
        """Keep a publishing connection's reader parked until every alarm has cleared."""
        session = conn.session
        notify = announces_blocked(session.client_properties)
        if notify:
            session.send(0, spec.Connection.Blocked(reason=self.reason()))
        log.info("connection %s blocked: %s", session.peer, self.reason())
        conn.blocked = True
        try:
            while self.active and not session.closed:
                await self._clear.wait()
        finally:
            conn.blocked = False
        if not session.closed:
            log.info("connection %s unblocked", session.peer)
            if notify:
                session.send(0, spec.Connection.Unblocked())
