"""SrtPublisher holds no lock across a blocking send (issue #13, point 8).

A stand-in socket is used here, and only here: a real libsrt live-mode send blocks only when its
send buffer (8192 packets) fills, which loopback cannot produce on demand (and the agent, whose
sender drops nothing, resets the connection long before: linkestimate.MAX_QUEUE_MS). Everything
else about the publisher is exercised against real libsrt in test_agent_stream.py.
"""

from __future__ import annotations

import threading
import time

from flumph.agent.destination import Destination
from flumph.agent.transport import SrtPublisher


class BlockingSocket:
    """Blocks in ``send`` until released, as libsrt does while its send buffer is full."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.entered.set()
        assert self.release.wait(10)
        self.sent.append(data)

    def unacknowledged_bytes(self) -> int:
        return 0


def test_a_blocked_send_blocks_neither_the_connection_state_nor_other_readers() -> None:
    pub = SrtPublisher(Destination("127.0.0.1", 9, "cam1"))
    sock = BlockingSocket()
    pub._socket = sock  # type: ignore[assignment]
    pub._generation = 1
    sender = threading.Thread(target=pub.send_frame, args=(b"frame", 1), daemon=True)
    sender.start()
    assert sock.entered.wait(5)
    # While the send is stuck in "libsrt": the connector's and the pipeline's readers answer.
    started = time.monotonic()
    assert pub.generation() == 1
    assert pub.link_stats() is None
    with pub._lock:  # the connector thread's statistics poll takes this lock
        pass
    assert time.monotonic() - started < 0.5
    # A second sender waits its turn (bursts stay in order) instead of interleaving.
    second = threading.Thread(target=pub.send_frame, args=(b"next", 1), daemon=True)
    second.start()
    time.sleep(0.1)
    assert sock.sent == []
    sock.release.set()
    sender.join(5)
    second.join(5)
    assert sock.sent == [b"frame", b"next"]
    assert pub.stats.frames_sent == 2
