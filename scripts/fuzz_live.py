"""Live fuzzing of a broker over loopback: hostile connections beside a healthy publisher.

Each case opens a TCP connection and sends something broken: random bytes, a protocol header and
silence, a valid handshake followed by mutated frames, truncated or oversized frames. The broker
must answer each one with connection.close (a reply code) or a socket close, or still answer a
polite connection.close, or (when it waits for the rest of a frame cut short) refuse the zeros
that complete it; a case with no answer at all is counted as unanswered. Meanwhile one
healthy client publishes with confirms; at the end every confirmed message must be in its queue,
the broker process must still be running and its log must hold no internal error.

    .venv/bin/python scripts/fuzz_live.py --seconds 180           # spawns its own broker
    .venv/bin/python scripts/fuzz_live.py --port 5672 --seconds 60  # a broker already running
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pika

from amqplite.protocol.constants import PROTOCOL_HEADER
from amqplite.protocol.methods import build_method as build
from amqplite.protocol.methods import encode_method, spec
from amqplite.protocol.writers import encode_content

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # loopback only, by design
QUEUE = "fuzz-live-healthy"


def handshake() -> bytes:
    """A valid opening up to connection.open, as one write."""
    return (
        PROTOCOL_HEADER
        + encode_method(
            0, build(spec.Connection.StartOk, mechanism="PLAIN", response="\x00guest\x00guest")
        )
        + encode_method(0, build(spec.Connection.TuneOk, channel_max=0, frame_max=131072))
        + encode_method(0, build(spec.Connection.Open, virtual_host="/"))
    )


def valid_frames(rng: random.Random) -> list[bytes]:
    """Valid commands on channel 1 (queue and exchange names private to this case)."""
    n = rng.randrange(1 << 30)
    q, x = f"fuzz-q-{n}", f"fuzz-x-{n}"
    body = rng.randbytes(rng.choice([0, 10, 5000, 200_000]))
    return [
        encode_method(1, spec.Channel.Open()),
        encode_method(1, build(spec.Queue.Declare, queue=q, auto_delete=True)),
        encode_method(1, build(spec.Exchange.Declare, exchange=x, exchange_type="topic")),
        encode_method(1, build(spec.Queue.Bind, queue=q, exchange=x, routing_key="#")),
        encode_method(1, build(spec.Basic.Publish, exchange=x, routing_key="a.b"))
        + encode_content(1, 60, b"\x10\x00\x02", body, 131072),
        encode_method(1, build(spec.Basic.Consume, queue=q, consumer_tag="c")),
        encode_method(1, build(spec.Basic.Ack, delivery_tag=rng.randrange(3), multiple=True)),
        encode_method(1, build(spec.Basic.Get, queue=q)),
        encode_method(1, spec.Confirm.Select()),
        encode_method(1, spec.Tx.Select()),
        encode_method(1, build(spec.Exchange.Delete, exchange=x)),
    ]


def mutate(rng: random.Random, frame: bytes) -> tuple[str, bytes]:
    """A frame with bytes flipped, cut short, its size or channel changed, or bytes inserted."""
    data = bytearray(frame)
    kind = rng.choice(["byte", "truncate", "size", "channel", "insert"])
    if kind == "byte":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "size":
        data[3:7] = struct.pack(">I", rng.choice([0, 7, 1 << 20, 1 << 31, rng.randrange(1 << 32)]))
    elif kind == "channel":
        data[1:3] = struct.pack(">H", rng.randrange(1 << 16))
    else:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 32))
    return kind, bytes(data)


def make_case(rng: random.Random) -> tuple[str, bytes]:
    """One hostile opening: (its kind, the bytes to send)."""
    kind = rng.choice(["random", "bad header", "handshake+mutated", "handshake+garbage"])
    if kind == "random":
        return kind, rng.randbytes(rng.randint(1, 300))
    if kind == "bad header":
        return kind, mutate(rng, PROTOCOL_HEADER)[1] + rng.randbytes(rng.randint(0, 20))
    frames = valid_frames(rng)
    sent = frames[: rng.randint(1, len(frames))]
    if kind == "handshake+mutated":
        i = rng.randrange(len(sent))
        how, sent[i] = mutate(rng, sent[i])
        return f"{kind}:{how}", handshake() + b"".join(sent)
    return kind, handshake() + b"".join(sent) + rng.randbytes(rng.randint(1, 64))


def answer(sock: socket.socket, deadline: float) -> str:
    """How the broker answered: 'close' (connection.close or EOF) or 'none' by the deadline."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return "none"
        except OSError:
            return "close"
        if not chunk:
            return "close"
        data += chunk
        if b"\x00\x0a\x00\x32" in data or b"\x00\x0a\x00\x33" in data:  # close / close-ok
            return "close"
    return "none"


