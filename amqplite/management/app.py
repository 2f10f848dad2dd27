"""The management application: routing, basic auth, tags and vhost permissions, error mapping."""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import re
import socket
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from amqplite.broker.broker import Broker, User
from amqplite.broker.queue import Queue
from amqplite.broker.vhost import VHost
from amqplite.config.models import Config
from amqplite.management.http import HttpError, Request, Response
from amqplite.management.rates import RateTracker
from amqplite.protocol.constants import ReplyCode
from amqplite.protocol.errors import AMQPError

MANAGEMENT_TAGS = frozenset({"management", "policymaker", "monitoring", "administrator"})

# Who may call a route: anyone, any authenticated user (SQS-style messaging), or a tag level.
PUBLIC = "public"
USER = "user"
MANAGEMENT = "management"
MONITORING = "monitoring"
POLICYMAKER = "policymaker"
ADMINISTRATOR = "administrator"

_LEVEL_TAGS = {
    MANAGEMENT: MANAGEMENT_TAGS,
    MONITORING: frozenset({"monitoring", "administrator"}),
    POLICYMAKER: frozenset({"policymaker", "administrator"}),
    ADMINISTRATOR: frozenset({"administrator"}),
}


class ConnectionView(Protocol):
    """What management reads of a served client connection (server.connection.ClientConnection)."""

    session: Any
    stream: Any

    def wake(self) -> None:
        """Tell the writer there is output."""


class NodeView(Protocol):
    """What management reads of the running node (server.node.Node)."""

    broker: Broker
    config: Config
    connections: set[Any]


Handler = Callable[["Call"], Response]


@attrs.frozen
class Route:
    """One method + path pattern and who may call it."""

    method: str
    pattern: tuple[str, ...]  # literal segments, or "{name}" parameters
    handler: Handler
    level: str


@attrs.frozen
class Call:
    """One authorised request as handlers see it: path parameters, query, user, the app."""

    app: ManagementApp
    request: Request
    params: Mapping[str, str]
    query: Mapping[str, str]
    user: User | None

    @property
    def broker(self) -> Broker:
        """The broker core."""
        return self.app.broker

    def json(self, default: Any = None) -> Any:
        """The request body as JSON (400 if malformed); `default` for an empty body."""
        body = self.request.body
        if not body.strip():
            if default is None:
                raise HttpError(400, "a JSON body is required")
            return default
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"malformed JSON body: {exc}") from None

    def json_object(self, empty_ok: bool = True) -> dict[str, Any]:
        """The request body as a JSON object (400 otherwise)."""
        value = self.json({} if empty_ok else None)
        if not isinstance(value, dict):
            raise HttpError(400, "the JSON body must be an object")
        return value

    def vhost(self, kind: str | None = None, name: str = "") -> VHost:
        """The vhost named by the path (404 if missing), checking the user's access to it."""
        vhost_name = self.params["vhost"]
        vhost = self.broker.vhosts.get(vhost_name)
        if vhost is None:
            raise HttpError(404, f"vhost '{vhost_name}' not found", "Object Not Found")
        self.app.check_access(self.user, vhost_name, kind, name)
        return vhost

    def queue(self, vhost: VHost) -> Queue:
        """The queue named by the path (404 if missing)."""
        queue = vhost.queues.get(self.params["name"])
        if queue is None:
            raise HttpError(404, "Not Found", "Object Not Found")
        return queue

    def one(self, item: dict[str, Any]) -> Response:
        """A single object as JSON, reduced to `columns=` if given."""
        from amqplite.management.listing import select_columns

        columns = [c for c in self.query.get("columns", "").split(",") if c]
        return Response.json(select_columns(item, columns) if columns else item)

    def flag(self, name: str) -> bool:
        """A boolean query parameter (`if-empty=true`)."""
        return self.query.get(name, "false").lower() in ("true", "1", "yes")

    @property
    def username(self) -> str:
        """The authenticated user's name ("" for public routes)."""
        return self.user.name if self.user is not None else ""


def jsonable(value: Any) -> Any:
    """Field values (tables, bytes, timestamps, decimals) as JSON-compatible values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return float(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def amqp_error(exc: AMQPError) -> HttpError:
    """An AMQP error from the core as the HTTP status RabbitMQ's API gives for it."""
    code = exc.reply_code
    if code == ReplyCode.NOT_FOUND:
        return HttpError(404, exc.reply_text, "Object Not Found")
    if code == ReplyCode.ACCESS_REFUSED:
        return HttpError(403, exc.reply_text, "access_refused")
    return HttpError(400, exc.reply_text, "bad_request")


def split_path(path: str) -> list[str]:
    """Path segments, each percent-decoded on its own (so `%2F` stays inside one segment)."""
    parts = path.split("/")
    if parts and parts[0] == "":
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    return [urllib.parse.unquote(p) for p in parts]


def parse_query(query: str) -> dict[str, str]:
    """The query string as a dict (last value wins)."""
    return dict(urllib.parse.parse_qsl(query, keep_blank_values=True))


