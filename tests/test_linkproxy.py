"""bench/linkproxy.py, the cellular stand-in: schedule parsing, and the impairments measured with
real UDP traffic and a real SRT connection through it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bench.linkproxy import LinkProxy, Step, capacity_at, main, parse_schedule
from flumph.srt import Accept, SrtOptions, SrtServer, SrtSocket


def test_schedule_parses_rates_durations_and_outages() -> None:
    steps = parse_schedule("800kbps for 20s, 150kbps for 500ms, down for 1min, 1.5mbps")
    assert steps == [Step(800, 20), Step(150, 0.5), Step(0, 60), Step(1500, None)]
    assert capacity_at(steps, 0) == 800
    assert capacity_at(steps, 20.2) == 150
    assert capacity_at(steps, 21) == 0
    assert capacity_at(steps, 1000) == 1500
    assert parse_schedule("unlimited") == [Step(None, None)]
    # All steps timed: the last one holds after the schedule ends.
    assert capacity_at(parse_schedule("100kbps for 1s"), 5) == 100


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("800 kbit", "'800 kbit'"),
        ("800kbps, 150kbps for 2s", "'800kbps': only the last"),
        ("800kbps for 0s", "duration must be > 0"),
        ("fast for 2s", "'fast for 2s'"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_step(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_schedule(text)


class UdpSink:
    """A UDP listener recording (arrival time, payload) of everything it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.sock.getsockname()[1]))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((time.monotonic(), data))
            self.sock.sendto(b"echo:" + data[:8], addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def send_paced(port: int, kbps: float, seconds: float, size: int = 1000) -> socket.socket:
    """Send ``size``-byte datagrams at ``kbps`` (payload) for ``seconds``; numbered."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    interval = size * 8 / 1000 / kbps
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        s.sendto(n.to_bytes(8, "big") + bytes(size - 8), ("127.0.0.1", port))
        n += 1
    return s


def test_capacity_limits_the_uplink_and_a_full_queue_drops() -> None:
    sink = UdpSink()
    try:
        with LinkProxy(sink.address, schedule="200kbps", queue_bytes=8000) as link:
            sender = send_paced(link.port, 400, 3.0)
            time.sleep(0.6)
            sender.close()
        arrivals = [t for t, _ in sink.got]
        # Steady state: delivered at the capacity (IP level: 1028 bytes per 1000-byte datagram).
        span = arrivals[-1] - arrivals[5]
        kbps = (len(arrivals) - 6) * 1028 * 8 / 1000 / span
        assert 180 <= kbps <= 215, kbps
        assert link.up.dropped_queue > 0.3 * link.up.packets_in
        assert link.up.packets_out + link.up.dropped_queue == link.up.packets_in
    finally:
        sink.close()


def test_delay_jitter_and_a_schedule_with_an_outage() -> None:
    sink = UdpSink()
    try:
        with LinkProxy(
            sink.address, schedule="unlimited for 1s, down for 1s, unlimited", delay_ms=80,
            jitter_ms=20, queue_bytes=4000,
        ) as link:  # fmt: skip
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sent: dict[int, float] = {}
            for n in range(60):  # 3 s, one datagram every 50 ms
                sent[n] = time.monotonic()
                s.sendto(n.to_bytes(8, "big"), ("127.0.0.1", link.port))
                time.sleep(0.05)
            time.sleep(0.3)
            s.close()
        got = {int.from_bytes(d[:8], "big"): t for t, d in sink.got}
        delays = [got[n] - sent[n] for n in got]
        assert min(delays) >= 0.079
        assert max(d for n, d in zip(got, delays, strict=True) if sent[n] - sent[0] < 0.9) < 0.2
        # During the outage datagrams queued (4000 bytes: 111 of 36+28 bytes) and left after it.
        outage = [n for n in sent if 1.05 < sent[n] - link.started_at < 1.95]
        assert outage and all(got[n] - link.started_at >= 2.0 for n in outage if n in got)
        # Nothing reordered: jitter delays the packets behind a late one.
        order = sorted(got, key=lambda n: got[n])
        assert order == sorted(order)
    finally:
        sink.close()


def test_random_loss_each_way() -> None:
    sink = UdpSink()
    try:
        with LinkProxy(sink.address, loss_pct=20, seed=7) as link:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.02)
            echoes = 0
            for n in range(500):
                s.sendto(n.to_bytes(8, "big"), ("127.0.0.1", link.port))
                try:
                    while s.recv(100):
                        echoes += 1
                except TimeoutError:
                    pass
            time.sleep(0.2)
            s.close()
        assert 0.7 * 400 < len(sink.got) < 1.3 * 400
        assert link.up.lost_random + len(sink.got) == 500
        assert link.down.lost_random > 0
    finally:
        sink.close()


class Counter:
    def __init__(self) -> None:
        self.bytes = 0

    def check(self, streamid: str, peer: tuple[str, int]) -> Accept:
        return Accept()

    def on_connect(self, conn: SrtSocket) -> None:
        pass

    def on_data(self, conn: SrtSocket, data: bytes) -> None:
        self.bytes += len(data)

    def on_close(self, conn: SrtSocket, error: str | None) -> None:
        pass


def test_srt_connects_through_it_and_its_payload_count_matches_the_listener() -> None:
    counter = Counter()
    server = SrtServer("127.0.0.1", 0, SrtOptions(latency_ms=200), counter)
    server.start()
    try:
        with LinkProxy(("127.0.0.1", server.port), schedule="2mbps", delay_ms=20) as link:
            sock = SrtSocket.connect("127.0.0.1", link.port, SrtOptions(latency_ms=200))
            for _ in range(100):
                sock.send(bytes(3000))
                time.sleep(0.01)
            stats = sock.stats()
            sock.close(drain_timeout_s=2)
            time.sleep(0.1)
            delivered = round(sum(link.delivered_kbps_per_second(payload=True)) * 1000 / 8)
        assert counter.bytes == 300_000
        # What the proxy counts as SRT payload is what the listener got, plus retransmissions.
        assert 300_000 <= delivered <= 300_000 + stats.packets_retransmitted * 1316
        # RTT through the link: two 20 ms delays.
        assert stats.rtt_ms >= 35
    finally:
        server.stop()


def test_cli_refuses_a_bad_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--to", "127.0.0.1:9", "--schedule", "fast"]) == 2
    assert "capacity step 'fast'" in capsys.readouterr().err
