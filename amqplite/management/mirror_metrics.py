"""Mirrored queues in /metrics, on the node that leads each: lag and in-sync state per member."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from amqplite.broker.queue import Queue

MIRROR_FAMILIES: tuple[tuple[str, str], ...] = (
    ("amqplite_queue_mirror_lag", "Records the leader of a mirrored queue wrote that a member has not acked"),
    ("amqplite_queue_member_in_sync", "1 while a member of a mirrored queue is in its in-sync set, else 0"),
    ("amqplite_queue_in_sync_members", "Members in the in-sync set of a mirrored queue (the leader among them)"),
)  # fmt: skip


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _led(queues: Iterable[Queue]) -> list[tuple[Queue, tuple[str, ...], Mapping[str, int]]]:
    """The queues this node leads as mirrored queues, with their in-sync set and lags."""
    led = []
    for queue in queues:
        replication = None if queue.remote is None else queue.remote.replication
        if replication is not None:
            led.append((queue, *replication))
    return led


def mirror_lines(queues: Iterable[Queue]) -> list[str]:
    """The amqplite_queue_* mirror families in the text exposition format."""
    led = _led(queues)
    lines: list[str] = []
    for index, (name, text) in enumerate(MIRROR_FAMILIES):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for queue, in_sync, lag in led:
            where = f'vhost="{_label(queue.vhost)}",queue="{_label(queue.name)}"'
            if index == 2:
                lines.append(f"{name}{{{where}}} {len(in_sync)}")
                continue
            for member, behind in sorted(lag.items()):
                value = behind if index == 0 else int(member in in_sync)
                lines.append(f'{name}{{{where},member="{_label(member)}"}} {value}')
    return lines
