"""The stream log alone (no sockets): segments roll, retention drops whole segments, offsets and
timestamps are found through the index, named consumers' offsets and the data survive reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from amqplite.protocol.properties import replace_headers
from amqplite.store.records import FILE_HEADER
from amqplite.store.store import Store
from amqplite.store.stream_log import StreamLog
from amqplite.store.stream_reader import StaleIndex, read_segment_entries
from amqplite.store.stream_records import IDX, SEG, filter_hash


def _stream(tmp_path: Path, segment_bytes: int = 1000) -> tuple[Store, StreamLog]:
    store = Store(tmp_path / "data")
    stream = store.attach_stream("/", "s", tmp_path / "data" / "queues" / "s1")
    stream.configure(segment_bytes, None, None)
    return store, stream


def _fill(stream: StreamLog, count: int, start_ms: int = 1000, size: int = 100) -> None:
    for i in range(count):
        stream.append("", "s", b"\x00\x00", bytes([i % 256]) * size, start_ms + i)


def test_appends_are_read_back_only_once_committed(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path)
    _fill(stream, 5)
    assert stream.view().read(0, 100).entries == []  # not on disk yet: invisible
    store.commit()
    got = stream.view().read(0, 100).entries
    assert [e.offset for e in got] == [0, 1, 2, 3, 4]
    assert got[3].body == b"\x03" * 100
    assert got[3].timestamp_ms == 1003


def test_segments_roll_at_the_size_limit_and_reads_cross_them(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=1000)
    _fill(stream, 40)
    store.commit()
    assert len(stream.segments) > 3
    files = sorted(p.name for p in stream.directory.iterdir())
    assert sum(name.endswith(SEG) for name in files) == len(stream.segments)
    assert sum(name.endswith(IDX) for name in files) == len(stream.segments)
    result = stream.view().read(7, 25)
    assert [e.offset for e in result.entries] == list(range(7, 32))
    assert result.next_offset == 32
    assert [e.offset for e in stream.view().read(32, 100).entries] == list(range(32, 40))


def test_timestamp_finds_the_first_message_at_or_after_it(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path)
    _fill(stream, 30, start_ms=10_000)
    store.commit()
    view = stream.view()
    assert view.offset_at(10_017) == 17
    assert view.offset_at(0) == 0
    assert view.offset_at(99_999) == 30  # after the last: the next offset


def test_retention_by_size_and_by_age_drops_whole_closed_segments(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=1000)
    _fill(stream, 40, start_ms=1000)
    store.commit()
    before = len(stream.segments)
    stream.max_bytes = 2500
    assert stream.retain(now_ms=2000) > 0
    store.commit()
    assert stream.bytes_on_disk <= 2500 + 1000  # the active segment always stays
    assert len(list(stream.directory.glob(f"*{SEG}"))) == len(stream.segments) < before
    first = stream.first_offset
    assert first > 0
    assert stream.view().read(0, 1).entries[0].offset == first
    stream.max_bytes = None
    stream.max_age_ms = 10
    assert stream.retain(now_ms=1000 + 40 + 10 + 1) > 0  # every closed segment is too old now
    store.commit()
    assert len(stream.segments) == 1
    assert not stream.segments[0].closed


def test_age_retention_keeps_segments_with_recent_messages(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=1000)
    _fill(stream, 40, start_ms=1000)
    store.commit()
    stream.max_age_ms = 100_000
    assert stream.retain(now_ms=2000) == 0


def test_reopen_restores_offsets_tracking_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=1000)
    _fill(stream, 25)
    stream.track("reader", 11)
    store.commit()
    _fill(stream, 5, start_ms=5000)  # rolls at least once more: the tracks are re-written
    store.commit()
    last = stream.segments[-1]
    path = stream.directory / f"{last.first:020d}{SEG}"
    with open(path, "ab") as file:
        file.write(b"\x00\x00\x01\x00torn")  # a crash in the middle of a record
    reopened = StreamLog.open(store, "/s", stream.directory)
    assert reopened.next_offset == 30
    assert reopened.tracked == {"reader": 11}
    assert path.stat().st_size == last.size
    assert [e.offset for e in reopened.view().read(20, 100).entries] == list(range(20, 30))
    assert reopened.segments[0].size >= FILE_HEADER.size


def test_filter_summaries_skip_segments_without_the_value(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=600)
    for i in range(30):
        value = "red" if i in (25, 27) else "blue"
        stream.append("", "s", b"\x00\x00", b"x" * 100, 1000 + i, value)
    store.commit()
    red = frozenset({filter_hash("red")})
    assert not stream.segments[0].may_hold(red, False)
    got = stream.view().read(0, 100, frozenset({"red"}))
    assert [e.offset for e in got.entries] == [25, 27]


def _keyed(key: str) -> bytes:
    return replace_headers(b"\x00\x00", {"k": key})


def test_compaction_keeps_the_newest_message_per_key_in_closed_segments(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=400)
    stream.compaction_key = "k"
    stream.tombstone_ms = 1000
    for i in range(30):
        body = b"" if i == 4 else f"v{i}".encode() * 10  # offset 4: a tombstone of key "b"
        stream.append("", "rk", _keyed("abcd"[i % 4] if i != 4 else "b"), body, 1000 + i)
    store.commit()
    active = stream.segments[-1].first
    plan = stream.start_compaction(now_ms=1000 + 30 + 1000 + 1)
    assert plan is not None
    stream.max_age_ms = 1
    assert stream.retain(now_ms=10**12) == 0  # no retention while compacting
    stream.max_age_ms = None
    plan.run()
    stream.compaction_done(plan.sizes, plan.removed)
    got = stream.view().read(0, 100).entries
    closed = [e for e in got if e.offset < active]
    newest = {e.offset for e in got}
    # in closed segments only the newest of each key stays; the open segment is left alone
    assert all(e.offset >= 26 for e in closed)
    assert [e.offset for e in got if e.offset >= active] == list(range(active, 30))
    assert 29 in newest
    assert plan.removed > 0
    reopened = StreamLog.open(store, "/s", stream.directory)  # the rewritten files recover
    assert [e.offset for e in reopened.view().read(0, 100).entries] == [e.offset for e in got]


def test_compaction_drops_old_tombstones_and_keeps_young_ones(tmp_path: Path) -> None:
    store, stream = _stream(tmp_path, segment_bytes=300)
    stream.compaction_key = "k"
    stream.tombstone_ms = 1000
    stream.append("", "rk", _keyed("gone"), b"x" * 50, 1000)
    stream.append("", "rk", _keyed("gone"), b"", 1001)  # tombstone of "gone"
    for i in range(20):
        stream.append("", "rk", _keyed(f"other{i}"), b"y" * 50, 1002 + i)
    store.commit()
    young = stream.start_compaction(now_ms=1500)
    young.run()
    stream.compaction_done(young.sizes, young.removed)
    offsets = [e.offset for e in stream.view().read(0, 100).entries]
    assert 0 not in offsets  # superseded by the tombstone
    assert 1 in offsets  # the tombstone is younger than the tombstone age
    old = stream.start_compaction(now_ms=5000)
    old.run()
    stream.compaction_done(old.sizes, old.removed)
    assert 1 not in [e.offset for e in stream.view().read(0, 100).entries]


def test_a_reader_holding_a_stale_index_is_told_so_not_given_wrong_messages(
    tmp_path: Path,
) -> None:
    store, stream = _stream(tmp_path, segment_bytes=400)
    stream.compaction_key = "k"
    for i in range(30):
        stream.append("", "rk", _keyed("abcd"[i % 4]), f"v{i}".encode() * 10, 1000 + i)
    store.commit()
    first, end = stream.segments[0].first, stream.segments[0].next
    index = stream.directory / f"{first:020d}{IDX}"
    before = index.read_bytes()
    plan = stream.start_compaction(now_ms=2000)
    plan.run()
    stream.compaction_done(plan.sizes, plan.removed)
    index.write_bytes(before)  # the index as a reader opened it before the swap
    with pytest.raises(StaleIndex):
        list(read_segment_entries(stream.directory, first, end, end - 1))
