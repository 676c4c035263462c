"""Secure Reliable Transport through libsrt 1.5 (ctypes): a live-mode caller and an epoll listener.

Why ctypes: PyPI has no binding for libsrt 1.5 (its `srt` packages parse subtitles) and PyAV has no
``srt://`` protocol, while Debian ships ``libsrt1.5-openssl``. The library is loaded on first use,
so importing this module never fails; a missing library raises :class:`SrtLibraryMissing` then.

Threads: every call into libsrt releases the GIL and many of them block. Call ``connect``, ``send``,
``recv`` and ``close`` from threads, never on an asyncio event loop. :class:`SrtServer` runs one
daemon thread ("srt-epoll") waiting in ``srt_epoll_uwait``, which returns SRT socket ids, not OS
file descriptors (so it cannot join asyncio's selector); it calls the handler from there. libsrt
calls the access check (``srt_listen_callback``) from its own receiving thread.

Measured against libsrt 1.5.1 (Debian 12), and shaping this module:

- A live-mode message is one packet: one over SRTO_PAYLOADSIZE fails ("Incorrect use of Message
  API"), so :meth:`SrtSocket.send` splits and :meth:`SrtSocket.sendmsg` sends exactly one.
- The receiver hands each packet to its application at send time + latency, and drops what it still
  holds when the sender's close arrives: 160 packets sent in 0.1 s and closed once acknowledged gave
  srt-live-transmit 0 bytes. :meth:`SrtSocket.close` therefore waits for acks and latency first.
- ``srt_bstats`` byte counters include 44 header bytes (IPv4 20 + UDP 8 + SRT 16) per data packet.
- A peer that goes silent is dropped after about 5 s at the earliest (4.6 s measured after SIGSTOP
  with SRTO_PEERIDLETIMEO of 1, 3 or 5 s; 7.6 s with 8 s): a lower idle timeout has no effect.
- Peer close and peer-idle timeout look identical through the API (see ``SrtServer._silence``).
- Data a listener sends within ~50 ms of accepting can reach the caller before it has finished
  the handshake: the first packet is lost until a later one reveals the gap (libsrt issue #518).
  The caller-to-listener direction, the one Flumph uses, is not affected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DATA_HEADER_BYTES",
    "DEBIAN_PACKAGE",
    "MAX_PAYLOAD_SIZE",
    "MAX_STREAMID_BYTES",
    "REJECT_BAD_MODE",
    "REJECT_BAD_REQUEST",
    "REJECT_BAD_SECRET",
    "REJECT_CONFLICT",
    "REJECT_FORBIDDEN",
    "REJECT_INTERNAL_ERROR",
    "REJECT_NOT_FOUND",
    "REJECT_OVERLOAD",
    "REJECT_SERVICE_DOWN",
    "REJECT_TIMEOUT",
    "REJECT_UNACCEPTABLE",
    "REJECT_UNAUTHORIZED",
    "REJECT_UNSECURE",
    "Accept",
    "Reject",
    "SrtError",
    "SrtLibraryMissing",
    "SrtOptions",
    "SrtRejected",
    "SrtServer",
    "SrtServerHandler",
    "SrtSocket",
    "SrtStats",
    "libsrt_version",
    "set_libsrt_log_level",
]

_log = logging.getLogger(__name__)

DEBIAN_PACKAGE = "libsrt1.5-openssl"
LIBRARY_ENV = "FLUMPH_LIBSRT"

# Rejection reasons a listener gives (user range of libsrt's access control, srt/access_control.h).
REJECT_BAD_REQUEST = 1400
REJECT_UNAUTHORIZED = 1401
REJECT_OVERLOAD = 1402
REJECT_FORBIDDEN = 1403
REJECT_NOT_FOUND = 1404
REJECT_BAD_MODE = 1405
REJECT_UNACCEPTABLE = 1406
REJECT_CONFLICT = 1409
REJECT_INTERNAL_ERROR = 1500
REJECT_SERVICE_DOWN = 1503
# Reasons libsrt itself gives (enum SRT_REJECT_REASON, srt/srt.h).
REJECT_BAD_SECRET = 10  # wrong passphrase
REJECT_UNSECURE = 11  # passphrase required on one side only
REJECT_TIMEOUT = 16

_REJECT_NAMES = {
    1000: "SRT_REJX_FALLBACK",
    1400: "SRT_REJX_BAD_REQUEST",
    1401: "SRT_REJX_UNAUTHORIZED",
    1402: "SRT_REJX_OVERLOAD",
    1403: "SRT_REJX_FORBIDDEN",
    1404: "SRT_REJX_NOTFOUND",
    1405: "SRT_REJX_BAD_MODE",
    1406: "SRT_REJX_UNACCEPTABLE",
    1409: "SRT_REJX_CONFLICT",
    1415: "SRT_REJX_NOTSUP_MEDIA",
    1423: "SRT_REJX_LOCKED",
    1424: "SRT_REJX_FAILED_DEPEND",
    1500: "SRT_REJX_ISE",
    1501: "SRT_REJX_UNIMPLEMENTED",
    1502: "SRT_REJX_GW",
    1503: "SRT_REJX_DOWN",
    1505: "SRT_REJX_VERSION",
    1507: "SRT_REJX_NOROOM",
}

MAX_PAYLOAD_SIZE = 1456  # SRT_LIVE_MAX_PLSIZE: MTU 1500 - IP/UDP 28 - SRT 16
MAX_STREAMID_BYTES = 512
RECV_BUFFER_SIZE = 1500  # above any live-mode payload
_PLAY_OUT_MARGIN_S = 0.05  # after the peer's latency, for its application to read the last packet

# IP-level bytes: headers of each data packet (IPv4 20 + UDP 8 + SRT 16) and the control packets
# srt_bstats counts. ACK, ACKACK, handshake sizes were measured on the wire; a NAK carries 4 bytes
# per lost packet (8 for a range): one lost packet is assumed.
DATA_HEADER_BYTES = 44
ACK_WIRE_BYTES = 72
ACKACK_WIRE_BYTES = 48
NAK_WIRE_BYTES = 48
HANDSHAKE_WIRE_BYTES = 200  # two handshake packets each way (more with a passphrase or stream id)

# SRT_SOCKOPT
_SRTO_SNDSYN = 1
_SRTO_RCVSYN = 2
_SRTO_LINGER = 7
_SRTO_RCVTIMEO = 14
_SRTO_CONNTIMEO = 36
_SRTO_LATENCY = 23
_SRTO_PASSPHRASE = 26
_SRTO_PBKEYLEN = 27
_SRTO_STREAMID = 46
_SRTO_PEERLATENCY = 44
_SRTO_PAYLOADSIZE = 49
_SRTO_TRANSTYPE = 50
_SRTO_PEERIDLETIMEO = 55
_SRTT_LIVE = 0

# SRT_ERRNO
_SRT_ENOSERVER = 1001
_SRT_ECONNREJ = 1002
_SRT_ECONNLOST = 2001
_SRT_ENOCONN = 2002
_SRT_EINVSOCK = 5004
_SRT_EASYNCRCV = 6002
_SRT_ETIMEOUT = 6003
_CLOSED_CODES = (_SRT_ECONNLOST, _SRT_ENOCONN, _SRT_EINVSOCK)  # recv answers b"" to these

# SRT_SOCKSTATUS
_SRTS_CONNECTED = 5

_SRT_EPOLL_IN = 0x1
_SRT_EPOLL_ERR = 0x8
_SRT_EPOLL_ENABLE_EMPTY = 1

_LOG_CRIT = 2  # syslog level; SRT_LOG_LEVEL_MIN, the quietest libsrt accepts


# --- errors -----------------------------------------------------------------------------------


class SrtLibraryMissing(RuntimeError):
    """libsrt 1.5 could not be loaded; the message names the Debian package that provides it."""


class SrtError(OSError):
    """A libsrt call failed. ``code`` is libsrt's error code (SRT_ERRNO); str() names the operation
    and carries libsrt's own message."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0])


