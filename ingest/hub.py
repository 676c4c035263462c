"""Streams, viewers and the fan-out between them.

Publishers (an SRT demux thread or a WebSocket streamer) hand the hub finished items: an init
segment with its mime type, or one fMP4 fragment per frame, or an opaque binary frame from a
WebSocket streamer. The hub copies references into each viewer's bounded queue; nothing a viewer
does can slow the publisher or another viewer. A viewer whose queue overflows drops what it has
queued and resumes at the next keyframe, and is told how many frames it lost (MediaMTX and go2rtc
behave the same way).

A viewer served by uvicorn with :mod:`.ws_direct` goes direct once greeted (:meth:`Hub.go_direct`):
its frames are no longer queued but written at once to its transport, the WebSocket frame of a
fragment built once for all such viewers; the transport's write buffer stands in for the queue
(past ``max_buffered_bytes`` the viewer skips to the next keyframe, counted and told the same way).

Membership (which ids exist, who publishes) is guarded by a lock because SRT connections arrive on
libsrt's threads; everything that touches viewers runs on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .keyframes import JOIN_GOP_S, JOIN_WAIT_S
from .latency import LatencyHistogram
from .wsframe import binary_frame, text_frame

log = logging.getLogger("flumph.ingest.hub")

Source = Literal["srt", "ws"]
QueueItem = tuple[bytes | str, float] | None
ID_ALPHABET = string.ascii_letters + string.digits

# The GOP cache is what makes a late joiner see a picture at once; a publisher with an absurd
# keyframe interval must not turn it into a memory leak, so past these limits caching pauses until
# the next keyframe (late joiners then wait for it, as they would without a cache).
GOP_CACHE_MAX_FRAMES = 1200
GOP_CACHE_MAX_BYTES = 16 * 1024 * 1024
# A direct viewer's write buffer may hold its queue's worth of average frames plus the GOP it was
# sent on joining, and never less than this.
DIRECT_MIN_BUFFER_BYTES = 256 * 1024
_UNKNOWN_FRAME_BYTES = 16 * 1024  # the average frame, before a stream has any


class FrameSink(Protocol):
    """Where a direct viewer's pre-built WebSocket frames go (see ws_direct.TransportSink)."""

    def write(self, frame: bytes) -> bool: ...

    def buffered(self) -> int: ...


class HubError(Exception):
    """A request the hub refuses; the message is sent to the client as is."""


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


