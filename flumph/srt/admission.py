"""What an SrtServer asks of its handler: the admission decision for each caller (Accept, Reject,
answered to libsrt by answer_caller) and the calls every accepted connection's life goes through
(SrtServerHandler)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from flumph.srt.caller import SrtSocket
from flumph.srt.library import REJECT_INTERNAL_ERROR, _lib
from flumph.srt.options import _check_passphrase, _set_secret, _sockaddr_at

_log = logging.getLogger("flumph.srt")


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


def answer_caller(
    handler: SrtServerHandler, address: str, sid: int, peeraddr: int | None, streamid: bytes | None
) -> int:
    """libsrt's listen callback, on its receiving thread during the caller's handshake: 0 admits
    the caller ``sid``, -1 refuses it with the reason set on it."""
    lib = _lib()
    stream = ""
    try:
        stream = streamid.decode("utf-8", "replace") if streamid else ""
        peer = _sockaddr_at(peeraddr)
        decision = handler.check(stream, peer)
        if isinstance(decision, Accept):
            if decision.passphrase is not None:
                _set_secret(sid, decision.passphrase, decision.pbkeylen)
            return 0
        if isinstance(decision, Reject):
            _log.debug("SRT %s rejected %r from %s: %s", address, stream, peer, decision.message)
            lib.srt_setrejectreason(sid, decision.reason)
            return -1
        raise TypeError(f"check() returned {decision!r}, not Accept or Reject")
    except BaseException:  # an exception must never escape into libsrt's thread
        _log.exception("SRT %s: access check for %r failed; rejecting", address, stream)
        lib.srt_setrejectreason(sid, REJECT_INTERNAL_ERROR)
        return -1
