"""The live-mode SRT listener: admission through a handler's ``check`` on libsrt's thread, then
every accepted socket's messages delivered from one "srt-epoll" thread."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

from flumph.srt.admission import SrtServerHandler, answer_caller
from flumph.srt.caller import RECV_BUFFER_SIZE, SrtSocket
from flumph.srt.library import (
    _LISTEN_CALLBACK,
    _SRT_EASYNCRCV,
    _SRT_ECONNLOST,
    _SRTO_RCVSYN,
    _SRTO_STREAMID,
    SrtError,
    _EpollEvent,
    _error,
    _last_error,
    _lib,
    _MsgCtrl,
    messages_missing,
)
from flumph.srt.options import (
    MAX_STREAMID_BYTES,
    SrtOptions,
    _get_bytes,
    _parse_sockaddr,
    _set_int,
    _sockaddr,
)
from flumph.srt.osthread import name_os_thread
from flumph.srt.polling import _SRT_EPOLL_ERR, EpollSets

_log = logging.getLogger("flumph.srt")


class SrtServer:
    """A live-mode SRT listener: admission through ``handler.check``, then every accepted socket's
    messages delivered to ``handler.on_data`` from one "srt-epoll" thread. ``on_round_end``, if
    given, runs on that thread after each round of ready sockets has been read: the place to hand
    a round's results on in one batch. With ``join_messages`` the messages a socket had ready in
    a round reach ``on_data`` joined into one bytes (split where messages were lost): for a
    consumer of a byte stream, such as a demuxer, whose cost is largely per call (the ingest's
    per-frame work fell by a quarter: about two messages make a frame at 250 kbit/s).

    A connection whose ``read_lazily`` the handler sets (on this thread, typically in ``on_data``:
    nobody waits for its data now) is read every ``lazy_period_s`` instead of as its messages
    come, until the handler clears it (see polling.py)."""

    _WAIT_MS = 100  # how often the thread looks at stop requests and connections closed by the app
    _MAX_EVENTS = 64
    _LAZY_SLICE = 16  # lazy sockets read between two looks at the eager ones
    DEFAULT_LAZY_PERIOD_S = 0.1
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
        on_round_end: Callable[[], None] | None = None,
        join_messages: bool = False,
        lazy_period_s: float = DEFAULT_LAZY_PERIOD_S,
    ):
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {backlog}")
        self._backlog = backlog
        self._host = host
        self._requested_port = port
        self._options = options
        self._handler = handler
        self._on_round_end = on_round_end
        self._join_messages = join_messages
        self._lazy_period_s = lazy_period_s
        self._listener = -1
        self._sets: EpollSets | None = None
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
        sets: EpollSets | None = None
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
            sets = EpollSets(self._lazy_period_s)
            sets.add(listener)
        except BaseException:
            if sets is not None:
                sets.release()
            lib.srt_close(listener)
            self._port = 0
            raise
        self._listener, self._sets = listener, sets
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
        return answer_caller(self._handler, self.address, sid, peeraddr, streamid)

    def _run(self) -> None:
        name_os_thread(b"srt-epoll")
        sets = self._sets
        assert sets is not None
        events = (_EpollEvent * self._MAX_EVENTS)()
        lazy_events = (_EpollEvent * self._MAX_EVENTS)()
        buffer = ctypes.create_string_buffer(RECV_BUFFER_SIZE)  # one for the thread's life
        try:
            while not self._stopping.is_set():
                self._finish_closed_by_app()
                ready = sets.wait(events, self._WAIT_MS)
                if ready < 0:
                    _log.error("SRT %s: srt_epoll_uwait failed: %s", self.address, _last_error()[1])
                    break
                self._read_ready(events[: min(ready, self._MAX_EVENTS)], buffer, lazy=False)
                if sets.lazy_due():
                    self._read_lazy(events, lazy_events, buffer)
                # Also after a wait that timed out: connections closed by the app were finished.
                self._round_end()
        except BaseException:
            _log.exception("SRT %s: srt-epoll thread failed", self.address)
        finally:
            self._close_everything()

    def _read_lazy(
        self,
        events: ctypes.Array[_EpollEvent],
        lazy_events: ctypes.Array[_EpollEvent],
        buffer: ctypes.Array[ctypes.c_char],
    ) -> None:
        """Every lazy socket with data, ``_LAZY_SLICE`` at a time, and between slices what the
        eager ones got meanwhile, read and handed on: a lazy socket costs this thread ~0.04 ms a
        period (the ingest at 50 streams), 200 of them ~8 ms, which a watched stream should not
        wait behind."""
        sets = self._sets
        assert sets is not None
        for _ in range(len(sets.lazy) // self._MAX_EVENTS + 1):  # as many polls as it takes
            ready = sets.ready_lazy(lazy_events)
            for start in range(0, ready, self._LAZY_SLICE):
                eager = sets.wait(events, 0) if start else 0
                if eager > 0:
                    self._read_ready(events[: min(eager, self._MAX_EVENTS)], buffer, lazy=False)
                    self._round_end()
                chunk = lazy_events[start : min(ready, start + self._LAZY_SLICE)]
                self._read_ready(chunk, buffer, lazy=True)
            if ready < self._MAX_EVENTS:
                return

    def _read_ready(
        self, events: list[_EpollEvent], buffer: ctypes.Array[ctypes.c_char], *, lazy: bool
    ) -> None:
        sets = self._sets
        assert sets is not None
        for event in events:
            if event.fd == self._listener:
                self._accept_all()
                continue
            # This thread is the only one that adds or removes connections: no lock.
            conn = self._connections.get(event.fd)
            if conn is None:
                continue
            self._read_all(conn, event.events, buffer)
            if conn.read_lazily != lazy and conn.sid in self._connections:
                try:
                    sets.set_lazy(conn.sid, conn.read_lazily)
                except SrtError as e:  # in neither set now: nothing would read it again
                    self._finish(conn, f"could not move it between epoll sets: {e}")

    def _round_end(self) -> None:
        if self._on_round_end is None:
            return
        try:
            self._on_round_end()
        except Exception:
            _log.exception("SRT %s: on_round_end failed", self.address)

    def _accept_all(self) -> None:
        lib, sets = _lib(), self._sets
        assert sets is not None
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
                sets.add(sid)
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

    def _read_all(self, conn: SrtSocket, events: int, buffer: ctypes.Array[ctypes.c_char]) -> None:
        """Deliver every message ready on ``conn``; finish it if it broke."""
        lib = _lib()
        # Per message this is the hot path of every stream (tens of thousands of messages a
        # second): locals instead of attribute look-ups, one clock read per socket and round (its
        # messages were all waiting in libsrt by then), and bytes sliced straight from the buffer.
        recvmsg2, sid = lib.srt_recvmsg2, conn.sid
        joined: list[bytes] | None = [] if self._join_messages else None
        joined_lost = 0  # messages lost before the first one joined
        ctrl = _MsgCtrl()
        ctrl_ref = ctypes.byref(ctrl)
        now = time.monotonic()
        while True:
            size = recvmsg2(sid, buffer, RECV_BUFFER_SIZE, ctrl_ref)
            if size <= 0:
                break
            conn.last_received_at = now  # only when a message came: silence is measured by it
            # A gap in the message numbers is data given up on (too late): the handler must know,
            # since the bytes around it no longer join up.
            msgno, last = ctrl.msgno, conn.last_msgno
            lost = 0 if msgno == last + 1 else messages_missing(last, msgno)
            conn.last_msgno = msgno
            if lost:
                conn.messages_lost += lost
            # A c_char array's slice is bytes (typeshed says list).
            message: bytes = buffer[:size]  # type: ignore[assignment]
            if joined is None:
                if not self._deliver(conn, message, lost):
                    return
                continue
            if lost and joined:  # the bytes before a gap go on their own
                if not self._deliver(conn, b"".join(joined), joined_lost):
                    return
                joined = []
            if not joined:
                joined_lost = lost
            joined.append(message)
        # Read the outcome before the handler runs again (its calls may set the thread's error).
        # The usual end of a round, "nothing more to read", needs the code alone: libsrt's message
        # (two more calls and a string) only when the connection broke.
        drained = (
            size < 0
            and not events & _SRT_EPOLL_ERR
            and int(lib.srt_getlasterror(None)) == _SRT_EASYNCRCV
        )
        code, message_text = (0, "") if drained else _last_error()
        if joined and not self._deliver(conn, b"".join(joined), joined_lost):
            return
        if drained:
            return
        if conn.closed:
            self._finish(conn, None)
        elif size == 0 or code in (_SRT_ECONNLOST, _SRT_EASYNCRCV):
            self._finish(conn, self._silence(conn, message_text))
        else:
            self._finish(conn, f"{message_text} (SRT error {code})")

    def _deliver(self, conn: SrtSocket, data: bytes, lost_before: int) -> bool:
        """Hand ``data`` to the handler; False when that failed and finished the connection."""
        conn.lost_before = lost_before
        try:
            self._handler.on_data(conn, data)
            return True
        except Exception as e:
            _log.exception("SRT %s: on_data failed for %r", self.address, conn)
            self._finish(conn, f"on_data failed: {e!r}")
            return False

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
        if not self._closed_by_app:  # the usual case, read without the lock once per wake
            return
        with self._lock:
            closed, self._closed_by_app = self._closed_by_app, []
        for conn in closed:
            self._finish(conn, None)

    def _finish(self, conn: SrtSocket, error: str | None) -> None:
        with self._lock:
            if self._connections.pop(conn.sid, None) is None:
                return
        if self._sets is not None:
            self._sets.remove(conn.sid)
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
        if self._sets is not None:
            self._sets.release()
