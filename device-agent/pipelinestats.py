"""The pipeline's counters and what is derived from them (pure): send rate, latency percentiles.

The encode thread (or the copy worker) appends; telemetry and status read from any thread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

_LATENCY_SAMPLES = 2000
_RATE_WINDOW_S = 10.0
# A rate over less than this says nothing: right after a start, one keyframe over a few
# milliseconds read as megabits per second (and one frame over 11 ms as 91.7 fps).
MIN_RATE_SPAN_S = 1.0


@dataclass
class PipelineStats:
    frames_encoded: int = 0
    frames_sent: int = 0
    frames_dropped_offline: int = 0  # captured while SRT was down (not encoded)
    frames_skipped_rate: int = 0  # held back by the rate controller's gate (not encoded)
    encoder_reopens: int = 0  # by the rate loop (target, trim or ladder)
    documents: int = 0  # Matroska headers sent (connections + encoder changes)
    packet_bytes: int = 0  # encoder output
    written_bytes: int = 0  # Matroska bytes, headers included
    header_bytes: int = 0
    # encoder returned -> bytes handed to libsrt, ms (with N frames per burst, the last of each)
    send_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))

    def overhead_per_frame(self) -> float:
        if not self.frames_sent:
            return 0.0
        return (self.written_bytes - self.header_bytes - self.packet_bytes) / self.frames_sent

    def bitrate_kbps(self, now: float) -> float | None:
        """Encoded bits per second over the last frames, or None until they span long enough."""
        # list() copies in one C call: the encode thread appends while others read.
        window = [(t, n) for t, n in list(self.recent) if now - t <= _RATE_WINDOW_S]
        if len(window) < 2 or window[-1][0] - window[0][0] < MIN_RATE_SPAN_S:
            return None
        span = window[-1][0] - window[0][0]
        return sum(n for _, n in window[1:]) * 8 / span / 1000


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 3)
