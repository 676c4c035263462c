"""Bitstream helpers on captured encoder output (x264, x265, SVT-AV1 at 320x240, via PyAV)."""

import contextlib
import re
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flumph.media import bitstream as bs

# Captured from PyAV 18.1 (FFmpeg 8.1) encoders, 320x240 yuv420p, ultrafast/zerolatency.
X264_SPS = bytes.fromhex("6742c00dda0507e840000003004000000f23c50aa8")
X264_PPS = bytes.fromhex("68ce3c80")
X264_AVCC_BY_FFMPEG = bytes.fromhex(
    "0142c00dffe100156742c00dda0507e840000003004000000f23c50aa801000468ce3c80"
)
X265_VPS = bytes.fromhex("40010c01ffff01600000030090000003000003003cba0240")
X265_SPS = bytes.fromhex(
    "42010101600000030090000003000003003ca00a080f165ba4a4c2e68080000003008000000f04"
)
X265_PPS = bytes.fromhex("4401c0718312")
# FFmpeg's Matroska hvcC header for the same stream, up to the arrays (hev1: completeness 0).
X265_HVCC_HEAD_BY_FFMPEG = bytes.fromhex("0101600000009000000000003cf000fcfdf8f800000f")
SVT_AV1C_BY_FFMPEG = bytes.fromhex("81000c000a0b000000043cffbc02f80040")
SVT_INBAND_SEQUENCE_HEADER_OBU = bytes.fromhex("0a0b000000043cffbc4af90040")
TEMPORAL_DELIMITER_OBU = bytes.fromhex("1200")

SEEDS = [X264_SPS, X264_PPS, X265_VPS, X265_SPS, X265_PPS]


def _mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    data = bytearray(seed)
    for index, value in edits:
        data[index % len(data)] = value
    return bytes(data[:cut])


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.builds(
        _mutate,
        st.just(seed),
        st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=4),
        st.integers(0, len(seed)),
    )


# --- framing ------------------------------------------------------------------------------------


def test_split_annexb_start_codes_and_zeros():
    data = (
        b"\x00\x00\x00\x01" + X264_SPS + b"\x00\x00\x01" + X264_PPS + b"\x00\x00"  # trailing zeros
        b"\x00\x00\x00\x01\x00\x00\x01" + b"\x65\x88\x84"  # an empty NAL between two codes
    )
    assert bs.split_annexb(data) == [X264_SPS, X264_PPS, b"\x65\x88\x84"]
    assert bs.split_annexb(b"\x00\x00\x00\x00\x00\x01\x09\xf0") == [b"\x09\xf0"]
    assert bs.split_annexb(b"") == []


@pytest.mark.parametrize("data", [b"\x67\x42", b"\x00\x00\x02\x67", b"\x01\x00\x00\x01\x67"])
def test_split_annexb_needs_a_leading_start_code(data):
    with pytest.raises(ValueError) as caught:
        bs.split_annexb(data)
    assert str(caught.value) == (
        f"Annex B data does not start with a start code (first bytes: '{data.hex()}')"
    )


def test_length_prefixed_round_trip():
    nals = [X265_VPS, X265_SPS, X265_PPS, b"\x26\x01" + bytes(range(256)) * 3]
    joined = bs.to_length_prefixed(nals)
    assert len(joined) == sum(len(nal) + 4 for nal in nals)
    assert bs.split_length_prefixed(joined) == nals
    assert bs.split_annexb(bs.to_annexb(nals)) == nals


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_length_sizes(length_size):
    nals = [X264_SPS, X264_PPS]
    data = b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in nals)
    assert bs.split_length_prefixed(data, length_size) == nals


def test_length_prefixed_truncations_are_named():
    data = bs.to_length_prefixed([X264_SPS, X264_PPS])
    with pytest.raises(ValueError) as caught:
        bs.split_length_prefixed(data[:-1])
    assert str(caught.value) == (
        "length-prefixed data is truncated: NAL unit at offset 25 claims 4 bytes but 3 remain"
    )
    with pytest.raises(ValueError) as caught:
        bs.split_length_prefixed(data + b"\x00\x00")
    assert "2 byte(s) left at offset 33, less than a 4-byte length" in str(caught.value)
    with pytest.raises(ValueError, match=re.escape("NAL length size 3 is not 1, 2 or 4")):
        bs.split_length_prefixed(data, 3)
    with pytest.raises(ValueError, match=re.escape("NAL unit 1 is empty")):
        bs.to_length_prefixed([X264_SPS, b""])


