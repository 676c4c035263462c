"""Fragmented MP4 (ISO BMFF) for MSE: one init segment, then one moof+mdat per frame."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from flumph.media.codecstring import Codec, codec_string

_SAMPLE_ENTRY = {"av1": b"av01", "hevc": b"hvc1", "h264": b"avc1"}
_CONFIG_BOX = {"av1": b"av1C", "hevc": b"hvcC", "h264": b"avcC"}
_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = (1 << 64) - 1
_UNITY_MATRIX = b"".join(
    value.to_bytes(4, "big") for value in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
)
MOVIE_TIMESCALE = 1000
TRACK_ID = 1

# Sample flags (ISO/IEC 14496-12 8.8.3.1): sample_depends_on=2 (an I picture) for sync
# samples; sample_depends_on=1 and sample_is_non_sync_sample for the rest.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000

_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800  # offset, dur, size, flags, cto


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    size = 8 + len(body)
    if size > _MAX_U32:
        raise ValueError(f"'{kind.decode()}' box of {size} bytes does not fit a 32-bit size")
    return size.to_bytes(4, "big") + kind + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big"), *payload)


def _u8(value: int) -> bytes:
    return value.to_bytes(1, "big")


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


@dataclass(frozen=True)
class VideoTrack:
    codec: Literal["av1", "hevc", "h264"]
    width: int
    height: int
    timescale: int
    config: bytes  # the av1C / hvcC / avcC record, without box header

    def __post_init__(self) -> None:
        if self.codec not in _SAMPLE_ENTRY:
            raise ValueError(f"track codec {self.codec!r} is not av1, hevc or h264")
        for name, value in (("width", self.width), ("height", self.height)):
            if not 1 <= value <= _MAX_U16:
                raise ValueError(f"track {name} {value} is outside 1..{_MAX_U16}")
        if not 1 <= self.timescale <= _MAX_U32:
            raise ValueError(f"track timescale {self.timescale} is outside 1..{_MAX_U32}")
        if not self.config:
            raise ValueError(f"track has an empty {_CONFIG_BOX[self.codec].decode()} record")
        codec_string(self.codec, self.config)  # validates the record

    @property
    def codec_string(self) -> str:
        return codec_string(self.codec, self.config)

    @property
    def mime(self) -> str:
        return f'video/mp4; codecs="{self.codec_string}"'


@dataclass(frozen=True)
class Sample:
    data: bytes
    dts: int
    pts: int
    duration: int
    keyframe: bool

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("sample has no data")
        if len(self.data) > _MAX_U32 - 8:
            raise ValueError(f"sample of {len(self.data)} bytes does not fit an mdat box")
        if not 0 <= self.dts <= _MAX_U64:
            raise ValueError(f"sample dts {self.dts} is outside 0..2**64-1")
        if not 0 <= self.duration <= _MAX_U32:
            raise ValueError(f"sample duration {self.duration} is outside 0..{_MAX_U32}")
        offset = self.pts - self.dts
        if not -(1 << 31) <= offset < (1 << 31):
            raise ValueError(f"composition offset {offset} (pts - dts) does not fit 32 bits")


def _ftyp(codec: Codec) -> bytes:
    brands = [b"iso5", b"iso6", b"mp41", _SAMPLE_ENTRY[codec]]
    return box(b"ftyp", b"iso5", _u32(512), *brands)


def _mvhd() -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        _u32(0),  # creation_time
        _u32(0),  # modification_time
        _u32(MOVIE_TIMESCALE),
        _u32(0),  # duration: unknown, fragments follow
        _u32(0x00010000),  # rate 1.0
        _u16(0x0100),  # volume 1.0
        bytes(10),
        _UNITY_MATRIX,
        bytes(24),  # pre_defined
        _u32(TRACK_ID + 1),  # next_track_ID
    )


def _tkhd(track: VideoTrack) -> bytes:
    return full_box(
        b"tkhd",
        0,
        0x000003,  # enabled, in movie
        _u32(0),
        _u32(0),
        _u32(TRACK_ID),
        _u32(0),  # reserved
        _u32(0),  # duration
        bytes(8),
        _u16(0),  # layer
        _u16(0),  # alternate_group
        _u16(0),  # volume: video
        _u16(0),
        _UNITY_MATRIX,
        _u32(track.width << 16),
        _u32(track.height << 16),
    )


def _mdhd(timescale: int) -> bytes:
    language_und = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)
    return full_box(
        b"mdhd", 0, 0, _u32(0), _u32(0), _u32(timescale), _u32(0), _u16(language_und), _u16(0)
    )


def _hdlr() -> bytes:
    return full_box(b"hdlr", 0, 0, _u32(0), b"vide", bytes(12), b"VideoHandler\x00")


def _sample_entry(track: VideoTrack) -> bytes:
    return box(
        _SAMPLE_ENTRY[track.codec],
        bytes(6),  # reserved
        _u16(1),  # data_reference_index
        bytes(16),  # pre_defined, reserved, pre_defined
        _u16(track.width),
        _u16(track.height),
        _u32(0x00480000),  # 72 dpi
        _u32(0x00480000),
        _u32(0),  # reserved
        _u16(1),  # frame_count
        bytes(32),  # compressorname
        _u16(0x0018),  # depth
        _u16(0xFFFF),  # pre_defined = -1
        box(_CONFIG_BOX[track.codec], track.config),
    )


def _stbl(track: VideoTrack) -> bytes:
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, _u32(1), _sample_entry(track)),
        full_box(b"stts", 0, 0, _u32(0)),
        full_box(b"stsc", 0, 0, _u32(0)),
        full_box(b"stsz", 0, 0, _u32(0), _u32(0)),
        full_box(b"stco", 0, 0, _u32(0)),
    )


def init_segment(track: VideoTrack) -> bytes:
    """ftyp + moov describing one video track whose samples all come in fragments."""
    dinf = box(b"dinf", full_box(b"dref", 0, 0, _u32(1), full_box(b"url ", 0, 0x000001)))
    minf = box(b"minf", full_box(b"vmhd", 0, 0x000001, bytes(8)), dinf, _stbl(track))
    trak = box(b"trak", _tkhd(track), box(b"mdia", _mdhd(track.timescale), _hdlr(), minf))
    trex = full_box(b"trex", 0, 0, _u32(TRACK_ID), _u32(1), _u32(0), _u32(0), _u32(0))
    moov = box(b"moov", _mvhd(), trak, box(b"mvex", trex))
    return _ftyp(track.codec) + moov


def media_fragment(sequence: int, sample: Sample, track_id: int = TRACK_ID) -> bytes:
    """moof + mdat carrying exactly one sample, so a frame can be sent as soon as it exists."""
    if not 0 <= sequence <= _MAX_U32:
        raise ValueError(f"fragment sequence number {sequence} is outside 0..{_MAX_U32}")
    if not 1 <= track_id <= _MAX_U32:
        raise ValueError(f"track_id {track_id} is outside 1..{_MAX_U32}")
    flags = SYNC_SAMPLE_FLAGS if sample.keyframe else NON_SYNC_SAMPLE_FLAGS
    offset = sample.pts - sample.dts

    def moof(data_offset: int) -> bytes:
        trun = full_box(
            b"trun",
            1,  # version 1: signed composition offsets
            _TRUN_FLAGS,
            _u32(1),  # sample_count
            data_offset.to_bytes(4, "big", signed=True),
            _u32(sample.duration),
            _u32(len(sample.data)),
            _u32(flags),
            offset.to_bytes(4, "big", signed=True),
        )
        traf = box(
            b"traf",
            full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, _u32(track_id)),
            full_box(b"tfdt", 1, 0, sample.dts.to_bytes(8, "big")),
            trun,
        )
        return box(b"moof", full_box(b"mfhd", 0, 0, _u32(sequence)), traf)

    moof_size = len(moof(0))
    return moof(moof_size + 8) + box(b"mdat", sample.data)


# The moof + mdat header of a one-sample fragment is the same 112 bytes every frame but for six
# fields: built once here and patched per frame (what media_fragment builds box by box).
_FRAGMENT_TEMPLATE = bytes(
    media_fragment(0, Sample(data=b"\x00", dts=0, pts=0, duration=1, keyframe=True))[:-1]
)
FRAGMENT_HEADER_BYTES = len(_FRAGMENT_TEMPLATE)  # 104 moof + 8 mdat header
_SEQUENCE_AT = _FRAGMENT_TEMPLATE.index(b"mfhd") + 8
_DTS_AT = _FRAGMENT_TEMPLATE.index(b"tfdt") + 8
_SAMPLE_AT = _FRAGMENT_TEMPLATE.index(b"trun") + 16
_MDAT_AT = _FRAGMENT_TEMPLATE.index(b"mdat") - 4
# The whole header in one pack: the template's bytes between the six fields pass through as
# fixed strings (one C call per frame instead of a copy, four pack_into and a conversion).
_FIXED = (
    _FRAGMENT_TEMPLATE[:_SEQUENCE_AT],
    _FRAGMENT_TEMPLATE[_SEQUENCE_AT + 4 : _DTS_AT],
    _FRAGMENT_TEMPLATE[_DTS_AT + 8 : _SAMPLE_AT],
    _FRAGMENT_TEMPLATE[_SAMPLE_AT + 16 : _MDAT_AT],
    _FRAGMENT_TEMPLATE[_MDAT_AT + 4 :],
)
_HEADER = struct.Struct(">{}sI{}sQ{}sIIIi{}sI{}s".format(*(len(fixed) for fixed in _FIXED)))


def fragment_header(
    sequence: int, dts: int, duration: int, size: int, keyframe: bool, composition_offset: int
) -> bytes:
    """The moof + mdat header ``media_fragment`` writes before one sample of ``size`` bytes,
    patched into a template: the sample's bytes follow it unchanged (no copy here)."""
    if not 0 <= sequence <= _MAX_U32:
        raise ValueError(f"fragment sequence number {sequence} is outside 0..{_MAX_U32}")
    if not 0 <= dts <= _MAX_U64:
        raise ValueError(f"sample dts {dts} is outside 0..2**64-1")
    if not 1 <= size <= _MAX_U32 - 8:
        raise ValueError(f"sample of {size} bytes does not fit an mdat box")
    if not 0 <= duration <= _MAX_U32:
        raise ValueError(f"sample duration {duration} is outside 0..{_MAX_U32}")
    if not -(1 << 31) <= composition_offset < (1 << 31):
        raise ValueError(f"composition offset {composition_offset} does not fit 32 bits")
    flags = SYNC_SAMPLE_FLAGS if keyframe else NON_SYNC_SAMPLE_FLAGS
    a, b, c, d, e = _FIXED
    return _HEADER.pack(
        a, sequence, b, dts, c, duration, size, flags, composition_offset, d, size + 8, e
    )