class Viewer:
    """One subscribed WebSocket; its sender task drains a bounded queue."""

    def __init__(self, stream_id: str, queue_frames: int) -> None:
        self.stream_id = stream_id
        # Items: (payload, t_in) where t_in is when the frame's last byte reached the ingest
        # (0 for control messages); None ends the sender.
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=queue_frames)
        self.waiting_for_keyframe = False
        # Joined a long cached GOP and waits for the fresh keyframe asked of the device: frames
        # before it are not drops, the cache comes instead if it does not (ingest/keyframes.py).
        self.awaiting_fresh_keyframe = False
        self.dropped_total = 0
        self._dropped_pending = 0
        self.skips = 0
        self.sink: FrameSink | None = None  # direct: frames go to the transport, not the queue
        self.max_buffered_bytes = 0
        self._dropping = False

    def go_direct(self, sink: FrameSink, max_buffered_bytes: int) -> None:
        """From now on write frames to ``sink``; what is queued goes first, in order."""
        pending: list[QueueItem] = []
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        self.sink = sink
        self.max_buffered_bytes = max_buffered_bytes
        for item in pending:
            if item is None:
                self.queue.put_nowait(None)  # ended meanwhile: the sender closes
                return
            payload = item[0]
            sink.write(text_frame(payload) if isinstance(payload, str) else binary_frame(payload))

    def _before_fresh_keyframe(self, keyframe: bool | None) -> bool:
        """A frame before the fresh keyframe this viewer waits for: skipped, not a loss."""
        if not self.awaiting_fresh_keyframe:
            return False
        if not keyframe:
            return True
        self.awaiting_fresh_keyframe = False
        return False

    def write_media(self, item: bytes, keyframe: bool | None, frame: bytes | None = None) -> bool:
        """A direct viewer's frame: written (True), or dropped by the skip policy. ``frame`` is
        ``item`` already framed, shared by every viewer."""
        sink = self.sink
        assert sink is not None
        if self._before_fresh_keyframe(keyframe):
            return False
        if self.waiting_for_keyframe and keyframe is False:
            self._count_drop(1)
            return False
        if sink.buffered() > self.max_buffered_bytes:
            self._count_drop(1)
            if not self._dropping:
                self._dropping = True
                self.skips += 1
            # Opaque streams (keyframe None) have no keyframe to wait for: resume with any frame.
            self.waiting_for_keyframe = keyframe is not None
            return False
        self.waiting_for_keyframe = False
        self._dropping = False
        if self._dropped_pending:
            log.warning(
                "viewer of %s was too slow, discarded %d frames",
                self.stream_id,
                self._dropped_pending,
            )
            notice = json.dumps({"type": "skipped", "dropped": self._dropped_pending})
            self._dropped_pending = 0
            sink.write(text_frame(notice))
        return sink.write(frame if frame is not None else binary_frame(item))

    def offer(self, item: bytes, keyframe: bool | None, t_in: float = 0.0) -> None:
        """Queue a frame; ``keyframe`` None means the stream is opaque (no keyframes known)."""
        if self._before_fresh_keyframe(keyframe):
            return
        if self.sink is not None:
            self.write_media(item, keyframe)
            return
        if self.waiting_for_keyframe:
            if keyframe is False:
                self._count_drop(1)
                return
            self.waiting_for_keyframe = False
            if self._dropped_pending:
                notice = json.dumps({"type": "skipped", "dropped": self._dropped_pending})
                self._dropped_pending = 0
                self._put_or_overflow(notice, keyframe, 0.0)
        self._put_or_overflow(item, keyframe, t_in)

    def offer_control(self, text: str) -> None:
        """Control messages (media/ended) must arrive even at a slow viewer: make room for them."""
        if self.sink is not None:
            self.sink.write(text_frame(text))
            return
        if self.queue.full():
            self._flush_queue()
            self.waiting_for_keyframe = True
        self.queue.put_nowait((text, 0.0))

    def offer_init(self, init: MediaInit) -> None:
        self.offer_control(json.dumps({"type": "media", "mime": init.mime}))
        if self.sink is not None:
            self.sink.write(binary_frame(init.data))
            return
        if self.queue.full():
            self._flush_queue()
            self.waiting_for_keyframe = True
        self.queue.put_nowait((init.data, 0.0))

    def close(self) -> None:
        """Ask the sender to finish after what is queued (None is the sentinel)."""
        if self.queue.full():
            self._flush_queue()
        self.queue.put_nowait(None)

    def _put_or_overflow(self, item: bytes | str, keyframe: bool | None, t_in: float) -> None:
        try:
            self.queue.put_nowait((item, t_in))
        except asyncio.QueueFull:
            dropped = self._flush_queue() + 1
            self.skips += 1
            self._count_drop(dropped)
            if keyframe is None:
                # Opaque stream: no keyframe to resume at; carry on with the next frame.
                notice = json.dumps({"type": "skipped", "dropped": self._dropped_pending})
                self.queue.put_nowait((notice, 0.0))
                self._dropped_pending = 0
            else:
                self.waiting_for_keyframe = True
            log.warning("viewer of %s is too slow, discarding %d frames", self.stream_id, dropped)

    def _flush_queue(self) -> int:
        n = 0
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None and isinstance(item[0], bytes):
                n += 1
        return n

    def _count_drop(self, n: int) -> None:
        self.dropped_total += n
        self._dropped_pending += n


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


