"""The elements before the first Cluster of a Matroska/WebM stream, read from their bytes: the EBML
header (DocType), Info (TimestampScale) and Tracks (codec, CodecPrivate, size). Pure bytes; used by
``flumph.media.matroska_reader``, which hands each of these elements over whole."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from flumph.media.ebml import parse_header

DEFAULT_TIMESTAMP_SCALE_NS = 1_000_000

# Codec families as Flumph names them, and their Matroska CodecIDs.
AV1 = "av1"
HEVC = "hevc"
H264 = "h264"
MATROSKA_CODEC_IDS = {AV1: "V_AV1", HEVC: "V_MPEGH/ISO/HEVC", H264: "V_MPEG4/ISO/AVC"}
CODEC_FAMILIES = {codec_id: family for family, codec_id in MATROSKA_CODEC_IDS.items()}


@dataclass(frozen=True)
class Track:
    number: int
    track_type: int  # 1 video, 2 audio, 17 subtitle, ...
    codec_id: str  # as written: V_AV1, V_MPEGH/ISO/HEVC, V_MPEG4/ISO/AVC, A_OPUS, ...
    codec_private: bytes
    width: int | None = None
    height: int | None = None
    default_duration_ns: int | None = None
    content_encoded: bool = False  # compressed or encrypted frames: not readable here

    @property
    def codec(self) -> str | None:
        """av1, hevc or h264 for the video codecs Flumph carries, else None."""
        return CODEC_FAMILIES.get(self.codec_id)


@dataclass(frozen=True)
class StreamHeader:
    """A stream's description, given once before its first packet (again after a new EBML header
    or Segment). Packet timestamps count ``timestamp_scale_ns`` nanoseconds (1 ms by default)."""

    doc_type: str  # matroska | webm
    timestamp_scale_ns: int
    tracks: tuple[Track, ...]

    def track(self, number: int) -> Track | None:
        return next((t for t in self.tracks if t.number == number), None)

    @property
    def video(self) -> Track | None:
        """The first video track."""
        return next((t for t in self.tracks if t.track_type == 1), None)


def _children(body: memoryview, start: int, what: str) -> Iterator[tuple[int, memoryview]]:
    """(ID, payload) of each child of a sized element that was read whole."""
    pos = 0
    while pos < len(body):
        parsed = parse_header(body, pos, start + pos)
        if parsed is None:
            raise ValueError(f"{what} at offset {start} ends inside a child's header")
        element_id, size, length = parsed
        if size is None:
            raise ValueError(
                f"element 0x{element_id:X} in {what} at offset {start} has unknown size"
            )
        pos += length
        if pos + size > len(body):
            raise ValueError(f"element 0x{element_id:X} in {what} at offset {start} runs past it")
        yield element_id, body[pos : pos + size]
        pos += size


def _uint(payload: memoryview, what: str, start: int) -> int:
    if len(payload) > 8:
        raise ValueError(f"{what} at offset {start} is {len(payload)} bytes, more than 8")
    return int.from_bytes(payload, "big")


def _text(payload: memoryview, what: str, start: int) -> str:
    try:
        return bytes(payload).rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} at offset {start} is not UTF-8 text") from None


def read_ebml_header(body: memoryview, start: int) -> str:
    doc_type = "matroska"  # the EBML default
    for element_id, payload in _children(body, start, "EBML header"):
        if element_id == 0x4282:
            doc_type = _text(payload, "DocType", start)
        elif element_id == 0x42F2 and _uint(payload, "EBMLMaxIDLength", start) > 4:
            raise ValueError(f"EBML header at offset {start} allows IDs longer than 4 bytes")
        elif element_id == 0x42F3 and _uint(payload, "EBMLMaxSizeLength", start) > 8:
            raise ValueError(f"EBML header at offset {start} allows sizes longer than 8 bytes")
    if doc_type not in ("matroska", "webm"):
        raise ValueError(f"EBML DocType {doc_type!r} at offset {start} is not matroska or webm")
    return doc_type


def read_timestamp_scale(body: memoryview, start: int) -> int:
    scale = DEFAULT_TIMESTAMP_SCALE_NS
    for element_id, payload in _children(body, start, "Info"):
        if element_id == 0x2AD7B1:
            scale = _uint(payload, "TimestampScale", start)
    if scale == 0:
        raise ValueError(f"Info at offset {start} has a TimestampScale of 0")
    return scale


def read_tracks(body: memoryview, start: int) -> list[Track]:
    tracks: list[Track] = []
    for element_id, entry in _children(body, start, "Tracks"):
        if element_id != 0xAE:
            continue
        track = _read_track_entry(entry, start)
        if any(t.number == track.number for t in tracks):
            raise ValueError(f"Tracks at offset {start} declares track {track.number} twice")
        tracks.append(track)
    if not tracks:
        raise ValueError(f"Tracks at offset {start} declares no track")
    return tracks


def _read_track_entry(entry: memoryview, start: int) -> Track:
    number = track_type = 0
    codec_id, codec_private = "", b""
    width = height = default_duration = None
    content_encoded = False
    for child_id, payload in _children(entry, start, "TrackEntry"):
        if child_id == 0xD7:
            number = _uint(payload, "TrackNumber", start)
        elif child_id == 0x83:
            track_type = _uint(payload, "TrackType", start)
        elif child_id == 0x86:
            codec_id = _text(payload, "CodecID", start)
        elif child_id == 0x63A2:
            codec_private = bytes(payload)
        elif child_id == 0x23E383:
            default_duration = _uint(payload, "DefaultDuration", start)
        elif child_id == 0x6D80:
            content_encoded = True
        elif child_id == 0xE0:
            for video_id, value in _children(payload, start, "Video"):
                if video_id == 0xB0:
                    width = _uint(value, "PixelWidth", start)
                elif video_id == 0xBA:
                    height = _uint(value, "PixelHeight", start)
    if number == 0:
        raise ValueError(f"a TrackEntry in Tracks at offset {start} has no TrackNumber")
    return Track(
        number,
        track_type,
        codec_id,
        codec_private,
        width,
        height,
        default_duration,
        content_encoded,
    )
