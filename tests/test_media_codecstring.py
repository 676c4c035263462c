"""Codec strings from config records, each expectation justified from the spec's fields."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flumph.media import bitstream as bs
from flumph.media.codecstring import codec_string
from tests.test_media_bitstream import (
    SVT_AV1C_BY_FFMPEG,
    X264_AVCC_BY_FFMPEG,
    X265_PPS,
    X265_SPS,
    X265_VPS,
    mutations,
)

HVCC = bs.build_hvcc([X265_VPS], [X265_SPS], [X265_PPS])


def test_captured_records():
    # av1C 81 00 0c 00: seq_profile 0, seq_level_idx_0 0 (level 2.0), tier 0 (M), 8 bit.
    assert codec_string("av1", SVT_AV1C_BY_FFMPEG) == "av01.0.00M.08"
    # hvcC: profile_space 0, Main (1), compatibility 0x60000000 (flags 1 and 2) read in
    # reverse bit order = 0x6, tier Main (L), level_idc 60 (level 2), constraint bytes
    # 90 00 00 00 00 00 (progressive_source + frame_only) with trailing zero bytes dropped.
    assert codec_string("hevc", HVCC) == "hvc1.1.6.L60.90"
    # avcC 01 42 c0 0d: constrained baseline (66, constraint_set0+1), level 1.3.
    assert codec_string("h264", X264_AVCC_BY_FFMPEG) == "avc1.42C00D"


def av1c(
    profile: int = 0,
    level: int = 0,
    tier: int = 0,
    depth: int = 8,
    mono: int = 0,
    sx: int = 1,
    sy: int = 1,
    position: int = 0,
    obus: bytes = b"",
) -> bytes:
    flags = (
        (tier << 7)
        | (int(depth > 8) << 6)
        | (int(depth == 12) << 5)
        | (mono << 4)
        | (sx << 3)
        | (sy << 2)
        | position
    )
    return bytes([0x81, (profile << 5) | level, flags, 0]) + obus


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (av1c(level=8), "av01.0.08M.08"),
        (av1c(profile=0, level=13, tier=1, depth=10), "av01.0.13H.10"),
        (av1c(profile=2, level=31, depth=12), "av01.2.31M.12"),
        # Not 4:2:0 colour: the long form, with the defaults for colour (BT.709, limited).
        (av1c(level=4, mono=1), "av01.0.04M.08.1.110.01.01.01.0"),
        (av1c(profile=1, level=5, sx=0, sy=0), "av01.1.05M.08.0.000.01.01.01.0"),
        (av1c(profile=2, level=5, depth=12, sx=1, sy=0), "av01.2.05M.12.0.100.01.01.01.0"),
    ],
)
def test_av1_fields(record, expected):
    assert codec_string("av1", record) == expected


def test_av1_long_form_reads_colour_from_the_sequence_header():
    # A monochrome profile-0 sequence header with BT.2020/PQ/BT.2020nc, full range.
    writer = BitWriter()
    writer.put(0, 3).put(1, 1).put(1, 1).put(9, 5)  # profile, still, reduced, level 9
    writer.put(9, 4).put(8, 4).put(639, 10).put(359, 9)  # 640x360
    writer.put(0, 3).put(0, 3)  # superblock/filter flags, superres/cdef/restoration
    writer.put(0, 1).put(1, 1).put(1, 1).put(9, 8).put(16, 8).put(9, 8).put(1, 1)
    writer.put(0, 1)  # film_grain_params_present
    payload = writer.bytes()
    seq = bs.parse_av1_sequence_header(payload)
    assert (seq.max_width, seq.max_height, seq.monochrome, seq.level_idx) == (640, 360, True, 9)
    record = bs.av1c_from_sequence_header(bs.obu_bytes(bs.OBU_SEQUENCE_HEADER, payload))
    assert codec_string("av1", record) == "av01.0.09M.08.1.110.09.16.09.1"


class BitWriter:
    def __init__(self) -> None:
        self.bits = ""

    def put(self, value: int, width: int) -> "BitWriter":
        self.bits += format(value, f"0{width}b")
        return self

    def bytes(self) -> bytes:
        padded = self.bits + "1" + "0" * (-(len(self.bits) + 1) % 8)  # trailing bits
        return int(padded, 2).to_bytes(len(padded) // 8, "big")


def hvcc_with(profile_byte: int, compatibility: int, constraints: bytes, level: int) -> bytes:
    return (
        bytes([1, profile_byte])
        + compatibility.to_bytes(4, "big")
        + constraints
        + bytes([level])
        + HVCC[13:]
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # Main 10: profile 2, compatibility flag 2 only -> 0x20000000 reversed = 0x4.
        (hvcc_with(0x02, 0x20000000, bytes.fromhex("900000000000"), 93), "hvc1.2.4.L93.90"),
        # High tier, level 5.1 (153); constraint bytes after the first kept up to the last non-zero.
        (
            hvcc_with(0x21, 0x60000000, bytes.fromhex("b00000000100"), 153),
            "hvc1.1.6.H153.B0.00.00.00.01",
        ),
        # profile_space 1 is written 'A'; no constraint flags at all: nothing after the level.
        (hvcc_with(0x44, 0x08000000, bytes(6), 120), "hvc1.A4.10.L120"),
        # Every compatibility flag: reversing keeps FFFFFFFF.
        (hvcc_with(0x01, 0xFFFFFFFF, bytes.fromhex("000000000000"), 30), "hvc1.1.FFFFFFFF.L30"),
    ],
)
def test_hevc_fields(record, expected):
    assert codec_string("hevc", record) == expected


def test_avc_fields():
    high = bytes.fromhex("01640028ff") + X264_AVCC_BY_FFMPEG[5:]
    assert codec_string("h264", high) == "avc1.640028"


@pytest.mark.parametrize(
    ("codec", "record", "message"),
    [
        ("av1", b"", "av1C record of 0 bytes is shorter than its 4-byte header"),
        ("av1", b"\x01\x00\x0c\x00", "av1C starts with 0x01, expected 0x81"),
        ("av1", SVT_AV1C_BY_FFMPEG[:-1], "AV1 OBU of type 1 at offset 0 claims 11 bytes but 10"),
        ("hevc", HVCC[:10], "hvcC record is truncated: general_constraint_indicator_flags needs 6"),
        ("hevc", b"\x00" + HVCC[1:], "hvcC configurationVersion is 0, expected 1"),
        ("h264", X264_AVCC_BY_FFMPEG[:3], "avcC record is truncated: AVCLevelIndication needs 1"),
        ("h264", b"garbage", "avcC configurationVersion is 103, expected 1"),
        ("vp9", b"\x01", "codec 'vp9' has no codec string here: expected av1, hevc or h264"),
    ],
)
def test_truncated_and_garbage_records(codec, record, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        codec_string(codec, record)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["av1", "hevc", "h264"]),
    st.one_of(
        st.binary(max_size=80),
        mutations(SVT_AV1C_BY_FFMPEG),
        mutations(HVCC),
        mutations(X264_AVCC_BY_FFMPEG),
    ),
)
def test_fuzz_only_value_errors(codec, record):
    try:
        text = codec_string(codec, record)
    except ValueError:
        return
    assert re.fullmatch(r"(av01|hvc1|avc1)\.[0-9A-Za-z.]+", text)