class SrtRejected(SrtError):
    """The listener refused the connection; ``reason`` is srt_getrejectreason's code."""

    def __init__(self, message: str, code: int, reason: int) -> None:
        super().__init__(message, code)
        self.reason = reason


# --- library loading --------------------------------------------------------------------------


# SRT_TRACEBSTATS (struct CBytePerfMon) of libsrt 1.5, in header order: "type field field ...".
# 496 bytes on x86-64; tests/test_srt.py checks the offsets against the C header.
_BSTATS_LAYOUT = """
i64 msTimeStamp pktSentTotal pktRecvTotal
int pktSndLossTotal pktRcvLossTotal pktRetransTotal pktSentACKTotal pktRecvACKTotal
int pktSentNAKTotal pktRecvNAKTotal
i64 usSndDurationTotal
int pktSndDropTotal pktRcvDropTotal pktRcvUndecryptTotal
u64 byteSentTotal byteRecvTotal byteRcvLossTotal byteRetransTotal byteSndDropTotal
u64 byteRcvDropTotal byteRcvUndecryptTotal
i64 pktSent pktRecv
int pktSndLoss pktRcvLoss pktRetrans pktRcvRetrans pktSentACK pktRecvACK pktSentNAK
int pktRecvNAK
dbl mbpsSendRate mbpsRecvRate
i64 usSndDuration
int pktReorderDistance
dbl pktRcvAvgBelatedTime
i64 pktRcvBelated
int pktSndDrop pktRcvDrop pktRcvUndecrypt
u64 byteSent byteRecv byteRcvLoss byteRetrans byteSndDrop byteRcvDrop byteRcvUndecrypt
dbl usPktSndPeriod
int pktFlowWindow pktCongestionWindow pktFlightSize
dbl msRTT mbpsBandwidth
int byteAvailSndBuf byteAvailRcvBuf
dbl mbpsMaxBW
int byteMSS pktSndBuf byteSndBuf msSndBuf msSndTsbPdDelay pktRcvBuf byteRcvBuf msRcvBuf
int msRcvTsbPdDelay pktSndFilterExtraTotal pktRcvFilterExtraTotal pktRcvFilterSupplyTotal
int pktRcvFilterLossTotal pktSndFilterExtra pktRcvFilterExtra pktRcvFilterSupply
int pktRcvFilterLoss pktReorderTolerance
i64 pktSentUniqueTotal pktRecvUniqueTotal
u64 byteSentUniqueTotal byteRecvUniqueTotal
i64 pktSentUnique pktRecvUnique
u64 byteSentUnique byteRecvUnique
"""
_C_TYPES: dict[str, type[ctypes._SimpleCData[Any]]] = {
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "int": ctypes.c_int,
    "dbl": ctypes.c_double,
}