def test_unescape_rbsp():
    assert bs.unescape_rbsp(b"\x00\x00\x03\x01") == b"\x00\x00\x01"
    assert bs.unescape_rbsp(b"\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x00\x00"
    assert bs.unescape_rbsp(b"\x00\x03\x00\x03") == b"\x00\x03\x00\x03"
    assert bs.unescape_rbsp(b"\x00\x00\x00\x03\x02") == b"\x00\x00\x00\x02"


def test_exp_golomb():
    # bits: 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3; then se(4) = -2
    reader = bs.BitReader(bytes([0b10100110, 0b01000010, 0b10000000]), "test")
    assert [reader.ue("x") for _ in range(4)] == [0, 1, 2, 3]
    assert reader.se("y") == -2
    with pytest.raises(ValueError, match=re.escape("longer than 32 bits")):
        bs.BitReader(bytes(8), "test").ue("x")
    with pytest.raises(ValueError, match=re.escape("test: x = 3 exceeds its maximum 2")):
        bs.BitReader(bytes([0b00100000]), "test").ue("x", 2)


# --- H.264 --------------------------------------------------------------------------------------


def test_h264_sps_fields():
    sps = bs.parse_h264_sps(X264_SPS)
    assert sps == bs.H264Sps(
        sps_id=0,
        profile_idc=66,
        constraint_flags=0xC0,
        level_idc=13,
        chroma_format_idc=1,
        bit_depth_luma=8,
        bit_depth_chroma=8,
        width=320,
        height=240,
    )
    assert bs.h264_pps_id(X264_PPS) == 0


def test_build_avcc_matches_ffmpeg_byte_for_byte():
    assert bs.build_avcc([X264_SPS], [X264_PPS]) == X264_AVCC_BY_FFMPEG
    config = bs.parse_avcc(X264_AVCC_BY_FFMPEG)
    assert (config.profile_idc, config.constraint_flags, config.level_idc) == (66, 0xC0, 13)
    assert (config.length_size, config.sps, config.pps) == (4, (X264_SPS,), (X264_PPS,))


def test_h264_errors_are_precise():
    with pytest.raises(ValueError, match=re.escape("not an H.264 SPS: NAL type 8, expected 7")):
        bs.parse_h264_sps(X264_PPS)
    with pytest.raises(
        ValueError, match=re.escape("H.264 SPS is truncated: needed 4 more bit(s) at bit 38 of 40")
    ):
        bs.parse_h264_sps(X264_SPS[:6])
    with pytest.raises(ValueError, match=re.escape("avcC needs at least one SPS and one PPS")):
        bs.build_avcc([X264_SPS], [])
    with pytest.raises(ValueError, match=re.escape("avcC configurationVersion is 0, expected 1")):
        bs.parse_avcc(b"\x00" + X264_AVCC_BY_FFMPEG[1:])
    with pytest.raises(ValueError, match=re.escape("avcC record is truncated: PPS needs 4 byte")):
        bs.parse_avcc(X264_AVCC_BY_FFMPEG[:-1])
    with pytest.raises(ValueError, match=re.escape("SPS has NAL type 8, expected 7")):
        bs.parse_avcc(X264_AVCC_BY_FFMPEG[:6] + b"\x00\x04" + X264_PPS + b"\x00")


# --- H.265 --------------------------------------------------------------------------------------


def test_hevc_parameter_sets():
    sps = bs.parse_hevc_sps(X265_SPS)
    assert (sps.sps_id, sps.vps_id, sps.max_sub_layers, sps.temporal_id_nesting) == (0, 0, 1, True)
    assert (sps.width, sps.height, sps.chroma_format_idc) == (320, 240, 1)
    assert (sps.bit_depth_luma, sps.bit_depth_chroma) == (8, 8)
    assert sps.ptl == bs.HevcProfileTierLevel(
        profile_space=0,
        tier_flag=0,
        profile_idc=1,
        compatibility_flags=0x60000000,
        constraint_flags=0x900000000000,
        level_idc=60,
    )
    vps = bs.parse_hevc_vps(X265_VPS)
    assert (vps.vps_id, vps.max_sub_layers, vps.ptl) == (0, 1, sps.ptl)
    assert bs.hevc_pps_id(X265_PPS) == 0


def test_build_hvcc_matches_ffmpeg_header_and_holds_the_parameter_sets():
    record = bs.build_hvcc([X265_VPS], [X265_SPS], [X265_PPS])
    assert record[: len(X265_HVCC_HEAD_BY_FFMPEG)] == X265_HVCC_HEAD_BY_FFMPEG
    config = bs.parse_hvcc(record)
    assert [(a.complete, a.nal_type, a.nals) for a in config.arrays] == [
        (True, 32, (X265_VPS,)),
        (True, 33, (X265_SPS,)),
        (True, 34, (X265_PPS,)),
    ]
    assert config.length_size == 4
    relaxed = bs.parse_hvcc(
        bs.build_hvcc([X265_VPS], [X265_SPS], [X265_PPS], array_completeness=False)
    )
    assert not any(array.complete for array in relaxed.arrays)


def test_hevc_errors_are_precise():
    with pytest.raises(ValueError, match=re.escape("not an H.265 SPS: NAL type 32, expected 33")):
        bs.parse_hevc_sps(X265_VPS)
    with pytest.raises(ValueError, match=re.escape("H.265 SPS is truncated")):
        bs.parse_hevc_sps(X265_SPS[:15])
    with pytest.raises(ValueError, match=re.escape("shorter than its 2-byte header")):
        bs.hevc_nal_type(b"\x40")
    with pytest.raises(
        ValueError, match=re.escape("hvcC needs at least one VPS, SPS and PPS (got 0, 1, 1)")
    ):
        bs.build_hvcc([], [X265_SPS], [X265_PPS])
    record = bs.build_hvcc([X265_VPS], [X265_SPS], [X265_PPS])
    with pytest.raises(
        ValueError, match=re.escape("hvcC record is truncated: array 2 NAL unit needs 6 byte")
    ):
        bs.parse_hvcc(record[:-1])
    with pytest.raises(ValueError, match=re.escape("hvcC configurationVersion is 2, expected 1")):
        bs.parse_hvcc(b"\x02" + record[1:])


# --- AV1 ----------------------------------------------------------------------------------------


def test_sequence_header_fields():
    obu = bs.split_obus(SVT_INBAND_SEQUENCE_HEADER_OBU)[0]
    seq = bs.parse_av1_sequence_header(obu.payload)
    assert (seq.profile, seq.level_idx, seq.tier, seq.bit_depth) == (0, 0, 0, 8)
    assert (seq.max_width, seq.max_height) == (320, 240)
    assert (seq.monochrome, seq.subsampling_x, seq.subsampling_y) == (False, 1, 1)
    assert (seq.color_primaries, seq.transfer_characteristics, seq.matrix_coefficients) == (2, 2, 2)


def test_av1c_from_sequence_header_matches_ffmpeg():
    config = bs.parse_av1c(SVT_AV1C_BY_FFMPEG)
    assert bs.av1c_from_sequence_header(config.config_obus) == SVT_AV1C_BY_FFMPEG
    # Temporal delimiters and other OBUs around the sequence header are skipped.
    built = bs.av1c_from_sequence_header(TEMPORAL_DELIMITER_OBU + SVT_INBAND_SEQUENCE_HEADER_OBU)
    assert built == SVT_AV1C_BY_FFMPEG[:4] + SVT_INBAND_SEQUENCE_HEADER_OBU


def test_obus_with_and_without_size_fields():
    no_size = bytes([0x08]) + SVT_INBAND_SEQUENCE_HEADER_OBU[2:]  # same OBU, size field absent
    obus = bs.split_obus(TEMPORAL_DELIMITER_OBU + no_size)
    assert [(obu.obu_type, obu.payload) for obu in obus] == [
        (2, b""),
        (1, SVT_INBAND_SEQUENCE_HEADER_OBU[2:]),
    ]
    assert bs.obu_bytes(1, obus[1].payload) == SVT_INBAND_SEQUENCE_HEADER_OBU
    assert bs.av1c_from_sequence_header(no_size).endswith(SVT_INBAND_SEQUENCE_HEADER_OBU)


@pytest.mark.parametrize("value", [1, 127, 128, 300, 2**21, 2**32 - 1])
def test_leb128_round_trip(value):
    padding_header = bytes([0x7A])  # OBU_PADDING with a size field
    with pytest.raises(ValueError) as caught:
        bs.split_obus(padding_header + bs.leb128(value))
    assert f"claims {value} bytes but 0 remain" in str(caught.value)
    assert bs.split_obus(padding_header + bs.leb128(3) + b"abc")[0].payload == b"abc"
    with pytest.raises(ValueError, match=re.escape("outside 0..2")):
        bs.leb128(2**32)


def test_av1_errors_are_precise():
    with pytest.raises(
        ValueError, match=re.escape("AV1 OBU at offset 0 has its forbidden bit set")
    ):
        bs.split_obus(b"\x8a\x00")
    with pytest.raises(
        ValueError, match=re.escape("AV1 OBU of type 1 at offset 0 claims 11 bytes but 10")
    ):
        bs.split_obus(SVT_INBAND_SEQUENCE_HEADER_OBU[:-1])
    with pytest.raises(ValueError, match=re.escape("size field is truncated at offset 2")):
        bs.split_obus(b"\x0a\x80")
    with pytest.raises(ValueError, match=re.escape("longer than 8 bytes")):
        bs.split_obus(b"\x0a" + b"\x80" * 9)
    with pytest.raises(ValueError, match=re.escape("holds no sequence header OBU")):
        bs.av1c_from_sequence_header(TEMPORAL_DELIMITER_OBU)
    with pytest.raises(ValueError, match=re.escape("AV1 sequence header is truncated")):
        bs.av1c_from_sequence_header(bs.obu_bytes(1, SVT_INBAND_SEQUENCE_HEADER_OBU[2:6]))
    with pytest.raises(ValueError, match=re.escape("av1C starts with 0x80, expected 0x81")):
        bs.parse_av1c(b"\x80" + SVT_AV1C_BY_FFMPEG[1:])
    with pytest.raises(
        ValueError, match=re.escape("av1C record of 3 bytes is shorter than its 4-byte")
    ):
        bs.parse_av1c(SVT_AV1C_BY_FFMPEG[:3])


# --- fuzzing: only ValueError, never anything else ------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None)


def _only_value_error(function: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(ValueError):
        function(*args)


@FUZZ
@given(st.one_of(st.binary(max_size=200), *(mutations(b"\x00\x00\x01" + s) for s in SEEDS)))
@example(b"\x00\x00\x00")
def test_fuzz_split_annexb(data):
    try:
        nals = bs.split_annexb(data)
    except ValueError:
        return
    assert all(nals)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([1, 2, 3, 4]))
def test_fuzz_split_length_prefixed(data, length_size):
    try:
        nals = bs.split_length_prefixed(data, length_size)
    except ValueError:
        return
    assert sum(len(nal) + length_size for nal in nals) <= len(data)


@FUZZ
@given(st.one_of(mutations(X264_SPS), st.binary(max_size=64).map(lambda b: b"\x67" + b)))
@example(b"\x67" + bytes(40))
@example(b"\x67\x64\x00\x1f\xff" + b"\xff" * 40)
def test_fuzz_h264_sps(data):
    _only_value_error(bs.parse_h264_sps, data)
    _only_value_error(bs.build_avcc, [data], [X264_PPS])


@FUZZ
@given(st.one_of(mutations(X265_SPS), mutations(X265_VPS), mutations(X265_PPS)))
def test_fuzz_hevc_parameter_sets(data):
    _only_value_error(bs.parse_hevc_sps, data)
    _only_value_error(bs.parse_hevc_vps, data)
    _only_value_error(bs.hevc_pps_id, data)
    _only_value_error(bs.build_hvcc, [X265_VPS], [data], [X265_PPS])


@FUZZ
@given(
    st.one_of(
        mutations(SVT_INBAND_SEQUENCE_HEADER_OBU),
        mutations(TEMPORAL_DELIMITER_OBU + SVT_INBAND_SEQUENCE_HEADER_OBU),
        st.binary(max_size=64),
    )
)
def test_fuzz_obus_and_sequence_headers(data):
    _only_value_error(bs.split_obus, data)
    _only_value_error(bs.av1c_from_sequence_header, data)
    _only_value_error(bs.parse_av1_sequence_header, data)


@FUZZ
@given(
    st.one_of(
        mutations(X264_AVCC_BY_FFMPEG),
        mutations(bs.build_hvcc([X265_VPS], [X265_SPS], [X265_PPS])),
        mutations(SVT_AV1C_BY_FFMPEG),
    )
)
def test_fuzz_config_records(data):
    _only_value_error(bs.parse_avcc, data)
    _only_value_error(bs.parse_hvcc, data)
    _only_value_error(bs.parse_av1c, data)
