"""The sans-I/O etcd gateway codec: request bodies, answers (as etcd 3.5 sends them), errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqplite.cluster.etcd_codec import (
    Compare,
    Delete,
    EtcdError,
    Get,
    KeyValue,
    Lease,
    Put,
    RangeResult,
    TxnResult,
    WatchResponse,
    b64,
    decode_body,
    decode_stream_line,
    encode_txn,
    encode_watch,
    prefix_end,
    unb64,
)

HEADER = {"cluster_id": "32495", "member_id": "33198", "revision": "7", "raft_term": "2"}


@given(st.binary())
def test_base64_round_trips_any_bytes(data: bytes) -> None:
    assert unb64(b64(data)) == data


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=4))
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: bytes, tail: bytes) -> None:
    end = prefix_end(prefix)
    assert prefix <= prefix + tail < end or end == b"\0"
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_a_range_answer_decodes_string_int64s_and_omitted_zeros() -> None:
    answer = {
        "header": HEADER,
        "kvs": [
            {
                "key": b64(b"/n/a"),
                "create_revision": "2",
                "mod_revision": "5",
                "version": "3",
                "value": b64(b"v"),
                "lease": "694",
            },
            {"key": b64(b"/n/b"), "create_revision": "6", "mod_revision": "6", "version": "1"},
        ],
        "count": "2",
    }
    result = RangeResult.decode(answer)
    assert result.revision == 7
    assert result.cluster_id == 32495
    assert result.count == 2
    assert not result.more
    assert result.kvs == (
        KeyValue(b"/n/a", b"v", 2, 5, 3, 694),
        KeyValue(b"/n/b", b"", 6, 6, 1, 0),
    )
    empty = RangeResult.decode({"header": HEADER})  # etcd omits kvs and count when none match
    assert (empty.kvs, empty.count) == ((), 0)


def test_txn_body_encodes_compares_and_each_operation_kind() -> None:
    body = encode_txn(
        [Compare(b"k", "mod", "==", 5), Compare(b"k", "value", "!=", b"x")],
        [Put(b"k", b"v", lease=12), Delete(b"/p/", b"/p0")],
        [Get(b"k")],
    )
    assert body == {
        "compare": [
            {"key": b64(b"k"), "target": "MOD", "result": "EQUAL", "mod_revision": "5"},
            {"key": b64(b"k"), "target": "VALUE", "result": "NOT_EQUAL", "value": b64(b"x")},
        ],
        "success": [
            {"request_put": {"key": b64(b"k"), "value": b64(b"v"), "lease": "12"}},
            {"request_delete_range": {"key": b64(b"/p/"), "range_end": b64(b"/p0")}},
        ],
        "failure": [{"request_range": {"key": b64(b"k")}}],
    }
    json.dumps(body)  # the gateway takes it as it is


def test_a_compare_refuses_an_operand_of_the_wrong_kind() -> None:
    with pytest.raises(TypeError):
        Compare(b"k", "version", "==", b"1").encode()
    with pytest.raises(TypeError):
        Compare(b"k", "value", "==", 1).encode()


def test_a_failed_txn_answer_has_no_succeeded_field_and_carries_the_failure_reads() -> None:
    answer = {
        "header": HEADER,
        "responses": [
            {"response_range": {"header": {"revision": "7"}, "kvs": [], "count": "0"}},
            {"response_delete_range": {"header": {}, "deleted": "3"}},
            {"response_put": {"header": {}}},
        ],
    }
    result = TxnResult.decode(answer)
    assert not result.succeeded
    assert result.revision == 7
    assert isinstance(result.responses[0], RangeResult)
    assert result.responses[1:] == (3, None)
    assert TxnResult.decode({"header": HEADER, "succeeded": True}).succeeded


def test_a_keepalive_of_an_ended_lease_has_no_ttl() -> None:
    assert Lease.decode({"header": HEADER, "ID": "99", "TTL": "5"}) == Lease(99, 5)
    assert Lease.decode({"header": HEADER, "ID": "99"}) == Lease(99, 0)
    assert Lease.decode({"header": HEADER, "ID": "99", "TTL": "-1"}).ttl == 0


def test_watch_lines_decode_puts_deletes_and_compaction() -> None:
    assert encode_watch(b"/p/", b"/p0", 8) == {
        "create_request": {
            "key": b64(b"/p/"),
            "range_end": b64(b"/p0"),
            "start_revision": "8",
            "prev_kv": True,
            "progress_notify": True,
        }
    }
    created = WatchResponse.decode(
        decode_stream_line(json.dumps({"result": {"header": HEADER, "created": True}}))
    )
    assert created.created
    assert created.events == ()
    line = json.dumps(
        {
            "result": {
                "header": HEADER,
                "events": [
                    {
                        "kv": {
                            "key": b64(b"/p/a"),
                            "mod_revision": "8",
                            "version": "1",
                            "value": b64(b"1"),
                        }
                    },
                    {
                        "type": "DELETE",
                        "kv": {"key": b64(b"/p/a"), "mod_revision": "9"},
                        "prev_kv": {"key": b64(b"/p/a"), "value": b64(b"1")},
                    },
                ],
            }
        }
    )
    response = WatchResponse.decode(decode_stream_line(line))
    assert [(e.type, e.kv.key, e.kv.value) for e in response.events] == [
        ("put", b"/p/a", b"1"),
        ("delete", b"/p/a", b""),
    ]
    assert response.events[1].prev_kv is not None
    assert response.events[1].prev_kv.value == b"1"
    compacted = WatchResponse.decode({"header": HEADER, "canceled": True, "compact_revision": "5"})
    assert (compacted.canceled, compacted.compact_revision) == (True, 5)


def test_error_answers_raise_with_etcds_code_and_message() -> None:
    with pytest.raises(EtcdError) as info:
        decode_body(
            '{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}'
        )
    assert info.value.code == 5
    assert str(info.value) == "etcd error 5: etcdserver: requested lease not found"
    with pytest.raises(EtcdError) as streamed:
        decode_stream_line(
            '{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}'
        )
    assert streamed.value.code == 14
    with pytest.raises(EtcdError, match="not a JSON answer"):
        decode_body("<html>proxy error</html>")
    with pytest.raises(EtcdError, match="bad base64"):
        RangeResult.decode({"kvs": [{"key": "!!"}]})
    with pytest.raises(EtcdError, match="expected an integer"):
        RangeResult.decode({"header": {"revision": "x"}})