class _BStats(ctypes.Structure):
    _fields_ = [
        (name, _C_TYPES[line.split()[0]])
        for line in _BSTATS_LAYOUT.strip().splitlines()
        for name in line.split()[1:]
    ]


class _EpollEvent(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int32), ("events", ctypes.c_int)]


# int srt_listen_callback_fn(void* opaq, SRTSOCKET ns, int hsversion,
#                            const struct sockaddr* peeraddr, const char* streamid)
_LISTEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)

_I32 = ctypes.c_int32
_INT = ctypes.c_int
_PTR = ctypes.c_void_p
_BUF = ctypes.c_char_p
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "srt_startup": (_INT, []),
    "srt_getversion": (ctypes.c_uint32, []),
    "srt_setloglevel": (None, [_INT]),
    "srt_create_socket": (_I32, []),
    "srt_bind": (_INT, [_I32, _BUF, _INT]),
    "srt_listen": (_INT, [_I32, _INT]),
    "srt_listen_callback": (_INT, [_I32, _LISTEN_CALLBACK, _PTR]),
    "srt_accept": (_I32, [_I32, _BUF, ctypes.POINTER(_INT)]),
    "srt_connect": (_INT, [_I32, _BUF, _INT]),
    "srt_close": (_INT, [_I32]),
    "srt_getsockname": (_INT, [_I32, _BUF, ctypes.POINTER(_INT)]),
    "srt_getsockflag": (_INT, [_I32, _INT, _PTR, ctypes.POINTER(_INT)]),
    "srt_setsockflag": (_INT, [_I32, _INT, _PTR, _INT]),
    "srt_sendmsg2": (_INT, [_I32, _BUF, _INT, _PTR]),
    "srt_recvmsg": (_INT, [_I32, _BUF, _INT]),
    "srt_getlasterror": (_INT, [ctypes.POINTER(_INT)]),
    "srt_getlasterror_str": (_BUF, []),
    "srt_bstats": (_INT, [_I32, ctypes.POINTER(_BStats), _INT]),
    "srt_getsockstate": (_INT, [_I32]),
    "srt_getsndbuffer": (
        _INT,
        [_I32, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)],
    ),
    "srt_getrejectreason": (_INT, [_I32]),
    "srt_setrejectreason": (_INT, [_I32, _INT]),
    "srt_rejectreason_str": (_BUF, [_INT]),
    "srt_epoll_create": (_INT, []),
    "srt_epoll_set": (ctypes.c_int32, [_INT, ctypes.c_int32]),
    "srt_epoll_add_usock": (_INT, [_INT, _I32, ctypes.POINTER(_INT)]),
    "srt_epoll_remove_usock": (_INT, [_INT, _I32]),
    "srt_epoll_uwait": (_INT, [_INT, ctypes.POINTER(_EpollEvent), _INT, ctypes.c_int64]),
    "srt_epoll_release": (_INT, [_INT]),
}

