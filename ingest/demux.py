"""Live demuxing of one publisher's byte stream, in a thread of its own.

libsrt's epoll thread hands each received message to :class:`ByteFeed` (never blocking: a feed that
overflows means the demuxer is stuck, and the connection is dropped). A :class:`LiveDemuxer` thread
reads the feed through PyAV, which blocks inside FFmpeg, and turns each packet into fMP4 with the
pure :class:`~flumph.media.repackager.Repackager`. Results go back to the event loop through a
callback that must be thread-safe.

A Matroska publisher that changes codec or size mid-connection starts a new EBML header in a fresh
SRT message; the feed ends the current segment there and the demuxer opens the next one, so the
connection (and the stream id) survive a live settings change. An MPEG-TS publisher that changes
program (a new PMT version, or another video stream type or PID: H.264 then H.265) is cut the same
way where the new PMT starts (:mod:`flumph.media.tsprogram`), the new segment led by the newest
PAT so that FFmpeg finds the PMT.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple, Protocol

import av
import av.error

from flumph.media.repackager import Fragment, InitSegment, Packet, Repackager
from flumph.media.sniff import DECISIVE_BYTES, Container, locate_stream
from flumph.media.tsprogram import ProgramWatcher

log = logging.getLogger("flumph.ingest.demux")

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
# Matroska carries codec and size in its header: 32 bytes of probing and no analysis is enough, and
# anything more delays the first frame by up to seconds (measured 2.7 s for AV1 with the defaults).
MATROSKA_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
# MPEG-TS: FFmpeg still reads until its parser has seen the first keyframe's parameter sets (so the
# size is known), and keeps those packets. Measured: probesize 32 opens after the first frame
# (10.5 KB at 320x240); the 64 KB probesize we tried first held back a whole second of frames.
MPEGTS_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
_BOUNDARY = object()


class FeedOverflow(Exception):
    pass


class ByteFeed:
    """Bounded byte buffer from the network thread to the demux thread."""

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._chunks: collections.deque[bytes | object] = collections.deque()
        self._size = 0
        self._cond = threading.Condition()
        self._eof = False
        self._bytes_in = 0
        self._segment_started = False
        self.last_in = 0.0  # monotonic arrival time of the newest chunk
        # Arrival times of the byte chunks queued in _chunks, in order; read_in is that of the
        # chunk read last: a packet PyAV returns was complete no later than then, while chunks
        # still queued behind it (a backlog) do not make it look younger.
        self._times: collections.deque[float] = collections.deque()
        self.read_in = 0.0
        self._ts: ProgramWatcher | None = None  # set when the stream turns out to be MPEG-TS
        self.program_changes = 0

    def feed(self, data: bytes) -> None:
        with self._cond:
            if self._eof:
                return
            if self._size + len(data) > self.max_bytes:
                raise FeedOverflow(
                    f"demuxer fell {self._size} bytes behind (limit {self.max_bytes})"
                )
            if self._bytes_in and data.startswith(EBML_MAGIC):
                self._chunks.append(_BOUNDARY)
            if not self._bytes_in and data[:1] == b"\x47":
                self._ts = ProgramWatcher()
            self.last_in = time.monotonic()
            for piece in self._ts_pieces(data) if self._ts is not None else (data,):
                self._chunks.append(piece)
                if isinstance(piece, bytes):
                    self._size += len(piece)
                    self._times.append(self.last_in)
            self._bytes_in += len(data)
            self._cond.notify()

    def _ts_pieces(self, data: bytes) -> list[bytes | object]:
        """``data`` cut where a new MPEG-TS program starts: a boundary, then the newest PAT (so
        that FFmpeg finds the new PMT), then the rest."""
        assert self._ts is not None
        pieces: list[bytes | object] = []
        start = 0
        for cut in self._ts.feed(data):
            if data[start:cut]:
                pieces.append(data[start:cut])
            pieces.append(_BOUNDARY)
            if self._ts.last_pat is not None:
                pieces.append(self._ts.last_pat)
            self.program_changes += 1
            log.info("MPEG-TS program change #%d: a new segment", self.program_changes)
            start = cut
        if data[start:]:
            pieces.append(data[start:])
        return pieces

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def read(self, n: int) -> bytes:
        """File-like read for PyAV: at least one byte, or b"" at the end of a segment or stream."""
        with self._cond:
            while True:
                if self._chunks:
                    head = self._chunks[0]
                    if head is _BOUNDARY:
                        if self._segment_started:
                            return b""
                        self._chunks.popleft()
                        continue
                    assert isinstance(head, bytes)
                    self._segment_started = True
                    self.read_in = self._times[0]
                    if len(head) <= n:
                        self._chunks.popleft()
                        self._times.popleft()
                        self._size -= len(head)
                        return head
                    self._chunks[0] = head[n:]
                    self._size -= n
                    return head[:n]
                if self._eof:
                    return b""
                self._cond.wait()

    def peek(self, n: int) -> bytes:
        """Up to n bytes of the current segment without consuming them (blocks for at least 1)."""
        with self._cond:
            while True:
                out = b""
                for c in self._chunks:
                    if c is _BOUNDARY:
                        if out or self._segment_started:
                            break
                        continue
                    assert isinstance(c, bytes)
                    out += c
                    if len(out) >= n:
                        break
                if len(out) >= n or self._eof or (out and self._boundary_follows(len(out))):
                    return out[:n]
                self._cond.wait()

    def skip(self, n: int) -> int:
        """Discard up to ``n`` bytes at the head of the current segment (those :meth:`peek` showed);
        returns how many were discarded."""
        with self._cond:
            left = n
            while left and self._chunks and self._chunks[0] is not _BOUNDARY:
                head = self._chunks[0]
                assert isinstance(head, bytes)
                self._segment_started = True
                if len(head) <= left:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[left:]
                taken = min(len(head), left)
                self._size -= taken
                left -= taken
            return n - left

    def _boundary_follows(self, have: int) -> bool:
        seen = 0
        for c in self._chunks:
            if c is _BOUNDARY:
                if seen:
                    return True
                continue
            assert isinstance(c, bytes)
            seen += len(c)
        return False

    def next_segment(self) -> bool:
        """Move past a segment boundary; False when the stream itself has ended."""
        with self._cond:
            while self._chunks and self._chunks[0] is not _BOUNDARY:
                # The demuxer stopped early (error): discard the rest of this segment.
                c = self._chunks.popleft()
                assert isinstance(c, bytes)
                self._times.popleft()
                self._size -= len(c)
                if not self._chunks and not self._eof:
                    self._cond.wait()
            if self._chunks and self._chunks[0] is _BOUNDARY:
                self._chunks.popleft()
                self._segment_started = False
                return True
            return False

    @property
    def eof(self) -> bool:
        with self._cond:
            return self._eof and not self._chunks


@dataclass(frozen=True)
class DemuxInit:
    segment: InitSegment
    container: Literal["matroska", "mpegts"]


class DemuxFragment(NamedTuple):  # one per frame: a NamedTuple is quick to build
    fragment: Fragment
    t_in: float


@dataclass(frozen=True)
class DemuxEnd:
    error: str | None


DemuxEvent = DemuxInit | DemuxFragment | DemuxEnd


class DemuxSession(Protocol):
    """A publisher session whose repackager the next session of the same id continues."""

    repackager: Repackager | None

    def join(self, timeout: float | None = None) -> None: ...

    def is_alive(self) -> bool: ...


class LiveDemuxer(threading.Thread):
    """Reads one publisher's feed until it ends; reports through ``emit`` (thread-safe)."""

    def __init__(
        self,
        name: str,
        feed: ByteFeed,
        emit: Callable[[DemuxEvent], None],
        previous: DemuxSession | None = None,
        *,
        continues: bool = False,
    ) -> None:
        super().__init__(name=f"demux-{name}", daemon=True)
        self.stream_name = name
        self.feed = feed
        self.emit = emit
        self.repackager: Repackager | None = None
        # The same id's previous publisher session: its repackager carries the output timeline,
        # so viewers that stayed attached never see timestamps go backwards.
        self._previous = previous
        # ``previous`` is this same connection's Matroska reader handing over mid-stream: its
        # repackager carries on as it is (no new session, no wait for a keyframe).
        self._continues = continues

    def run(self) -> None:
        error: str | None = None
        try:
            if self._previous is not None:
                self._previous.join(5.0)
                if not self._previous.is_alive():
                    self.repackager = self._previous.repackager
                self._previous = None
            while True:
                self._demux_segment()
                if not self.feed.next_segment():
                    break
        except Exception as e:  # the thread's last word: report, never die silently
            error = str(e) or type(e).__name__
            log.warning("stream %s: %s", self.stream_name, error)
        finally:
            self.emit(DemuxEnd(error))

    def _locate(self) -> tuple[Container, int] | None:
        """The segment's container and the bytes to skip before it starts; None: no bytes."""
        want = 376  # enough for Matroska, and for MPEG-TS that starts on a packet boundary
        while True:
            head = self.feed.peek(want)
            if not head:
                return None
            final = len(head) < want  # the stream or the segment ended here
            found = locate_stream(head, final=final)  # ValueError: refused, with the reason
            if found is not None:
                return found
            want = min(want * 2, DECISIVE_BYTES)

    def _demux_segment(self) -> None:
        found = self._locate()
        if found is None:
            return
        container, offset = found
        if offset:
            self.feed.skip(offset)
            log.info("stream %s: MPEG-TS resynchronised: skipped %d bytes before the first "
                     "whole packet", self.stream_name, offset)  # fmt: skip
        options = MATROSKA_OPTIONS if container == "matroska" else MPEGTS_OPTIONS
        try:
            c = av.open(self.feed, mode="r", format=container, options=options)
        except av.error.FFmpegError as e:
            raise ValueError(f"could not read the {container} stream: {e}") from None
        with c:
            if not c.streams.video:
                raise ValueError(f"the {container} stream has no video track")
            vs = c.streams.video[0]
            cc = vs.codec_context
            codec = cc.codec.canonical_name
            fps = float(vs.average_rate) if vs.average_rate else None
            tb = vs.time_base or Fraction(1, 90000)
            continues, self._continues = self._continues, False
            if continues and self.repackager is not None:
                pass  # the reader's repackager carries on mid-stream
            elif self.repackager is None:
                self.repackager = Repackager(
                    codec, cc.extradata, cc.width, cc.height, Fraction(tb), fps_hint=fps
                )
            else:
                # A new segment or session continues the same output timeline.
                self.repackager.reset_source(
                    codec=codec,
                    extradata=cc.extradata,
                    width=cc.width,
                    height=cc.height,
                    time_base=Fraction(tb),
                    fps_hint=fps,
                )
            try:
                for pkt in c.demux(vs):
                    if pkt.size == 0:
                        continue
                    outs = self.repackager.push(
                        Packet(bytes(pkt), pkt.pts, pkt.dts, bool(pkt.is_keyframe))
                    )
                    t_in = self.feed.read_in
                    for o in outs:
                        if isinstance(o, InitSegment):
                            self.emit(DemuxInit(o, container))
                        else:
                            self.emit(DemuxFragment(o, t_in))
            except av.error.FFmpegError as e:
                if self.feed.eof:
                    # A publisher cut off mid-frame: what arrived complete was delivered.
                    log.info("stream %s: truncated at end: %s", self.stream_name, e)
                    return
                raise ValueError(f"corrupt {container} stream: {e}") from None
