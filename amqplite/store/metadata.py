"""The metadata log: durable exchanges, queues and bindings as records, compacted when it grows."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, BinaryIO

import attrs

from amqplite.store.journal import SyncJob, SyncTask, cut_tail, fsync_dir
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
        # vhosts, users, permissions and policies: the fields of their records, by identity
        self.vhosts: dict[str, list[Any]] = {}
        self.users: dict[str, list[Any]] = {}
        self.permissions: dict[tuple[str, str], list[Any]] = {}
        self.policies: dict[tuple[str, str], list[Any]] = {}
        # (user, vhost) -> {exchange: {"write": regex, "read": regex}}
        self.topic_permissions: dict[tuple[str, str], dict[str, Any]] = {}
        self.limits: dict[tuple[str, str], dict[str, Any]] = {}  # ("user"|"vhost", name) -> limits
        # plugins' durable records: (vhost, scope) -> key -> value
        self.plugin_state: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        # deleted at run time: undone at boot even if the configuration creates them again
        self.deleted_users: set[str] = set()
        self.cleared_permissions: set[tuple[str, str]] = set()
        self.record_count = 0
        self.buffer = bytearray()
        self.file: BinaryIO | None = None
        self.problems: list[str] = []

    @property
    def live_count(self) -> int:
        """How many records a compacted log would hold."""
        return (
            len(self.exchanges)
            + len(self.queues)
            + len(self.bindings)
            + len(self.vhosts)
            + len(self.users)
            + len(self.permissions)
            + len(self.policies)
            + len(self.deleted_users)
            + len(self.cleared_permissions)
            + len(self.topic_permissions)
            + len(self.limits)
            + sum(len(records) for records in self.plugin_state.values())
        )

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
        if not path.exists() or meta.due_for_compaction(compact_over):
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
        else:
            self._apply_config(record_type, fields)

    def _apply_config(self, record_type: RecordType, fields: list[Any]) -> None:
        if record_type == RecordType.VHOST:
            self.vhosts[fields[0]] = fields
        elif record_type == RecordType.VHOST_DELETED:
            name = fields[0]
            self.vhosts.pop(name, None)
            for key in [k for k in self.permissions if k[1] == name]:
                del self.permissions[key]
            for key in [k for k in self.policies if k[0] == name]:
                del self.policies[key]
            for key in [k for k in self.topic_permissions if k[1] == name]:
                del self.topic_permissions[key]
            self.limits.pop(("vhost", name), None)
        elif record_type == RecordType.USER:
            self.users[fields[0]] = fields
            self.deleted_users.discard(fields[0])
        elif record_type == RecordType.USER_DELETED:
            name = fields[0]
            self.users.pop(name, None)
            self.deleted_users.add(name)
            for key in [k for k in self.permissions if k[0] == name]:
                del self.permissions[key]
            for key in [k for k in self.topic_permissions if k[0] == name]:
                del self.topic_permissions[key]
            self.limits.pop(("user", name), None)
        elif record_type == RecordType.PERMISSION:
            key = (fields[0], fields[1])
            self.permissions[key] = fields
            self.cleared_permissions.discard(key)
        elif record_type == RecordType.PERMISSION_CLEARED:
            key = (fields[0], fields[1])
            self.permissions.pop(key, None)
            self.cleared_permissions.add(key)
        elif record_type == RecordType.POLICY:
            self.policies[(fields[0], fields[1])] = fields
        elif record_type == RecordType.POLICY_CLEARED:
            self.policies.pop((fields[0], fields[1]), None)
        elif record_type in (RecordType.TOPIC_PERMISSIONS, RecordType.LIMITS):
            held = (
                self.topic_permissions
                if record_type == RecordType.TOPIC_PERMISSIONS
                else self.limits
            )
            if fields[2]:
                held[(fields[0], fields[1])] = dict(fields[2])
            else:
                held.pop((fields[0], fields[1]), None)
        else:
            self._apply_plugin_state(record_type, fields)

    def _apply_plugin_state(self, record_type: RecordType, fields: list[Any]) -> None:
        if record_type == RecordType.PLUGIN_STATE:
            scope, vhost, key, value = fields
            self.plugin_state.setdefault((vhost, scope), {})[key] = value
        elif record_type == RecordType.PLUGIN_STATE_DELETED:
            scope, vhost, key = fields
            records = self.plugin_state.get((vhost, scope))
            if records is not None:
                records.pop(key, None)
                if not records:
                    del self.plugin_state[(vhost, scope)]
        elif record_type == RecordType.PLUGIN_SCOPE_CLEARED:
            scope, vhost = fields
            self.plugin_state.pop((vhost, scope), None)

    # -- writing -------------------------------------------------------------------------

    def append(self, record_type: RecordType, *fields: Any) -> None:
        """Record a change; it is written at the next write() and durable after that commit."""
        self.apply(record_type, list(fields))
        self.buffer += encode_fields(record_type, *fields)

    def write(self, job: SyncJob) -> None:
        """Hand buffered records to the job, which writes and syncs them."""
        if not self.buffer or self.file is None:
            return
        data, self.buffer = self.buffer, bytearray()
        job.write(self.file, data)  # in the worker thread

    def _live_records(self) -> list[bytes]:
        out: list[bytes] = []
        for fields in self.vhosts.values():
            out.append(encode_fields(RecordType.VHOST, *fields))
        for name in sorted(self.deleted_users):
            out.append(encode_fields(RecordType.USER_DELETED, name))
        for fields in self.users.values():
            out.append(encode_fields(RecordType.USER, *fields))
        for user, vhost in sorted(self.cleared_permissions):
            out.append(encode_fields(RecordType.PERMISSION_CLEARED, user, vhost))
        for fields in self.permissions.values():
            out.append(encode_fields(RecordType.PERMISSION, *fields))
        for fields in self.policies.values():
            out.append(encode_fields(RecordType.POLICY, *fields))
        for (user, vhost), table in self.topic_permissions.items():
            out.append(encode_fields(RecordType.TOPIC_PERMISSIONS, user, vhost, table))
        for (kind, name), table in self.limits.items():
            out.append(encode_fields(RecordType.LIMITS, kind, name, table))
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
        for (vhost, scope), records in self.plugin_state.items():
            for key, value in records.items():
                out.append(encode_fields(RecordType.PLUGIN_STATE, scope, vhost, key, value))
        return out

    def compact(self) -> None:
        """Rewrite the log with only live records: temp file, fsync, rename, fsync directory."""
        records = self._live_records()
        _rewrite(self.path, records, fsync=True)
        self.record_count = len(records)

    def due_for_compaction(self, compact_over: int = 1000) -> bool:
        """True when most records are dead (deleted or replaced entities)."""
        return self.record_count > max(compact_over, 2 * self.live_count)

    def start_compaction(self, job: SyncJob) -> MetadataCompaction:
        """Rewrite the log after this commit's fsync (call after write(job)); complete it afterwards."""
        task = MetadataCompaction(self, self._live_records(), self.record_count)
        job.after_sync.append(task)
        return task

    def compaction_done(self, task: MetadataCompaction) -> None:
        """Append to the compacted file from now on (the old one was replaced by rename)."""
        if not task.ok:
            return
        if self.file is not None:
            self.file.close()
            self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self.record_count = len(task.records) + self.record_count - task.count_at_start

    def close(self) -> None:
        """Close the file (write() and a sync first, or the buffer is lost)."""
        if self.file is not None:
            self.file.close()
            self.file = None


def _rewrite(path: Path, records: list[bytes], fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(file_header(FileKind.METADATA))
        for record in records:
            file.write(record)
        file.flush()
        if fsync:
            os.fsync(file.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


class MetadataCompaction(SyncTask):
    """Rewrite the metadata log with its live records, in the committer's worker thread."""

    def __init__(self, log_: MetadataLog, records: list[bytes], count_at_start: int) -> None:
        self.path = log_.path
        self.records = records
        self.count_at_start = count_at_start
        self.ok = False

    def run(self, fsync: bool) -> None:
        """Temp file, fsync, rename, fsync the directory; on failure the old log stays."""
        try:
            _rewrite(self.path, self.records, fsync)
            self.ok = True
        except OSError:
            log.exception("compaction of %s failed; the log stays as it is", self.path)