_lib_lock = threading.Lock()
_lib_handle: ctypes.CDLL | None = None


def _library_candidates() -> list[str]:
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return [override]
    found = ctypes.util.find_library("srt")
    names = [found] if found else []
    return [*names, "libsrt.so.1.5", "libsrt-gnutls.so.1.5"]


def _missing(detail: str) -> SrtLibraryMissing:
    return SrtLibraryMissing(
        f"libsrt 1.5 is not available ({detail}); install the Debian package {DEBIAN_PACKAGE} "
        f"(apt-get install {DEBIAN_PACKAGE}) or set {LIBRARY_ENV} to the library's path"
    )


def _lib() -> ctypes.CDLL:
    """Load libsrt once: typed functions, srt_startup(), quiet logging."""
    global _lib_handle
    if _lib_handle is not None:
        return _lib_handle
    with _lib_lock:
        if _lib_handle is not None:
            return _lib_handle
        errors: list[str] = []
        handle: ctypes.CDLL | None = None
        for name in _library_candidates():
            try:
                handle = ctypes.CDLL(name)
                break
            except OSError as e:
                errors.append(f"{name}: {e}")
        if handle is None:
            raise _missing("; ".join(errors))
        try:
            for fname, (restype, argtypes) in _SIGNATURES.items():
                func = getattr(handle, fname)
                func.restype = restype
                func.argtypes = argtypes
        except AttributeError as e:
            raise _missing(f"{handle._name} lacks {e}") from None
        version = int(handle.srt_getversion())
        if version < 0x010500:
            raise _missing(f"{handle._name} is version {_format_version(version)}, 1.5 needed")
        if int(handle.srt_startup()) < 0:
            raise SrtError(f"srt_startup: {_message(handle)}", int(handle.srt_getlasterror(None)))
        handle.srt_setloglevel(_LOG_CRIT)
        _lib_handle = handle
        return handle


def _format_version(version: int) -> str:
    return f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"


def libsrt_version() -> str:
    """The loaded libsrt's version, e.g. "1.5.1"."""
    return _format_version(int(_lib().srt_getversion()))


def set_libsrt_log_level(level: int) -> None:
    """libsrt's own stderr logging, as a syslog level: 2 = critical only (the default here),
    7 = debug."""
    _lib().srt_setloglevel(level)


def _message(lib: ctypes.CDLL) -> str:
    raw = lib.srt_getlasterror_str()
    return raw.decode("utf-8", "replace") if raw else "unknown error"


def _last_error() -> tuple[int, str]:
    """libsrt's last error of the calling thread: (code, message), with the system error that
    caused it when there is one (libsrt's message alone says "unable to create/configure SRT
    socket" for a port in use)."""
    lib = _lib()
    system_errno = ctypes.c_int(0)
    code = int(lib.srt_getlasterror(ctypes.byref(system_errno)))
    message = _message(lib)
    if system_errno.value:
        reason = os.strerror(system_errno.value)
        if reason not in message:
            message = f"{message}: {reason}"
    return code, message


def _error(operation: str) -> SrtError:
    code, message = _last_error()
    return SrtError(f"{operation}: {message} (SRT error {code})", code)


def _reject_text(reason: int) -> str:
    raw = _lib().srt_rejectreason_str(reason)
    text = raw.decode("utf-8", "replace") if raw else "unknown reason"
    name = _REJECT_NAMES.get(reason)
    return f"{text} ({name}, reason {reason})" if name else f"{text} (reason {reason})"


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
        )


# --- sockets ----------------------------------------------------------------------------------


