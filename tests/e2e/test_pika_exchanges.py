"""End-to-end tests with pika: exchanges, exchange-to-exchange bindings and routing."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika_helpers import (
    Cleanup,
    channel_error,
    drain,
    exchange_exists,
    get_message,
)


def bound_queue(
    ch: BlockingChannel,
    cleanup: Cleanup,
    name: str,
    exchange: str,
    routing_key: str = "",
    arguments: dict[str, Any] | None = None,
) -> str:
    """Declare queue `name` and bind it to `exchange`."""
    ch.queue_declare(cleanup.queue(name))
    ch.queue_bind(name, exchange, routing_key=routing_key, arguments=arguments)
    return name


def publish_all_then_collect(
    ch: BlockingChannel,
    exchange: str,
    queues: list[str],
    messages: list[tuple[str, dict[str, Any] | None]],
) -> dict[str, list[bytes]]:
    """Publish each (routing key, headers) with its index as body; return what each queue got."""
    for i, (key, headers) in enumerate(messages):
        ch.basic_publish(exchange, key, str(i).encode(), pika.BasicProperties(headers=headers))
    # A marker sent to every queue after the batch: once it is in, the batch is routed.
    for q in queues:
        ch.basic_publish("", q, b"marker")
    result = {}
    for q in queues:
        got = []
        while True:
            body = get_message(ch, q, auto_ack=True)[2]
            if body == b"marker":
                break
            got.append(body)
        result[q] = got
    return result


# --- the predeclared exchanges --------------------------------------------------------------


def test_default_exchange_routes_by_queue_name(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    ch.basic_publish("", q, b"hello")
    _method, _props, body = get_message(ch, q, auto_ack=True)
    assert body == b"hello"


def test_default_exchange_drops_message_for_unknown_queue_name(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    q = cleanup.queue(uid)
    ch.queue_declare(q)
    ch.basic_publish("", f"{uid}-other", b"lost")
    ch.basic_publish("", q, b"kept")
    assert get_message(ch, q, auto_ack=True)[2] == b"kept"
    assert drain(ch, q) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("amq.direct", "direct"),
        ("amq.fanout", "fanout"),
        ("amq.topic", "topic"),
        ("amq.headers", "headers"),
        ("amq.match", "headers"),
    ],
)
def test_predeclared_exchange_exists_with_its_type(
    ch: BlockingChannel, name: str, kind: str
) -> None:
    ch.exchange_declare(name, passive=True)
    # Redeclaring with the same type and durable=True is equivalent, so it is accepted.
    ch.exchange_declare(name, exchange_type=kind, durable=True)
    assert ch.is_open


def test_amq_direct_routes_by_routing_key(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    q = bound_queue(ch, cleanup, uid, "amq.direct", routing_key=uid)
    ch.basic_publish("amq.direct", uid, b"via amq.direct")
    assert get_message(ch, q, auto_ack=True)[2] == b"via amq.direct"


# --- declare, redeclare, delete -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["direct", "fanout", "topic", "headers"])
def test_exchange_declare_each_type_then_passive_declare_finds_it(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str, kind: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type=kind)
    ch.exchange_declare(x, passive=True)
    assert exchange_exists(conn, x)


def test_exchange_redeclare_with_same_properties_is_ok(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic", durable=True)
    ch.exchange_declare(x, exchange_type="topic", durable=True)
    assert ch.is_open


def test_exchange_redeclare_with_other_type_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    with channel_error(406, "PRECONDITION_FAILED", "inequivalent", x):
        ch.exchange_declare(x, exchange_type="fanout")
    assert conn.is_open
    # The exchange keeps its original type.
    conn.channel().exchange_declare(x, exchange_type="direct")


def test_exchange_redeclare_with_other_durable_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct", durable=False)
    with channel_error(406, "PRECONDITION_FAILED", "durable"):
        ch.exchange_declare(x, exchange_type="direct", durable=True)
    assert conn.is_open


def test_exchange_passive_declare_of_missing_exchange_is_not_found(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(404, "NOT_FOUND", "no exchange", uid):
        ch.exchange_declare(uid, passive=True)
    assert conn.is_open


def test_exchange_delete_removes_it(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="fanout")
    ch.exchange_delete(x)
    assert not exchange_exists(conn, x)


def test_exchange_delete_removes_its_bindings(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="fanout")
    q = bound_queue(ch, cleanup, uid, x)
    ch.exchange_delete(x)
    ch.exchange_declare(x, exchange_type="fanout")
    ch.basic_publish(x, "", b"after re-creation")
    ch.basic_publish("", q, b"marker")
    assert get_message(ch, q, auto_ack=True)[2] == b"marker"


def test_exchange_delete_if_unused_with_a_binding_is_precondition_failed(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    bound_queue(ch, cleanup, uid, x, routing_key="k")
    with channel_error(406, "PRECONDITION_FAILED", "in use"):
        ch.exchange_delete(x, if_unused=True)
    assert exchange_exists(conn, x)


def test_exchange_delete_if_unused_without_bindings_deletes_it(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    ch.exchange_delete(x, if_unused=True)
    assert not exchange_exists(conn, x)


def test_exchange_declare_with_amq_prefix_is_access_refused(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(403, "ACCESS_REFUSED", "amq."):
        ch.exchange_declare(f"amq.{uid}", exchange_type="direct")
    assert conn.is_open
    assert not exchange_exists(conn, f"amq.{uid}")


def test_publish_to_missing_exchange_is_not_found(
    conn: BlockingConnection, ch: BlockingChannel, uid: str
) -> None:
    with channel_error(404, "NOT_FOUND", "no exchange", uid):
        ch.basic_publish(uid, "key", b"nowhere")
        # The publish is asynchronous: the close arrives with the next synchronous call.
        ch.queue_declare("", exclusive=True)
    assert conn.is_open


# --- exchange-to-exchange bindings ----------------------------------------------------------


def test_exchange_bind_routes_through_two_hops(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    src = cleanup.exchange(f"{uid}-src")
    dst = cleanup.exchange(f"{uid}-dst")
    ch.exchange_declare(src, exchange_type="direct")
    ch.exchange_declare(dst, exchange_type="fanout")
    ch.exchange_bind(destination=dst, source=src, routing_key="hop")
    q = bound_queue(ch, cleanup, uid, dst)
    ch.basic_publish(src, "hop", b"two hops")
    ch.basic_publish(src, "other", b"not bound")
    assert get_message(ch, q, auto_ack=True)[2] == b"two hops"
    assert drain(ch, q) == []


def test_exchange_bind_chain_of_three_exchanges_applies_each_binding(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    names = [cleanup.exchange(f"{uid}-{i}") for i in range(3)]
    for name in names:
        ch.exchange_declare(name, exchange_type="topic")
    ch.exchange_bind(destination=names[1], source=names[0], routing_key="a.#")
    ch.exchange_bind(destination=names[2], source=names[1], routing_key="*.b")
    q = bound_queue(ch, cleanup, uid, names[2], routing_key="#")
    keys = ["a.b", "a.c", "x.b", "a.b.c"]
    got = publish_all_then_collect(ch, names[0], [q], [(k, None) for k in keys])
    assert got[q] == [b"0"]


def test_exchange_unbind_stops_routing(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    src = cleanup.exchange(f"{uid}-src")
    dst = cleanup.exchange(f"{uid}-dst")
    ch.exchange_declare(src, exchange_type="fanout")
    ch.exchange_declare(dst, exchange_type="fanout")
    ch.exchange_bind(destination=dst, source=src)
    q = bound_queue(ch, cleanup, uid, dst)
    ch.basic_publish(src, "", b"bound")
    assert get_message(ch, q, auto_ack=True)[2] == b"bound"
    ch.exchange_unbind(destination=dst, source=src)
    ch.basic_publish(src, "", b"unbound")
    ch.basic_publish(dst, "", b"marker")
    assert get_message(ch, q, auto_ack=True)[2] == b"marker"
    assert drain(ch, q) == []


def test_exchange_bind_to_missing_source_is_not_found(
    conn: BlockingConnection, ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    dst = cleanup.exchange(uid)
    ch.exchange_declare(dst, exchange_type="fanout")
    with channel_error(404, "NOT_FOUND", f"{uid}-missing"):
        ch.exchange_bind(destination=dst, source=f"{uid}-missing")
    assert conn.is_open


def test_fan_in_through_two_paths_delivers_one_copy(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    top = cleanup.exchange(f"{uid}-top")
    left = cleanup.exchange(f"{uid}-left")
    right = cleanup.exchange(f"{uid}-right")
    ch.exchange_declare(top, exchange_type="fanout")
    ch.exchange_declare(left, exchange_type="fanout")
    ch.exchange_declare(right, exchange_type="direct")
    ch.exchange_bind(destination=left, source=top)
    ch.exchange_bind(destination=right, source=top, routing_key="k")
    q = bound_queue(ch, cleanup, uid, left)
    ch.queue_bind(q, right, routing_key="k")
    ch.queue_bind(q, top)  # and a third, direct path
    ch.basic_publish(top, "k", b"once")
    ch.basic_publish("", q, b"marker")
    bodies = [get_message(ch, q, auto_ack=True)[2]]
    bodies += drain(ch, q)
    assert bodies == [b"once", b"marker"]


def test_two_bindings_of_one_queue_to_one_exchange_deliver_one_copy(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, routing_key="a.*")
    ch.queue_bind(q, x, routing_key="*.b")
    ch.queue_bind(q, x, routing_key="#")
    ch.basic_publish(x, "a.b", b"once")
    ch.basic_publish("", q, b"marker")
    bodies = [get_message(ch, q, auto_ack=True)[2]]
    bodies += drain(ch, q)
    assert bodies == [b"once", b"marker"]


# --- routing by exchange type ---------------------------------------------------------------


def test_direct_exchange_routes_to_every_queue_bound_with_the_key(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="direct")
    q1 = bound_queue(ch, cleanup, f"{uid}-1", x, "red")
    q2 = bound_queue(ch, cleanup, f"{uid}-2", x, "red")
    q3 = bound_queue(ch, cleanup, f"{uid}-3", x, "blue")
    got = publish_all_then_collect(
        ch, x, [q1, q2, q3], [("red", None), ("blue", None), ("green", None)]
    )
    assert got == {q1: [b"0"], q2: [b"0"], q3: [b"1"]}


def test_fanout_exchange_ignores_routing_key_and_copies_to_all(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="fanout")
    q1 = bound_queue(ch, cleanup, f"{uid}-1", x, "ignored")
    q2 = bound_queue(ch, cleanup, f"{uid}-2", x)
    got = publish_all_then_collect(ch, x, [q1, q2], [("anything", None), ("", None)])
    assert got == {q1: [b"0", b"1"], q2: [b"0", b"1"]}


def test_topic_star_matches_exactly_one_word(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, "a.*.c")
    keys = ["a.b.c", "a.c", "a.b.b.c", "a..c", "x.b.c", "a.xyz.c"]
    got = publish_all_then_collect(ch, x, [q], [(k, None) for k in keys])
    assert got[q] == [b"0", b"3", b"5"]


def test_topic_hash_matches_zero_or_more_words(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, "a.#")
    keys = ["a", "a.b", "a.b.c", "b.a", "ab", ""]
    got = publish_all_then_collect(ch, x, [q], [(k, None) for k in keys])
    assert got[q] == [b"0", b"1", b"2"]


def test_topic_hash_in_the_middle_and_star_combined(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q1 = bound_queue(ch, cleanup, f"{uid}-1", x, "a.#.z")
    q2 = bound_queue(ch, cleanup, f"{uid}-2", x, "*.#.*")
    keys = ["a.z", "a.b.c.z", "a.b", "z", "a.b.z.y"]
    got = publish_all_then_collect(ch, x, [q1, q2], [(k, None) for k in keys])
    assert got == {q1: [b"0", b"1"], q2: [b"0", b"1", b"2", b"4"]}


def test_topic_lone_hash_matches_every_key(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, "#")
    keys = ["", "a", "a.b.c", "..."]
    got = publish_all_then_collect(ch, x, [q], [(k, None) for k in keys])
    assert got[q] == [b"0", b"1", b"2", b"3"]


def test_topic_exact_words_match_only_the_same_key(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, "stock.usd.nyse")
    keys = ["stock.usd.nyse", "stock.usd", "stock.usd.nyse.x", "stock.eur.nyse"]
    got = publish_all_then_collect(ch, x, [q], [(k, None) for k in keys])
    assert got[q] == [b"0"]


def test_topic_unbind_removes_only_that_pattern(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="topic")
    q = bound_queue(ch, cleanup, uid, x, "a.*")
    ch.queue_bind(q, x, routing_key="*.b")
    ch.queue_unbind(q, x, routing_key="a.*")
    got = publish_all_then_collect(ch, x, [q], [("a.c", None), ("a.b", None), ("c.b", None)])
    assert got[q] == [b"1", b"2"]


def test_headers_exchange_x_match_all_needs_every_header(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="headers")
    q = bound_queue(
        ch, cleanup, uid, x, arguments={"x-match": "all", "format": "pdf", "type": "report"}
    )
    messages: list[tuple[str, dict[str, Any] | None]] = [
        ("", {"format": "pdf", "type": "report"}),
        ("", {"format": "pdf"}),
        ("", {"format": "pdf", "type": "log"}),
        ("", {"format": "pdf", "type": "report", "extra": 1}),
        ("", None),
    ]
    got = publish_all_then_collect(ch, x, [q], messages)
    assert got[q] == [b"0", b"3"]


def test_headers_exchange_default_x_match_is_all(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="headers")
    q = bound_queue(ch, cleanup, uid, x, arguments={"format": "pdf", "type": "report"})
    messages: list[tuple[str, dict[str, Any] | None]] = [
        ("", {"format": "pdf"}),
        ("", {"format": "pdf", "type": "report"}),
    ]
    got = publish_all_then_collect(ch, x, [q], messages)
    assert got[q] == [b"1"]


def test_headers_exchange_x_match_any_needs_one_header(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="headers")
    q = bound_queue(
        ch, cleanup, uid, x, arguments={"x-match": "any", "format": "pdf", "type": "report"}
    )
    messages: list[tuple[str, dict[str, Any] | None]] = [
        ("", {"format": "pdf"}),
        ("", {"type": "report", "format": "zip"}),
        ("", {"format": "zip", "type": "log"}),
        ("", {}),
        ("", None),
    ]
    got = publish_all_then_collect(ch, x, [q], messages)
    assert got[q] == [b"0", b"1"]


def test_headers_exchange_ignores_routing_key(
    ch: BlockingChannel, cleanup: Cleanup, uid: str
) -> None:
    x = cleanup.exchange(uid)
    ch.exchange_declare(x, exchange_type="headers")
    q = bound_queue(
        ch, cleanup, uid, x, routing_key="bound-key", arguments={"x-match": "all", "k": "v"}
    )
    got = publish_all_then_collect(
        ch, x, [q], [("other-key", {"k": "v"}), ("bound-key", {"k": "w"})]
    )
    assert got[q] == [b"0"]


def test_amq_match_routes_by_headers(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    q = bound_queue(ch, cleanup, uid, "amq.match", arguments={"x-match": "all", "test-id": uid})
    got = publish_all_then_collect(
        ch, "amq.match", [q], [("", {"test-id": uid}), ("", {"test-id": "other"})]
    )
    assert got[q] == [b"0"]


def test_amq_topic_routes_by_pattern(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    q = bound_queue(ch, cleanup, uid, "amq.topic", f"{uid}.*")
    got = publish_all_then_collect(ch, "amq.topic", [q], [(f"{uid}.x", None), (f"{uid}.x.y", None)])
    assert got[q] == [b"0"]


def test_amq_fanout_copies_to_bound_queues(ch: BlockingChannel, cleanup: Cleanup, uid: str) -> None:
    q1 = bound_queue(ch, cleanup, f"{uid}-1", "amq.fanout")
    q2 = bound_queue(ch, cleanup, f"{uid}-2", "amq.fanout")
    ch.basic_publish("amq.fanout", "whatever", uid.encode())
    for q in (q1, q2):
        # Other tests may publish to amq.fanout too: skip what is not ours.
        while get_message(ch, q, auto_ack=True)[2] != uid.encode():
            pass
