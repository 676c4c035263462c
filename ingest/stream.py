"""One stream: its init segment, the cached GOP a late joiner starts from, its viewers and rates.

A publisher's items (init segment, one fMP4 fragment per frame, or opaque frames from a WebSocket
streamer) are handed to every viewer by reference; a fragment's WebSocket frame is built once for
all direct viewers. On the event loop only.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Literal

from .latency import LatencyHistogram
from .viewer import Viewer
from .wsframe import binary_frame

Source = Literal["srt", "ws"]

# The GOP cache is what makes a late joiner see a picture at once; a publisher with an absurd
# keyframe interval must not turn it into a memory leak, so past these limits caching pauses until
# the next keyframe (late joiners then wait for it, as they would without a cache).
GOP_CACHE_MAX_FRAMES = 1200
GOP_CACHE_MAX_BYTES = 16 * 1024 * 1024
# A direct viewer's write buffer may hold its queue's worth of average frames plus the GOP it was
# sent on joining, and never less than this.
DIRECT_MIN_BUFFER_BYTES = 256 * 1024
_UNKNOWN_FRAME_BYTES = 16 * 1024  # the average frame, before a stream has any


@dataclass(frozen=True)
class MediaInit:
    mime: str
    data: bytes
    codec: str
    width: int
    height: int


@dataclass
class RateMeter:
    """Frames and bytes per second over a sliding window, for /api/streams."""

    window_s: float = 5.0
    _events: collections.deque[tuple[float, int]] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )

    def add(self, size: int, now: float) -> None:
        self._events.append((now, size))

    def rates(self, now: float) -> tuple[float, float]:
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
        if len(self._events) < 2:
            return 0.0, 0.0
        span = max(now - self._events[0][0], 1e-3)
        fps = (len(self._events) - 1) / span
        bits = sum(s for _, s in list(self._events)[1:]) * 8
        return fps, bits / span / 1000.0


class Stream:
    def __init__(self, stream_id: str, source: Source | None) -> None:
        self.id = stream_id
        # None: created by a viewer waiting for a device that is not publishing yet.
        self.source: Source | None = source
        self.created = time.monotonic()
        self.viewers: set[Viewer] = set()
        self.init: MediaInit | None = None
        self.gop: list[bytes] = []
        self.gop_started = 0.0  # time.monotonic() of the cached keyframe
        self._gop_bytes = 0
        self._gop_caching = True
        self.publisher_connected = False
        self.publisher_token = 0
        self.ended = False
        self.frames = 0
        self.bytes = 0
        self.meter = RateMeter()
        self.grace_handle: asyncio.TimerHandle | None = None
        # Frame in (last SRT byte) -> written to a viewer's WebSocket, seconds; bounded sample.
        self.added_latency: collections.deque[float] = collections.deque(maxlen=2048)
        self.latency = LatencyHistogram()  # the same, every frame, for /metrics
        self.dropped_by_departed = 0  # frames skipped for viewers that have left

    def record_latency(self, seconds: float) -> None:
        self.added_latency.append(seconds)
        self.latency.observe(seconds)

    @property
    def viewer_frames_dropped(self) -> int:
        """Frames skipped for slow viewers since the stream began, departed viewers included."""
        return self.dropped_by_departed + sum(v.dropped_total for v in self.viewers)

    # --- called on the event loop by publishers -------------------------------------------------
    def publish_init(self, init: MediaInit) -> None:
        changed = self.init is None or self.init.data != init.data
        self.init = init
        self.gop = []
        self._gop_bytes = 0
        if changed:
            for v in self.viewers:
                v.offer_init(init)

    def publish_fragment(self, data: bytes, keyframe: bool, t_in: float = 0.0) -> None:
        now = time.monotonic()
        self.frames += 1
        self.bytes += len(data)
        self.meter.add(len(data), now)
        if keyframe:
            self.gop = [data]
            self.gop_started = now
            self._gop_bytes = len(data)
            self._gop_caching = True
        elif self._gop_caching and self.gop:
            if (
                len(self.gop) >= GOP_CACHE_MAX_FRAMES
                or self._gop_bytes + len(data) > GOP_CACHE_MAX_BYTES
            ):
                self._gop_caching = False
                self.gop = []
                self._gop_bytes = 0
            else:
                self.gop.append(data)
                self._gop_bytes += len(data)
        frame: bytes | None = None
        written = False
        for v in self.viewers:
            if v.sink is None:
                v.offer(data, keyframe, t_in)
                continue
            if frame is None:
                frame = binary_frame(data)  # once, for every direct viewer
            written = v.write_media(data, keyframe, frame) or written
        if written and t_in:
            # The last direct viewer's write: the most this fragment waited.
            self.record_latency(time.monotonic() - t_in)

    def publish_opaque(self, data: bytes) -> None:
        now = time.monotonic()
        self.frames += 1
        self.bytes += len(data)
        self.meter.add(len(data), now)
        frame: bytes | None = None
        for v in self.viewers:
            if v.sink is None:
                v.offer(data, None)
                continue
            if frame is None:
                frame = binary_frame(data)
            v.write_media(data, None, frame)

    def direct_buffer_limit(self, queue_frames: int) -> int:
        """The write-buffer bytes a direct viewer may hold before it skips: its queue's worth of
        this stream's average frames, plus the cached GOP it is sent on joining."""
        average = self.bytes // self.frames if self.frames else _UNKNOWN_FRAME_BYTES
        return max(DIRECT_MIN_BUFFER_BYTES, (queue_frames + 4) * average + self._gop_bytes)

    # --- viewers --------------------------------------------------------------------------------
    def attach(self, viewer: Viewer, *, fresh: bool = False) -> None:
        """Start a viewer at the live edge: init segment and the current GOP at once, or with
        ``fresh`` the init segment only, the next keyframe being on its way."""
        if self.init is not None:
            viewer.offer_init(self.init)
            if fresh:
                viewer.awaiting_fresh_keyframe = True
            else:
                self.offer_cache(viewer)
        self.viewers.add(viewer)

    def offer_cache(self, viewer: Viewer) -> None:
        viewer.awaiting_fresh_keyframe = False
        for i, frag in enumerate(self.gop):
            viewer.offer(frag, i == 0)

    def cache_if_still_waiting(self, viewer: Viewer) -> None:
        """The fresh keyframe did not come in time: the cache it is."""
        if viewer.awaiting_fresh_keyframe and viewer in self.viewers and not self.ended:
            self.offer_cache(viewer)

    def info(self) -> dict[str, object]:
        now = time.monotonic()
        fps, kbps = self.meter.rates(now)
        init = self.init
        return {
            "id": self.id,
            "source": self.source,
            "codec": init.codec if init else None,
            "mime": init.mime if init else None,
            "width": init.width if init else None,
            "height": init.height if init else None,
            "size": f"{init.width}x{init.height}" if init else None,
            "fps": round(fps, 2),
            "bitrate_kbps": round(kbps, 1),
            "viewers": len(self.viewers),
            "uptime_s": round(now - self.created, 1),
            "publishing": self.publisher_connected,
            "frames": self.frames,
            "viewer_frames_dropped": sum(v.dropped_total for v in self.viewers),
            "added_latency_ms": _percentiles_ms(self.added_latency),
        }


def _percentiles_ms(samples: collections.deque[float]) -> dict[str, float] | None:
    if not samples:
        return None
    xs = sorted(samples)

    def pct(p: float) -> float:
        return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000.0, 3)

    return {"p50": pct(0.50), "p99": pct(0.99), "max": round(xs[-1] * 1000.0, 3)}
