"""Where the agent sends its stream, and how: the ingest's address, the SRT options every
connection uses, and the backoff between attempts. Pure (no sockets opened here)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import urlsplit

from flumph.srt import SrtOptions

PAYLOAD_SIZE = 1316
SENDER_DROPS = False  # see SrtOptions.sender_drops and device-agent/linkestimate.py


def parse_ingest_url(url: str) -> tuple[str, int]:
    """``srt://host:port`` -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme != "srt":
        raise ValueError(f"ingest URL {url!r} must start with srt://")
    if parts.query or (parts.path and parts.path != "/"):
        raise ValueError(f"ingest URL {url!r}: give only srt://host:port (options are settings)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"ingest URL {url!r} has an invalid port") from None
    if not parts.hostname or port is None:
        raise ValueError(f"ingest URL {url!r} needs a host and a port, e.g. srt://ingest:8890")
    return parts.hostname, port


@dataclass(frozen=True)
class Destination:
    host: str
    port: int
    device_id: str
    latency_ms: int = 120
    passphrase: str | None = None

    @property
    def streamid(self) -> str:
        return f"publish:{self.device_id}"

    def options(self) -> SrtOptions:
        return SrtOptions(
            latency_ms=self.latency_ms,
            passphrase=self.passphrase,
            payload_size=PAYLOAD_SIZE,
            streamid=self.streamid,
            sender_drops=SENDER_DROPS,
        )


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    delay = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return rng.uniform(delay / 2, delay)
