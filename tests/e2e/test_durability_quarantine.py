"""A durable queue whose journal cannot be read at boot: the broker starts, keeps the data, ctl shows it."""

from __future__ import annotations

import json
from pathlib import Path

import pika
from broker_process import start_broker
from mgmt_helpers import ctl


def test_unreadable_queue_journal_is_kept_and_listed_by_ctl(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    broker = start_broker(data_dir)
    try:
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        channel.confirm_delivery()
        for name in ("broken", "fine"):
            channel.queue_declare(name, durable=True)
            channel.basic_publish(
                "", name, b"kept:" + name.encode(), pika.BasicProperties(delivery_mode=2)
            )
        conn.close()
        assert broker.stop() == 0
        (journal,) = [
            d
            for d in (data_dir / "queues").iterdir()
            if any(b"kept:broken" in p.read_bytes() for p in d.iterdir())
        ]
        (journal / "0000009999.seg").mkdir()  # reading this queue's journal now fails
        broker = start_broker(data_dir)
        (entry,) = json.loads(ctl(broker, "--json", "list", "quarantine"))
        assert (entry["vhost"], entry["name"]) == ("/", "broken")
        assert "could not be read" in entry["reason"]
        kept = Path(entry["path"])
        assert any(b"kept:broken" in p.read_bytes() for p in kept.rglob("*") if p.is_file())
        assert journal.name in broker.output()  # the error names the file
        assert "broken" in ctl(broker, "list", "quarantine")
        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        channel = conn.channel()
        _method, _props, body = channel.basic_get("fine", auto_ack=True)
        assert body == b"kept:fine"
        conn.close()
    finally:
        broker.stop()