class Router:
    """Routes by segment patterns; tells 404 (no path) from 405 (path without that method)."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler, level: str = MANAGEMENT) -> None:
        """Register a handler for a method and a `/api/queues/{vhost}/{name}` style pattern."""
        pattern = tuple(path.strip("/").split("/")) if path != "/" else ("",)
        self.routes.append(Route(method, pattern, handler, level))

    def match(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        """The route and its parameters; HttpError 404/405 when none fits."""
        allowed: list[str] = []
        segments = segments or [""]
        for route in self.routes:
            params = _match(route.pattern, segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise HttpError(
                405,
                f"method {method} not allowed here",
                headers=(("allow", ", ".join(sorted(set(allowed)))),),
            )
        raise HttpError(404, "Not Found", "Object Not Found")


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class ManagementApp:
    """Request -> response over the node: every handler is a plain function of the request."""

    def __init__(
        self,
        node: NodeView,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        node_name: str | None = None,
        store: object | None = None,
    ) -> None:
        from amqplite.management import resources  # the handlers register themselves
        from amqplite.management.metrics import QueueMetricLines
        from amqplite.management.resources.common import QueueJsonCache
        from amqplite.management.sqs import SqsMessaging

        self.node = node
        self.store = store  # the durable store, read by /metrics (journal bytes, fsync latency)
        self.broker = node.broker
        self.clock = clock
        self.wall_clock = wall_clock
        self.started = clock()
        self.started_wall = wall_clock()
        self.node_name = node_name or f"amqplite@{socket.gethostname()}"
        self.rates = RateTracker()
        self.sqs = SqsMessaging(self.broker)
        self.queue_json = QueueJsonCache()
        self.queue_metrics = QueueMetricLines()
        self.connected_at: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        self.router = Router()
        resources.register_all(self.router)

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; errors become JSON 4xx/5xx responses."""
        try:
            route, params = self.router.match(request.method, split_path(request.path))
            user = self.authenticate(request, route.level)
            call = Call(self, request, params, parse_query(request.query), user)
            commits = self.broker.commits
            outer = commits.watch()
            try:
                response = route.handler(call)
            finally:
                mark = commits.watched(outer)
            if mark is not None:  # the answer waits until what the request wrote is on disk
                response = attrs.evolve(response, durable_mark=mark)
        except HttpError as exc:
            response = exc.response()
        except AMQPError as exc:
            response = amqp_error(exc).response()
        if request.method == "HEAD":
            return attrs.evolve(response, body=b"")
        return response

    def authenticate(self, request: Request, level: str) -> User | None:
        """The user of the request's basic auth; 401 without valid credentials, 403 without the tag."""
        if level == PUBLIC:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        challenge = (("www-authenticate", 'Basic realm="amqplite management"'),)
        if scheme.lower() != "basic" or not encoded:
            raise HttpError(401, "credentials required", "not_authorised", challenge)
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise HttpError(401, "malformed basic auth credentials", headers=challenge) from None
        name, sep, password = decoded.partition(":")
        user = self.broker.authenticate(name, password) if sep else None
        if user is None:
            raise HttpError(401, "Login failed", "not_authorised", challenge)
        tags = _LEVEL_TAGS.get(level)
        if tags is not None and not tags.intersection(user.tags):
            raise HttpError(403, f"user '{name}' lacks a tag required here ({level})")
        return user

    # -- permissions -------------------------------------------------------------------------

    def permission_of(self, user: User | None, vhost: str) -> Any:
        """The user's permission on the vhost (None: none); full access if the broker has no ACLs."""
        permissions_of = getattr(self.broker, "permissions_of", None)
        if user is None or permissions_of is None:
            return _FULL
        return permissions_of(user.name, vhost)

    def can_see(self, user: User | None, vhost: str) -> bool:
        """True when the user may list the vhost's objects (monitoring sees every vhost)."""
        if user is None or MONITORING_TAGS.intersection(user.tags):
            return True
        return self.permission_of(user, vhost) is not None

    def check_access(self, user: User | None, vhost: str, kind: str | None, name: str) -> None:
        """403 unless the user has access to the vhost (and the `kind` regex matches `name`)."""
        if user is None:
            return
        permission = self.permission_of(user, vhost)
        if permission is None:
            if kind is None and MONITORING_TAGS.intersection(user.tags):
                return
            raise HttpError(403, f"access to vhost '{vhost}' refused for user '{user.name}'")
        if kind is None:
            return
        regex = getattr(permission, kind, ".*")
        if not regex or re.fullmatch(regex, name) is None:
            raise HttpError(
                403,
                f"{kind} access to '{name}' in vhost '{vhost}' refused for user '{user.name}'",
            )

    def visible_vhosts(self, user: User | None) -> Iterable[VHost]:
        """The vhosts the user may list."""
        return [v for v in self.broker.vhosts.values() if self.can_see(user, v.name)]

    # -- periodic work -----------------------------------------------------------------------

    def sample(self) -> None:
        """Take a rate sample of every queue and the totals (the server calls this every few s)."""
        from amqplite.management.resources.common import sample_all

        sample_all(self)


MONITORING_TAGS = frozenset({"monitoring", "administrator"})


@attrs.frozen
class _FullPermission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


_FULL = _FullPermission()