class SrtSocket:
    """A connected live-mode SRT socket: a caller made by :meth:`connect`, or one accepted by an
    :class:`SrtServer` (whose data arrives through the handler's ``on_data``, not ``recv``)."""

    def __init__(
        self,
        sid: int,
        options: SrtOptions,
        peer: tuple[str, int],
        streamid: str,
        on_closed: Callable[[SrtSocket], None] | None = None,
    ) -> None:
        self._sid = sid
        self.options = options
        self.peer = peer
        self.streamid = streamid
        self._on_closed = on_closed
        self._lock = threading.Lock()
        self._closed = False
        self._last_send_at = 0.0
        self._recv_timeout_ms = -1
        self.last_received_at = time.monotonic()  # kept by SrtServer for its connections

    @classmethod
    def connect(
        cls, host: str, port: int, options: SrtOptions, timeout_s: float = 3.0
    ) -> SrtSocket:
        """Connect as a live-mode caller; blocks up to ``timeout_s``.

        Raises SrtRejected when the listener refuses (its reason in ``.reason``), SrtError otherwise
        (nobody answering gives libsrt's "connection timed out").
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        lib = _lib()
        address, peer = _sockaddr(host, port)
        where = f"srt_connect to {host}:{port}"
        sid = int(lib.srt_create_socket())
        if sid < 0:
            raise _error("srt_create_socket")
        try:
            options._apply(sid, caller=True)
            _set_int(sid, _SRTO_CONNTIMEO, max(1, round(timeout_s * 1000)), "SRTO_CONNTIMEO")
            if lib.srt_connect(sid, address, len(address)) < 0:
                code, message = _last_error()
                reason = int(lib.srt_getrejectreason(sid))
                if code == _SRT_ECONNREJ and reason != REJECT_TIMEOUT:
                    text = f"{where}: {message}: {_reject_text(reason)}"
                    raise SrtRejected(text, code, reason)
                raise SrtError(f"{where}: {message} (SRT error {code})", code)
        except BaseException:
            lib.srt_close(sid)
            raise
        return cls(sid, options, peer, options.streamid or "")

    @property
    def sid(self) -> int:
        """libsrt's socket id (not an OS file descriptor)."""
        return self._sid

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        """Send ``data`` as consecutive messages of at most ``options.payload_size`` bytes; blocks
        while the send buffer is full."""
        view = memoryview(data)
        step = self.options.payload_size
        for start in range(0, len(view), step):
            self.sendmsg(bytes(view[start : start + step]))

    def sendmsg(self, message: bytes) -> None:
        """Send exactly one live-mode message (one packet); libsrt refuses one over the payload
        size with SrtError."""
        if not message:
            raise ValueError("an SRT message cannot be empty")
        if _lib().srt_sendmsg2(self._sid, message, len(message), None) < 0:
            raise _error(f"srt_sendmsg2 of {len(message)} bytes on SRT socket {self._sid}")
        self._last_send_at = time.monotonic()

    def recv(self, bufsize: int = RECV_BUFFER_SIZE, timeout_s: float | None = None) -> bytes:
        """One message; blocks until one arrives, or raises TimeoutError after ``timeout_s``.
        Returns b"" once the connection is closed. ``bufsize`` must hold a whole message: libsrt
        refuses a smaller buffer (SrtError "Incorrect use of Message API")."""
        timeout_ms = -1 if timeout_s is None else max(1, round(timeout_s * 1000))
        if timeout_ms != self._recv_timeout_ms:
            try:
                _set_int(self._sid, _SRTO_RCVTIMEO, timeout_ms, "SRTO_RCVTIMEO")
            except SrtError as e:
                if e.code in _CLOSED_CODES:
                    return b""
                raise
            self._recv_timeout_ms = timeout_ms
        buffer = ctypes.create_string_buffer(bufsize)
        size = int(_lib().srt_recvmsg(self._sid, buffer, bufsize))
        if size > 0:
            return ctypes.string_at(buffer, size)
        if size == 0:
            return b""
        code, message = _last_error()
        if code in _CLOSED_CODES:
            return b""
        if code in (_SRT_ETIMEOUT, _SRT_EASYNCRCV) and timeout_s is not None:
            raise TimeoutError(f"srt_recvmsg on SRT socket {self._sid}: nothing in {timeout_s} s")
        raise SrtError(f"srt_recvmsg on SRT socket {self._sid}: {message} (SRT error {code})", code)

    def stats(self, clear: bool = False) -> SrtStats:
        """Statistics since the connection opened; fails (SrtError) once the peer has closed.
        ``clear`` restarts the interval over which the rates are measured."""
        perf = _BStats()
        if _lib().srt_bstats(self._sid, ctypes.byref(perf), int(clear)) < 0:
            raise _error(f"srt_bstats on SRT socket {self._sid}")
        return SrtStats.from_bstats(perf)

    def unacknowledged_bytes(self) -> int:
        """Bytes in the send buffer not yet acknowledged by the peer (0 when not connected)."""
        blocks, size = ctypes.c_size_t(0), ctypes.c_size_t(0)
        if _lib().srt_getsndbuffer(self._sid, ctypes.byref(blocks), ctypes.byref(size)) < 0:
            return 0
        return int(size.value)

    def close(self, drain_timeout_s: float = 1.0) -> None:
        """Close; idempotent. If this socket sent data, first waits (up to ``drain_timeout_s``)
        until the peer has acknowledged it and its latency has passed since the last send.

        Why: the receiver holds each packet until send time + latency before handing it to its
        application, and drops whatever it still holds when our close reaches it (live mode lingers
        0 s). Measured: 160 packets sent in 0.1 s and closed as soon as all were acknowledged gave
        srt-live-transmit 0 bytes.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        lib = _lib()
        if self._last_send_at and drain_timeout_s > 0:
            deadline = time.monotonic() + drain_timeout_s
            played_out = self._last_send_at + self._peer_latency_s() + _PLAY_OUT_MARGIN_S
            while time.monotonic() < deadline and (
                int(lib.srt_getsockstate(self._sid)) == _SRTS_CONNECTED
                and (self.unacknowledged_bytes() > 0 or time.monotonic() < played_out)
            ):
                time.sleep(0.005)
        lib.srt_close(self._sid)
        if self._on_closed is not None:
            self._on_closed(self)

    def _peer_latency_s(self) -> float:
        latency = ctypes.c_int(0)
        length = ctypes.c_int(ctypes.sizeof(latency))
        if (
            _lib().srt_getsockflag(
                self._sid, _SRTO_PEERLATENCY, ctypes.byref(latency), ctypes.byref(length)
            )
            < 0
        ):
            return self.options.latency_ms / 1000
        return latency.value / 1000

    def _close_now(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _lib().srt_close(self._sid)

    def __enter__(self) -> SrtSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SrtSocket {self._sid} {state} peer={self.peer} streamid={self.streamid!r}>"


# --- server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    """Admit the caller. A passphrase here is set on the accepted socket alone (a per-stream
    secret): libsrt then rejects a caller with a wrong one (REJECT_BAD_SECRET) or none
    (REJECT_UNSECURE). None keeps the server's own options."""

    passphrase: str | None = None
    pbkeylen: int = 16

    def __post_init__(self) -> None:
        _check_passphrase(self.passphrase, self.pbkeylen)


