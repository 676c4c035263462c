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

The package, one job a module: ``library`` (loading libsrt, its C definitions, errors), ``options``
(addresses, socket options, statistics), ``caller`` (a connected socket), ``admission`` (what a
listener asks of its handler), ``server`` (the epoll listener). Import every public name from
here: ``from flumph.srt import SrtServer``.
"""

from __future__ import annotations

from flumph.srt.admission import Accept, Reject, SrtServerHandler
from flumph.srt.caller import RECV_BUFFER_SIZE, SrtSocket
from flumph.srt.library import (
    DEBIAN_PACKAGE,
    LIBRARY_ENV,
    REJECT_BAD_MODE,
    REJECT_BAD_REQUEST,
    REJECT_BAD_SECRET,
    REJECT_CONFLICT,
    REJECT_FORBIDDEN,
    REJECT_INTERNAL_ERROR,
    REJECT_NOT_FOUND,
    REJECT_OVERLOAD,
    REJECT_SERVICE_DOWN,
    REJECT_TIMEOUT,
    REJECT_UNACCEPTABLE,
    REJECT_UNAUTHORIZED,
    REJECT_UNSECURE,
    SrtError,
    SrtLibraryMissing,
    SrtRejected,
    libsrt_version,
    set_libsrt_log_level,
)
from flumph.srt.options import (
    ACK_WIRE_BYTES,
    ACKACK_WIRE_BYTES,
    DATA_HEADER_BYTES,
    HANDSHAKE_WIRE_BYTES,
    MAX_PAYLOAD_SIZE,
    MAX_STREAMID_BYTES,
    NAK_WIRE_BYTES,
    SrtOptions,
    SrtStats,
)
from flumph.srt.server import SrtServer

__all__ = [
    "ACKACK_WIRE_BYTES",
    "ACK_WIRE_BYTES",
    "DATA_HEADER_BYTES",
    "DEBIAN_PACKAGE",
    "HANDSHAKE_WIRE_BYTES",
    "LIBRARY_ENV",
    "MAX_PAYLOAD_SIZE",
    "MAX_STREAMID_BYTES",
    "NAK_WIRE_BYTES",
    "RECV_BUFFER_SIZE",
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
