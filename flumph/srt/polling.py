"""Which of an SrtServer's sockets its thread waits on, and which it only looks at now and then.

A socket whose data nobody is waiting for (a stream without viewers) may be read in batches: it
moves from the set the thread sleeps on (``wait``) to a second epoll set that is only polled,
without waiting, every ``lazy_period_s`` (``ready_lazy``). libsrt keeps the data meanwhile. The
Python side then runs one round per period for all of them instead of one per message burst,
and each socket's period of messages reaches the handler in one piece: at 50 streams and 15 fps
the thread ran ~290 rounds a second of ~3 sockets each, and the same per-frame code cost about
three times as much live as with warm caches (bench/README.md, session 4).
"""

from __future__ import annotations

import ctypes
import time

from flumph.srt.library import _SRT_ETIMEOUT, _EpollEvent, _error, _lib

_SRT_EPOLL_IN = 0x1
_SRT_EPOLL_ERR = 0x8
_SRT_EPOLL_ENABLE_EMPTY = 1


class EpollSets:
    """Two libsrt epoll sets: the sockets waited on and the lazy ones. One thread only."""

    def __init__(self, lazy_period_s: float) -> None:
        if lazy_period_s <= 0:
            raise ValueError(f"lazy_period_s must be positive, got {lazy_period_s}")
        self.lazy_period_s = lazy_period_s
        self.lazy: set[int] = set()
        self._next_lazy_at = 0.0
        self._eager = self._lazy = -1
        lib = _lib()
        eager = int(lib.srt_epoll_create())
        if eager < 0:
            raise _error("srt_epoll_create")
        lazy = int(lib.srt_epoll_create())
        if lazy < 0:
            lib.srt_epoll_release(eager)
            raise _error("srt_epoll_create")
        for eid in (eager, lazy):  # a wait on an empty set is a sleep, not an error
            lib.srt_epoll_set(eid, _SRT_EPOLL_ENABLE_EMPTY)
        self._eager, self._lazy = eager, lazy

    def release(self) -> None:
        lib = _lib()
        for eid in (self._eager, self._lazy):
            if eid >= 0:
                lib.srt_epoll_release(eid)
        self._eager = self._lazy = -1
        self.lazy.clear()

    def add(self, sid: int) -> None:
        """Watch ``sid`` (SrtError if libsrt refuses), waited on until ``set_lazy``."""
        _add(self._eager, sid)

    def remove(self, sid: int) -> None:
        if sid in self.lazy:
            self.lazy.discard(sid)
            _lib().srt_epoll_remove_usock(self._lazy, sid)
        else:
            _lib().srt_epoll_remove_usock(self._eager, sid)

    def set_lazy(self, sid: int, lazy: bool) -> None:
        """Move ``sid`` to the lazy set or back; nothing if it is there already. SrtError if
        libsrt refuses to add it (a socket closed meanwhile): it is then in neither set."""
        if lazy == (sid in self.lazy):
            return
        source, target = (self._eager, self._lazy) if lazy else (self._lazy, self._eager)
        _lib().srt_epoll_remove_usock(source, sid)
        self.lazy.discard(sid)
        _add(target, sid)
        if lazy:
            self.lazy.add(sid)

    def wait(self, events: ctypes.Array[_EpollEvent], max_ms: int) -> int:
        """Wait on the eager set, no longer than ``max_ms`` nor past the next lazy poll: the count
        ready (0 on timeout), or -1 with libsrt's error set."""
        timeout = max_ms
        if self.lazy:
            timeout = min(timeout, max(0, round((self._next_lazy_at - time.monotonic()) * 1000)))
        lib = _lib()
        ready = int(lib.srt_epoll_uwait(self._eager, events, len(events), timeout))
        # The code alone: a timeout is the usual outcome (libsrt's message costs two more calls).
        if ready < 0 and int(lib.srt_getlasterror(None)) == _SRT_ETIMEOUT:
            return 0
        return ready

    def lazy_due(self) -> bool:
        return bool(self.lazy) and time.monotonic() >= self._next_lazy_at

    def ready_lazy(self, events: ctypes.Array[_EpollEvent]) -> int:
        """Poll the lazy set without waiting; the next poll is due a period from now. The count
        ready (at most ``len(events)``: poll again after reading them for more)."""
        self._next_lazy_at = time.monotonic() + self.lazy_period_s
        ready = int(_lib().srt_epoll_uwait(self._lazy, events, len(events), 0))
        return max(0, min(ready, len(events)))


def _add(eid: int, sid: int) -> None:
    flags = ctypes.c_int(_SRT_EPOLL_IN | _SRT_EPOLL_ERR)
    if _lib().srt_epoll_add_usock(eid, sid, ctypes.byref(flags)) < 0:
        raise _error(f"srt_epoll_add_usock of SRT socket {sid}")
