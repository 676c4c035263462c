"""Capture at the requested fps into a one-frame mailbox.

The encoder takes the newest frame; a frame it has not taken when the next one arrives is replaced
and counted as dropped, so a slow encoder lowers the frame rate instead of building up latency.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

import av

from flumph.agent.sources import FrameSource, SourceError

log = logging.getLogger("flumph.agent.capture")

T = TypeVar("T")


@dataclass(frozen=True)
class CapturedFrame:
    frame: av.VideoFrame
    tick: int  # capture tick since the capture started (the synthetic camera stamps it)
    wall_time: float  # time.time() at capture
    monotonic: float  # time.monotonic() at capture


class LatestSlot(Generic[T]):
    """A mailbox holding at most one item: put replaces, get waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True if it replaced one that was never taken."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def get(self, timeout: float) -> T | None:
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> None:
        with self._cond:
            self._item = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class CaptureStats:
    delivered: int = 0
    dropped_busy: int = 0  # replaced before the encoder took them
    skipped_late: int = 0  # ticks the capture itself missed (source or machine too slow)
    decimated: int = 0  # frames a free-running source gave beyond the requested fps


class Capture:
    """Runs a source on its own thread and keeps ``slot`` filled at ``fps``."""

    def __init__(self, source: FrameSource, fps: int, slot: LatestSlot[CapturedFrame]) -> None:
        self.source = source
        self.slot = slot
        self.stats = CaptureStats()
        self.error: str | None = None
        self._fps = fps
        self._pending_format: tuple[int, int, int] | None = None
        self._rate_changed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the capture thread ended (the source failed or ended)."""
        return self._thread.is_alive()

    def set_format(self, width: int, height: int, fps: int) -> None:
        """Change size and rate; the capture thread applies it before its next frame."""
        self._pending_format = (width, height, fps)
        self._rate_changed.set()

    def _apply_pending_format(self) -> None:
        pending, self._pending_format = self._pending_format, None
        if pending is not None:
            width, height, self._fps = pending
            self.source.configure(width, height, self._fps)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.source.close()

    def _run(self) -> None:
        try:
            if self.source.paced:
                self._run_paced()
            else:
                self._run_free()
        except SourceError as e:
            self.error = str(e)
            log.error("capture stopped: %s", e)
        except Exception as e:  # a source bug must not pass silently on a headless device
            self.error = f"{type(e).__name__}: {e}"
            log.exception("capture crashed")

    def _deliver(self, frame: av.VideoFrame, tick: int, wall: float, mono: float) -> None:
        self.stats.delivered += 1
        if self.slot.put(CapturedFrame(frame, tick, wall, mono)):
            self.stats.dropped_busy += 1

    def _run_paced(self) -> None:
        tick = 0
        start = time.monotonic()
        while not self._stop.is_set():
            if self._rate_changed.is_set():
                self._rate_changed.clear()
                self._apply_pending_format()
                start = time.monotonic() - tick / self._fps
            due = start + tick / self._fps
            now = time.monotonic()
            if due > now:
                if self._stop.wait(due - now):
                    return
                continue
            behind = int((now - due) * self._fps)
            if behind:
                self.stats.skipped_late += behind
                tick += behind
            frame = self.source.read(tick, time.time())
            if frame is None:
                return
            self._deliver(frame, tick, time.time(), time.monotonic())
            tick += 1

    def _run_free(self) -> None:
        tick = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            if self._rate_changed.is_set():
                self._rate_changed.clear()
                self._apply_pending_format()
            frame = self.source.read(tick, time.time())
            if frame is None:
                log.info("source %s ended", self.source.name)
                return
            now = time.monotonic()
            period = 1.0 / self._fps
            # Accept a frame up to half a period early, so a 30 fps camera decimated to 15 keeps
            # every other frame rather than beating against the clock.
            if now < next_due - period / 2:
                self.stats.decimated += 1
                continue
            next_due = max(next_due + period, now - period)
            self._deliver(frame, tick, time.time(), now)
            tick += 1
