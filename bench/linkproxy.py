"""A user-space UDP link between an SRT caller and its listener on loopback: the stand-in for a
cellular uplink (no netem in this kernel).

    caller ──► [loss] ──► [token bucket + bounded queue] ──► [delay + jitter] ──► listener
    caller ◄── [loss] ◄────────────────────────────────────── [delay + jitter] ◄── listener

The uplink (caller -> listener) has a capacity that can follow a schedule, e.g.
``"800kbps for 20s, 150kbps for 20s, 800kbps"`` (``0``, ``down`` or ``outage`` for nothing at all;
the last step lasts for ever). Capacity counts IP-level bytes: each datagram plus 28 bytes of IPv4
and UDP headers, as a carrier counts. A packet that finds the queue full is dropped (tail drop,
as a router does); ``--queue-bytes`` sets how deep the carrier's buffer is. Delay and jitter
apply each way (jitter never reorders: a late packet delays the ones behind it, as on a
serialising radio link); random loss applies each way.

One thread owns every socket (``selectors`` plus a heap of timed deliveries), so the proxy is
exact to about a millisecond at the rates cellular links have. Each caller address gets its own
upstream socket (at most ``MAX_CLIENTS``), so the listener sees distinct peers.

Use from code::

    with LinkProxy(("127.0.0.1", ingest_srt_port), schedule="800kbps for 20s, 150kbps") as link:
        agent_url = f"srt://127.0.0.1:{link.port}"
        ...
        link.delivered_kbps_per_second()   # what the listener received, second by second

or from the shell: ``python -m bench.linkproxy --to 127.0.0.1:8890 --listen 127.0.0.1:9000
--schedule "800kbps for 20s, 150kbps for 20s, 800kbps" --delay-ms 30 --jitter-ms 10``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IP_UDP_HEADER_BYTES = 28
MAX_DATAGRAM = 65535
MAX_CLIENTS = 64
DEFAULT_QUEUE_BYTES = 64 * 1024
DEFAULT_BURST_BYTES = 3000  # two full SRT packets: the bucket's depth when the queue is empty
SRT_HEADER_BYTES = 16
MAX_TIMELINE = 2_000_000  # delivered-packet records kept for benches (~1 h at 500 pkt/s)


@dataclass(frozen=True)
class Step:
    kbps: float | None  # None: unlimited; 0: outage
    seconds: float | None  # None: for ever


_STEP_RE = re.compile(
    r"^\s*(?P<rate>unlimited|down|outage|0|\d+(?:\.\d+)?\s*(?:kbps|mbps|bps))"
    r"(?:\s+for\s+(?P<dur>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|min)?)?\s*$",
    re.IGNORECASE,
)
_RATE_UNITS = {"bps": 0.001, "kbps": 1.0, "mbps": 1000.0}
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}


def parse_schedule(text: str) -> list[Step]:
    """``"800kbps for 20s, 150kbps for 20s, 800kbps"`` -> steps; ValueError names the bad part."""
    steps: list[Step] = []
    parts = [p for p in text.split(",")]
    if not text.strip():
        raise ValueError("empty capacity schedule")
    for i, part in enumerate(parts):
        m = _STEP_RE.match(part)
        if m is None:
            raise ValueError(
                f"capacity step {part.strip()!r}: expected '<rate> [for <duration>]' with a rate "
                "such as 800kbps, 1.5mbps, 0, down or unlimited and a duration such as 20s"
            )
        rate = m["rate"].lower().replace(" ", "")
        kbps: float | None
        if rate == "unlimited":
            kbps = None
        elif rate in ("down", "outage", "0"):
            kbps = 0.0
        else:
            number, unit = re.match(r"([\d.]+)(\w+)", rate).groups()  # type: ignore[union-attr]
            kbps = float(number) * _RATE_UNITS[unit]
        seconds = None
        if m["dur"] is not None:
            seconds = float(m["dur"]) * _TIME_UNITS[m["unit"].lower() if m["unit"] else None]
            if seconds <= 0:
                raise ValueError(f"capacity step {part.strip()!r}: the duration must be > 0")
        elif i != len(parts) - 1:
            raise ValueError(f"capacity step {part.strip()!r}: only the last step may omit 'for'")
        steps.append(Step(kbps, seconds))
    return steps


def capacity_at(steps: list[Step], elapsed: float) -> float | None:
    """The capacity (kbit/s, None = unlimited) ``elapsed`` seconds into the schedule."""
    t = 0.0
    for step in steps:
        if step.seconds is None or elapsed < t + step.seconds:
            return step.kbps
        t += step.seconds
    return steps[-1].kbps


@dataclass
class DirectionStats:
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0  # datagram bytes delivered
    lost_random: int = 0
    dropped_queue: int = 0
    dropped_outage: int = 0
    # (time since start, datagram bytes, SRT data payload bytes) of each delivered packet: the
    # timeline benches read. SRT payload is 0 for control packets (ACK, NAK, keepalive).
    delivered: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass
class _Client:
    address: tuple[str, int]
    upstream: socket.socket


class LinkProxy:
    """Start with ``start()`` or ``with``; ``port`` is where callers send."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        schedule: str | list[Step] = "unlimited",
        delay_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss_pct: float = 0.0,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        burst_bytes: int = DEFAULT_BURST_BYTES,
        seed: int | None = None,
        keep_timeline: bool = True,
    ) -> None:
        if delay_ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0 ms")
        if not 0 <= loss_pct < 100:
            raise ValueError(f"loss must be 0..100 %, got {loss_pct}")
        if queue_bytes < 1500 or burst_bytes < 1500:
            raise ValueError("queue and burst must hold at least one packet (1500 bytes)")
        self.steps = parse_schedule(schedule) if isinstance(schedule, str) else list(schedule)
        self.upstream = upstream
        self.delay_s = delay_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self.loss = loss_pct / 100
        self.queue_bytes = queue_bytes
        self.burst_bytes = burst_bytes
        self.keep_timeline = keep_timeline
        self.up = DirectionStats()
        self.down = DirectionStats()
        self._rng = random.Random(seed)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind(listen)
        self._sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        self._clients: dict[tuple[str, int], _Client] = {}
        self._heap: list[tuple[float, int, int, bytes, _Client]] = []  # (due, seq, dir, data, c)
        self._seq = 0
        self._queued_bytes = 0  # uplink bytes waiting for the bucket
        self._uplink: list[tuple[bytes, _Client]] = []  # FIFO, drained by the bucket
        self._uplink_head = 0
        self._tokens = float(burst_bytes)
        self._tokens_at = 0.0
        self._last_due = [0.0, 0.0]  # per direction: no reordering
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="linkproxy", daemon=True)
        self._lock = threading.Lock()  # guards the stats lists against readers

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def started_at(self) -> float:
        """time.monotonic() when the schedule started."""
        return self._started

    def start(self) -> LinkProxy:
        self._started = time.monotonic()
        self._tokens_at = self._started
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._clients.values():
            c.upstream.close()
        self._sock.close()
        self._selector.close()

    def __enter__(self) -> LinkProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def capacity_kbps(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        return capacity_at(self.steps, now - self._started)

    def summary(self) -> dict[str, object]:
        """Everything a bench reads afterwards, JSON-ready."""
        return {
            "payload_kbps": self.delivered_kbps_per_second(payload=True),
            "datagram_kbps": self.delivered_kbps_per_second(),
            "up": {k: v for k, v in vars(self.up).items() if k != "delivered"},
            "down": {k: v for k, v in vars(self.down).items() if k != "delivered"},
        }

    def delivered_kbps_per_second(
        self, direction: str = "up", *, payload: bool = False
    ) -> list[float]:
        """Bytes delivered in each whole second since start, in kbit/s: whole datagrams, or with
        ``payload`` only SRT data payload (what the listener's application receives, with
        retransmissions)."""
        stats = self.up if direction == "up" else self.down
        with self._lock:
            timeline = list(stats.delivered)
        if not timeline:
            return []
        seconds = [0.0] * (int(timeline[-1][0]) + 1)
        for t, n, p in timeline:
            seconds[int(t)] += (p if payload else n) * 8 / 1000
        return seconds

    # --- the one thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            self._release_uplink(now)
            timeout = 0.05
            if self._heap:
                timeout = min(timeout, max(0.0, self._heap[0][0] - now))
            if self._uplink_head < len(self._uplink):
                timeout = min(timeout, self._next_token_wait(now))
            for key, _ in self._selector.select(timeout):
                self._receive(key.fileobj, key.data)  # type: ignore[arg-type]
            self._deliver_due(time.monotonic())

    def _receive(self, sock: socket.socket, client: _Client | None) -> None:
        for _ in range(256):  # drain what is waiting, bounded per wake-up
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                return
            now = time.monotonic()
            if client is None:  # from a caller: uplink
                c = self._client_for(addr)
                if c is None:
                    continue
                self._uplink_in(now, data, c)
            else:  # from the listener: downlink
                self._count_in(self.down, data)
                if self.loss and self._rng.random() < self.loss:
                    self.down.lost_random += 1
                    continue
                self._schedule(now, 1, data, client)

    def _client_for(self, addr: tuple[str, int]) -> _Client | None:
        c = self._clients.get(addr)
        if c is not None:
            return c
        if len(self._clients) >= MAX_CLIENTS:
            return None
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        upstream.connect(self.upstream)
        upstream.setblocking(False)
        c = _Client(addr, upstream)
        self._clients[addr] = c
        self._selector.register(upstream, selectors.EVENT_READ, c)
        return c

    @staticmethod
    def _count_in(stats: DirectionStats, data: bytes) -> None:
        stats.packets_in += 1
        stats.bytes_in += len(data)

    def _uplink_in(self, now: float, data: bytes, c: _Client) -> None:
        self._count_in(self.up, data)
        if self.loss and self._rng.random() < self.loss:
            self.up.lost_random += 1
            return
        size = len(data) + IP_UDP_HEADER_BYTES
        if self._queued_bytes + size > self.queue_bytes:
            self.up.dropped_queue += 1
            return
        self._uplink.append((data, c))
        self._queued_bytes += size
        self._release_uplink(now)

    def _refill(self, now: float) -> float | None:
        kbps = self.capacity_kbps(now)
        if kbps is None:
            self._tokens = float(self.burst_bytes)
        elif kbps <= 0:
            self._tokens = 0.0  # an outage passes nothing, not even a saved-up burst
        else:
            self._tokens = min(
                float(self.burst_bytes), self._tokens + (now - self._tokens_at) * kbps * 125
            )
        self._tokens_at = now
        return kbps

    def _next_token_wait(self, now: float) -> float:
        kbps = self._refill(now)
        if kbps is None:
            return 0.0
        if kbps <= 0:
            return 0.05
        data, _ = self._uplink[self._uplink_head]
        missing = len(data) + IP_UDP_HEADER_BYTES - self._tokens
        return max(0.0, min(0.05, missing / (kbps * 125)))

    def _release_uplink(self, now: float) -> None:
        kbps = self._refill(now)
        while self._uplink_head < len(self._uplink):
            data, c = self._uplink[self._uplink_head]
            size = len(data) + IP_UDP_HEADER_BYTES
            if kbps is not None and self._tokens < size:
                break
            if kbps is not None:
                self._tokens -= size
            self._uplink_head += 1
            self._queued_bytes -= size
            self._schedule(now, 0, data, c)
        if self._uplink_head > 1024:
            del self._uplink[: self._uplink_head]
            self._uplink_head = 0

    def _schedule(self, now: float, direction: int, data: bytes, c: _Client) -> None:
        due = now + self.delay_s
        if self.jitter_s:
            due += self._rng.uniform(0, self.jitter_s)
        due = max(due, self._last_due[direction])
        self._last_due[direction] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, direction, data, c))

    def _deliver_due(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, direction, data, c = heapq.heappop(self._heap)
            try:
                if direction == 0:
                    c.upstream.send(data)
                else:
                    self._sock.sendto(data, c.address)
            except OSError:
                continue  # the peer is gone; a real link would lose it too
            stats = self.up if direction == 0 else self.down
            with self._lock:
                stats.packets_out += 1
                stats.bytes_out += len(data)
                if self.keep_timeline and len(stats.delivered) < MAX_TIMELINE:
                    # SRT: the first bit of a data packet is 0, of a control packet 1.
                    is_data = len(data) > SRT_HEADER_BYTES and not data[0] & 0x80
                    payload = len(data) - SRT_HEADER_BYTES if is_data else 0
                    stats.delivered.append((now - self._started, len(data), payload))


class LinkProxyProcess:
    """The proxy in its own process (``python -m bench.linkproxy``), so the GIL of the process
    under test cannot stall the link: measured in-process next to an encoder on a loaded machine,
    an 800 kbit/s link delivered 98-337 kbit/s for seconds at a time."""

    def __init__(self, upstream: tuple[str, int], timeline: Path, **options: object) -> None:
        self.timeline = timeline
        self.port = _free_udp_port()
        args = [
            sys.executable,
            "-m",
            "bench.linkproxy",
            "--quiet",
            "--timeline",
            str(timeline),
            "--to",
            f"{upstream[0]}:{upstream[1]}",
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        for key, value in options.items():
            args += [f"--{key.replace('_', '-')}", str(value)]  # fmt: skip
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "linkproxy: ..." once it is listening
        if not line.startswith("linkproxy:"):
            self.proc.kill()
            raise RuntimeError(f"linkproxy did not start: {line!r}")
        self.started_at = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """Stop it and return its summary (see ``LinkProxy.summary``)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        summary: dict[str, Any] = json.loads(self.timeline.read_text())
        return summary


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected host:port")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.linkproxy", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--to", type=_address, required=True, help="the SRT listener, host:port")
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 0), help="host:port")
    p.add_argument("--schedule", default="unlimited", help='e.g. "800kbps for 20s, 150kbps"')
    p.add_argument("--delay-ms", type=float, default=0.0, help="one way, each direction")
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--loss-pct", type=float, default=0.0, help="random loss, each direction")
    p.add_argument("--queue-bytes", type=int, default=DEFAULT_QUEUE_BYTES)
    p.add_argument("--burst-bytes", type=int, default=DEFAULT_BURST_BYTES)
    p.add_argument("--seconds", type=float, default=None, help="stop after (default: Ctrl-C)")
    p.add_argument(
        "--timeline", type=Path, default=None,
        help="at exit, write JSON: SRT payload and datagram kbit/s delivered each second, counters",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no per-second table")
    args = p.parse_args(argv)
    try:
        proxy = LinkProxy(
            args.to,
            listen=args.listen,
            schedule=args.schedule,
            delay_ms=args.delay_ms,
            jitter_ms=args.jitter_ms,
            loss_pct=args.loss_pct,
            queue_bytes=args.queue_bytes,
            burst_bytes=args.burst_bytes,
            keep_timeline=args.timeline is not None,
        )
    except ValueError as e:
        print(f"linkproxy: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    proxy.start()
    print(f"linkproxy: 127.0.0.1:{proxy.port} -> {args.to[0]}:{args.to[1]}", flush=True)
    if not args.quiet:
        header = f"{'s':>4} {'cap kbps':>9} {'up kbps':>8} {'queue drops':>11} {'lost':>5}"
        print(header, flush=True)
    last = proxy.up.bytes_out
    t0 = time.monotonic()
    try:
        while args.seconds is None or time.monotonic() - t0 < args.seconds:
            if stop.wait(1.0):
                break
            now = time.monotonic()
            if args.quiet:
                continue
            cap = proxy.capacity_kbps(now)
            out = proxy.up.bytes_out
            print(
                f"{now - t0:4.0f} {'-' if cap is None else f'{cap:.0f}':>9} "
                f"{(out - last) * 8 / 1000:8.0f} {proxy.up.dropped_queue:11d} "
                f"{proxy.up.lost_random + proxy.down.lost_random:5d}",
                flush=True,
            )
            last = out
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()
        if args.timeline is not None:
            args.timeline.write_text(json.dumps(proxy.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