class Hub:
    def __init__(
        self,
        *,
        max_streams: int,
        max_viewers_per_stream: int,
        viewer_queue_frames: int = 120,
        reconnect_grace_s: float = 10.0,
    ) -> None:
        self.max_streams = max_streams
        self.max_viewers = max_viewers_per_stream
        self.viewer_queue_frames = viewer_queue_frames
        self.reconnect_grace_s = reconnect_grace_s
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        self._token = 0
        # Called on the loop with (stream id, viewers) whenever a stream's viewer count changes:
        # the demand that on-demand streaming follows.
        self.on_viewers: Callable[[str, int], None] | None = None
        # Asks a publishing device for a keyframe (True: one is on its way); see keyframes.py.
        self.ask_keyframe: Callable[[str, str], bool] | None = None

    # --- membership: any thread -----------------------------------------------------------------
    def new_id(self) -> str:
        with self._lock:
            while True:
                sid = "".join(secrets.choice(ID_ALPHABET) for _ in range(8))
                if sid not in self._streams:
                    return sid

    def check_publish(self, stream_id: str, source: Source) -> None:
        """Raise HubError if a publisher could not take ``stream_id`` now (read-only)."""
        with self._lock:
            self._check_locked(stream_id, source)

    def _check_locked(self, stream_id: str, source: Source) -> Stream | None:
        s = self._streams.get(stream_id)
        if s is not None:
            if s.publisher_connected or (s.source is not None and s.source != source):
                raise HubError(f"stream id {stream_id} is busy: another publisher is using it")
            if source == "ws" and s.source is None:
                # Viewers wait there for a device: a streamer must not feed them.
                raise HubError(f"stream id {stream_id} is busy: viewers wait for its device")
            return s
        # Only published streams count: streams that viewers merely wait on must never make a
        # publisher be refused (they have their own limits, see admission.py).
        if sum(1 for x in self._streams.values() if x.source is not None) >= self.max_streams:
            raise HubError(f"too many streams: the limit is {self.max_streams} (MAX_STREAMS)")
        return None

    def claim(self, stream_id: str, source: Source) -> tuple[Stream, int]:
        """Make the caller the publisher of ``stream_id``; returns the stream and a token that
        identifies this publisher session (a stale session's late calls are ignored)."""
        with self._lock:
            s = self._check_locked(stream_id, source)
            if s is None:
                s = Stream(stream_id, source)
                self._streams[stream_id] = s
            self._token += 1
            s.source = source
            s.publisher_connected = True
            s.publisher_token = self._token
            return s, self._token

    def get(self, stream_id: str) -> Stream | None:
        with self._lock:
            return self._streams.get(stream_id)

    def streams(self) -> list[Stream]:
        with self._lock:
            return list(self._streams.values())

    # --- on the loop ----------------------------------------------------------------------------
    def publisher_gone(self, stream: Stream, token: int, *, grace: bool) -> None:
        """The publisher session ``token`` ended; keep viewers for a grace period if asked."""
        if stream.publisher_token != token or not stream.publisher_connected:
            return
        stream.publisher_connected = False
        if grace and self.reconnect_grace_s > 0 and stream.viewers:
            loop = asyncio.get_running_loop()
            stream.grace_handle = loop.call_later(
                self.reconnect_grace_s, self._end_if_abandoned, stream, token
            )
        else:
            self.end(stream)

    def resumed(self, stream: Stream) -> None:
        if stream.grace_handle is not None:
            stream.grace_handle.cancel()
            stream.grace_handle = None

    def _end_if_abandoned(self, stream: Stream, token: int) -> None:
        if not stream.publisher_connected and stream.publisher_token == token:
            self.end(stream)

    def end(self, stream: Stream) -> None:
        with self._lock:
            if self._streams.get(stream.id) is stream:
                del self._streams[stream.id]
        if stream.ended:
            return
        stream.ended = True
        if stream.grace_handle is not None:
            stream.grace_handle.cancel()
        ended = json.dumps({"type": "ended", "stream_id": stream.id})
        for v in stream.viewers:
            v.offer_control(ended)
            v.close()
        if stream.viewers:
            self._viewers_changed(stream.id, 0)
        log.info("stream %s ended after %d frames", stream.id, stream.frames)

    def _viewers_changed(self, stream_id: str, n: int) -> None:
        if self.on_viewers is not None:
            try:
                self.on_viewers(stream_id, n)
            except Exception:  # demand reporting must never break viewing
                log.exception("viewer-count callback failed for %s", stream_id)

    def add_viewer(self, stream_id: str, *, wait: bool = False) -> tuple[Stream, Viewer]:
        """Attach a viewer; with ``wait`` a stream that does not exist yet is created empty and
        the viewer waits for its publisher (on-demand streaming starts the device)."""
        stream = self.get(stream_id)
        if stream is None or stream.ended:
            if not wait:
                raise HubError("stream not found")
            with self._lock:
                stream = self._streams.get(stream_id)
                if stream is None:
                    # Not counted against max_streams: the caller admitted the wait (admission.py)
                    stream = Stream(stream_id, None)
                    self._streams[stream_id] = stream
        if len(stream.viewers) >= self.max_viewers:
            raise HubError(
                f"stream {stream_id} already has {self.max_viewers} viewers "
                "(MAX_VIEWERS_PER_STREAM)"
            )
        # Room for the cached GOP on top of the live margin, so joining never starts with a skip.
        viewer = Viewer(stream_id, self.viewer_queue_frames + len(stream.gop) + 4)
        fresh = self._ask_fresh_keyframe(stream)
        stream.attach(viewer, fresh=fresh)
        if fresh:
            asyncio.get_running_loop().call_later(
                JOIN_WAIT_S, stream.cache_if_still_waiting, viewer
            )
        self._viewers_changed(stream_id, len(stream.viewers))
        return stream, viewer

    def go_direct(self, stream: Stream, viewer: Viewer, sink: FrameSink) -> None:
        """Switch a greeted viewer to direct writes (see the module's docstring)."""
        viewer.go_direct(sink, stream.direct_buffer_limit(self.viewer_queue_frames))
        log.debug(
            "viewer of %s writes direct (buffer limit %d bytes)",
            stream.id,
            viewer.max_buffered_bytes,
        )

    def _ask_fresh_keyframe(self, stream: Stream) -> bool:
        if (
            self.ask_keyframe is None
            or stream.source != "srt"
            or not stream.publisher_connected
            or stream.init is None
            or not stream.gop
            or time.monotonic() - stream.gop_started <= JOIN_GOP_S
        ):
            return False
        return self.ask_keyframe(stream.id, "a viewer joined a long cached GOP")

    def remove_viewer(self, stream: Stream, viewer: Viewer) -> None:
        if viewer in stream.viewers:
            stream.viewers.discard(viewer)
            stream.dropped_by_departed += viewer.dropped_total
            if not stream.ended:
                self._viewers_changed(stream.id, len(stream.viewers))
        if not stream.publisher_connected and not stream.viewers and not stream.ended:
            # Nobody left to wait for the publisher's return.
            self.end(stream)
