"""Stream queues in /metrics and the management API: length, offsets, bytes, segments, named
consumers' offsets and lag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from amqplite.broker.queue import Queue
from amqplite.broker.stream_queue import StreamQueue

STREAM_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("amqplite_stream_messages", "messages", "Messages held by a stream queue"),
    ("amqplite_stream_first_offset", "first_offset", "Oldest offset a stream queue still holds"),
    ("amqplite_stream_last_offset", "last_offset", "Newest offset of a stream queue (-1: empty)"),
    ("amqplite_stream_bytes_on_disk", "bytes_on_disk", "Bytes of a stream queue's segments"),
    ("amqplite_stream_segments", "segments", "Segment files of a stream queue"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def stream_info(queue: Queue) -> dict[str, Any] | None:
    """A stream queue's figures for the management API (None for other queues)."""
    if not isinstance(queue, StreamQueue):
        return None
    return queue.stream_stats() or None


def stream_lines(queues: Iterable[Queue]) -> list[str]:
    """The amqplite_stream_* families in the text exposition format, one sample per stream."""
    streams = [(q, q.stream_stats()) for q in queues if isinstance(q, StreamQueue)]
    streams = [(q, s) for q, s in streams if s]
    lines: list[str] = []
    for name, key, text in STREAM_FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for queue, stats in streams:
            where = f'vhost="{_label(queue.vhost)}",queue="{_label(queue.name)}"'
            lines.append(f"{name}{{{where}}} {stats[key]}")
    for name, key, text in (
        (
            "amqplite_stream_consumer_offset",
            "offset",
            "A named stream consumer's last acked offset",
        ),
        ("amqplite_stream_consumer_lag", "lag", "Messages after a named stream consumer's offset"),
    ):
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for queue, stats in streams:
            for consumer, figures in stats["consumer_offsets"].items():
                where = (
                    f'vhost="{_label(queue.vhost)}",queue="{_label(queue.name)}",'
                    f'consumer="{_label(consumer)}"'
                )
                lines.append(f"{name}{{{where}}} {figures[key]}")
    return lines
