"""Queue data that could not be recovered: moved aside under quarantine/, never deleted, listed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs

from amqplite.store.journal import fsync_dir
from amqplite.store.metadata import QueueRecord

log = logging.getLogger("amqplite.store")

QUARANTINE_DIR = "quarantine"
REASON_NAME = "quarantine.json"


@attrs.frozen
class QuarantinedQueue:
    """The journal of a queue that could not be recovered, kept aside."""

    vhost: str
    name: str
    reason: str
    path: Path
    bytes: int
    arguments: dict[str, Any] = attrs.field(factory=dict)


def move_aside(data_dir: Path, source: Path, record: QueueRecord, reason: str) -> Path:
    """Move a queue's journal directory under quarantine/ with a note of why; where it went."""
    root = data_dir / QUARANTINE_DIR
    root.mkdir(exist_ok=True)
    target = root / source.name
    suffix = 1
    while target.exists():
        target = root / f"{source.name}.{suffix}"
        suffix += 1
    if source.exists():
        os.replace(source, target)
        fsync_dir(source.parent)
    else:
        target.mkdir()
    note = {
        "vhost": record.vhost,
        "name": record.name,
        "reason": reason,
        "arguments": _jsonable(record.arguments),
    }
    with open(target / REASON_NAME, "w") as file:
        json.dump(note, file)
        file.flush()
        os.fsync(file.fileno())
    fsync_dir(target)
    fsync_dir(root)
    log.error(
        "queue %r in vhost %r could not be recovered (%s): its journal %s was moved to %s",
        record.name,
        record.vhost,
        reason,
        source,
        target,
    )
    return target


def list_quarantine(data_dir: Path) -> list[QuarantinedQueue]:
    """What quarantine/ holds, in name order."""
    root = data_dir / QUARANTINE_DIR
    if not root.is_dir():
        return []
    found: list[QuarantinedQueue] = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        try:
            note = json.loads((path / REASON_NAME).read_text())
        except (OSError, ValueError):
            note = {}
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        found.append(
            QuarantinedQueue(
                str(note.get("vhost", "?")),
                str(note.get("name", path.name)),
                str(note.get("reason", "unknown")),
                path,
                size,
                dict(note.get("arguments") or {}),
            )
        )
    return found


def _jsonable(value: Any) -> Any:
    """Queue arguments as JSON can hold them (bytes as text)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
