"""The metadata log: durable exchanges, queues and bindings as records, compacted when it grows."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from amqplite.store.journal import SyncJob, cut_tail, fsync_dir
from amqplite.store.records import (
    FILE_HEADER,
    MAGIC,
    METADATA_LAYOUT,
    FileKind,
    RecordType,
    StoreFileError,
    decode_fields,
    encode_fields,
    file_header,
    read_header,
    scan,
)

log = logging.getLogger("amqplite.store")

METADATA_NAME = "metadata.log"


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@attrs.frozen
class ExchangeRecord:
    """A durable exchange as stored."""

    vhost: str
    name: str
    type_name: str
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


@attrs.frozen
class QueueRecord:
    """A durable queue as stored; `directory` names its journal directory under queues/."""

    vhost: str
    name: str
    directory: str
    auto_delete: bool
    arguments: dict[str, Any]


@attrs.frozen
class BindingRecord:
    """A binding between durable ends as stored."""

    vhost: str
    source: str
    kind: str  # "queue" | "exchange"
    destination: str
    routing_key: str
    arguments: dict[str, Any]

    @property
    def key(self) -> tuple[Any, ...]:
        """The binding's identity (arguments included, order-independent)."""
        return (
            self.vhost,
            self.source,
            self.kind,
            self.destination,
            self.routing_key,
            _freeze(self.arguments),
        )


class MetadataLog:
    """Durable entity definitions: an append-only log replayed into dictionaries at open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exchanges: dict[tuple[str, str], ExchangeRecord] = {}
        self.queues: dict[tuple[str, str], QueueRecord] = {}
        self.bindings: dict[tuple[Any, ...], BindingRecord] = {}
        self.record_count = 0
        self.buffer = bytearray()
        self.file: BinaryIO | None = None
        self.problems: list[str] = []

    @property
    def live_count(self) -> int:
        """How many records a compacted log would hold."""
        return len(self.exchanges) + len(self.queues) + len(self.bindings)

    # -- reading -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, compact_over: int = 1000) -> MetadataLog:
        """Replay the log (cutting a torn tail), compacting it when mostly dead records."""
        meta = cls(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        if path.exists():
            meta._load()
        if not path.exists() or meta.record_count > max(compact_over, 2 * meta.live_count):
            meta.compact()
        meta.file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        return meta

    def _load(self) -> None:
        data = self.path.read_bytes()
        if len(data) < FILE_HEADER.size and MAGIC.startswith(data[:4]):
            log.info("%s: empty (created just before a crash); starting afresh", self.path)
            self.path.unlink()
            return
        try:
            read_header(data, FileKind.METADATA)
        except StoreFileError as exc:
            text = f"{self.path}: {exc}; starting with no durable definitions"
            log.error("%s", text)
            self.problems.append(text)
            self.path.rename(self.path.with_name(self.path.name + ".damaged"))
            return
        result = scan(data, FILE_HEADER.size)
        for record_type, payload, _ in result.records:
            self.apply(
                RecordType(record_type),
                decode_fields(payload, METADATA_LAYOUT[RecordType(record_type)]),
            )
        if result.problem is not None:
            text = f"{self.path}: {result.problem} at offset {result.end}; cut off {len(data) - result.end} bytes"
            log.warning("%s", text)
            self.problems.append(text)
            cut_tail(self.path, result.end)

    def apply(self, record_type: RecordType, fields: list[Any]) -> None:
        """Update the dictionaries with one record."""
        self.record_count += 1
        if record_type == RecordType.EXCHANGE:
            exchange = ExchangeRecord(*fields)
            self.exchanges[(exchange.vhost, exchange.name)] = exchange
        elif record_type == RecordType.EXCHANGE_DELETED:
            vhost, name = fields
            self.exchanges.pop((vhost, name), None)
            for key, binding in list(self.bindings.items()):
                if binding.vhost == vhost and (
                    binding.source == name
                    or (binding.kind == "exchange" and binding.destination == name)
                ):
                    del self.bindings[key]
        elif record_type == RecordType.QUEUE:
            queue = QueueRecord(*fields)
            self.queues[(queue.vhost, queue.name)] = queue
        elif record_type == RecordType.QUEUE_DELETED:
            vhost, name = fields
            self.queues.pop((vhost, name), None)
            for key, binding in list(self.bindings.items()):
                if (
                    binding.vhost == vhost
                    and binding.kind == "queue"
                    and binding.destination == name
                ):
                    del self.bindings[key]
        elif record_type == RecordType.BINDING:
            binding = BindingRecord(*fields)
            self.bindings[binding.key] = binding
        elif record_type == RecordType.BINDING_REMOVED:
            self.bindings.pop(BindingRecord(*fields).key, None)

    # -- writing -------------------------------------------------------------------------

    def append(self, record_type: RecordType, *fields: Any) -> None:
        """Record a change; it is written at the next write() and durable after that commit."""
        self.apply(record_type, list(fields))
        self.buffer += encode_fields(record_type, *fields)

    def write(self, job: SyncJob) -> None:
        """Write buffered records and enlist the file for fsync."""
        if not self.buffer or self.file is None:
            return
        self.file.write(self.buffer)
        self.buffer.clear()
        job.add_file(self.file)

    def _live_records(self) -> list[bytes]:
        out: list[bytes] = []
        for e in self.exchanges.values():
            out.append(
                encode_fields(
                    RecordType.EXCHANGE,
                    e.vhost,
                    e.name,
                    e.type_name,
                    e.auto_delete,
                    e.internal,
                    e.arguments,
                )
            )
        for q in self.queues.values():
            out.append(
                encode_fields(
                    RecordType.QUEUE, q.vhost, q.name, q.directory, q.auto_delete, q.arguments
                )
            )
        for b in self.bindings.values():
            out.append(
                encode_fields(
                    RecordType.BINDING,
                    b.vhost,
                    b.source,
                    b.kind,
                    b.destination,
                    b.routing_key,
                    b.arguments,
                )
            )
        return out

    def compact(self) -> None:
        """Rewrite the log with only live records: temp file, fsync, rename, fsync directory."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        records = self._live_records()
        with open(tmp, "wb") as file:
            file.write(file_header(FileKind.METADATA))
            for record in records:
                file.write(record)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.record_count = len(records)

    def close(self) -> None:
        """Close the file (write() and a sync first, or the buffer is lost)."""
        if self.file is not None:
            self.file.close()
            self.file = None
