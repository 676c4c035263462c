"""The copy path: a coded source forwarded as live Matroska over SRT, no decoder, no encoder.

Packets go from the demuxer (codedsource.py) through :class:`~.copyframes.CopyShaper` (parameter
sets to the config record) into the same live Matroska writer (``flumph.media.matroska_writer``)
and :class:`~.transport.SrtPublisher` the encode path uses, so the ingest and the viewers cannot
tell the two apart, and the bytes are counted the same way.

Thread "agent-copy" owns the demuxer from the first read to ``close`` (libavformat is not
thread-safe; closing is what ends an RTSP session). Any end (the source ended or went silent, a
read failed, a bug) ends the thread with ``error`` set; the pipeline's watchdog reports it and
restarts with backoff.

Keyframe-aligned start: every Matroska document starts with one of the source's keyframes (at
the start, after the SRT link comes back, at new parameter sets). While no document is open the
frames since the source's last keyframe are held (bounded), so a document starts at that keyframe
the moment the link is up rather than a whole keyframe interval later; frames before the first
keyframe are skipped and counted. RTSP gives no way to ask a camera for a keyframe: a viewer waits
up to the source's keyframe interval (``source.keyint_s``; set it in the camera or its app).

Snapshots: the newest keyframe (a few kB) is kept, and decoded only when a snapshot is asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av

from flumph.agent.codedsource import (
    READ_TIMEOUT_S,
    EncodedSource,
    decode_keyframe,
    is_raw_source,
)
from flumph.agent.copydecision import ENCODER_SETTINGS, Decision, SourceInfo, decide, rate_switch
from flumph.agent.copyframes import CopyShaper, SourceClock
from flumph.agent.sources import SourceError
from flumph.agent.transport import SrtPublisher
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.passthrough")

_RATE_WINDOW_S = 10.0
# Frames held while no document is open (from a keyframe on): a keyframe interval of a camera at
# a few Mbit/s. Beyond it the held frames are dropped and the next keyframe starts over.
MAX_PENDING_BYTES = 8 * 1024 * 1024


def switches_mode(
    forwarding: CopyWorker | None,
    probed: SourceInfo | None,
    old: StreamSettings,
    new: StreamSettings,
    spec: object,
) -> bool:
    """Whether ``new`` needs the running session restarted in the other mode (copy <-> encode)."""
    if forwarding is not None:
        if new.codec == "copy":
            return False
        return new.codec != "auto" or not decide(new, forwarding.info_now()).copy
    if new.codec == "copy":
        return True
    if new.codec != "auto" or not isinstance(spec, str) or is_raw_source(spec):
        return False
    if old.codec != "auto" or probed is None:
        return True  # not judged yet: the restart opens the source and decides
    changed = any(getattr(old, k) != getattr(new, k) for k in ENCODER_SETTINGS)
    return changed and decide(new, probed).copy


def copy_keyframe_refusal(worker: CopyWorker) -> str:
    _, _, keyint = worker.stats.measured(time.monotonic())
    every = f"every {keyint:.1f} s" if keyint else "at the source's own interval"
    return (
        f"codec=copy: {worker.info.name} decides the keyframes (they come {every}) and RTSP "
        f"cannot ask a camera for one; set a shorter keyframe interval in the source if "
        f"viewers wait too long"
    )


def snapshot_from_worker(worker: CopyWorker, timeout_s: float = 5.0) -> av.VideoFrame:
    """The newest keyframe of a running session, decoded (waits for the first one)."""
    deadline = time.monotonic() + timeout_s
    while (keyframe := worker.last_keyframe) is None and time.monotonic() < deadline:
        if not worker.alive:
            break
        time.sleep(0.02)
    if keyframe is None:
        raise SourceError(f"forwarding {worker.info.name}, but no keyframe has arrived yet")
    return decode_keyframe(worker.info.codec, *keyframe)


@dataclass
class CopyStats:
    packets_read: int = 0
    source_bytes: int = 0  # packets as the source sent them
    dropped_bytes: int = 0  # parameter sets, delimiters, filler moved out or dropped
    skipped_before_keyframe: int = 0
    packets_refused: int = 0  # could not be parsed
    documents: int = 0
    keyframes: int = 0
    keyint_s: float | None = None  # between the last two keyframes (source time when known)
    recent: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=4096))
    _last_key: float | None = None

    def packet(self, at: float, size: int, keyframe: bool, pts_s: float | None) -> None:
        self.packets_read += 1
        self.source_bytes += size
        self.recent.append((at, size))
        if keyframe:
            when = at if pts_s is None else pts_s
            if self._last_key is not None and 0 < when - self._last_key < 600:
                self.keyint_s = round(when - self._last_key, 2)
            self._last_key = when

    def measured(self, now: float) -> tuple[float | None, float | None, float | None]:
        """(kbit/s, fps) of the source over the last 10 s, and its keyframe interval."""
        window = [(t, n) for t, n in self.recent if now - t <= _RATE_WINDOW_S]
        if len(window) < 2:
            return None, None, self.keyint_s
        span = max(window[-1][0] - window[0][0], 1e-3)
        kbps = sum(n for _, n in window[1:]) * 8 / span / 1000
        fps = (len(window) - 1) / span
        return round(kbps, 1), round(fps, 2), self.keyint_s


@dataclass(frozen=True)
class _Frame:
    timestamp_ms: int
    keyframe: bool
    data: bytes
    read_at: float


# (read at, frame bytes given to the writer, Matroska bytes sent, of which header) per frame sent
FrameSent = Callable[[float, int, int, int], None]


class CopyWorker:
    """Runs one source session on thread "agent-copy": read, shape, write, send."""

    def __init__(
        self,
        source: EncodedSource,
        publisher: SrtPublisher,
        *,
        clock: SourceClock,
        on_sent: FrameSent,
        on_offline: Callable[[], None],
    ) -> None:
        self.source = source
        self.info = source.info
        self.stats = CopyStats()
        self.error: str | None = None
        self.last_keyframe: tuple[bytes, bytes] | None = None  # (config record, frame)
        self._publisher = publisher
        self._clock = clock
        self._on_sent = on_sent
        self._on_offline = on_offline
        self._shaper = CopyShaper(self.info.codec, source.extradata)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-copy", daemon=True)
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def size(self) -> tuple[int, int]:
        """The picture size the parameter sets say (the demuxer's until they are known)."""
        if self._shaper.width:
            return self._shaper.width, self._shaper.height
        return self.info.width, self.info.height

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def rate_switch(self, settings: StreamSettings) -> Decision | None:
        """``codec = "auto"``: transcode instead, once 10 s of packets show the source above the
        bitrate setting (most RTSP cameras declare no bitrate). None: keep forwarding."""
        now = time.monotonic()
        if settings.codec != "auto" or now - self.started_at < _RATE_WINDOW_S:
            return None
        kbps = self.stats.measured(now)[0]
        return None if kbps is None else rate_switch(settings, self.info_now(), kbps)

    def stop(self, timeout_s: float = READ_TIMEOUT_S + 1.0) -> None:
        """End the session; the thread closes the source (a blocked read returns within the
        read timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        else:
            self.source.close()  # never started, or already ended and closed: closing is idempotent

    def _run(self) -> None:
        try:
            self._forward()
        except SourceError as e:
            self.error = str(e)
            log.warning("source stopped: %s", e)
        except Exception as e:  # on a headless device a bug must be seen, then restarted
            self.error = f"{type(e).__name__}: {e}"
            log.exception("copy thread crashed")
        finally:
            self.source.close()

    def _forward(self) -> None:
        writer: LiveMatroskaWriter | None = None
        writer_generation: int | None = None
        pending: list[_Frame] = []  # while no document is open: the frames since a keyframe
        pending_bytes = 0
        publisher, stats, shaper = self._publisher, self.stats, self._shaper
        while not self._stop.is_set():
            packet = self.source.read()
            stats.packet(packet.read_at, len(packet.data), packet.keyframe, packet.pts_s)
            try:
                shaped = shaper.shape(packet.data, packet.keyframe)
            except ValueError as e:
                stats.packets_refused += 1
                if stats.packets_refused in (1, 10, 100) or stats.packets_refused % 1000 == 0:
                    refused = stats.packets_refused
                    log.warning("%s: packet refused (%d so far): %s", self.info.name, refused, e)
                writer, pending = None, []  # later frames may refer to it: restart at a keyframe
                continue
            stats.dropped_bytes += shaped.dropped_bytes
            if not shaped.data:  # parameter sets alone: taken into the record, nothing to show
                continue
            frame = _Frame(
                self._clock.stamp(packet.pts_s), packet.keyframe, shaped.data, packet.read_at
            )
            if packet.keyframe and shaper.config is not None:
                stats.keyframes += 1
                self.last_keyframe = (shaper.config, shaped.data)
            generation = publisher.generation()
            if generation is None or generation != writer_generation or shaped.new_config:
                writer = None
            if writer is not None and generation is not None:
                if not self._send(writer, generation, frame, new_document=False):
                    writer = None
                continue
            # No document open (starting, link down, new parameter sets): hold the frames since
            # the source's last keyframe, so the document starts there the moment the link is
            # up instead of a whole keyframe interval later.
            if packet.keyframe and shaper.config is not None:
                pending, pending_bytes = [frame], len(frame.data)
            elif pending and pending_bytes + len(frame.data) <= MAX_PENDING_BYTES:
                pending.append(frame)
                pending_bytes += len(frame.data)
            else:
                pending, pending_bytes = [], 0
                stats.skipped_before_keyframe += 1
                if generation is None:
                    self._on_offline()
                continue
            if generation is None:
                continue
            assert shaper.config is not None
            width, height = self.size
            writer = LiveMatroskaWriter(
                TrackInfo(shaper.codec, width, height, shaper.config, self.info.fps)
            )
            writer_generation = generation
            stats.documents += 1
            for index, held in enumerate(pending):
                if not self._send(writer, generation, held, new_document=index == 0):
                    writer = None
                    break
            pending, pending_bytes = [], 0

    def _send(
        self, writer: LiveMatroskaWriter, generation: int, frame: _Frame, *, new_document: bool
    ) -> bool:
        data = writer.write(frame.timestamp_ms, frame.keyframe, frame.data)
        if not self._publisher.send_frame(data, generation, new_document=new_document):
            return False
        header = writer.header_size if new_document else 0
        self._on_sent(frame.read_at, len(frame.data), len(data), header)
        return True

    def info_now(self) -> SourceInfo:
        """The source as the decision sees it: the parameter sets' size, the declared rate."""
        width, height = self.size
        fps = self.info.fps or self.stats.measured(time.monotonic())[1]
        info = self.info
        return SourceInfo(info.name, info.codec, width, height, fps, info.bitrate_kbps)

    def describe(self) -> str:
        """What the source sends, measured where it can be (for notices)."""
        kbps, fps, keyint = self.stats.measured(time.monotonic())
        width, height = self.size
        text = f"{self.info.codec} {width}x{height}"
        if fps or self.info.fps:
            text += f" {fps or self.info.fps:g} fps"
        if kbps:
            text += f" ~{kbps:.0f} kbit/s"
        if keyint:
            text += f", a keyframe every {keyint:g} s"
        return text

    def status(self, now: float) -> dict[str, Any]:
        """The pipeline's status fields for a forwarding session."""
        s = self.stats
        return {
            "source": self.report(now),
            "source_packets": s.packets_read,
            "source_bytes": s.source_bytes,
            "source_bytes_dropped": s.dropped_bytes,
            "frames_skipped_before_keyframe": s.skipped_before_keyframe,
            "packets_refused": s.packets_refused,
            "copy_error": self.error,
        }

    def report(self, now: float) -> dict[str, Any]:
        """The source as it is being forwarded (``reported.source``, telemetry)."""
        kbps, fps, keyint = self.stats.measured(now)
        width, height = self.size
        return {
            "name": self.info.name,
            "codec": self.info.codec,
            "width": width,
            "height": height,
            "fps": fps or self.info.fps,
            "bitrate_kbps": kbps or self.info.bitrate_kbps,
            "keyint_s": keyint,
        }
