"""Management without sockets: the h11 loop over memory streams, the SQS state, rates, lists."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import trio
import trio.testing

from amqplite.broker.broker import Broker
from amqplite.broker.message import Message
from amqplite.config.models import Config
from amqplite.management.app import ManagementApp
from amqplite.management.http import HttpConnection, HttpLimits, Request, Response
from amqplite.management.listing import render_list, select_columns
from amqplite.management.rates import RateTracker
from amqplite.management.resources import build_app
from amqplite.management.sqs import SqsMessaging
from amqplite.server.node import Node
from amqplite.store.latency import LatencyHistogram

AUTH = {"authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
JSON_AUTH = {**AUTH, "content-type": "application/json"}


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_app() -> tuple[ManagementApp, FakeClock]:
    clock = FakeClock()
    return build_app(Node(Config()), clock=clock, wall_clock=lambda: 1.7e9), clock


def request(
    app: ManagementApp, method: str, path: str, body: Any = None, query: str = ""
) -> Response:
    raw = b"" if body is None else json.dumps(body).encode()
    return app.handle(Request(method, path, query, JSON_AUTH if raw else AUTH, raw))


def message(body: bytes = b"x") -> Message:
    return Message("", "q", b"\x00\x00", body)


# -- the HTTP loop -------------------------------------------------------------------------------


async def _exchange(
    server_stream: Any, client_stream: Any, handler: Any, limits: HttpLimits, wire: bytes
) -> bytes:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(HttpConnection(server_stream, handler, limits).run)
        await client_stream.send_all(wire)
        received = b""
        while True:
            data = await client_stream.receive_some(65536)
            if not data:
                break
            received += data
    return received


def _echo(req: Request) -> Response:
    return Response.json(
        {"method": req.method, "path": req.path, "query": req.query, "size": len(req.body)}
    )


@pytest.mark.trio
async def test_http_serves_keep_alive_requests_in_order_then_closes_on_connection_close() -> None:
    client, server = trio.testing.memory_stream_pair()
    wire = (
        b"GET /a?x=1 HTTP/1.1\r\nhost: t\r\n\r\n"
        b"POST /b HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc"
        b"GET /c HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    received = await _exchange(server, client, _echo, HttpLimits(), wire)
    bodies = []
    rest = received
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        bodies.append(json.loads(rest[:length]))
        rest = rest[length:]
    assert b"connection: close" in head.lower()
    assert bodies == [
        {"method": "GET", "path": "/a", "query": "x=1", "size": 0},
        {"method": "POST", "path": "/b", "query": "", "size": 3},
        {"method": "GET", "path": "/c", "query": "", "size": 0},
    ]


@pytest.mark.trio
async def test_http_refuses_an_oversized_body_with_413() -> None:
    client, server = trio.testing.memory_stream_pair()
    wire = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 5000\r\n\r\n"
    received = await _exchange(server, client, _echo, HttpLimits(max_body_bytes=1000), wire)
    assert received.startswith(b"HTTP/1.1 413 ")
    assert b'"error":"request_too_large"' in received


@pytest.mark.trio
async def test_http_answers_garbage_with_400() -> None:
    client, server = trio.testing.memory_stream_pair()
    received = await _exchange(server, client, _echo, HttpLimits(), b"\x00\x01 nonsense\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 400 ")


@pytest.mark.trio
async def test_http_drops_a_client_that_stalls_mid_request(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    wire = b"PUT /x HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\n{"
    received = await _exchange(server, client, _echo, HttpLimits(read_timeout=5), wire)
    assert received.startswith(b"HTTP/1.1 408 ")


@pytest.mark.trio
async def test_http_closes_an_idle_keep_alive_connection(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    received = await _exchange(server, client, _echo, HttpLimits(idle_timeout=5), b"")
    assert received == b""


@pytest.mark.trio
async def test_http_gives_up_on_a_client_that_does_not_read(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.lockstep_stream_pair()
    big = Response(200, b"x" * 100_000, "text/plain")
    finished = trio.Event()

    async def serve() -> None:
        await HttpConnection(server, lambda req: big, HttpLimits(write_timeout=5)).run()
        finished.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await client.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        with trio.fail_after(60):  # never reads: the server's write times out and it closes
            await finished.wait()


# -- the application -----------------------------------------------------------------------------


def test_app_routes_errors_and_auth() -> None:
    app, _ = make_app()
    assert app.handle(Request("GET", "/api/overview", "", {})).status == 401
    assert request(app, "GET", "/api/queues/%2F/missing").status == 404
    wrong = request(app, "DELETE", "/api/overview")
    assert wrong.status == 405
    assert ("allow", "GET") in wrong.headers
    bad = app.handle(Request("PUT", "/api/queues/%2F/q", "", JSON_AUTH, b"{oops"))
    assert bad.status == 400
    assert json.loads(bad.body)["error"] == "bad_request"
    assert request(app, "PUT", "/api/queues/%2F/q", {"durable": False}).status == 201
    assert request(app, "HEAD", "/api/queues/%2F/q").body == b""


def test_queue_rates_come_from_samples_a_second_apart() -> None:
    app, clock = make_app()
    assert request(app, "PUT", "/api/queues/%2F/q", {"durable": False}).status == 201
    assert (
        json.loads(request(app, "GET", "/api/queues/%2F/q").body)["message_stats"][
            "publish_details"
        ]["rate"]
        == 0
    )
    vhost = app.broker.vhosts["/"]
    for _ in range(30):
        app.broker.publish(vhost, "", Message("", "q", b"\x00\x00", b"x"))
    clock.now += 2.0
    item = json.loads(request(app, "GET", "/api/queues/%2F/q").body)
    assert item["message_stats"]["publish_details"]["rate"] == 15.0
    assert item["messages_ready_details"]["rate"] == 15.0


def test_rate_tracker_keeps_the_last_rate_between_samples_and_forgets_dead_objects() -> None:
    class Key:
        pass

    tracker = RateTracker(min_interval=1.0)
    key = Key()
    assert tracker.observe(key, 0.0, (0,)) == (0.0,)
    assert tracker.observe(key, 2.0, (10,)) == (5.0,)
    assert tracker.observe(key, 2.5, (100,)) == (5.0,)  # too soon for a new sample
    assert len(tracker) == 1
    del key
    assert len(tracker) == 0


def test_render_list_filters_sorts_pages_and_selects_columns() -> None:
    items = [
        {"name": f"q{i}", "messages": i % 3, "message_stats": {"publish": i}} for i in range(7)
    ]
    page = render_list(
        items,
        lambda x: x["name"],
        dict,
        {
            "page": "2",
            "page_size": "3",
            "sort": "messages",
            "columns": "name,message_stats.publish",
        },
    )
    assert page["page_count"] == 3
    assert page["filtered_count"] == 7
    assert page["item_count"] == 3
    assert all(set(item) == {"name", "message_stats"} for item in page["items"])
    assert render_list(items, lambda x: x["name"], dict, {"name": "q1"}) == [items[1]]
    top_level = render_list(items, lambda x: x["name"], dict, {"columns": "name,messages"})
    assert top_level[:2] == [{"name": "q0", "messages": 0}, {"name": "q1", "messages": 1}]
    assert select_columns({"a": {"b": 1, "c": 2}, "d": 3}, ["a.b", "x"]) == {"a": {"b": 1}}


def test_latency_histogram_is_cumulative() -> None:
    histogram = LatencyHistogram((0.01, 0.1))
    for seconds in (0.001, 0.05, 0.05, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.01", 1), ("0.1", 3), ("+Inf", 4)]
    assert histogram.count == 4


# -- SQS-style messaging -------------------------------------------------------------------------


def _sqs() -> tuple[Broker, SqsMessaging, Any]:
    broker = Broker()
    vhost = broker.add_vhost("/")
    queue = vhost.declare_queue("q")
    return broker, SqsMessaging(broker), queue


def test_sqs_received_message_is_invisible_until_its_deadline_then_redelivered() -> None:
    _broker, sqs, queue = _sqs()
    sqs.publish("/", "q", message(b"a"), 0, now=0.0)
    [got] = sqs.receive(queue, 10, visibility=30.0, now=0.0)
    assert got.redelivered is False
    assert queue.unacked_count == 1
    assert sqs.receive(queue, 10, 30.0, now=1.0) == []
    assert sqs.next_deadline() == 30.0
    assert sqs.expire(now=29.9) == 0
    assert sqs.expire(now=30.0) == 1
    assert queue.unacked_count == 0
    assert len(queue.ready) == 1
    [again] = sqs.receive(queue, 10, 30.0, now=31.0)
    assert again.redelivered is True
    assert again.entry.message.body == b"a"
    assert sqs.delete(got.receipt) is False  # expired receipt
    assert sqs.delete(again.receipt) is True
    assert queue.stats.ack == 1
    assert len(queue.ready) == 0
    assert queue.unacked_count == 0


def test_sqs_change_visibility_moves_the_deadline() -> None:
    _, sqs, queue = _sqs()
    sqs.publish("/", "q", message(), 0, now=0.0)
    [got] = sqs.receive(queue, 1, 5.0, now=0.0)
    assert sqs.change_visibility(got.receipt, 100.0, now=4.0)
    assert sqs.expire(now=50.0) == 0
    assert queue.unacked_count == 1
    assert sqs.change_visibility("nope", 1.0, now=4.0) is False


def test_sqs_delayed_publish_waits_until_due() -> None:
    _, sqs, queue = _sqs()
    changes: list[int] = []
    sqs.on_change = lambda: changes.append(1)
    assert sqs.publish("/", "q", message(), 2.0, now=10.0) is True
    assert len(queue.ready) == 0
    assert changes
    assert sqs.next_deadline() == 12.0
    assert sqs.expire(now=12.0) == 1
    assert len(queue.ready) == 1
    assert sqs.next_deadline() is None


def test_full_queue_list_reuses_unchanged_json_and_shows_changes() -> None:
    app, _clock = make_app()
    for name in ("a", "b"):
        assert request(app, "PUT", f"/api/queues/%2F/{name}", {"durable": False}).status == 201
    first = json.loads(request(app, "GET", "/api/queues").body)
    assert [item["name"] for item in first] == ["a", "b"]
    assert first == json.loads(request(app, "GET", "/api/queues", query="sort=name").body)
    app.broker.publish(app.broker.vhosts["/"], "", Message("", "b", b"\x00\x00", b"xyz"))
    second = json.loads(request(app, "GET", "/api/queues").body)
    assert second[0] == first[0]
    assert second[1]["messages"] == 1
    assert second[1]["message_bytes_ready"] == 3


def test_sqs_survives_its_deliveries_being_requeued_behind_its_back() -> None:
    broker, sqs, queue = _sqs()
    sqs.publish("/", "q", message(), 0, now=0.0)
    [got] = sqs.receive(queue, 1, 5.0, now=0.0)
    broker.recover(sqs.channel)  # e.g. the broker's consumer timeout requeued everything
    assert sqs.expire(now=10.0) == 1
    assert len(queue.ready) == 1
    assert sqs.delete(got.receipt) is False


def _queues_with_depths(app: ManagementApp, depths: dict[str, int]) -> None:
    vhost = app.broker.vhosts["/"]
    for name, depth in depths.items():
        vhost.declare_queue(name, durable=False)
        for _ in range(depth):
            app.broker.publish(vhost, "", Message("", name, b"\x00\x00", b"x" * depth))


def test_columns_and_sort_render_only_what_they_need_and_match_the_full_objects() -> None:
    app, _clock = make_app()
    _queues_with_depths(app, {"q1": 2, "q2": 0, "q3": 5, "q4": 1})
    full = {item["name"]: item for item in json.loads(request(app, "GET", "/api/queues").body)}
    sorted_page = json.loads(
        request(
            app, "GET", "/api/queues", query="page=1&page_size=3&sort=messages&sort_reverse=true"
        ).body
    )
    assert [item["name"] for item in sorted_page["items"]] == ["q3", "q1", "q4"]
    assert sorted_page["items"] == [full[n] for n in ("q3", "q1", "q4")]
    by_rate = json.loads(
        request(app, "GET", "/api/queues", query="sort=message_stats.publish&columns=name").body
    )
    assert by_rate == [{"name": n} for n in ("q2", "q4", "q1", "q3")]
    columns = "name,messages,message_stats.publish,message_stats.ack_details.rate,nope"
    picked = json.loads(request(app, "GET", "/api/queues", query=f"columns={columns}").body)
    assert picked[2] == {
        "name": "q3",
        "messages": 5,
        "message_stats": {"publish": 5, "ack_details": {"rate": 0.0}},
    }
    assert picked == [select_columns(full[item["name"]], columns.split(",")) for item in picked]


def test_metrics_lines_follow_queue_changes_and_forget_deleted_queues() -> None:
    app, _clock = make_app()
    _queues_with_depths(app, {"m1": 1, "m2": 0})

    def metrics() -> str:
        return request(app, "GET", "/metrics").body.decode()

    assert 'amqplite_queue_messages_ready{vhost="/",queue="m1"} 1\n' in metrics()
    vhost = app.broker.vhosts["/"]
    app.broker.publish(vhost, "", Message("", "m1", b"\x00\x00", b"more"))
    text = metrics()
    assert 'amqplite_queue_messages_ready{vhost="/",queue="m1"} 2\n' in text
    assert 'amqplite_queue_messages_published_total{vhost="/",queue="m1"} 2\n' in text
    # every family's samples stay together, right after its TYPE line (Prometheus requires it)
    families = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(families) == len(set(families))
    block = text.split("# TYPE amqplite_queue_consumers gauge\n")[1].split("# HELP")[0]
    assert block.splitlines() == [
        'amqplite_queue_consumers{vhost="/",queue="m1"} 0',
        'amqplite_queue_consumers{vhost="/",queue="m2"} 0',
    ]
    vhost.delete_queue("m2")
    assert 'queue="m2"' not in metrics()


def test_full_list_rates_rise_settle_at_zero_and_rise_again() -> None:
    app, clock = make_app()
    _queues_with_depths(app, {"r": 2})
    vhost = app.broker.vhosts["/"]

    def publish_rate() -> float:
        [item] = json.loads(request(app, "GET", "/api/queues").body)
        return float(item["message_stats"]["publish_details"]["rate"])

    assert publish_rate() == 0.0  # the first sample
    for _ in range(3):
        app.broker.publish(vhost, "", Message("", "r", b"\x00\x00", b"x"))
    clock.now += 1.5
    assert publish_rate() == 2.0
    clock.now += 1.0
    assert publish_rate() == 0.0  # no change since: settled
    clock.now += 0.5
    assert publish_rate() == 0.0
    app.broker.publish(vhost, "", Message("", "r", b"\x00\x00", b"x"))
    clock.now += 0.5
    assert publish_rate() == 1.0
