"""Sans-I/O etcd v3 JSON gateway: request bodies out, decoded values in; no sockets here."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

JsonObject = dict[str, Any]

COMPARE_TARGETS = {"version": "VERSION", "create": "CREATE", "mod": "MOD", "value": "VALUE"}
COMPARE_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


class EtcdError(Exception):
    """etcd refused a request (code is the gRPC status), or its answer was not understood."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"etcd error {code}: {message}")
        self.code = code
        self.message = message


class EtcdUnavailable(EtcdError):
    """No etcd endpoint answered: the endpoints tried and the last transport error."""

    def __init__(self, endpoints: Sequence[str], reason: str) -> None:
        super().__init__(f"cannot reach etcd at {', '.join(endpoints)}: {reason}")
        self.endpoints = tuple(endpoints)
        self.reason = reason


def b64(data: bytes) -> str:
    """bytes as the gateway spells them."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    """The gateway's base64 text as bytes; absent means empty."""
    if text is None:
        return b""
    if not isinstance(text, str):
        raise EtcdError(f"expected base64 text, got {text!r}")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise EtcdError(f"bad base64 in answer: {exc}") from None


def _int(obj: Mapping[str, Any], key: str) -> int:
    """An int64 field: the gateway sends strings, and omits zeros."""
    value = obj.get(key, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EtcdError(f"expected an integer in {key!r}, got {value!r}") from None


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes [prefix, end) every key starting with prefix."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


@attrs.frozen
class KeyValue:
    """One stored key with its revisions and lease."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> KeyValue:
        """A kv object of an answer."""
        return cls(
            key=unb64(obj.get("key")),
            value=unb64(obj.get("value")),
            create_revision=_int(obj, "create_revision"),
            mod_revision=_int(obj, "mod_revision"),
            version=_int(obj, "version"),
            lease=_int(obj, "lease"),
        )


@attrs.frozen
class RangeResult:
    """The keys of a range and the store revision they were read at."""

    revision: int
    kvs: tuple[KeyValue, ...]
    count: int
    more: bool
    cluster_id: int = 0  # etcd's cluster id: a new one means an etcd that started empty

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> RangeResult:
        """A range answer (also one inside a txn)."""
        header = obj.get("header", {})
        return cls(
            revision=header_revision(obj),
            kvs=tuple(KeyValue.decode(kv) for kv in obj.get("kvs", ())),
            count=_int(obj, "count"),
            more=bool(obj.get("more", False)),
            cluster_id=_int(header, "cluster_id") if isinstance(header, Mapping) else 0,
        )


@attrs.frozen
class Compare:
    """One txn condition on a key: its version, create/mod revision or value against a target."""

    key: bytes
    target: Literal["version", "create", "mod", "value"]
    op: Literal["==", "!=", ">", "<"]
    operand: int | bytes

    def encode(self) -> JsonObject:
        """The compare object of a txn body."""
        body: JsonObject = {
            "key": b64(self.key),
            "target": COMPARE_TARGETS[self.target],
            "result": COMPARE_RESULTS[self.op],
        }
        if self.target == "value":
            if not isinstance(self.operand, bytes):
                raise TypeError("a value compare needs bytes")
            body["value"] = b64(self.operand)
        else:
            if not isinstance(self.operand, int):
                raise TypeError(f"a {self.target} compare needs an int")
            field = {"version": "version", "create": "create_revision", "mod": "mod_revision"}
            body[field[self.target]] = str(self.operand)
        return body


@attrs.frozen
class Put:
    """Set a key (optionally attached to a lease)."""

    key: bytes
    value: bytes
    lease: int = 0

    def encode(self) -> JsonObject:
        """The put body (also the request_put of a txn)."""
        body: JsonObject = {"key": b64(self.key), "value": b64(self.value)}
        if self.lease:
            body["lease"] = str(self.lease)
        return body


@attrs.frozen
class Get:
    """Read a key, or [key, range_end) when range_end is set."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0

    def encode(self) -> JsonObject:
        """The range body (also the request_range of a txn)."""
        body: JsonObject = {"key": b64(self.key)}
        if self.range_end:
            body["range_end"] = b64(self.range_end)
        if self.limit:
            body["limit"] = str(self.limit)
        return body


@attrs.frozen
class Delete:
    """Delete a key, or [key, range_end) when range_end is set."""

    key: bytes
    range_end: bytes = b""

    def encode(self) -> JsonObject:
        """The deleterange body (also the request_delete_range of a txn)."""
        body: JsonObject = {"key": b64(self.key)}
        if self.range_end:
            body["range_end"] = b64(self.range_end)
        return body


Operation = Put | Get | Delete
_TXN_REQUEST = {Put: "request_put", Get: "request_range", Delete: "request_delete_range"}


def encode_txn(
    compare: Sequence[Compare], success: Sequence[Operation], failure: Sequence[Operation] = ()
) -> JsonObject:
    """A txn body: if every compare holds, run success, else failure, atomically."""
    return {
        "compare": [c.encode() for c in compare],
        "success": [{_TXN_REQUEST[type(op)]: op.encode()} for op in success],
        "failure": [{_TXN_REQUEST[type(op)]: op.encode()} for op in failure],
    }


TxnResponse = RangeResult | int | None  # a range's keys, a delete's count, or a put's nothing


@attrs.frozen
class TxnResult:
    """Whether the compares held, the revision after the txn, and each operation's answer."""

    succeeded: bool
    revision: int
    responses: tuple[TxnResponse, ...]

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> TxnResult:
        """A txn answer."""
        responses: list[TxnResponse] = []
        for item in obj.get("responses", ()):
            if "response_range" in item:
                responses.append(RangeResult.decode(item["response_range"]))
            elif "response_delete_range" in item:
                responses.append(_int(item["response_delete_range"], "deleted"))
            else:
                responses.append(None)
        return cls(bool(obj.get("succeeded", False)), header_revision(obj), tuple(responses))


@attrs.frozen
class Lease:
    """A granted (or refreshed) lease; ttl 0 means it no longer exists."""

    id: int
    ttl: int

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> Lease:
        """A lease grant or keepalive answer."""
        return cls(_int(obj, "ID"), max(_int(obj, "TTL"), 0))


@attrs.frozen
class WatchEvent:
    """One change seen by a watch: a put or a delete of a key."""

    type: Literal["put", "delete"]
    kv: KeyValue
    prev_kv: KeyValue | None


@attrs.frozen
class WatchResponse:
    """One message of a watch stream."""

    revision: int
    created: bool
    canceled: bool
    compact_revision: int
    cancel_reason: str
    events: tuple[WatchEvent, ...]

    @classmethod
    def decode(cls, obj: Mapping[str, Any]) -> WatchResponse:
        """A watch stream's `result` object."""
        events = tuple(
            WatchEvent(
                "delete" if ev.get("type") == "DELETE" else "put",
                KeyValue.decode(ev.get("kv", {})),
                KeyValue.decode(ev["prev_kv"]) if "prev_kv" in ev else None,
            )
            for ev in obj.get("events", ())
        )
        return cls(
            revision=header_revision(obj),
            created=bool(obj.get("created", False)),
            canceled=bool(obj.get("canceled", False)),
            compact_revision=_int(obj, "compact_revision"),
            cancel_reason=str(obj.get("cancel_reason", "")),
            events=events,
        )


def encode_watch(key: bytes, range_end: bytes = b"", start_revision: int = 0) -> JsonObject:
    """The body that opens a watch on a key or range, from a revision (0: from now)."""
    request: JsonObject = {"key": b64(key), "prev_kv": True, "progress_notify": True}
    if range_end:
        request["range_end"] = b64(range_end)
    if start_revision:
        request["start_revision"] = str(start_revision)
    return {"create_request": request}


def header_revision(obj: Mapping[str, Any]) -> int:
    """The store revision in an answer's header."""
    header = obj.get("header", {})
    return _int(header, "revision") if isinstance(header, Mapping) else 0


def decode_body(text: str | bytes) -> JsonObject:
    """One JSON answer; an `error` answer raises EtcdError with etcd's code and message."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise EtcdError(f"not a JSON answer: {_clip(text)}") from None
    if not isinstance(obj, dict):
        raise EtcdError(f"not a JSON object: {_clip(text)}")
    error = obj.get("error")
    if error is not None:
        if isinstance(error, dict):  # streamed answers nest it: {grpc_code, message, ...}
            raise EtcdError(str(error.get("message", error)), _opt_int(error.get("grpc_code")))
        raise EtcdError(str(obj.get("message") or error), _opt_int(obj.get("code")))
    return obj


def decode_stream_line(line: str) -> JsonObject:
    """The `result` of one line of a streamed answer (watch, keepalive)."""
    obj = decode_body(line)
    result = obj.get("result")
    if not isinstance(result, dict):
        raise EtcdError(f"a stream line without a result: {_clip(line)}")
    return result


def _opt_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _clip(text: str | bytes) -> str:
    shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return shown if len(shown) <= 120 else shown[:117] + "..."
