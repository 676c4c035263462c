"""Live Matroska/WebM demuxed on the SRT receive thread: each SimpleBlock becomes an fMP4 fragment
as its last byte arrives, with the pure reader (flumph.media.matroska_reader) and the Repackager.
No thread, no PyAV: a stream the reader cannot read (lacing, BlockGroups, ContentEncodings) is
handed to PyAV with the bytes it must start from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

from flumph.media.matroska_reader import (
    DEFAULT_MAX_ELEMENT_BYTES,
    MatroskaError,
    MatroskaReader,
    StreamHeader,
    Unsupported,
)
from flumph.media.matroska_reader import Packet as Block
from flumph.media.repackager import InitSegment, Packet, Repackager

from .demux import DemuxEvent, DemuxFragment, DemuxInit, DemuxSession

log = logging.getLogger("flumph.ingest.demux")

NANOSECONDS = 1_000_000_000


class MatroskaDemux:
    """Feed it a publisher's messages on the receive thread; it reports through ``emit``."""

    def __init__(
        self,
        name: str,
        emit: Callable[[DemuxEvent], None],
        previous: DemuxSession | None = None,
        max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES,
    ) -> None:
        self.stream_name = name
        self.emit = emit
        self.reader = MatroskaReader(max_element_bytes)
        self.repackager: Repackager | None = None
        # The same id's previous session: its repackager carries the output timeline.
        self._previous = previous
        self._track = 0
        self._max_pts: int | None = None
        self.losses = 0  # times SRT lost messages and the reader went on from the next Cluster

    # A DemuxSession for the session after this one: nothing runs in a thread of its own.
    def join(self, timeout: float | None = None) -> None:
        return None

    def is_alive(self) -> bool:
        return False

    def feed(self, data: bytes, t_in: float, lost_before: int = 0) -> bytes | None:
        """Demux one message that arrived at ``t_in`` (monotonic), ``lost_before`` messages after
        the last one (SRT gave them up as too late). Returns the bytes a general demuxer must
        continue from when the reader cannot read this stream, else None. Bad bytes raise
        ValueError, after what was read before them was delivered."""
        if lost_before:
            # Without this the reader would take the next bytes for the rest of a half-read frame:
            # the stream stalled for good (measured: no frame after a 120 kbit/s link dropped 4).
            self.losses += 1
            log.info("stream %s: %d SRT messages lost; going on from the next keyframe",
                     self.stream_name, lost_before)  # fmt: skip
            self.reader.resync()
        try:
            events = self.reader.feed(data)
        except MatroskaError as e:
            self._handle(e.events, t_in)
            raise ValueError(f"corrupt matroska stream: {e}") from None
        return self._handle(events, t_in)

    def _handle(
        self, events: list[StreamHeader | Block | Unsupported], t_in: float
    ) -> bytes | None:
        for ev in events:
            if isinstance(ev, Block):
                if ev.track == self._track:
                    self._push(ev, t_in)
            elif isinstance(ev, StreamHeader):
                self._configure(ev)
            else:
                log.info("stream %s: %s: handing it to PyAV", self.stream_name, ev.reason)
                return ev.resume
        return None

    def _configure(self, header: StreamHeader) -> None:
        track = header.video
        if track is None:
            raise ValueError("the matroska stream has no video track")
        codec = track.codec
        if codec is None:
            raise ValueError(
                f"codec {track.codec_id} is not supported: Flumph passes through AV1, H.265 "
                "and H.264 only"
            )
        if not track.width or not track.height:
            raise ValueError(f"the matroska video track has no size ({track.width}x{track.height})")
        time_base = Fraction(header.timestamp_scale_ns, NANOSECONDS)
        fps = NANOSECONDS / track.default_duration_ns if track.default_duration_ns else None
        extradata = bytes(track.codec_private) if track.codec_private else None
        self._track = track.number
        self._max_pts = None
        if self.repackager is None and self._previous is not None:
            self._previous.join(1.0)
            if not self._previous.is_alive():
                self.repackager = self._previous.repackager
            self._previous = None
        if self.repackager is None:
            self.repackager = Repackager(
                codec, extradata, track.width, track.height, time_base, fps_hint=fps
            )
        else:
            # A new header (the agent reopened its encoder) or a new session: same timeline.
            self.repackager.reset_source(
                codec=codec,
                extradata=extradata,
                width=track.width,
                height=track.height,
                time_base=time_base,
                fps_hint=fps,
            )

    def _push(self, block: Block, t_in: float) -> None:
        repackager = self.repackager
        assert repackager is not None  # a Block only follows a StreamHeader
        pts = block.timestamp
        # Matroska has no dts. Frames in presentation order decode at their pts; a frame that
        # presents earlier than one before it (a B-frame) gets the repackager's "decode now".
        dts: int | None = pts
        if self._max_pts is not None and pts <= self._max_pts:
            dts = None
        else:
            self._max_pts = pts
        for out in repackager.push(Packet(block.payload, pts, dts, block.keyframe)):
            if isinstance(out, InitSegment):
                self.emit(DemuxInit(out, "matroska"))
            else:
                self.emit(DemuxFragment(out, t_in))
