"""Streams, viewers and the fan-out between them: the streams by id, who publishes, who watches.

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

One stream and its fan-out: :mod:`.stream`; one viewer, its queue and its skip policy:
:mod:`.viewer`.

Membership (which ids exist, who publishes) is guarded by a lock because SRT connections arrive on
libsrt's threads; everything that touches viewers runs on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import string
import threading
import time
from collections.abc import Callable

from .keyframes import JOIN_GOP_S, JOIN_WAIT_S
from .stream import Source, Stream
from .viewer import FrameSink, Viewer

log = logging.getLogger("flumph.ingest.hub")

ID_ALPHABET = string.ascii_letters + string.digits


class HubError(Exception):
    """A request the hub refuses; the message is sent to the client as is."""


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
        # Delivers, on the loop, what publishers' threads have read but not handed on yet: the
        # frames of unwatched streams wait for the next periodic hand-off (srt_ingest.py).
        self.catch_up: Callable[[], None] | None = None

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
        if self.catch_up is not None:
            self.catch_up()  # the cached GOP must be the newest before a viewer starts from it
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
        viewer.on_skip = lambda: self._ask_keyframe_after_skip(stream)
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

    def _ask_keyframe_after_skip(self, stream: Stream) -> None:
        """A viewer fell behind and waits for the next keyframe: ask for it now rather than
        freeze it for the rest of a long GOP (the same limits as for joins apply)."""
        if self.ask_keyframe is not None and stream.source == "srt" and stream.publisher_connected:
            self.ask_keyframe(stream.id, "a viewer fell behind and skips to the next keyframe")

    def remove_viewer(self, stream: Stream, viewer: Viewer) -> None:
        if viewer in stream.viewers:
            stream.viewers.discard(viewer)
            stream.dropped_by_departed += viewer.dropped_total
            if not stream.ended:
                self._viewers_changed(stream.id, len(stream.viewers))
        if not stream.publisher_connected and not stream.viewers and not stream.ended:
            # Nobody left to wait for the publisher's return.
            self.end(stream)
