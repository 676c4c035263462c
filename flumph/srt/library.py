"""libsrt 1.5 through ctypes: finding and loading the library, its C constants, structures and
function signatures, and the errors the rest of :mod:`flumph.srt` raises.

The library is loaded on first use (``_lib()``), so importing the package never fails; a missing
library raises :class:`SrtLibraryMissing` then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

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

# SRT_SOCKOPT
_SRTO_SNDSYN = 1
_SRTO_RCVSYN = 2
_SRTO_LINGER = 7
_SRTO_RCVTIMEO = 14
_SRTO_CONNTIMEO = 36
_SRTO_TSBPDMODE = 22
_SRTO_SNDDROPDELAY = 32
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


class _MsgCtrl(ctypes.Structure):
    """SRT_MSGCTRL (srt.h): libsrt's word on one message; a receiver reads its number."""

    _fields_ = [
        ("flags", ctypes.c_int),
        ("msgttl", ctypes.c_int),
        ("inorder", ctypes.c_int),
        ("boundary", ctypes.c_int),
        ("srctime", ctypes.c_int64),
        ("pktseq", ctypes.c_int32),
        ("msgno", ctypes.c_int32),
        ("grpdata", ctypes.c_void_p),
        ("grpdata_size", ctypes.c_size_t),
    ]


# Message numbers are 26 bits and run 1..MSGNO_MAX, then wrap to 1 (0 means "none").
MSGNO_MAX = (1 << 26) - 1


def messages_missing(last: int, msgno: int) -> int:
    """How many messages the sender numbered between ``last`` and ``msgno`` that never arrived
    (dropped as too late by either side); 0 for the first message (``last`` 0) or no number."""
    if not last or not msgno:
        return 0
    expected = 1 if last == MSGNO_MAX else last + 1
    return (msgno - expected) % MSGNO_MAX


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
    "srt_recvmsg2": (_INT, [_I32, _BUF, _INT, ctypes.POINTER(_MsgCtrl)]),
    "srt_getlasterror": (_INT, [ctypes.POINTER(_INT)]),
    "srt_getlasterror_str": (_BUF, []),
    "srt_bstats": (_INT, [_I32, ctypes.POINTER(_BStats), _INT]),
    "srt_bistats": (_INT, [_I32, ctypes.POINTER(_BStats), _INT, _INT]),
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
