"""A queue's leadership as etcd holds it, read through etcd's JSON gateway (cluster benchmarks)."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from typing import Any


def _queue_record(etcd: str, queue: str, leaf: str) -> Any:
    """One leadership record of a queue of vhost "/" (etcd's JSON gateway), decoded; None if absent."""
    key = f"/amqplite/amqplite/queues/%2F/{urllib.parse.quote(queue, safe='')}/{leaf}".encode()
    body = json.dumps({"key": base64.b64encode(key).decode()}).encode()
    request = urllib.request.Request(etcd + "/v3/kv/range", body)
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.load(response).get("kvs") or []
    return json.loads(base64.b64decode(kvs[0]["value"])) if kvs else None


def queue_leader(etcd: str, queue: str) -> str | None:
    """The node leading the queue, or None if none does yet."""
    record = _queue_record(etcd, queue, "leader")
    return None if record is None else str(record["node"])


def queue_in_sync(etcd: str, queue: str) -> list[str]:
    """The queue's in-sync set."""
    record = _queue_record(etcd, queue, "isr")
    return [] if record is None else [str(member) for member in record["members"]]
