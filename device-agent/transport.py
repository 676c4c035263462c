"""SRT push to the ingest: live-mode caller, reconnect with jittered backoff, N frames per burst.

Sending happens on the caller's thread (the encoder's), so a frame's bytes are handed to libsrt
the moment they exist; a "srt-connector" thread owns connecting, backing off, polling statistics
into the usage counters and saving them. Each successful connection gets a new ``generation``: the
pipeline starts a fresh Matroska document with a forced keyframe whenever the generation changes.

Locks: ``_lock`` guards the connection state and counters and is never held across a libsrt call
that can block (a send waits while the send buffer is full, for as long as the link is slow):
holding it there stalled the connector's statistics polls and ``generation()`` behind the link.
``_send_lock`` only orders concurrent senders (the encoder, and ``flush`` from ``apply``) so
bursts leave in order.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass

from flumph.agent.budget import srt_send_cost
from flumph.agent.budgetguard import BudgetGuard
from flumph.agent.destination import PAYLOAD_SIZE, Destination, backoff_delay
from flumph.agent.usage import UsageStore
from flumph.srt import (
    DATA_HEADER_BYTES,
    SrtError,
    SrtLibraryMissing,
    SrtRejected,
    SrtSocket,
    SrtStats,
)

log = logging.getLogger("flumph.agent.transport")

# Statistics polls are local calls (no bytes on the wire); every 0.25 s lets the rate adapter see a
# link that cannot carry the stream before a second of video has queued up in front of it.
STATS_INTERVAL_S = 0.25
SAVE_INTERVAL_S = 10.0


@dataclass
class TransportStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    frames_sent: int = 0
    bursts_sent: int = 0
    bytes_sent: int = 0  # handed to libsrt
    frames_refused_offline: int = 0  # offered while not connected
    bursts_refused_budget: int = 0  # no room left in the data budget
    last_error: str | None = None
    rtt_ms: float = 0.0
    packets_retransmitted: int = 0
    packets_lost_sent: int = 0


class SrtPublisher:
    def __init__(
        self,
        destination: Destination,
        *,
        usage: UsageStore | None = None,
        budget: BudgetGuard | None = None,
        frames_per_burst: int = 1,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= frames_per_burst <= 4:
            raise ValueError(f"frames_per_burst must be 1..4, got {frames_per_burst}")
        self._destination = destination
        self.usage = usage
        self.budget = budget
        self.budget_refused = False  # the last send found no room in the budget
        self._frames_per_burst = frames_per_burst
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._connect_timeout_s = connect_timeout_s
        self._rng = rng or random.Random()
        self.stats = TransportStats()
        self._lock = threading.Lock()  # guards _socket, _generation, _burst, counters below
        self._send_lock = threading.Lock()  # orders senders; held across a blocking send
        self._link: tuple[float, int, SrtStats] | None = None  # (polled at, generation, stats)
        self._socket: SrtSocket | None = None
        self._generation = 0
        self._burst: list[bytes] = []
        self._burst_frames = 0
        self._counted = _Counted()
        self._broken: SrtSocket | None = None  # lost while sending; the connector closes it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srt-connector", daemon=True)

    # --- called from the pipeline -------------------------------------------------------------

    @property
    def destination(self) -> Destination:
        return self._destination

    def start(self) -> None:
        self._thread.start()

    def generation(self) -> int | None:
        """The current connection's number, or None while not connected."""
        with self._lock:
            return self._generation if self._socket is not None else None

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.generation() is not None:
                return True
            time.sleep(0.01)
        return False

    def set_frames_per_burst(self, n: int) -> None:
        if not 1 <= n <= 4:
            raise ValueError(f"frames_per_burst must be 1..4, got {n}")
        with self._lock:
            self._frames_per_burst = n
        if n == 1:
            self.flush()

    def set_destination(self, destination: Destination) -> None:
        """Reconnect to a new destination (or with a new latency/passphrase) at once."""
        with self._lock:
            if destination == self._destination:
                return
            self._destination = destination
            sock, self._socket = self._socket, None
            self._burst, self._burst_frames = [], 0
        if sock is not None:
            self._drain_and_close(sock, 1.0)
            self.stats.disconnects += 1
        self._wake.set()

    def send_frame(self, data: bytes, generation: int, *, new_document: bool = False) -> bool:
        """Queue one frame's bytes into the burst and send the burst when full.

        ``new_document``: ``data`` starts with a Matroska header, which must begin an SRT message
        (the ingest cuts documents at message boundaries), so a pending burst goes out first.
        False if the connection of ``generation`` is gone (the bytes are dropped; the caller starts
        over with a new document on the next generation).
        """
        with self._send_lock:
            with self._lock:
                sock = self._socket
                if sock is None or generation != self._generation:
                    self.stats.frames_refused_offline += 1
                    return False
                bursts = []
                if new_document and self._burst:
                    bursts.append(self._take_burst_locked())
                self._burst.append(data)
                self._burst_frames += 1
                if self._burst_frames >= self._frames_per_burst:
                    bursts.append(self._take_burst_locked())
            return all(self._send_burst(sock, payload, frames) for payload, frames in bursts)

    def flush(self) -> bool:
        with self._send_lock:
            with self._lock:
                sock = self._socket
                if sock is None or not self._burst:
                    return sock is not None
                payload, frames = self._take_burst_locked()
            return self._send_burst(sock, payload, frames)

    def _take_burst_locked(self) -> tuple[bytes, int]:
        burst = b"".join(self._burst), self._burst_frames
        self._burst, self._burst_frames = [], 0
        return burst

    def _send_burst(self, sock: SrtSocket, payload: bytes, frames: int) -> bool:
        """Send outside ``_lock`` (this may block while the link is slow); under ``_send_lock``,
        so the budget's check and the send it admits are one step for every sender."""
        # The budget's gate: this send's IP-level cost on top of what is counted and what went
        # out since the last statistics poll; a send that would pass the limit never leaves.
        cost = srt_send_cost(len(payload), self._destination.options().payload_size)
        if self.budget is not None:
            with self._lock:
                self.budget_refused = not self.budget.admit(self._counted.unpolled_wire + cost)
                if self.budget_refused:
                    self.stats.bursts_refused_budget += 1
                    return False
        try:
            sock.send(payload)
        except SrtError as e:
            with self._lock:
                self.stats.last_error = str(e)
                if self._socket is sock:  # not already replaced by set_destination or stop
                    log.warning("SRT send failed, reconnecting: %s", e)
                    self._socket = None
                    self._broken = sock
            self._wake.set()
            return False
        with self._lock:
            self.stats.frames_sent += frames
            self.stats.bursts_sent += 1
            self.stats.bytes_sent += len(payload)
            self._counted.unpolled_payload += len(payload)
            # Counted after the send: a statistics poll during it may count these bytes twice
            # until the next poll, never not at all (what the budget's gate must not miss).
            self._counted.unpolled_wire += cost
        return True

    def reset_connection(self, why: str) -> None:
        """Close the current connection at once, discarding what it has not delivered, and
        connect again (a new generation: a new document starting at a keyframe). For a queue the
        sender will never drop itself (``destination.SENDER_DROPS``) grown longer than a viewer
        should wait."""
        with self._lock:
            sock, self._socket = self._socket, None
            if sock is None:
                return
            self._broken = sock
            self._burst, self._burst_frames = [], 0
            self.stats.last_error = why
        log.warning("SRT connection reset: %s", why)
        self._wake.set()

    def link_stats(self) -> tuple[float, int, SrtStats] | None:
        """The newest statistics of the current connection: (time.monotonic() of the poll, the
        connection's generation, stats), or None before the first poll of a connection."""
        with self._lock:
            link = self._link
            if link is None or self._socket is None or link[1] != self._generation:
                return None
            return link

    def stop(self, drain_timeout_s: float = 1.0) -> None:
        """Send what is pending, let SRT deliver it (up to ``drain_timeout_s``), close, save."""
        self.flush()
        self._stop.set()
        self._wake.set()
        self._thread.join(10.0)
        self._retire_broken()
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            self._drain_and_close(sock, drain_timeout_s)
        if self.usage is not None:
            self.usage.save(force=True)

    def _drain_and_close(self, sock: SrtSocket, drain_timeout_s: float) -> None:
        # Wait for the peer's acknowledgements first so the last statistics poll (impossible after
        # close) counts them; close() then also waits out the peer's latency.
        deadline = time.monotonic() + drain_timeout_s
        while sock.unacknowledged_bytes() > 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        self._account(sock, final=True)
        sock.close(drain_timeout_s=max(0.0, deadline - time.monotonic()))

    # --- the connector thread -----------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        last_save = time.monotonic()
        while not self._stop.is_set():
            self._retire_broken()
            with self._lock:
                connected = self._socket is not None
                dest = self._destination
            if not connected:
                delay = self._connect_once(dest, attempt)
                if delay == 0:
                    attempt = 0
                    continue
                attempt += 1
                self._wake.wait(delay)
                self._wake.clear()
                continue
            self._wake.wait(STATS_INTERVAL_S)
            self._wake.clear()
            with self._lock:
                sock = self._socket
            if sock is not None:
                self._account(sock)
            if self.usage is not None and time.monotonic() - last_save >= SAVE_INTERVAL_S:
                self.usage.save()
                last_save = time.monotonic()

    def _connect_once(self, dest: Destination, attempt: int) -> float:
        """Try to connect; 0 on success, else the delay before the next try."""
        try:
            sock = SrtSocket.connect(
                dest.host, dest.port, dest.options(), timeout_s=self._connect_timeout_s
            )
        except SrtLibraryMissing:
            raise
        except SrtRejected as e:
            # A refusal (bad passphrase, unknown device) will not fix itself quickly.
            self._connect_failed(str(e))
            return backoff_delay(30, self._backoff_base_s, self._backoff_cap_s, self._rng)
        except (SrtError, OSError) as e:
            self._connect_failed(str(e))
            return backoff_delay(attempt, self._backoff_base_s, self._backoff_cap_s, self._rng)
        with self._lock:
            if self._stop.is_set() or dest != self._destination:
                stale = True
            else:
                stale = False
                self._socket = sock
                self._generation += 1
                self._counted = _Counted()
                self._burst, self._burst_frames = [], 0
        if stale:
            sock.close(drain_timeout_s=0)
            return 0.0 if not self._stop.is_set() else 1.0
        self.stats.connects += 1
        log.info("SRT connected to %s:%d as %s", dest.host, dest.port, dest.streamid)
        return 0.0

    def _connect_failed(self, why: str) -> None:
        self.stats.connect_failures += 1
        self.stats.last_error = why
        log.warning("SRT connect failed: %s", why)

    def _retire_broken(self) -> None:
        with self._lock:
            sock, self._broken = self._broken, None
        if sock is not None:
            self.stats.disconnects += 1
            self._account(sock, final=True)
            sock.close(drain_timeout_s=0)

    def _account(self, sock: SrtSocket, final: bool = False) -> None:
        """Add the usage since the last poll of ``sock`` to the counters."""
        # Under the send lock, so that the budget's gate never sees a send neither in the
        # counters nor in the unpolled estimate.
        with self._lock:
            try:
                stats = sock.stats()
                # And the send buffer as it is now, beside libsrt's moving average of it: the rate
                # adapter sees a drained queue at once (device-agent/linkestimate.py).
                now = sock.stats(instantaneous=True)
                stats = dataclasses.replace(stats, send_buffer_now_bytes=now.send_buffer_bytes)
            except SrtError:
                # srt_bstats fails once the peer has closed: estimate from what was handed over.
                if final:
                    unpolled = self._counted.unpolled_payload
                    self._counted.unpolled_payload = self._counted.unpolled_wire = 0
                    packets = -(-unpolled // PAYLOAD_SIZE)
                    if self.usage is not None and unpolled:
                        wire = unpolled + packets * DATA_HEADER_BYTES
                        self.usage.add("srt", wire_sent=wire, payload_sent=unpolled)
                return
            delta = self._counted.advance(stats)
            if self.usage is not None:
                self.usage.add("srt", **delta)
            if sock is self._socket:
                self._link = (time.monotonic(), self._generation, stats)
        self.stats.rtt_ms = stats.rtt_ms
        self.stats.packets_retransmitted = stats.packets_retransmitted
        self.stats.packets_lost_sent = stats.packets_lost_sent


@dataclass
class _Counted:
    """What one connection's statistics had reached at the last poll."""

    wire_sent: int = 0
    wire_received: int = 0
    payload_sent: int = 0
    payload_received: int = 0
    unpolled_payload: int = 0  # handed to libsrt since the last poll
    unpolled_wire: int = 0  # its IP-level cost, estimated (budget.srt_send_cost)

    def advance(self, s: SrtStats) -> dict[str, int]:
        delta = {
            "wire_sent": max(0, s.wire_bytes_sent - self.wire_sent),
            "wire_received": max(0, s.wire_bytes_received - self.wire_received),
            "payload_sent": max(0, s.bytes_sent - self.payload_sent),
            "payload_received": max(0, s.bytes_received - self.payload_received),
        }
        self.wire_sent, self.wire_received = s.wire_bytes_sent, s.wire_bytes_received
        self.payload_sent, self.payload_received = s.bytes_sent, s.bytes_received
        self.unpolled_payload = self.unpolled_wire = 0
        return delta
