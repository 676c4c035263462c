"""Counts the MQTT connection's bytes at IP level from the kernel's own TCP counters.

paho's socket is read with ``getsockopt(TCP_INFO)`` (Linux, also Android): bytes sent (with
retransmissions) and received, and segments each way, to which the IP and TCP headers of each
segment are added (52 B with timestamps, 40 B without; +20 B on IPv6). That covers the CONNECT,
keepalives, publishes, acknowledgements, pure ACKs, retransmissions and TLS (handshake and
records: the kernel sees the ciphertext) without estimating them. The socket is read when paho
opens it, every ``poll`` (the guard's tick, once a second) and just before paho closes it
(``on_socket_close``); the FIN exchange after that is added (our FIN and last ACK, the peer's
FIN+ACK: measured on a veth), as are the 8 B of extra TCP options each SYN carries. A connection
attempt that fails before paho has a socket (broker down: SYN out, RST back) is estimated as one
SYN (60 B) and one RST (40 B); a TLS handshake that fails is not counted, nor are DNS lookups.

Snapshots travel on the same connection. ``charge_snapshot`` estimates a snapshot publish's bytes
(:func:`.budget.mqtt_publish_cost`) before it goes out: the budget is checked against that, and the
next measured bytes up to the estimate are booked as ``snapshot`` instead of ``mqtt``. Totals
stay the kernel's; only the split between the two kinds is estimated.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flumph.agent.budget import TCP_IP_HEADER_BYTES, mqtt_publish_cost
from flumph.agent.usage import UsageStore

if TYPE_CHECKING:
    import paho.mqtt.client as paho

log = logging.getLogger("flumph.agent.mqttmeter")

TCP_INFO = getattr(socket, "TCP_INFO", 11)
_TCP_INFO_LEN = 232  # struct tcp_info up to tcpi_snd_wnd (Linux 5.4+); older kernels give less
_TCPI_OPT_TIMESTAMPS = 1
CLOSE_SEGMENTS_SENT = 2  # our FIN, and the ACK of the peer's FIN
CLOSE_SEGMENTS_RECEIVED = 1  # the peer's FIN, which carries the ACK of ours
SYN_OPTION_BYTES = 8  # a SYN's options (MSS, SACK-permitted, window scale) beyond timestamps
FAILED_CONNECT_SENT = 60  # a SYN with options
FAILED_CONNECT_RECEIVED = 40  # the RST of a closed port


@dataclass(frozen=True)
class TcpCounters:
    """One socket's totals since it opened, IP level (headers added)."""

    sent: int
    received: int


def read_tcp_counters(sock: Any) -> TcpCounters | None:
    """The kernel's counters of a TCP socket, or None where TCP_INFO is not to be had."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, _TCP_INFO_LEN)
        family = sock.family
    except (OSError, AttributeError, ValueError):
        return None
    if len(raw) < 144:  # before Linux 4.2 there are no segment counts
        return None
    header = 20 + (12 if raw[5] & _TCPI_OPT_TIMESTAMPS else 0)
    header += 40 if family == socket.AF_INET6 else 20
    bytes_acked, bytes_received = struct.unpack_from("=QQ", raw, 120)
    segs_out, segs_in = struct.unpack_from("=II", raw, 136)
    # tcpi_bytes_sent (Linux 4.19+) includes retransmissions; before it, bytes acknowledged.
    bytes_sent = struct.unpack_from("=Q", raw, 200)[0] if len(raw) >= 208 else bytes_acked
    return TcpCounters(bytes_sent + segs_out * header, bytes_received + segs_in * header)


class MqttMeter:
    """Adds the MQTT connection's bytes to the usage store (kinds ``mqtt`` and ``snapshot``)."""

    def __init__(self, usage: UsageStore, *, tls: bool = False) -> None:
        self.usage = usage
        self.tls = tls
        self._lock = threading.Lock()
        self._sock: Any = None
        self._seen = TcpCounters(0, 0)
        self._snapshot_credit = 0  # estimated snapshot bytes not yet measured
        self.connections = 0
        self.failed_connects = 0
        self.unmeasurable = False  # TCP_INFO missing: nothing is counted (said once in the log)

    def attach(self, client: paho.Client) -> None:
        """Hook ``client``'s socket callbacks; an ``on_connect_fail`` already set still runs."""
        client.on_socket_open = self._on_open
        client.on_socket_close = self._on_close
        previous = client.on_connect_fail

        def connect_failed(c: Any, userdata: Any) -> None:
            self._on_connect_fail(c, userdata)
            if previous is not None:
                previous(c, userdata)  # (inside paho's except block: sys.exc_info() still holds)

        client.on_connect_fail = connect_failed

    def pending(self) -> int:
        """Bytes charged (snapshots) but not yet measured: the budget counts them already."""
        with self._lock:
            return self._snapshot_credit

    def charge_snapshot(self, topic_bytes: int, payload_bytes: int, qos: int = 1) -> int:
        """Book a snapshot publish about to go out; returns its estimated IP-level bytes."""
        cost = mqtt_publish_cost(topic_bytes, payload_bytes, qos=qos, tls=self.tls)
        with self._lock:
            self._snapshot_credit += cost
        return cost

    def poll(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._measure_locked(self._sock)

    # --- paho's network thread -----------------------------------------------------------------

    def _on_open(self, client: Any, userdata: Any, sock: Any) -> None:
        with self._lock:
            self._sock = sock
            self._seen = TcpCounters(0, 0)
            self.connections += 1
            self._measure_locked(sock)
            if not self.unmeasurable:
                self._book_locked(SYN_OPTION_BYTES, SYN_OPTION_BYTES)

    def _on_close(self, client: Any, userdata: Any, sock: Any) -> None:
        with self._lock:
            if sock is not self._sock:
                return
            self._measure_locked(sock)
            self._sock = None
            # A snapshot not measured by now did not go out on this connection (a resend on the
            # next one is counted as mqtt): it must not stay charged to the budget.
            self._snapshot_credit = 0
            if not self.unmeasurable:
                self._book_locked(CLOSE_SEGMENTS_SENT * TCP_IP_HEADER_BYTES,
                                  CLOSE_SEGMENTS_RECEIVED * TCP_IP_HEADER_BYTES)  # fmt: skip

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._lock:
            self.failed_connects += 1
            self._book_locked(FAILED_CONNECT_SENT, FAILED_CONNECT_RECEIVED)

    # --- under the lock -----------------------------------------------------------------------

    def _measure_locked(self, sock: Any) -> None:
        now = read_tcp_counters(sock)
        if now is None:
            if not self.unmeasurable and sock.fileno() >= 0:
                self.unmeasurable = True
                log.warning("TCP_INFO unavailable: MQTT bytes are not counted in the data budget")
            return
        sent = max(0, now.sent - self._seen.sent)
        received = max(0, now.received - self._seen.received)
        self._seen = now
        if sent or received:
            self._book_locked(sent, received)

    def _book_locked(self, sent: int, received: int) -> None:
        snapshot = min(self._snapshot_credit, sent + received)
        self._snapshot_credit -= snapshot
        snapshot_sent = min(snapshot, sent)
        if snapshot:
            self.usage.add(
                "snapshot", wire_sent=snapshot_sent, wire_received=snapshot - snapshot_sent
            )
        rest_sent, rest_received = sent - snapshot_sent, received - (snapshot - snapshot_sent)
        if rest_sent or rest_received:
            self.usage.add("mqtt", wire_sent=rest_sent, wire_received=rest_received)
