"""One viewer of a stream: its bounded queue (or, direct, its transport) and what happens when it
falls behind.

A viewer whose queue overflows drops what it has queued and resumes at the next keyframe, and is
told how many frames it lost (``{"type": "skipped", "dropped": N}``; MediaMTX and go2rtc behave the
same way). A direct viewer (:meth:`Viewer.go_direct`, see :mod:`.ws_direct`) has its frames written
at once to its transport, whose write buffer stands in for the queue: past ``max_buffered_bytes``
it skips to the next keyframe, counted and told the same way. On the event loop only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .wsframe import binary_frame, text_frame

if TYPE_CHECKING:
    from .stream import MediaInit

log = logging.getLogger("flumph.ingest.hub")

# (payload, t_in) where t_in is when the frame's last byte reached the ingest; None ends the sender.
QueueItem = tuple[bytes | str, float] | None


class FrameSink(Protocol):
    """Where a direct viewer's pre-built WebSocket frames go (see ws_direct.TransportSink)."""

    def write(self, frame: bytes) -> bool: ...

    def buffered(self) -> int: ...


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
        # Called when a skip starts (frames dropped until the next keyframe): the hub asks the
        # device for one, since with a 30 s interval the viewer would otherwise freeze that long.
        self.on_skip: Callable[[], None] | None = None

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
                if keyframe is not None:
                    self._skip_started()
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
                self._skip_started()
            log.warning("viewer of %s is too slow, discarding %d frames", self.stream_id, dropped)

    def _skip_started(self) -> None:
        if self.on_skip is not None:
            self.on_skip()

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
