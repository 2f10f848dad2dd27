"""Resource alarms without sockets: limits from config and cgroups, set and clear, snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqplite.config.loader import ConfigError, load_config
from amqplite.config.models import AlarmsConfig
from amqplite.server.alarms import (
    TRIM_EVERY,
    TRIM_GROWTH,
    Alarms,
    announces_blocked,
    cgroup_memory_limit,
    disk_free,
    memory_limit,
    physical_memory,
)

MB = 2**20


def test_cgroup_limits_v2_v1_and_unlimited(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("268435456\n")
    assert cgroup_memory_limit(tmp_path) == 256 * MB
    (tmp_path / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_memory_limit(v1) == 512 * MB
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    assert cgroup_memory_limit(v1) is None
    assert cgroup_memory_limit(tmp_path / "none") is None


def test_watermark_is_a_fraction_of_ram_or_cgroup_limit_unless_absolute(tmp_path: Path) -> None:
    assert memory_limit(AlarmsConfig(memory_high_watermark=0.5), tmp_path) == physical_memory() // 2
    (tmp_path / "memory.max").write_text(str(100 * MB))
    assert memory_limit(AlarmsConfig(memory_high_watermark=0.5), tmp_path) == 50 * MB
    absolute = AlarmsConfig(memory_high_watermark_bytes=256 * MB)
    assert memory_limit(absolute, tmp_path) == 256 * MB


def test_alarms_set_and_clear_with_memory_and_disk_and_log_each_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = [100 * MB]
    disk = [10**9]
    config = AlarmsConfig(memory_high_watermark_bytes=200 * MB, disk_free_limit=50_000_000)
    alarms = Alarms(config, "/data", read_memory=lambda: memory[0], read_disk=lambda _: disk[0])
    alarms.check()
    assert not alarms.active
    memory[0] = 300 * MB
    with caplog.at_level("WARNING", "amqplite.server"):
        alarms.check()
    assert alarms.mem_alarm
    assert alarms.active
    assert not alarms.disk_free_alarm
    assert alarms.reason() == "low on memory"
    assert "memory alarm set (300 MB used, watermark 200 MB)" in caplog.text
    disk[0] = 10_000_000
    memory[0] = 150 * MB
    alarms.check()
    assert alarms.disk_free_alarm
    assert not alarms.mem_alarm
    assert alarms.active
    assert alarms.reason() == "low on disk"
    assert "memory alarm cleared" in caplog.text
    assert alarms.snapshot() == {
        "mem_used": 150 * MB,
        "mem_limit": 200 * MB,
        "mem_alarm": False,
        "disk_free": 10_000_000,
        "disk_free_limit": 50_000_000,
        "disk_free_alarm": True,
    }
    disk[0] = 60_000_000
    alarms.check()
    assert not alarms.active
    assert "disk alarm cleared" in caplog.text


def test_only_clients_announcing_the_capability_are_told() -> None:
    assert announces_blocked({"capabilities": {"connection.blocked": True}})
    assert not announces_blocked({"capabilities": {"connection.blocked": False}})
    assert not announces_blocked({"capabilities": {}})
    assert not announces_blocked({})


def test_disk_free_reads_the_nearest_existing_folder(tmp_path: Path) -> None:
    assert disk_free(str(tmp_path / "not" / "yet")) == disk_free(str(tmp_path)) > 0


def test_alarm_settings_are_checked_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "amqplite.yaml"
    path.write_text("alarms:\n  memory_high_watermark_bytes: 268435456\n  check_interval: 0.1\n")
    config = load_config(path)
    assert config.alarms.memory_high_watermark_bytes == 256 * MB
    assert config.alarms.check_interval == 0.1
    path.write_text("alarms:\n  memory_high_watermark: 1.5\n")
    with pytest.raises(ConfigError, match=r"memory_high_watermark.*1\.5.*from 0\.0 to 1\.0"):
        load_config(path)


class Observed:
    """A memory observer (what the transient pager is to the alarms)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def observe(self, memory_used: int) -> None:
        self.seen.append(memory_used)


def test_memory_is_trimmed_only_well_above_its_low_and_not_too_often() -> None:
    memory = [60 * MB]
    config = AlarmsConfig(memory_high_watermark_bytes=1000 * MB)
    alarms = Alarms(config, "/data", read_memory=lambda: memory[0], read_disk=lambda _: 10**12)
    pager = Observed()
    alarms.pager = pager
    alarms.check()
    assert not alarms.trim_due(100.0)  # at its low
    memory[0] = 60 * MB + TRIM_GROWTH
    alarms.check()
    assert not alarms.trim_due(100.0)  # within the growth allowed
    memory[0] = 200 * MB  # a drained backlog's freed pages still held
    alarms.check()
    assert alarms.trim_due(100.0)
    assert not alarms.trim_due(100.0 + TRIM_EVERY / 2)  # not again so soon
    assert alarms.trim_due(100.0 + TRIM_EVERY)
    memory[0] = 40 * MB
    alarms.check()
    assert alarms.mem_low == 40 * MB
    assert pager.seen == [60 * MB, 60 * MB + TRIM_GROWTH, 200 * MB, 40 * MB]
