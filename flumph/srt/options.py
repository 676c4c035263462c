"""Addresses, socket options and statistics of a live-mode SRT socket: struct sockaddr in and out,
:class:`SrtOptions` (validated, applied before connect or listen) and :class:`SrtStats` (srt_bstats
with IP-level byte estimates)."""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass

from flumph.srt.library import (
    _SRTO_LATENCY,
    _SRTO_LINGER,
    _SRTO_PASSPHRASE,
    _SRTO_PAYLOADSIZE,
    _SRTO_PBKEYLEN,
    _SRTO_PEERIDLETIMEO,
    _SRTO_SNDDROPDELAY,
    _SRTO_STREAMID,
    _SRTO_TRANSTYPE,
    _SRTO_TSBPDMODE,
    _SRTT_LIVE,
    _BStats,
    _error,
    _lib,
)

MAX_PAYLOAD_SIZE = 1456  # SRT_LIVE_MAX_PLSIZE: MTU 1500 - IP/UDP 28 - SRT 16
MAX_STREAMID_BYTES = 512


# IP-level bytes: headers of each data packet (IPv4 20 + UDP 8 + SRT 16) and the control packets
# srt_bstats counts. ACK, ACKACK, handshake sizes were measured on the wire; a NAK carries 4 bytes
# per lost packet (8 for a range): one lost packet is assumed.
DATA_HEADER_BYTES = 44
ACK_WIRE_BYTES = 72
ACKACK_WIRE_BYTES = 48
NAK_WIRE_BYTES = 48
HANDSHAKE_WIRE_BYTES = 200  # two handshake packets each way (more with a passphrase or stream id)

# --- addresses and options --------------------------------------------------------------------


def _sockaddr(host: str, port: int, *, passive: bool = False) -> tuple[bytes, tuple[str, int]]:
    """A struct sockaddr for host:port (IPv4 or IPv6) and the address it resolved to."""
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    flags = socket.AI_PASSIVE if passive else 0
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_DGRAM, flags=flags)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve SRT host {host!r}: {e}") from None
    family, _, _, _, address = infos[0]
    ip = str(address[0])
    if family == socket.AF_INET:
        raw = struct.pack("=H", family) + struct.pack("!H", port) + socket.inet_pton(family, ip)
        return raw + bytes(8), (ip, port)
    if family == socket.AF_INET6:
        scope = int(address[3])  # type: ignore[misc]
        raw = struct.pack("=H", family) + struct.pack("!HI", port, 0)
        return raw + socket.inet_pton(family, ip) + struct.pack("=I", scope), (ip, port)
    raise ValueError(f"SRT host {host!r} resolved to an unsupported address family {family}")


def _parse_sockaddr(raw: bytes) -> tuple[str, int]:
    (family,) = struct.unpack_from("=H", raw)
    (port,) = struct.unpack_from("!H", raw, 2)
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    return f"<address family {family}>", port


def _sockaddr_at(pointer: int | None) -> tuple[str, int]:
    if not pointer:
        return "", 0
    (family,) = struct.unpack("=H", ctypes.string_at(pointer, 2))
    size = 28 if family == socket.AF_INET6 else 16
    return _parse_sockaddr(ctypes.string_at(pointer, size))


def _set_int(sid: int, option: int, value: int, name: str) -> None:
    box = ctypes.c_int(value)
    if _lib().srt_setsockflag(sid, option, ctypes.byref(box), ctypes.sizeof(box)) < 0:
        raise _error(f"setting {name}={value}")


def _set_bytes(sid: int, option: int, value: bytes, name: str) -> None:
    buffer = ctypes.create_string_buffer(value, len(value))
    if _lib().srt_setsockflag(sid, option, buffer, len(value)) < 0:
        raise _error(f"setting {name}")