@dataclass(frozen=True)
class Reject:
    """Refuse the caller with ``reason`` (1000..1999: REJECT_FORBIDDEN, REJECT_CONFLICT, ...),
    which the caller receives as SrtRejected.reason; ``message`` is for our logs only."""

    reason: int
    message: str

    def __post_init__(self) -> None:
        if not 1000 <= self.reason <= 2999:
            raise ValueError(f"reject reason must be 1000..2999 (SRT_REJX_*), got {self.reason}")


class SrtServerHandler(Protocol):
    """What an SrtServer calls. ``check`` runs on libsrt's receiving thread, the others on the
    server's "srt-epoll" thread; none may block. An exception in ``check`` rejects the caller
    (REJECT_INTERNAL_ERROR); one in ``on_connect``/``on_data`` closes that connection."""

    def check(self, streamid: str, peer: tuple[str, int]) -> Accept | Reject: ...

    def on_connect(self, conn: SrtSocket) -> None: ...

    def on_data(self, conn: SrtSocket, data: bytes) -> None: ...

    def on_close(self, conn: SrtSocket, error: str | None) -> None: ...


class SrtServer:
    """A live-mode SRT listener: admission through ``handler.check``, then every accepted socket's
    messages delivered to ``handler.on_data`` from one "srt-epoll" thread."""

    _WAIT_MS = 100  # how often the thread looks at stop requests and connections closed by the app
    _MAX_EVENTS = 64
    # Cameras reconnect together after a cell outage: with libsrt's usual 16, a burst of 100-200
    # callers was refused "Listener's backlog exceeded" (bench/ingest_fanout.py).
    DEFAULT_BACKLOG = 256

    def __init__(
        self,
        host: str,
        port: int,
        options: SrtOptions,
        handler: SrtServerHandler,
        backlog: int = DEFAULT_BACKLOG,
    ):
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {backlog}")
        self._backlog = backlog
        self._host = host
        self._requested_port = port
        self._options = options
        self._handler = handler
        self._listener = -1
        self._eid = -1
        self._port = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[int, SrtSocket] = {}
        self._closed_by_app: list[SrtSocket] = []
        # libsrt keeps only a C pointer to the callback: this reference keeps it alive.
        self._listen_callback = _LISTEN_CALLBACK(self._check)

    @property
    def port(self) -> int:
        """The bound UDP port (useful after binding port 0)."""
        if not self._port:
            raise RuntimeError("SrtServer is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{self._host}:{self._requested_port}"

    def connections(self) -> list[SrtSocket]:
        with self._lock:
            return list(self._connections.values())

    def start(self) -> None:
        """Bind, listen and start the "srt-epoll" thread; SrtError names the address on failure."""
        if self._thread is not None or self._stopping.is_set():
            raise RuntimeError("SrtServer already started (a server runs once)")
        lib = _lib()
        address, _ = _sockaddr(self._host, self._requested_port, passive=True)
        listener = int(lib.srt_create_socket())
        if listener < 0:
            raise _error("srt_create_socket")
        eid = -1
        try:
            self._options._apply(listener, caller=False)
            # Accepted sockets inherit this: accept and recv never block the epoll thread.
            _set_int(listener, _SRTO_RCVSYN, 0, "SRTO_RCVSYN")
            if lib.srt_bind(listener, address, len(address)) < 0:
                raise _error(f"srt_bind to {self.address}")
            if lib.srt_listen_callback(listener, self._listen_callback, None) < 0:
                raise _error(f"srt_listen_callback on {self.address}")
            if lib.srt_listen(listener, self._backlog) < 0:
                raise _error(f"srt_listen on {self.address}")
            bound = ctypes.create_string_buffer(128)
            length = ctypes.c_int(128)
            if lib.srt_getsockname(listener, bound, ctypes.byref(length)) < 0:
                raise _error(f"srt_getsockname on {self.address}")
            self._port = _parse_sockaddr(bound.raw[: length.value])[1]
            eid = int(lib.srt_epoll_create())
            if eid < 0:
                raise _error("srt_epoll_create")
            lib.srt_epoll_set(eid, _SRT_EPOLL_ENABLE_EMPTY)
            self._watch(eid, listener)
        except BaseException:
            if eid >= 0:
                lib.srt_epoll_release(eid)
            lib.srt_close(listener)
            self._port = 0
            raise
        self._listener, self._eid = listener, eid
        self._thread = threading.Thread(target=self._run, name="srt-epoll", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the listener and every connection (``on_close(conn, None)`` for each) and join the
        thread within ``timeout_s``. Idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout_s)
        if thread.is_alive():
            _log.warning(
                "SRT server %s: srt-epoll thread still running after %.1f s",
                self.address,
                timeout_s,
            )

    # libsrt's receiving thread, during the caller's handshake.
    def _check(
        self,
        _opaque: int | None,
        sid: int,
        _hsversion: int,
        peeraddr: int | None,
        streamid: bytes | None,
    ) -> int:
        lib = _lib()
        stream = ""
        try:
            stream = streamid.decode("utf-8", "replace") if streamid else ""
            peer = _sockaddr_at(peeraddr)
            decision = self._handler.check(stream, peer)
            if isinstance(decision, Accept):
                if decision.passphrase is not None:
                    _set_secret(sid, decision.passphrase, decision.pbkeylen)
                return 0
            if isinstance(decision, Reject):
                _log.debug(
                    "SRT %s rejected %r from %s: %s", self.address, stream, peer, decision.message
                )
                lib.srt_setrejectreason(sid, decision.reason)
                return -1
            raise TypeError(f"check() returned {decision!r}, not Accept or Reject")
        except BaseException:  # an exception must never escape into libsrt's thread
            _log.exception("SRT %s: access check for %r failed; rejecting", self.address, stream)
            lib.srt_setrejectreason(sid, REJECT_INTERNAL_ERROR)
            return -1

    def _watch(self, eid: int, sid: int) -> None:
        events = ctypes.c_int(_SRT_EPOLL_IN | _SRT_EPOLL_ERR)
        if _lib().srt_epoll_add_usock(eid, sid, ctypes.byref(events)) < 0:
            raise _error(f"srt_epoll_add_usock of SRT socket {sid}")

    def _run(self) -> None:
        lib = _lib()
        events = (_EpollEvent * self._MAX_EVENTS)()
        try:
            while not self._stopping.is_set():
                self._finish_closed_by_app()
                ready = int(lib.srt_epoll_uwait(self._eid, events, self._MAX_EVENTS, self._WAIT_MS))
                if ready < 0:
                    code, message = _last_error()
                    if code == _SRT_ETIMEOUT:
                        continue
                    _log.error("SRT %s: srt_epoll_uwait failed: %s", self.address, message)
                    break
                for event in events[: min(ready, self._MAX_EVENTS)]:
                    if event.fd == self._listener:
                        self._accept_all()
                        continue
                    with self._lock:
                        conn = self._connections.get(event.fd)
                    if conn is not None:
                        self._read_all(conn, event.events)
        except BaseException:
            _log.exception("SRT %s: srt-epoll thread failed", self.address)
        finally:
            self._close_everything()

    def _accept_all(self) -> None:
        lib = _lib()
        while True:
            address = ctypes.create_string_buffer(128)
            length = ctypes.c_int(128)
            sid = int(lib.srt_accept(self._listener, address, ctypes.byref(length)))
            if sid < 0:
                code, message = _last_error()
                if code != _SRT_EASYNCRCV:
                    _log.warning("SRT %s: srt_accept failed: %s", self.address, message)
                return
            peer = _parse_sockaddr(address.raw[: length.value])
            streamid = _get_bytes(sid, _SRTO_STREAMID, MAX_STREAMID_BYTES + 1)
            conn = SrtSocket(
                sid, self._options, peer, streamid.decode("utf-8", "replace"), self._closed_by
            )
            try:
                self._watch(self._eid, sid)
            except SrtError as e:
                _log.warning("SRT %s: %s", self.address, e)
                conn._close_now()
                continue
            with self._lock:
                self._connections[sid] = conn
            try:
                self._handler.on_connect(conn)
            except Exception as e:
                _log.exception("SRT %s: on_connect failed for %r", self.address, conn)
                self._finish(conn, f"on_connect failed: {e!r}")

    def _read_all(self, conn: SrtSocket, events: int) -> None:
        """Deliver every message ready on ``conn``; finish it if it broke."""
        lib = _lib()
        buffer = ctypes.create_string_buffer(RECV_BUFFER_SIZE)
        while True:
            size = int(lib.srt_recvmsg(conn.sid, buffer, RECV_BUFFER_SIZE))
            if size <= 0:
                break
            conn.last_received_at = time.monotonic()
            try:
                self._handler.on_data(conn, ctypes.string_at(buffer, size))
            except Exception as e:
                _log.exception("SRT %s: on_data failed for %r", self.address, conn)
                self._finish(conn, f"on_data failed: {e!r}")
                return
        code, message = _last_error()
        if size < 0 and code == _SRT_EASYNCRCV and not events & _SRT_EPOLL_ERR:
            return
        if conn.closed:
            self._finish(conn, None)
        elif size == 0 or code in (_SRT_ECONNLOST, _SRT_EASYNCRCV):
            self._finish(conn, self._silence(conn, message))
        else:
            self._finish(conn, f"{message} (SRT error {code})")

    @staticmethod
    def _silence(conn: SrtSocket, message: str) -> str | None:
        """Why a connection broke, as far as libsrt 1.5 lets us tell.

        A close by the peer and the peer-idle timeout look the same through the API (socket BROKEN,
        recv "Connection was broken", reject reason 0). A publisher sends all the time, so silence
        since its last message longer than the idle timeout means it vanished (the cellular case);
        otherwise it closed (None). A peer that sent nothing for that long and then closed is also
        reported as silent.
        """
        silent_s = time.monotonic() - conn.last_received_at
        if silent_s * 1000 < conn.options.peer_idle_timeout_ms:
            return None
        return f"peer silent for {silent_s:.1f} s (peer idle timeout): {message}"

    def _closed_by(self, conn: SrtSocket) -> None:
        with self._lock:
            self._closed_by_app.append(conn)

    def _finish_closed_by_app(self) -> None:
        with self._lock:
            closed, self._closed_by_app = self._closed_by_app, []
        for conn in closed:
            self._finish(conn, None)

    def _finish(self, conn: SrtSocket, error: str | None) -> None:
        with self._lock:
            if self._connections.pop(conn.sid, None) is None:
                return
        _lib().srt_epoll_remove_usock(self._eid, conn.sid)
        conn._close_now()
        try:
            self._handler.on_close(conn, error)
        except Exception:
            _log.exception("SRT %s: on_close failed for %r", self.address, conn)

    def _close_everything(self) -> None:
        lib = _lib()
        lib.srt_close(self._listener)
        for conn in self.connections():
            self._finish(conn, None)
        with self._lock:
            self._closed_by_app.clear()
        lib.srt_epoll_release(self._eid)
