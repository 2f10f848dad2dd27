"""The benchmark's lean client, /proc readers and report, without a broker."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchlib.client import (
    BrokerURL,
    Consumer,
    ack_frame,
    acks_each,
    publish_frames,
    stamp_body,
)
from benchlib.plot import plot, plot_paths
from benchlib.procinfo import find_listener_pid, sample
from benchlib.report import flow_table, memory_table, ratios, table
from benchlib.roles import Flow, latency_summary, percentile
from benchlib.sampler import rates
from benchlib.scenarios import SCENARIOS, Measured, Result, Settings, Target, run_scenario

from amqplite.broker.message import Message
from amqplite.protocol import (
    NEED_DATA,
    PROTOCOL_HEADER,
    BasicAck,
    BasicPublish,
    BodyFrame,
    Deliver,
    FrameReader,
    HeaderFrame,
    MethodFrame,
    encode_ack,
    encode_deliver,
)


def _frames(data: bytes) -> list[object]:
    reader = FrameReader()
    reader.receive_data(PROTOCOL_HEADER + data)
    reader.next_frame()
    frames = []
    while (frame := reader.next_frame()) is not NEED_DATA:
        frames.append(frame)
    return frames


def test_publish_frames_decode_as_a_publish_with_its_persistent_content() -> None:
    frames = _frames(publish_frames("ex", "key", b"hello", persistent=True))
    assert frames[0] == MethodFrame(1, BasicPublish("ex", "key"))
    assert isinstance(frames[1], HeaderFrame)
    assert frames[1].body_size == 5
    assert frames[1].properties_bin == b"\x10\x00\x02"
    assert frames[2] == BodyFrame(1, b"hello")


def test_ack_frames_match_the_protocol_encoder() -> None:
    assert _frames(ack_frame(7, True)) == [MethodFrame(1, BasicAck(7, True))]
    assert _frames(acks_each(3, 5)) == [MethodFrame(1, BasicAck(tag, False)) for tag in (3, 4, 5)]


def test_consumer_counts_deliveries_and_keeps_a_partial_frame() -> None:
    data = b"".join(
        encode_deliver(
            Deliver(1, "bench-0", tag, False), Message("", "q", b"\x00\x00", b"x" * 10), 131072
        )
        for tag in (1, 2, 3)
    )
    consumer = Consumer(keep_tags=True)
    buffer = bytearray(data[:-5])
    consumer.feed(buffer, 0)
    assert consumer.tags == [1, 2, 3]
    assert consumer.deliveries == 3
    assert len(buffer) > 0  # the third body frame is incomplete and stays
    buffer += data[-5:]
    consumer.feed(buffer, 0)
    assert buffer == bytearray()
    assert consumer.deliveries == 3


def test_consumer_reads_latency_from_stamped_bodies() -> None:
    body = stamp_body(64)(1_000_000)
    assert len(body) == 64
    consumer = Consumer(stamps=True)
    buffer = bytearray(
        encode_deliver(Deliver(1, "c", 1, False), Message("", "q", b"\x00\x00", body), 131072)
    )
    consumer.feed(buffer, 3_500_000)
    assert consumer.latencies_ns == [2_500_000]


def test_consumer_tracks_publisher_confirms_by_highest_tag() -> None:
    consumer = Consumer()
    buffer = bytearray(encode_ack(1, 10, True) + encode_ack(1, 11, False))
    consumer.feed(buffer, 0)
    assert consumer.confirmed == 11
    assert consumer.deliveries == 0


def test_broker_url_parses_percent_encoded_vhost_and_defaults() -> None:
    assert BrokerURL.parse("amqp://u:p@127.0.0.1:5673/%2F") == BrokerURL(
        "127.0.0.1", 5673, "u", "p", "/"
    )
    assert BrokerURL.parse("amqp://localhost").vhost == "/"
    with pytest.raises(ValueError, match="amqp://"):
        BrokerURL.parse("http://localhost/")


def test_percentiles_use_nearest_rank() -> None:
    values = list(range(1, 1001))
    assert percentile(values, 0.5) == 500
    assert percentile(values, 0.99) == 990
    assert percentile(values, 0.999) == 999
    assert percentile([], 0.5) == 0
    summary = latency_summary([2_000_000, 1_000_000])
    assert summary["p50_ms"] == 1.0
    assert summary["max_ms"] == 2.0


def test_flow_batches_cycle_over_every_routing_key() -> None:
    from benchlib.roles import _batches

    class FakeClient:
        frame_max = 131072

    flow = Flow(queues=("q",), routing_keys=tuple(f"k{i}" for i in range(3)), batch=4, size=2)
    batches = _batches(FakeClient(), flow)  # type: ignore[arg-type]
    keys = [
        f.method.routing_key
        for batch in batches
        for f in _frames(batch)
        if isinstance(f, MethodFrame)
    ]
    assert keys == ["k0", "k1", "k2"] * 4


def test_sample_reads_cpu_and_memory_of_this_process() -> None:
    now = sample(os.getpid())
    assert now.rss_bytes > 1_000_000
    assert now.cpu_seconds > 0


def test_listener_pid_is_found_by_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert find_listener_pid(sock.getsockname()[1]) == os.getpid()


def test_ratios_and_table_orient_better_by_metric() -> None:
    results = [
        Result("transient", "A", {"msg_per_s": 50.0, "cpu_us_per_msg": 20.0}),
        Result("transient", "B", {"msg_per_s": 100.0, "cpu_us_per_msg": 40.0}),
        Result("backlog", "A", {}, error="RuntimeError: boom"),
        Result("backlog", "B", {"backlog_mb": 10.0}),
    ]
    assert ratios(results, "A", "B") == {"transient": {"msg_per_s": 0.5, "cpu_us_per_msg": 0.5}}
    text = table(results, ["A", "B"])
    throughput = next(line for line in text.splitlines() if "throughput" in line)
    cpu = next(line for line in text.splitlines() if "broker CPU" in line)
    assert throughput.split()[-2:] == ["0.50x", "no"]
    assert cpu.split()[-2:] == ["0.50x", "yes"]
    assert "ERROR A: RuntimeError: boom" in text


def test_amqplite_bench_runs_the_bench_script(capsys: pytest.CaptureFixture[str]) -> None:
    from amqplite.cli.main import main

    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "transient" in listed
    assert "latency-10k" in listed


def test_rates_are_per_second_between_samples() -> None:
    t = [0.0, 0.5, 1.5, 1.5]
    mids, values = rates(t, [0, 500, 2500, 2600])
    assert mids == [0.25, 1.0]  # the zero-length interval is skipped
    assert values == [1000.0, 2000.0]


def _series(delivered_end: int) -> dict[str, object]:
    return {
        "t": [0.0, 1.0, 2.0],
        "accepted": [0, 1000, 2000],
        "delivered": [0, 500, delivered_end],
        "rss_mb": [30.0, 60.0, 40.0],
        "cpu_s": [1.0, 1.5, 2.0],
        "depth_t": [0.1, 1.1],
        "depth": [0, 500],
        "window_end": 1.0,
    }


def test_combine_takes_medians_and_the_series_of_the_median_run() -> None:
    from bench import combine

    runs = [
        Result("transient", "A", {"delivered_per_s": rate, "rss_peak_mb": mb}, None, _series(n))
        for rate, mb, n in ((30.0, 10.0, 1), (10.0, 30.0, 2), (20.0, 20.0, 3))
    ]
    runs.append(Result("transient", "A", {}, error="RuntimeError: boom"))
    combined = combine(runs)
    assert combined.metrics == {"delivered_per_s": 20.0, "rss_peak_mb": 20.0}
    assert combined.series is not None
    assert combined.series["delivered"][-1] == 3
    assert combined.error is None


def _flow_results() -> list[Result]:
    mine = {
        "accepted_per_s": 82_000.0,
        "delivered_per_s": 44_000.0,
        "cpu_us_per_msg": 22.0,
        "rss_start_mb": 40.0,
        "rss_peak_mb": 900.0,
        "rss_end_mb": 600.0,
        "depth_peak": 300_000.0,
        "drain_s": 21.0,
    }
    theirs = {"accepted_per_s": 58_000.0, "delivered_per_s": 58_000.0, "cpu_us_per_msg": 22.0}
    return [
        Result("transient", "amqplite 0.1", mine),
        Result("transient", "RabbitMQ 3.10", theirs),
        Result("idle-connections", "amqplite 0.1", {"kb_per_connection": 5.0}),
    ]


def test_flow_table_prints_accepted_delivered_ratio_and_cpu_per_delivery() -> None:
    text = flow_table(_flow_results(), ["amqplite 0.1", "RabbitMQ 3.10"])
    lines = text.splitlines()
    assert lines[0].startswith("| scenario | amqplite accepted / delivered per s | RabbitMQ")
    assert len(lines) == 3  # header, rule, one flow (idle-connections has no rates)
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == [
        "transient, one queue, ack multiple",
        "82k / 44k",
        "58k / 58k",
        "0.76x",
        "22.0 / 22.0",
    ]


def test_memory_table_shows_rss_start_peak_end_depth_and_drain() -> None:
    text = memory_table(_flow_results(), ["amqplite 0.1", "RabbitMQ 3.10"])
    rows = text.splitlines()[2:]
    assert rows == ["| transient | amqplite | 40 / 900 / 600 | 300,000 | 21.0 |"]


def test_plot_draws_one_png_per_scenario_with_brokers_side_by_side(tmp_path: Path) -> None:
    results = [
        Result(name, broker, {}, None, _series(1000))
        for name in ("transient", "fanout")
        for broker in ("A", "B")
    ]
    written = plot(results, ["A", "B"], tmp_path / "out.png")
    assert written == [tmp_path / "out-transient.png", tmp_path / "out-fanout.png"]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot_paths(tmp_path / "one.png", ["topic"]) == {"topic": tmp_path / "one.png"}


def test_a_run_that_loses_messages_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky(target: Target, settings: Settings, progress: object) -> Measured:
        return Measured({"accepted_per_s": 10.0, "lost": 3.0})

    monkeypatch.setitem(SCENARIOS, "leaky", leaky)
    result = run_scenario("leaky", Target("amqp://x", None, "X"), Settings(progress=False))
    assert result.error is not None
    assert "lost 3 messages" in result.error
    assert result.metrics["lost"] == 3.0
