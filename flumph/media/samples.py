"""What an fMP4 sample of each codec may carry, and the H.264/H.265 parameter sets kept out of it.

Pure. hvc1/avc1 keep parameter sets out of samples (they move into hvcC/avcC); access unit
delimiters, filler, AV1 temporal delimiters and padding are dropped. The ``*_passes_through``
checks are the hot path: a frame they accept is used as given, without a copy.
"""

from __future__ import annotations

from typing import Literal

from flumph.media import bitstream as bs

CodecName = Literal["av1", "hevc", "h264"]

# PyAV names streams by decoder: AV1 from Matroska arrives as "libdav1d".
_CODEC_ALIASES: dict[str, CodecName] = {
    "av1": "av1",
    "libdav1d": "av1",
    "libaom-av1": "av1",
    "hevc": "hevc",
    "h265": "hevc",
    "h264": "h264",
}

H264_DROPPED = frozenset({bs.H264_NAL_AUD, bs.H264_NAL_FILLER})
HEVC_DROPPED = frozenset({bs.HEVC_NAL_AUD, bs.HEVC_NAL_FILLER})
AV1_DROPPED = frozenset({bs.OBU_TEMPORAL_DELIMITER, bs.OBU_PADDING})
AV1_FRAME_OBUS = frozenset({bs.OBU_FRAME, bs.OBU_FRAME_HEADER, bs.OBU_TILE_GROUP})
# NAL unit types a sample never carries: dropped, or moved into avcC/hvcC.
_H264_MOVED = H264_DROPPED | {bs.H264_NAL_SPS, bs.H264_NAL_PPS}
_HEVC_MOVED = HEVC_DROPPED | {bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS}


def normalize_codec(name: str) -> CodecName:
    codec = _CODEC_ALIASES.get(name)
    if codec is None:
        raise ValueError(
            f"codec {name} is not supported: Flumph passes through AV1, H.265 and H.264 only"
        )
    return codec


class ParameterSets:
    """H.264/H.265 parameter sets by kind and id, as the latest in-band or extradata gave them."""

    def __init__(self, codec: CodecName) -> None:
        self.codec = codec
        self.by_kind: dict[int, dict[int, bytes]] = {}
        self.changed = True

    def kind_of(self, nal: bytes) -> int | None:
        if self.codec == "h264":
            kind = bs.h264_nal_type(nal)
            return kind if kind in (bs.H264_NAL_SPS, bs.H264_NAL_PPS) else None
        kind = bs.hevc_nal_type(nal)
        return kind if kind in (bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS) else None

    def _id_of(self, kind: int, nal: bytes) -> int:
        if self.codec == "h264":
            if kind == bs.H264_NAL_SPS:
                return bs.parse_h264_sps(nal).sps_id
            return bs.h264_pps_id(nal)
        if kind == bs.HEVC_NAL_VPS:
            return bs.hevc_vps_id(nal)
        if kind == bs.HEVC_NAL_SPS:
            return bs.parse_hevc_sps(nal).sps_id
        return bs.hevc_pps_id(nal)

    def store(self, kind: int, nal: bytes) -> None:
        table = self.by_kind.setdefault(kind, {})
        ident = self._id_of(kind, nal)
        if table.get(ident) != nal:
            table[ident] = nal
            self.changed = True

    def ordered(self, kind: int) -> list[bytes]:
        table = self.by_kind.get(kind, {})
        return [table[ident] for ident in sorted(table)]

    def config(self) -> tuple[bytes, int, int] | None:
        """(record, width, height), or None while a needed parameter set is missing."""
        if self.codec == "h264":
            sps, pps = self.ordered(bs.H264_NAL_SPS), self.ordered(bs.H264_NAL_PPS)
            if not sps or not pps:
                return None
            parsed = bs.parse_h264_sps(sps[0])
            return bs.build_avcc(sps, pps), parsed.width, parsed.height
        vps, sps, pps = (
            self.ordered(bs.HEVC_NAL_VPS),
            self.ordered(bs.HEVC_NAL_SPS),
            self.ordered(bs.HEVC_NAL_PPS),
        )
        if not vps or not sps or not pps:
            return None
        hevc_sps = bs.parse_hevc_sps(sps[0])
        return bs.build_hvcc(vps, sps, pps), hevc_sps.width, hevc_sps.height


def h26x_passes_through(codec: CodecName, data: bytes | memoryview) -> bool:
    """True when 4-byte length-prefixed ``data`` is a sample as it stands: whole NAL units,
    none dropped (AUD, filler) nor moved into the config (parameter sets)."""
    h264 = codec == "h264"
    moved = _H264_MOVED if h264 else _HEVC_MOVED
    pos, end = 0, len(data)
    while pos < end:
        if pos + 5 > end:
            return False
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size < 2 or pos + 4 + size > end:
            return False
        header = data[pos + 4]
        if (header & 0x1F if h264 else (header >> 1) & 0x3F) in moved:
            return False
        pos += 4 + size
    return pos > 0


def av1_passes_through(data: bytes | memoryview, sequence_header: bytes | None) -> bool:
    """True when ``data`` is a sample as it stands: OBUs with size fields, a frame among them,
    no temporal delimiter or padding, no sequence header other than ``sequence_header``."""
    pos, end, frame = 0, len(data), False
    while pos < end:
        header = data[pos]
        if header & 0x80 or not header & 0x02:
            return False
        obu_type = (header >> 3) & 0x0F
        start = pos
        pos += 2 if header & 0x04 else 1
        size = 0
        for shift in range(0, 56, 7):
            if pos >= end:
                return False
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            return False
        if pos + size > end or obu_type in AV1_DROPPED:
            return False
        if obu_type == bs.OBU_SEQUENCE_HEADER and (
            sequence_header is None or data[start : pos + size] != sequence_header
        ):
            return False
        frame = frame or obu_type in AV1_FRAME_OBUS
        pos += size
    return frame
