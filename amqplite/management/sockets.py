"""A connection's byte and packet counters from the kernel (TCP_INFO): no cost on the data path."""

from __future__ import annotations

import socket
import struct

import attrs

# Offsets into Linux's struct tcp_info (include/uapi/linux/tcp.h); fields past the end of what
# an older kernel returns are left at 0.
_BYTES_ACKED = 120  # u64 tcpi_bytes_acked
_BYTES_RECEIVED = 128  # u64 tcpi_bytes_received
_NOTSENT_BYTES = 144  # u32 tcpi_notsent_bytes
_DATA_SEGS_IN = 152  # u32 tcpi_data_segs_in
_DATA_SEGS_OUT = 156  # u32 tcpi_data_segs_out
_BYTES_SENT = 200  # u64 tcpi_bytes_sent
_TCP_INFO_SIZE = 232


@attrs.frozen
class SocketCounters:
    """RabbitMQ's connection counters: octets and packets each way, and bytes not yet sent."""

    recv_oct: int = 0
    recv_cnt: int = 0
    send_oct: int = 0
    send_cnt: int = 0
    send_pend: int = 0


def _field(info: bytes, offset: int, fmt: str) -> int:
    size = struct.calcsize(fmt)
    if len(info) < offset + size:
        return 0
    value: int = struct.unpack_from(fmt, info, offset)[0]
    return value


def socket_counters(stream: object) -> SocketCounters | None:
    """The counters of a stream's TCP socket; None for other streams or other kernels."""
    sock = getattr(stream, "socket", None)
    if sock is None:  # a TLS stream: the TCP socket under it
        sock = getattr(getattr(stream, "transport_stream", None), "socket", None)
    tcp_info = getattr(socket, "TCP_INFO", None)
    if sock is None or tcp_info is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SIZE)
    except (OSError, TypeError, ValueError):
        return None
    if not isinstance(info, bytes):
        return None
    sent = _field(info, _BYTES_SENT, "=Q") or _field(info, _BYTES_ACKED, "=Q")
    return SocketCounters(
        recv_oct=_field(info, _BYTES_RECEIVED, "=Q"),
        recv_cnt=_field(info, _DATA_SEGS_IN, "=I"),
        send_oct=sent,
        send_cnt=_field(info, _DATA_SEGS_OUT, "=I"),
        send_pend=_field(info, _NOTSENT_BYTES, "=I"),
    )
