"""An etcd v3 client over the JSON gateway (httpx on trio): kv, txn, leases and streamed watches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from amqplite.cluster.etcd_codec import (
    Compare,
    Delete,
    EtcdError,
    EtcdUnavailable,
    Get,
    JsonObject,
    KeyValue,
    Lease,
    Operation,
    Put,
    RangeResult,
    TxnResult,
    WatchResponse,
    decode_body,
    decode_stream_line,
    encode_txn,
    encode_watch,
    header_revision,
    prefix_end,
)

DEFAULT_TIMEOUT = 2.0  # seconds for one request to one endpoint


class EtcdClient:
    """Talks to the first endpoint that answers; a transport failure moves on to the next one."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = tuple(url.rstrip("/") for url in endpoints)
        self.timeout = timeout
        self._current = 0
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    def _order(self) -> list[str]:
        """Endpoints to try: the one that answered last, then the others in order."""
        n = len(self.endpoints)
        return [self.endpoints[(self._current + i) % n] for i in range(n)]

    def _answered(self, endpoint: str) -> None:
        self._current = self.endpoints.index(endpoint)

    async def _post(self, path: str, body: JsonObject) -> JsonObject:
        """POST a JSON body to the first endpoint that answers; etcd's refusals raise EtcdError."""
        reason = "no endpoint"
        for endpoint in self._order():
            try:
                response = await self._http.post(endpoint + path, json=body)
            except httpx.TransportError as exc:
                reason = _describe(exc)
                continue
            self._answered(endpoint)
            return _answer(response.status_code, response.text)
        raise EtcdUnavailable(self.endpoints, reason)

    async def health(self) -> str:
        """The endpoint that reports itself healthy (raises EtcdUnavailable if none does)."""
        reason = "no endpoint"
        for endpoint in self._order():
            try:
                response = await self._http.get(endpoint + "/health")
            except httpx.TransportError as exc:
                reason = _describe(exc)
                continue
            try:
                healthy = response.json().get("health") == "true"
            except ValueError:
                healthy = False
            if healthy:
                self._answered(endpoint)
                return endpoint
            reason = f"{endpoint} is not healthy ({response.status_code} {response.text.strip()})"
        raise EtcdUnavailable(self.endpoints, reason)

    # -- keys ------------------------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Set a key; the store revision of the write."""
        return header_revision(await self._post("/v3/kv/put", Put(key, value, lease).encode()))

    async def range(self, key: bytes, range_end: bytes = b"", *, limit: int = 0) -> RangeResult:
        """The keys in [key, range_end) (just key when range_end is empty)."""
        return RangeResult.decode(
            await self._post("/v3/kv/range", Get(key, range_end, limit).encode())
        )

    async def get(self, key: bytes) -> KeyValue | None:
        """One key, or None."""
        result = await self.range(key)
        return result.kvs[0] if result.kvs else None

    async def get_prefix(self, prefix: bytes) -> RangeResult:
        """Every key that starts with prefix."""
        return await self.range(prefix, prefix_end(prefix))

    async def delete(self, key: bytes, range_end: bytes = b"") -> int:
        """Delete a key or [key, range_end); how many were deleted."""
        answer = await self._post("/v3/kv/deleterange", Delete(key, range_end).encode())
        return int(answer.get("deleted", 0))

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Operation],
        failure: Sequence[Operation] = (),
    ) -> TxnResult:
        """Atomically: if every compare holds run success, else failure."""
        return TxnResult.decode(
            await self._post("/v3/kv/txn", encode_txn(compare, success, failure))
        )

    # -- leases ----------------------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> Lease:
        """A new lease of ttl seconds."""
        return Lease.decode(await self._post("/v3/lease/grant", {"TTL": ttl}))

    async def lease_keepalive(self, lease_id: int) -> Lease:
        """Refresh a lease; ttl 0 in the answer means it has expired (or was revoked)."""
        answer = await self._post("/v3/lease/keepalive", {"ID": str(lease_id)})
        result = answer.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"keepalive answer without a result: {answer!r}")
        return Lease.decode(result)

    async def lease_revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys (a lease already gone is not an error)."""
        try:
            await self._post("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as exc:
            if exc.code != 5 or isinstance(exc, EtcdUnavailable):  # 5: lease not found
                raise

    # -- watches ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0
    ) -> AsyncIterator[AsyncIterator[WatchResponse]]:
        """A watch on [key, range_end) from start_revision: the stream of its responses.

        The stream ends when etcd closes it; a transport failure raises EtcdUnavailable.
        """
        body = encode_watch(key, range_end, start_revision)
        timeout = httpx.Timeout(self.timeout, read=None)  # a quiet watch is not a dead one
        reason = "no endpoint"
        for endpoint in self._order():
            try:
                request = self._http.build_request(
                    "POST", endpoint + "/v3/watch", json=body, timeout=timeout
                )
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                reason = _describe(exc)
                continue
            self._answered(endpoint)
            try:
                if response.status_code != 200:
                    await response.aread()
                    _answer(response.status_code, response.text)
                yield self._watch_stream(response)
            finally:
                await response.aclose()
            return
        raise EtcdUnavailable(self.endpoints, reason)

    async def _watch_stream(self, response: httpx.Response) -> AsyncIterator[WatchResponse]:
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield WatchResponse.decode(decode_stream_line(line))
        except httpx.TransportError as exc:
            raise EtcdUnavailable(self.endpoints, _describe(exc)) from None


def _answer(status: int, text: str) -> JsonObject:
    """A decoded answer; a non-200 status without etcd's error object is an EtcdError too."""
    obj: Any = decode_body(text)
    if status != 200:
        raise EtcdError(f"HTTP {status}: {text.strip()[:120]}")
    return dict(obj)


def _describe(exc: httpx.TransportError) -> str:
    """A transport error as one short phrase."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
