"""HTTP/1.1 with h11 over trio streams: bounded requests, keep-alive, timeouts, JSON errors."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import h11
import trio

log = logging.getLogger("amqplite.management")

RECEIVE_SIZE = 64 * 1024

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@attrs.frozen
class HttpLimits:
    """Bounds that keep a slow, broken or hostile HTTP client from costing the broker anything."""

    max_head_bytes: int = 16 * 1024  # request line + headers
    max_body_bytes: int = 64 * 1024 * 1024  # definitions imports can be large
    read_timeout: float = 30.0  # between bytes of a request, once it has started
    idle_timeout: float = 60.0  # keep-alive: between requests
    write_timeout: float = 30.0  # a client that does not read its response is dropped
    max_connections: int = 256


@attrs.frozen
class Request:
    """One HTTP request, fully read: method, target split into path and query, headers, body."""

    method: str
    path: str  # raw path, still percent-encoded
    query: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes = b""

    @classmethod
    def from_h11(cls, event: h11.Request, body: bytes) -> Request:
        """Build from h11's request event and the body bytes."""
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers
        }
        return cls(event.method.decode("ascii"), path, query, headers, body)


@attrs.frozen
class Response:
    """One HTTP response: status, extra headers and the body bytes."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    durable_mark: Any = None  # the commit the request's records need before the response is sent
    finish: Callable[[], Response] | None = None
    """Builds the real response from disk reads (message bodies): run in a worker thread."""

    @classmethod
    def json(
        cls, value: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        """A JSON response."""
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, "application/json", headers)

    @classmethod
    def empty(cls, status: int = 204, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        """A response without a body (204 No Content, 201 Created)."""
        return cls(status, b"", "application/json", headers)


class HttpError(Exception):
    """An error that becomes a 4xx/5xx JSON response `{"error": ..., "reason": ...}`."""

    def __init__(
        self,
        status: int,
        reason: str,
        error: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error or ERROR_NAMES.get(status, "error")
        self.headers = headers
        self.extra = dict(extra or {})

    def response(self) -> Response:
        """The JSON response for this error."""
        return Response.json(
            {"error": self.error, "reason": self.reason, **self.extra}, self.status, self.headers
        )


ERROR_NAMES = {
    400: "bad_request",
    401: "not_authorised",
    403: "not_authorised",
    404: "Object Not Found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    431: "request_too_large",
    500: "internal_error",
    503: "service_unavailable",
}

Handler = Callable[[Request], Response]
WaitDurable = Callable[[Any], Awaitable[None]]
"""Returns once a commit mark (Response.durable_mark) is on disk."""


def _response_headers(response: Response, keep_alive: bool) -> list[tuple[str, str]]:
    headers = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("cache-control", "no-cache"),
        ("server", "amqplite"),
        *response.headers,
    ]
    if not keep_alive:
        headers.append(("connection", "close"))
    return headers


class HttpConnection:
    """Serves requests on one client stream until it closes, times out or misbehaves."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        limits: HttpLimits,
        wait_durable: WaitDurable | None = None,
    ) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits
        self.wait_durable = wait_durable
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)

    async def run(self) -> None:
        """Serve until done; never raises for client behaviour."""
        try:
            while True:
                request = await self._read_request()
                if request is None:
                    return
                try:
                    response = self.handler(request)
                except HttpError as exc:
                    response = exc.response()
                except Exception:
                    log.exception(
                        "management handler failed for %s %s", request.method, request.path
                    )
                    response = HttpError(500, "internal error, see the broker log").response()
                if response.durable_mark is not None and self.wait_durable is not None:
                    await self.wait_durable(response.durable_mark)  # durable before the answer
                if response.finish is not None:  # file reads: never on the event loop
                    response = await self._finish(response.finish)
                if not await self._send_response(response):
                    return
                if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _finish(self, finish: Callable[[], Response]) -> Response:
        """Run a response's disk reads in a worker thread; a failure is a 500."""
        try:
            return await trio.to_thread.run_sync(finish)
        except Exception:
            log.exception("management response could not be completed")
            return HttpError(500, "internal error, see the broker log").response()

    async def _next_event(self, wait: float) -> Any:
        """The next h11 event, reading more bytes as needed; raises TooSlow on timeout."""
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(wait) as scope:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            if scope.cancelled_caught:
                raise _TooSlow
            self.conn.receive_data(bytes(data))

    async def _read_request(self) -> Request | None:
        """Read one whole request; None when the client is gone or was answered with an error."""
        try:
            event = await self._next_event(self.limits.idle_timeout)
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)
            length = _content_length(event)
            if length is not None and length > self.limits.max_body_bytes:
                await self._fail(
                    HttpError(413, f"request body over {self.limits.max_body_bytes} bytes")
                )
                return None
            if self.conn.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            chunks: list[bytes] = []
            size = 0
            while True:
                part = await self._next_event(self.limits.read_timeout)
                if isinstance(part, h11.Data):
                    size += len(part.data)
                    if size > self.limits.max_body_bytes:
                        await self._fail(
                            HttpError(413, f"request body over {self.limits.max_body_bytes} bytes")
                        )
                        return None
                    chunks.append(part.data)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed mid-body
                    return None
            return Request.from_h11(event, b"".join(chunks))
        except _TooSlow:
            if self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]:
                await self._fail(HttpError(408, "request not received in time"))
            return None
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            await self._fail(HttpError(status, f"malformed request: {exc}"))
            return None

    async def _fail(self, error: HttpError) -> None:
        """Answer a request that could not be read, then close."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = error.response()
        try:
            await self._send(
                h11.Response(
                    status_code=response.status,
                    headers=_response_headers(response, keep_alive=False),
                    reason=REASONS.get(response.status, "").encode(),
                )
            )
            await self._send(h11.Data(data=response.body))
            await self._send(h11.EndOfMessage())
        except (h11.LocalProtocolError, _TooSlow):
            return

    async def _send_response(self, response: Response) -> bool:
        keep_alive = self.conn.their_state is not h11.MUST_CLOSE
        try:
            await self._send(
                h11.Response(
                    status_code=response.status,
                    headers=_response_headers(response, keep_alive),
                    reason=REASONS.get(response.status, "").encode(),
                )
            )
            if response.body:
                await self._send(h11.Data(data=response.body))
            await self._send(h11.EndOfMessage())
        except (h11.LocalProtocolError, _TooSlow):
            return False
        return True

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event)
        if data:
            with trio.move_on_after(self.limits.write_timeout) as scope:
                await self.stream.send_all(data)
            if scope.cancelled_caught:
                raise _TooSlow


class _TooSlow(Exception):
    """The client did not send or receive in time."""


def _content_length(event: h11.Request) -> int | None:
    for name, value in event.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def serve_http(
    handler: Handler,
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    limits: HttpLimits,
    *,
    wait_durable: WaitDurable | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept HTTP connections on the listeners and serve each in its own task."""
    active = 0

    async def serve_one(stream: trio.abc.Stream) -> None:
        nonlocal active
        if active >= limits.max_connections:
            await _refuse(stream, limits)
            return
        active += 1
        try:
            await HttpConnection(stream, handler, limits, wait_durable).run()
        finally:
            active -= 1

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, serve_one, listeners)
        task_status.started()


async def _refuse(stream: trio.abc.Stream, limits: HttpLimits) -> None:
    """Over the connection limit: 503 and close, without reading the request."""
    body = json.dumps(
        {"error": "service_unavailable", "reason": "too many HTTP connections"}
    ).encode()
    data = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with trio.move_on_after(limits.write_timeout):
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.send_all(data)
    await trio.aclose_forcefully(stream)
