"""Incremental reader of live Matroska/WebM: bytes in as they arrive, one packet per SimpleBlock out
as soon as its last byte is in. Pure bytes; no PyAV.

Built for a network receive thread: ``feed()`` never waits, keeps at most one element's bytes
(bounded by ``max_element_bytes``), and hands out each frame's payload as a memoryview into the
bytes that were fed (a frame inside one chunk is not copied; a frame split over chunks is copied
once, into a buffer of its own). It reads what live writers produce: our agent, and FFmpeg's
``-f matroska`` / ``-f webm`` (``-live 1`` or not): Segment and Cluster of unknown size or sized,
Void and CRC-32 elements anywhere, SeekHead/Cues/Tags/Chapters/Attachments skipped, a new EBML
header or Segment starting a new stream header (an agent that reopened its encoder).

What it does not read, it reports instead of guessing: a laced SimpleBlock, a BlockGroup, or a
track with ContentEncodings (compression, encryption) produce an :class:`Unsupported` event that
carries bytes a general demuxer (PyAV) can start from, and the reader takes no more input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from flumph.media.ebml import (
    ATTACHMENTS_ID,
    BLOCKGROUP_ID,
    CHAPTERS_ID,
    CLUSTER_ID,
    CRC32_ID,
    CUES_ID,
    EBML_ID,
    INFO_ID,
    SEEKHEAD_ID,
    SEGMENT_ID,
    SIMPLEBLOCK_ID,
    TAGS_ID,
    TIMESTAMP_ID,
    TRACKS_ID,
    UNKNOWN_SIZE,
    VOID_ID,
    encode_id,
    encode_size,
    parse_header,
    parse_vint,
    uint_element,
)
from flumph.media.matroska_header import (
    DEFAULT_TIMESTAMP_SCALE_NS,
    StreamHeader,
    Track,
    read_ebml_header,
    read_timestamp_scale,
    read_tracks,
)
from flumph.media.matroska_resync import is_ebml_header, resume_point

__all__ = [
    "Event",
    "MatroskaError",
    "MatroskaReader",
    "Packet",
    "StreamHeader",
    "Track",
    "Unsupported",
]

DEFAULT_MAX_ELEMENT_BYTES = 8 * 1024 * 1024  # one frame; the ingest's per-stream feed limit
MAX_HEADER_ELEMENT_BYTES = 1024 * 1024  # EBML header, Info, Tracks

# Elements that may follow a Cluster at Segment level: one of them ends an unknown-size Cluster.
_SEGMENT_CHILDREN = frozenset(
    {CLUSTER_ID, INFO_ID, TRACKS_ID, SEEKHEAD_ID, CUES_ID, CHAPTERS_ID, TAGS_ID, ATTACHMENTS_ID}
)
_ENDS_CLUSTER = _SEGMENT_CHILDREN | {EBML_ID, SEGMENT_ID}

# Where the reader is in the element tree.
_TOP, _SEGMENT, _CLUSTER, _DONE = range(4)


class Packet(NamedTuple):
    """One SimpleBlock: a frame. ``payload`` aliases the fed bytes: keep them unchanged."""

    track: int
    timestamp: int  # Cluster Timestamp + block offset, in the header's timestamp scale
    keyframe: bool
    payload: memoryview


class MatroskaError(ValueError):
    """Bad bytes. ``events`` holds what the same ``feed()`` call had read before them."""

    def __init__(self, message: str, events: list[Event]) -> None:
        super().__init__(message)
        self.events = events


@dataclass(frozen=True)
class Unsupported:
    """The stream uses something this reader does not handle; feed ``resume`` and every later byte
    to a general demuxer instead. ``resume`` is the stream header (EBML, Segment, Info, Tracks),
    a Cluster start carrying the current Cluster Timestamp, then the bytes from the element that
    could not be read onwards (the rest of the chunk that held it included)."""

    reason: str
    resume: bytes


Event = StreamHeader | Packet | Unsupported


class MatroskaReader:
    """Feed bytes; get :class:`StreamHeader`, :class:`Packet` and :class:`Unsupported` events.

    Bad bytes raise :class:`MatroskaError` (a ``ValueError``) naming the problem and the stream
    offset; after that, or after an :class:`Unsupported`, the reader refuses more input.
    """

    def __init__(self, max_element_bytes: int = DEFAULT_MAX_ELEMENT_BYTES) -> None:
        self.max_element_bytes = max_element_bytes
        self.header: StreamHeader | None = None
        self.offset = 0  # stream bytes consumed so far
        self._state = _TOP
        self._head = b""  # an element header split over chunks
        # The element being buffered: its ID, start offset, buffer and how much is in it.
        self._body_id = 0
        self._body_start = 0
        self._body: bytearray | None = None
        self._body_fill = 0
        self._skip = 0  # bytes left of an element being skipped
        self._segment_end: int | None = None  # a sized Segment's end offset
        self._cluster_end: int | None = None
        self._cluster_ts: int | None = None
        # Everything needed to describe the stream; reset by a new EBML header.
        self._doc_type: str | None = None
        self._scale = DEFAULT_TIMESTAMP_SCALE_NS
        self._tracks: dict[int, Track] | None = None
        self._raw_ebml = b""
        self._raw_info = b""
        self._raw_tracks = b""
        self._hunting = False  # bytes were lost: looking for a Cluster or an EBML header
        self._hunt_tail = b""  # the end of what was searched, in case an ID is split

    def resync(self) -> None:
        """Bytes were lost before the next chunk (the transport says so): what was half read no
        longer joins up with what follows. Drop it and go on from the next Cluster (the agent's
        writer starts one at each keyframe) or the next EBML header; the blocks in between would
        reference lost frames. The stream header already read stays valid."""
        if self._state == _DONE:
            return
        self._head, self._body, self._body_fill, self._skip = b"", None, 0, 0
        # Offsets no longer count the bytes that were sent: a sized element's end is unknowable.
        self._segment_end = self._cluster_end = self._cluster_ts = None
        self._hunting, self._hunt_tail = True, b""

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if self._state == _DONE:
            raise ValueError("the reader was stopped (bad bytes or an unsupported stream)")
        out: list[Event] = []
        view = memoryview(data)
        if type(data) is not bytes and (view.format != "B" or view.ndim != 1):
            view = view.cast("B")
        if self._hunting:
            found = self._hunt(view)
            if found is None:
                return out
            view = found
        try:
            self._feed(view, out)
        except ValueError as e:
            self._state = _DONE
            raise MatroskaError(str(e), out) from None
        return out

    def _feed(self, view: memoryview, out: list[Event]) -> None:
        n = len(view)
        pos = 0
        base = self.offset  # stream offset of view[0]
        while pos < n:
            body = self._body
            if body is not None:  # an element collected over chunks
                fill = self._body_fill
                take = min(len(body) - fill, n - pos)
                body[fill : fill + take] = view[pos : pos + take]
                pos += take
                fill += take
                self._body_fill = fill
                if fill == len(body):
                    self._body = None
                    if not self._element(
                        self._body_id, self._body_start, memoryview(body), view, pos, out
                    ):
                        return
                continue
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                continue
            if (
                view[pos] == 0xA3
                and self._state == _CLUSTER
                and pos + 2 < n
                and not self._head
                and self._cluster_ts is not None
                and self._segment_end is None
                and view[pos + 1] & 0xC0
            ):
                # The hot path: a SimpleBlock with a 1- or 2-byte size in a live Segment's Cluster.
                first = view[pos + 1]
                if first & 0x80:
                    block_size, length = first & 0x7F, 2
                else:
                    block_size, length = (first & 0x3F) << 8 | view[pos + 2], 3
                end = self._cluster_end
                if (
                    block_size < (0x7F if length == 2 else 0x3FFF)
                    and block_size <= self.max_element_bytes
                    and (end is None or base + pos + length + block_size <= end)
                ):
                    start = base + pos
                    pos += length
                    if n - pos >= block_size:
                        pos += block_size
                        block = view[pos - block_size : pos]
                        if not self._simple_block(start, block, view, pos, out):
                            return
                    else:
                        self._collect(SIMPLEBLOCK_ID, start, block_size)
                    continue
                # Unknown or over the limit: the general path says so.
            if self._segment_end is not None or self._cluster_end is not None:
                self._close_sized(base + pos - len(self._head))
            # An element header: ID (1-4 bytes) and size (1-8 bytes).
            if self._head:
                buf = self._head + bytes(view[pos : pos + 12])
                parsed = parse_header(buf, 0, base + pos - len(self._head))
                if parsed is None:
                    self._head = buf
                    pos = n
                    break
                element_id, size, length = parsed
                start = base + pos - len(self._head)
                pos += length - len(self._head)
                self._head = b""
            else:
                parsed = parse_header(view, pos, base + pos)
                if parsed is None:
                    self._head = bytes(view[pos:])
                    pos = n
                    break
                element_id, size, length = parsed
                start = base + pos
                pos += length
            wanted = self._open(element_id, size, start, base + pos, view, pos, out)
            if wanted is None:
                return  # handed off
            if wanted >= 0:  # an element read whole: in this chunk (no copy) or collected
                if n - pos >= wanted:
                    pos += wanted
                    if not self._element(
                        element_id, start, view[pos - wanted : pos], view, pos, out
                    ):
                        return
                else:
                    self._collect(element_id, start, wanted)
        self.offset = base + n

    def _hunt(self, view: memoryview) -> memoryview | None:
        """Where in ``view`` (joined to the unsearched end of the last chunk) reading can resume
        after a loss, or None: everything so far is skipped."""
        joined = self._hunt_tail + bytes(view)
        at = resume_point(joined, cluster_ok=self._tracks is not None)
        if at is None or at < 0:
            # Keep what may be the start of an ID, or a Cluster ID still to be checked.
            keep = joined[at + len(joined) :] if at is not None else joined[-3:]
            self.offset += len(joined) - len(keep)  # the kept tail is counted once it is read
            self._hunt_tail = keep
            return None
        self.offset += at
        self._state = _TOP if is_ebml_header(joined, at) else _SEGMENT
        self._hunting, self._hunt_tail = False, b""
        return memoryview(joined)[at:]

    def _collect(self, element_id: int, start: int, size: int) -> None:
        self._body_id, self._body_start = element_id, start
        self._body, self._body_fill = bytearray(size), 0

    def _close_sized(self, at: int) -> None:
        if self._cluster_end is not None and at >= self._cluster_end:
            self._state, self._cluster_end = _SEGMENT, None
        if self._segment_end is not None and at >= self._segment_end:
            # An unknown-size Cluster ends with its sized Segment too.
            self._state, self._segment_end, self._cluster_end = _TOP, None, None

    def _open(
        self,
        element_id: int,
        size: int | None,
        start: int,
        data_start: int,
        view: memoryview,
        pos: int,
        out: list[Event],
    ) -> int | None:
        """What to do with an element whose header was read: read its ``size`` bytes whole
        (returns the size), descend into it or skip it (-1), or hand off (None)."""
        where = f"at offset {start}"
        if self._state == _CLUSTER and element_id in _ENDS_CLUSTER:
            if self._cluster_end is not None:
                raise ValueError(f"element 0x{element_id:X} {where} inside a sized Cluster")
            self._state = _SEGMENT  # an unknown-size Cluster ends where its sibling starts
        if self._state == _SEGMENT and element_id in (EBML_ID, SEGMENT_ID):
            if self._segment_end is not None:
                raise ValueError(f"element 0x{element_id:X} {where} inside a sized Segment")
            self._state = _TOP
        end = None if size is None else data_start + size
        for limit, what in ((self._cluster_end, "Cluster"), (self._segment_end, "Segment")):
            if limit is not None and end is not None and end > limit:
                raise ValueError(f"element 0x{element_id:X} {where} runs past its {what}")
        if self._state == _CLUSTER:
            if element_id == SIMPLEBLOCK_ID:
                if self._cluster_ts is None:
                    raise ValueError(f"SimpleBlock {where} before its Cluster's Timestamp")
                return self._whole(element_id, size, start, self.max_element_bytes)
            if element_id == TIMESTAMP_ID:
                return self._whole(element_id, size, start, 8)
            if element_id == BLOCKGROUP_ID:
                head = encode_id(element_id) + (UNKNOWN_SIZE if size is None else encode_size(size))
                self._hand_off(f"BlockGroup {where}", head, b"", view, pos, out)
                return None
        elif self._state == _SEGMENT:
            if element_id == CLUSTER_ID:
                return self._open_cluster(size, end, start, view, pos, out)
            if element_id in (INFO_ID, TRACKS_ID):
                return self._whole(element_id, size, start, MAX_HEADER_ELEMENT_BYTES)
        else:
            if element_id == EBML_ID:
                return self._whole(element_id, size, start, MAX_HEADER_ELEMENT_BYTES)
            if element_id == SEGMENT_ID:
                if self._doc_type is None:
                    raise ValueError(f"Segment {where} before an EBML header")
                self._state, self._segment_end = _SEGMENT, end
                self._tracks, self._raw_info, self._raw_tracks = None, b"", b""
                self.header = None
                self._scale = DEFAULT_TIMESTAMP_SCALE_NS
                return -1
            if element_id not in (VOID_ID, CRC32_ID):
                raise ValueError(
                    f"expected an EBML header or a Segment {where}, got 0x{element_id:X}"
                )
        if size is None:
            raise ValueError(f"element 0x{element_id:X} {where} has an unknown size")
        self._skip = size  # Void, CRC-32, SeekHead, Cues, Tags, anything unknown
        return -1

    def _open_cluster(
        self,
        size: int | None,
        end: int | None,
        start: int,
        view: memoryview,
        pos: int,
        out: list[Event],
    ) -> int | None:
        if self._tracks is None:
            raise ValueError(f"Cluster at offset {start} before the Tracks element")
        self._state, self._cluster_end, self._cluster_ts = _CLUSTER, end, None
        encoded = [t.number for t in self._tracks.values() if t.content_encoded]
        if encoded:
            head = encode_id(CLUSTER_ID) + (UNKNOWN_SIZE if size is None else encode_size(size))
            reason = f"track {encoded[0]} uses ContentEncodings (compression or encryption)"
            self._hand_off(reason, head, b"", view, pos, out, cluster_head=False)
            return None
        if self.header is None:
            tracks = tuple(self._tracks.values())
            self.header = StreamHeader(self._doc_type or "matroska", self._scale, tracks)
            out.append(self.header)
        return -1

    def _whole(self, element_id: int, size: int | None, start: int, limit: int) -> int:
        name = _NAMES.get(element_id, f"element 0x{element_id:X}")
        if size is None:
            raise ValueError(f"{name} at offset {start} has an unknown size")
        if size > limit:
            raise ValueError(f"{name} at offset {start} is {size} bytes, over the limit of {limit}")
        return size

    def _element(
        self,
        element_id: int,
        start: int,
        body: memoryview,
        view: memoryview,
        pos: int,
        out: list[Event],
    ) -> bool:
        """A buffered element is complete; False once handed off."""
        if element_id == SIMPLEBLOCK_ID:
            return self._simple_block(start, body, view, pos, out)
        if element_id == TIMESTAMP_ID:
            self._cluster_ts = int.from_bytes(body, "big")
        elif element_id == EBML_ID:
            self._doc_type = read_ebml_header(body, start)
            self._raw_ebml = encode_id(EBML_ID) + encode_size(len(body)) + bytes(body)
            self.header = None
        elif element_id == INFO_ID:
            self._scale = read_timestamp_scale(body, start)
            self._raw_info = encode_id(INFO_ID) + encode_size(len(body)) + bytes(body)
            self.header = None
        elif element_id == TRACKS_ID:
            self._tracks = {t.number: t for t in read_tracks(body, start)}
            self._raw_tracks = encode_id(TRACKS_ID) + encode_size(len(body)) + bytes(body)
            self.header = None
        return True

    def _simple_block(
        self, start: int, body: memoryview, view: memoryview, pos: int, out: list[Event]
    ) -> bool:
        size = len(body)
        first = body[0] if size else 0
        if first & 0x80:  # track numbers below 128: the usual case
            track, at = first & 0x7F, 1
        else:
            track, at = _block_track(body, start)
        if size < at + 3:
            raise ValueError(f"SimpleBlock at offset {start} is {size} bytes, too short")
        flags = body[at + 2]
        if flags & 0x06:
            head = encode_id(SIMPLEBLOCK_ID) + encode_size(size)
            self._hand_off(f"laced SimpleBlock at offset {start}", head, body, view, pos, out)
            return False
        tracks = self._tracks
        assert tracks is not None and self._cluster_ts is not None
        if track not in tracks:
            raise ValueError(f"SimpleBlock at offset {start} for track {track}, not in Tracks")
        relative = (body[at] << 8 | body[at + 1]) - ((body[at] & 0x80) << 9)
        keyframe = bool(flags & 0x80)
        out.append(Packet(track, self._cluster_ts + relative, keyframe, body[at + 3 :]))
        return True

    def _hand_off(
        self,
        reason: str,
        head: bytes,
        body: bytes | memoryview,
        view: memoryview,
        pos: int,
        out: list[Event],
        cluster_head: bool = True,
    ) -> None:
        resume = bytearray(self._raw_ebml)
        resume += encode_id(SEGMENT_ID) + UNKNOWN_SIZE + self._raw_info + self._raw_tracks
        if cluster_head:
            resume += encode_id(CLUSTER_ID) + UNKNOWN_SIZE
            resume += uint_element(TIMESTAMP_ID, self._cluster_ts or 0)
        resume += head
        resume += body
        resume += view[pos:]
        out.append(Unsupported(reason, bytes(resume)))
        self.offset += len(view)
        self._state = _DONE


_NAMES = {
    SIMPLEBLOCK_ID: "SimpleBlock",
    TIMESTAMP_ID: "Cluster Timestamp",
    EBML_ID: "EBML header",
    INFO_ID: "Info",
    TRACKS_ID: "Tracks",
}


def _block_track(body: memoryview, start: int) -> tuple[int, int]:
    parsed = parse_vint(body, 0)
    if parsed is None:
        raise ValueError(f"SimpleBlock at offset {start} has an invalid track number")
    return parsed