def _get_bytes(sid: int, option: int, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(size)
    length = ctypes.c_int(size)
    if _lib().srt_getsockflag(sid, option, buffer, ctypes.byref(length)) < 0:
        return b""
    return buffer.raw[: length.value]


def _check_passphrase(passphrase: str | None, pbkeylen: int) -> None:
    if passphrase is not None and not 10 <= len(passphrase.encode()) <= 79:
        raise ValueError(
            f"passphrase must be 10 to 79 characters long, got {len(passphrase.encode())}"
        )
    if pbkeylen not in (16, 24, 32):
        raise ValueError(f"pbkeylen must be 16, 24 or 32 (AES key bytes), got {pbkeylen}")


def _set_secret(sid: int, passphrase: str, pbkeylen: int) -> None:
    _set_int(sid, _SRTO_PBKEYLEN, pbkeylen, "SRTO_PBKEYLEN")
    _set_bytes(sid, _SRTO_PASSPHRASE, passphrase.encode(), "SRTO_PASSPHRASE")


@dataclass(frozen=True)
class SrtOptions:
    """Options of a live-mode SRT socket; both ends should agree on latency and payload size."""

    latency_ms: int = 120
    passphrase: str | None = None  # AES, 10..79 characters; None = unencrypted
    pbkeylen: int = 16  # AES key bytes: 16, 24 or 32
    payload_size: int = 1316  # bytes per packet (7 MPEG-TS packets), at most 1456
    linger_s: int | None = None  # None = libsrt's default (0 in live mode)
    peer_idle_timeout_ms: int = 5000  # a silent peer is dropped after this long
    streamid: str | None = None  # sent by a caller; at most 512 bytes
    # Timestamp-based packet delivery (libsrt's SRTO_TSBPDMODE) on the receiving side. True: each
    # message is held until its send time + latency_ms, a message still missing then is dropped
    # ("too late"). False: a message is delivered as soon as it and every one before it arrived
    # and were acknowledged (libsrt acknowledges every 10 ms), a missing one is waited for until
    # it is retransmitted or the sender gives it up (1 s in libsrt 1.5), and libsrt runs no
    # delivery thread per socket (bench/README.md, `srt_tsbpd.py`: half the receive cost).
    tsbpd: bool = True
    # Whether this socket, sending, drops packets still unacknowledged ~1 s after they were handed
    # to it (libsrt's sender-side too-late drop, SRTO_SNDDROPDELAY >= 0, on whenever the receiver
    # agreed to TLPKTDROP). False (SRTO_SNDDROPDELAY = -1): it never does. Why a sender may want
    # that: a receiver without TSBPD may fail to skip the hole a dropped packet leaves (libsrt
    # Haivision/srt#1082, #2460) and stop delivering and acknowledging for good (with the
    # ingest's ``srt_tsbpd = false``: nothing delivered for 15 s in 1 of 3 runs, see
    # device-agent/linkestimate.py; a plain caller through 2.5 and 4 s outages was skipped past
    # in 2 of 2).
    # The sender's queue is then bounded only by the rate it sends at.
    sender_drops: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.latency_ms <= 60_000:
            raise ValueError(f"latency_ms must be 0..60000, got {self.latency_ms}")
        _check_passphrase(self.passphrase, self.pbkeylen)
        if not 1 <= self.payload_size <= MAX_PAYLOAD_SIZE:
            raise ValueError(
                f"payload_size must be 1..{MAX_PAYLOAD_SIZE} bytes, got {self.payload_size}"
            )
        if self.linger_s is not None and self.linger_s < 0:
            raise ValueError(f"linger_s must be >= 0 or None, got {self.linger_s}")
        if self.peer_idle_timeout_ms <= 0:
            raise ValueError(f"peer_idle_timeout_ms must be > 0, got {self.peer_idle_timeout_ms}")
        if self.streamid is not None and len(self.streamid.encode()) > MAX_STREAMID_BYTES:
            raise ValueError(
                f"streamid must be at most {MAX_STREAMID_BYTES} bytes, "
                f"got {len(self.streamid.encode())}"
            )

    def _apply(self, sid: int, *, caller: bool) -> None:
        # SRTO_TRANSTYPE resets the other options to that type's defaults: it goes first.
        _set_int(sid, _SRTO_TRANSTYPE, _SRTT_LIVE, "SRTO_TRANSTYPE")
        _set_int(sid, _SRTO_PAYLOADSIZE, self.payload_size, "SRTO_PAYLOADSIZE")
        _set_int(sid, _SRTO_LATENCY, self.latency_ms, "SRTO_LATENCY")
        _set_int(sid, _SRTO_PEERIDLETIMEO, self.peer_idle_timeout_ms, "SRTO_PEERIDLETIMEO")
        if not self.tsbpd:
            _set_int(sid, _SRTO_TSBPDMODE, 0, "SRTO_TSBPDMODE")
        if not self.sender_drops:
            _set_int(sid, _SRTO_SNDDROPDELAY, -1, "SRTO_SNDDROPDELAY")
        if self.linger_s is not None:
            linger = struct.pack("=ii", 1 if self.linger_s > 0 else 0, self.linger_s)
            _set_bytes(sid, _SRTO_LINGER, linger, "SRTO_LINGER")
        if self.passphrase is not None:
            _set_secret(sid, self.passphrase, self.pbkeylen)
        if caller and self.streamid:
            _set_bytes(sid, _SRTO_STREAMID, self.streamid.encode(), "SRTO_STREAMID")


# --- statistics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SrtStats:
    """Totals since the connection opened (srt_bstats), from this socket's point of view.

    ``bytes_*`` are payload bytes, retransmissions included. ``wire_bytes_*`` estimate the IP-level
    bytes: each data packet's payload + 44 bytes of IPv4/UDP/SRT headers; the control packets that
    srt_bstats counts (ACK 72 B; the ACKACK of 48 B answering each ACK; NAK 48 B); 200 B of
    handshake. Not counted: keepalives (48 B per idle second each way), light ACKs (48 B per 64
    packets of a burst), shutdown. Measured through a counting UDP relay on loopback: exact for a
    15 fps, 250 kbps stream both ways; for a 300-packet burst exact upstream, while downstream
    the estimate misses the light ACKs and a keepalive (272 B estimated, 512 B seen).
    Rates cover the interval since the last ``stats(clear=True)`` (or the connection's start).
    """

    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    packets_retransmitted: int
    packets_lost_sent: int  # reported lost by the peer (NAKs received)
    packets_lost_received: int  # detected lost by this receiver
    packets_dropped_received: int  # too late to play, never delivered
    rtt_ms: float
    send_rate_mbps: float
    recv_rate_mbps: float
    wire_bytes_sent: int
    wire_bytes_received: int
    packets_dropped_sent: int = 0  # too late to send, dropped by this sender
    acks_sent: int = 0
    acks_received: int = 0
    naks_sent: int = 0
    naks_received: int = 0
    # Retransmitted packets this receiver got. libsrt keeps it only per interval (pktRcvRetrans,
    # since the last stats(clear=True)): a total as long as nobody clears.
    packets_retransmitted_received: int = 0
    # The sender's buffer now (not totals): data handed to libsrt and not yet acknowledged. On a
    # link that cannot carry the stream it grows first, before anything is lost: what a rate
    # adapter watches (belacoder and SRT's own examples do the same).
    send_buffer_ms: int = 0  # time span of the unacknowledged data
    send_buffer_bytes: int = 0
    send_buffer_packets: int = 0
    # The same bytes as they are now: the fields above are libsrt's moving average (srt_bstats),
    # which lags a queue's draining by seconds. Filled only by a caller that asks for both.
    send_buffer_now_bytes: int = 0
    flight_packets: int = 0  # sent and not yet acknowledged, in the network
    bandwidth_mbps: float = 0.0  # libsrt's packet-pair estimate of the link (noisy)
    bytes_sent_unique: int = 0  # payload bytes sent once (retransmissions not counted)
    bytes_dropped_sent: int = 0  # payload the sender dropped as too late

    @classmethod
    def from_bstats(cls, perf: _BStats) -> SrtStats:
        # libsrt's byte counters include the 44 header bytes of every data packet.
        sent_payload = perf.byteSentTotal - DATA_HEADER_BYTES * perf.pktSentTotal
        received_payload = perf.byteRecvTotal - DATA_HEADER_BYTES * perf.pktRecvTotal
        control_sent = (
            perf.pktSentACKTotal * ACK_WIRE_BYTES
            + perf.pktSentNAKTotal * NAK_WIRE_BYTES
            + perf.pktRecvACKTotal * ACKACK_WIRE_BYTES
        )
        control_received = (
            perf.pktRecvACKTotal * ACK_WIRE_BYTES
            + perf.pktRecvNAKTotal * NAK_WIRE_BYTES
            + perf.pktSentACKTotal * ACKACK_WIRE_BYTES
        )
        return cls(
            bytes_sent=max(0, sent_payload),
            bytes_received=max(0, received_payload),
            packets_sent=perf.pktSentTotal,
            packets_received=perf.pktRecvTotal,
            packets_retransmitted=perf.pktRetransTotal,
            packets_lost_sent=perf.pktSndLossTotal,
            packets_lost_received=perf.pktRcvLossTotal,
            packets_dropped_received=perf.pktRcvDropTotal,
            rtt_ms=perf.msRTT,
            send_rate_mbps=perf.mbpsSendRate,
            recv_rate_mbps=perf.mbpsRecvRate,
            wire_bytes_sent=HANDSHAKE_WIRE_BYTES + perf.byteSentTotal + control_sent,
            wire_bytes_received=HANDSHAKE_WIRE_BYTES + perf.byteRecvTotal + control_received,
            packets_dropped_sent=perf.pktSndDropTotal,
            acks_sent=perf.pktSentACKTotal,
            acks_received=perf.pktRecvACKTotal,
            naks_sent=perf.pktSentNAKTotal,
            naks_received=perf.pktRecvNAKTotal,
            packets_retransmitted_received=perf.pktRcvRetrans,
            send_buffer_ms=perf.msSndBuf,
            send_buffer_bytes=perf.byteSndBuf,
            send_buffer_packets=perf.pktSndBuf,
            flight_packets=perf.pktFlightSize,
            bandwidth_mbps=perf.mbpsBandwidth,
            bytes_sent_unique=max(
                0, perf.byteSentUniqueTotal - DATA_HEADER_BYTES * perf.pktSentUniqueTotal
            ),
            bytes_dropped_sent=max(
                0, perf.byteSndDropTotal - DATA_HEADER_BYTES * perf.pktSndDropTotal
            ),
        )
