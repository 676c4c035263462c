"""The agent's SRT sender against real libsrt: it never drops too-late packets itself (a
receiver without TSBPD may fail to skip the hole, Haivision/srt#1082), so a queue the link
estimator finds too long is discarded with the connection (SrtPublisher.reset_connection), and
streaming goes on over a new one."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator

import pytest

from flumph.agent.destination import Destination
from flumph.agent.transport import SrtPublisher
from flumph.srt import Accept, SrtOptions, SrtServer, SrtSocket
from flumph.srt.library import _SRTO_SNDDROPDELAY, _lib
from tests.conftest import wait_until


class Received:
    """SrtServer handler: the bytes of each connection, by socket id, and which closed."""

    def __init__(self) -> None:
        self.data: dict[int, bytearray] = {}
        self.closed: set[int] = set()
        self._lock = threading.Lock()

    def check(self, streamid: str, peer: tuple[str, int]) -> Accept:
        return Accept()

    def on_connect(self, conn: SrtSocket) -> None:
        with self._lock:
            self.data[conn.sid] = bytearray()

    def on_data(self, conn: SrtSocket, data: bytes) -> None:
        with self._lock:
            self.data[conn.sid] += data

    def on_close(self, conn: SrtSocket, error: str | None) -> None:
        with self._lock:
            self.closed.add(conn.sid)


@pytest.fixture
def server() -> Iterator[tuple[SrtServer, Received]]:
    received = Received()
    srv = SrtServer("127.0.0.1", 0, SrtOptions(tsbpd=False), received)
    srv.start()
    yield srv, received
    srv.stop()


def test_the_sender_never_drops_and_a_reset_streams_on_over_a_new_connection(
    server: tuple[SrtServer, Received],
) -> None:
    srv, received = server
    pub = SrtPublisher(Destination("127.0.0.1", srv.port, "cam-reset"), backoff_base_s=0.05)
    pub.start()
    try:
        assert pub.wait_connected(5)
        first = pub.generation()
        assert first is not None
        sock = pub._socket
        assert sock is not None
        value, size = ctypes.c_int(0), ctypes.c_int(ctypes.sizeof(ctypes.c_int))
        assert (
            _lib().srt_getsockflag(
                sock.sid, _SRTO_SNDDROPDELAY, ctypes.byref(value), ctypes.byref(size)
            )
            >= 0
        )
        assert value.value == -1, "SRTO_SNDDROPDELAY: the sender never drops too-late packets"
        assert pub.send_frame(b"a" * 3000, first)
        wait_until(lambda: sum(len(d) for d in received.data.values()) == 3000, "the first bytes")

        pub.reset_connection("test: the queue is too long")
        assert not pub.send_frame(b"late", first), "the old connection takes nothing more"
        wait_until(lambda: pub.generation() not in (None, first), "a new connection")
        second = pub.generation()
        assert second is not None
        assert pub.send_frame(b"b" * 2000, second)
        wait_until(lambda: len(received.data) == 2, "the second connection at the listener")
        wait_until(lambda: len(received.closed) == 1, "the first connection closed")
        (old,) = received.closed
        (new,) = set(received.data) - {old}
        wait_until(lambda: bytes(received.data[new]) == b"b" * 2000, "the bytes of the new one")
        assert bytes(received.data[old]) == b"a" * 3000
        assert pub.stats.last_error == "test: the queue is too long"
    finally:
        pub.stop(drain_timeout_s=0.5)
