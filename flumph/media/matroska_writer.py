"""Live Matroska/WebM writer: each frame becomes bytes the moment it is given. Pure bytes.

Why our own writer: FFmpeg's Matroska muxer keeps the open cluster in memory and writes it only
when the next cluster starts (or on a NULL-packet flush, which PyAV does not expose), so a frame
would leave up to a GOP late; this one returns every SimpleBlock at once. Layout of one stream
("document"):

    EBML header (DocType webm for AV1, matroska otherwise)
    Segment, unknown size
      Info (TimestampScale 1 ms), Tracks (one video track, CodecPrivate = av1C/hvcC/avcC)
      Cluster, unknown size, at each keyframe (or every 30 s, so block offsets fit int16 ms)
        Timestamp, then one SimpleBlock per frame (7-8 bytes of overhead per frame)

A new document (fresh EBML header) starts whenever the encoder is reopened or the link
reconnects; a reader tells documents apart by the EBML header ID appearing where a Cluster could
be. Frames are stored as Matroska wants them: H.264/H.265 length-prefixed (4 bytes), AV1 without
temporal delimiters. The reader of these bytes is ``flumph.media.matroska_reader``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flumph.media import bitstream as bs
from flumph.media.ebml import (
    CLUSTER_ID,
    EBML_ID,
    INFO_ID,
    SEGMENT_ID,
    SIMPLEBLOCK_ID,
    TIMESTAMP_ID,
    TRACKS_ID,
    UNKNOWN_SIZE,
    element,
    encode_id,
    encode_size,
    str_element,
    uint_element,
)
from flumph.media.matroska_header import AV1, H264, HEVC, MATROSKA_CODEC_IDS

_MAX_BLOCK_OFFSET_MS = 30_000  # SimpleBlock timestamps are int16 ms relative to the cluster


@dataclass(frozen=True)
class TrackInfo:
    codec: str  # av1 | hevc | h264
    width: int
    height: int
    codec_private: bytes
    fps: float | None = None

    @property
    def doc_type(self) -> str:
        return "webm" if self.codec == AV1 else "matroska"


def header_bytes(track: TrackInfo, writing_app: str = "flumph-agent") -> bytes:
    """EBML header + open Segment + Info + Tracks: everything before the first Cluster."""
    if track.codec not in MATROSKA_CODEC_IDS:
        raise ValueError(f"codec {track.codec!r} is not one of av1, hevc, h264")
    ebml = element(
        EBML_ID,
        uint_element(0x4286, 1)  # EBMLVersion
        + uint_element(0x42F7, 1)  # EBMLReadVersion
        + uint_element(0x42F2, 4)  # EBMLMaxIDLength
        + uint_element(0x42F3, 8)  # EBMLMaxSizeLength
        + str_element(0x4282, track.doc_type)
        + uint_element(0x4287, 4)  # DocTypeVersion
        + uint_element(0x4285, 2),  # DocTypeReadVersion
    )
    info = element(
        INFO_ID,
        uint_element(0x2AD7B1, 1_000_000)  # TimestampScale: 1 ms
        + str_element(0x4D80, writing_app)  # MuxingApp
        + str_element(0x5741, writing_app),  # WritingApp
    )
    video = uint_element(0xB0, track.width) + uint_element(0xBA, track.height)
    entry = (
        uint_element(0xD7, 1)  # TrackNumber
        + uint_element(0x73C5, int.from_bytes(secrets.token_bytes(7), "big") | 1)  # TrackUID
        + uint_element(0x83, 1)  # TrackType video
        + uint_element(0x9C, 0)  # FlagLacing
        + str_element(0x86, MATROSKA_CODEC_IDS[track.codec])
        + element(0x63A2, track.codec_private)
    )
    if track.fps:
        entry += uint_element(0x23E383, round(1e9 / track.fps))  # DefaultDuration (ns)
    entry += element(0xE0, video)
    tracks = element(TRACKS_ID, element(0xAE, entry))
    return ebml + encode_id(SEGMENT_ID) + UNKNOWN_SIZE + info + tracks


def annex_b_to_length_prefixed(data: bytes) -> bytes:
    out = bytearray()
    for nal in bs.split_annexb(data):
        out += len(nal).to_bytes(4, "big") + nal
    return bytes(out)


def strip_temporal_delimiters(data: bytes) -> bytes:
    obus = bs.split_obus(data)
    if not any(o.obu_type == bs.OBU_TEMPORAL_DELIMITER for o in obus):
        return data
    return b"".join(o.raw for o in obus if o.obu_type != bs.OBU_TEMPORAL_DELIMITER)


def frame_payload(codec: str, packet: bytes) -> bytes:
    """An encoder packet as a Matroska block payload."""
    if codec == AV1:
        return strip_temporal_delimiters(packet)
    if codec in (HEVC, H264):
        if packet.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
            return annex_b_to_length_prefixed(packet)
        return packet
    raise ValueError(f"codec {codec!r} is not one of av1, hevc, h264")


class LiveMatroskaWriter:
    """Turns (timestamp, keyframe, packet) into Matroska bytes, one call per frame.

    The first frame must be a keyframe; it comes out with the header in front of it.
    """

    def __init__(self, track: TrackInfo) -> None:
        self.track = track
        self._header: bytes | None = header_bytes(track)
        self._cluster_ms: int | None = None
        self.header_size = len(self._header)
        self.frames = 0
        self.packet_bytes = 0  # as the encoder produced them
        self.written_bytes = 0  # everything returned, header included

    def write(self, timestamp_ms: int, keyframe: bool, packet: bytes) -> bytes:
        if self._header is not None and not keyframe:
            raise ValueError("a live Matroska stream must start with a keyframe")
        payload = frame_payload(self.track.codec, packet)
        out = bytearray()
        if self._header is not None:
            out += self._header
            self._header = None
        if (
            self._cluster_ms is None
            or keyframe
            or not 0 <= timestamp_ms - self._cluster_ms <= _MAX_BLOCK_OFFSET_MS
        ):
            self._cluster_ms = timestamp_ms
            out += encode_id(CLUSTER_ID) + UNKNOWN_SIZE + uint_element(TIMESTAMP_ID, timestamp_ms)
        relative = timestamp_ms - self._cluster_ms
        block_head = b"\x81" + relative.to_bytes(2, "big", signed=True)
        block_head += b"\x80" if keyframe else b"\x00"
        out += encode_id(SIMPLEBLOCK_ID) + encode_size(len(block_head) + len(payload)) + block_head
        out += payload
        self.frames += 1
        self.packet_bytes += len(packet)
        self.written_bytes += len(out)
        return bytes(out)

    def overhead_per_frame(self) -> float:
        """Container bytes per frame beyond the encoder's packets, not counting the header."""
        if not self.frames:
            return 0.0
        return (self.written_bytes - self.header_size - self.packet_bytes) / self.frames