def run_case(port: int, rng: random.Random) -> tuple[str, str]:
    """Send one hostile case; returns (kind, outcome)."""
    kind, payload = make_case(rng)
    with socket.create_connection((HOST, port), timeout=5) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return kind, "close"
        outcome = answer(sock, time.monotonic() + 2.0)
        if outcome == "none":
            # a stream that happened to stay valid: a polite close must still be answered
            close = build(spec.Connection.Close, reply_code=200, reply_text="", class_id=0)
            try:
                sock.sendall(encode_method(0, close))
            except OSError:
                return kind, "close"
            outcome = answer(sock, time.monotonic() + 5.0)
        if outcome == "none":
            # the broker may be waiting for the rest of a frame cut short: complete it with zeros
            # (a frame's size is at most frame_max), which must then be refused
            try:
                sock.sendall(bytes(131072 + 16))
            except OSError:
                return kind, "close"
            outcome = answer(sock, time.monotonic() + 5.0)
        return kind, outcome


class Healthy(threading.Thread):
    """A publisher with confirms that must lose nothing while the fuzzing goes on."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.confirmed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            params = pika.ConnectionParameters(HOST, self.port, heartbeat=0)
            with pika.BlockingConnection(params) as conn:
                ch = conn.channel()
                ch.queue_declare(QUEUE)
                ch.queue_purge(QUEUE)
                ch.confirm_delivery()
                while not self.stop.is_set():
                    ch.basic_publish("", QUEUE, str(self.confirmed).encode())
                    self.confirmed += 1
                    conn.sleep(0.005)
        except BaseException as exc:  # reported at the end
            self.error = exc

    def check(self) -> str:
        """'ok' when every confirmed message is in the queue, in order, else what went wrong."""
        if self.error is not None:
            return f"healthy client failed: {self.error!r}"
        params = pika.ConnectionParameters(HOST, self.port, heartbeat=0)
        with pika.BlockingConnection(params) as conn:
            ch = conn.channel()
            for expected in range(self.confirmed):
                _, _, body = ch.basic_get(QUEUE, auto_ack=True)
                if body != str(expected).encode():
                    return f"message {expected} missing or out of order (got {body!r})"
            ch.queue_delete(QUEUE)
        return "ok"


def spawn_broker(data_dir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`amqplite serve` on a free loopback port, without management; (process, port, log)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    log = data_dir / "broker.log"
    cmd = [sys.executable, "-m", "amqplite", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--data-dir", str(data_dir / "data"), "--management-port", "0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return proc, port, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"broker did not start: {log.read_text()}") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, help="a broker already listening on 127.0.0.1")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--silent-wait", type=float, default=12.0, help="> handshake_timeout")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, log = (None, args.port, None) if args.port else spawn_broker(Path(tmp))
        healthy = Healthy(port)
        healthy.start()
        outcomes: Counter[tuple[str, str]] = Counter()
        lock = threading.Lock()
        end = time.monotonic() + args.seconds
        silent_running: list[threading.Thread] = []

        def silent(case_rng: random.Random) -> None:
            outcome = answer_silent(port, args.silent_wait, case_rng)
            with lock:
                outcomes[("silent", outcome)] += 1

        while time.monotonic() < end:
            case_rng = random.Random(rng.randrange(1 << 62))
            if case_rng.random() < 0.02:  # waits out the handshake timeout, in the background
                thread = threading.Thread(target=silent, args=(case_rng,), daemon=True)
                thread.start()
                silent_running.append(thread)
                continue
            kind, outcome = run_case(port, case_rng)
            with lock:
                outcomes[(kind, outcome)] += 1
        for thread in silent_running:
            thread.join(args.silent_wait + 5)
        healthy.stop.set()
        healthy.join(30)
        verdict = healthy.check()
        alive = proc is None or proc.poll() is None
        internal = 0
        if proc is not None and log is not None:
            proc.terminate()
            proc.wait(30)
            text = log.read_text(errors="replace")
            internal = text.count("internal error") + text.count("Traceback")
    tried = sum(outcomes.values())
    unanswered = sum(n for (_, outcome), n in outcomes.items() if outcome != "close")
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"{kind:20} {outcome:6} {n}")
    print(f"cases tried: {tried}; unanswered: {unanswered}; internal errors logged: {internal}")
    print(f"broker alive to the end: {alive}")
    print(f"healthy publisher: {healthy.confirmed} confirmed, {verdict}")
    return 0 if alive and not unanswered and not internal and verdict == "ok" else 1


def answer_silent(port: int, wait: float, rng: random.Random) -> str:
    """Connect, send at most a partial header, say nothing more: the broker must close."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(PROTOCOL_HEADER[: rng.randint(0, len(PROTOCOL_HEADER))])
        return answer(sock, time.monotonic() + wait)


if __name__ == "__main__":
    sys.exit(main())
