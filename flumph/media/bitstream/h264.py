"""H.264: SPS parsing and the avcC config record (ISO 14496-15)."""

from __future__ import annotations

from dataclasses import dataclass

from flumph.media.bitstream.bits import (
    BitReader,
    _ByteReader,
    _nal_list_bytes,
    _read_record_nal,
    unescape_rbsp,
)
from flumph.media.bitstream.nal import H264_NAL_PPS, H264_NAL_SPS, h264_nal_type

# Profiles whose SPS carries chroma_format_idc and bit depths (H.264 7.3.2.1.1).
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
# avcC carries the chroma/bit-depth extension for every profile but these (ISO 14496-15).
_AVCC_NO_EXTENSION_PROFILES = frozenset({66, 77, 88})


@dataclass(frozen=True)
class H264Sps:
    sps_id: int
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def _skip_h264_scaling_list(reader: BitReader, size: int) -> None:
    last_scale = 8
    next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            delta = reader.se("delta_scale")
            if not -128 <= delta <= 127:
                raise ValueError(f"{reader.what}: delta_scale {delta} is outside -128..127")
            next_scale = (last_scale + delta + 256) % 256
        last_scale = next_scale if next_scale != 0 else last_scale


def parse_h264_sps(nal: bytes) -> H264Sps:
    """Parse an H.264 SPS NAL unit (with its 1-byte header) up to the cropped picture size."""
    if not nal or h264_nal_type(nal) != H264_NAL_SPS:
        raise ValueError(
            f"not an H.264 SPS: NAL type {h264_nal_type(nal) if nal else 'none'}, expected 7"
        )
    r = BitReader(unescape_rbsp(nal[1:]), "H.264 SPS")
    profile_idc = r.u(8)
    constraint_flags = r.u(8)
    level_idc = r.u(8)
    sps_id = r.ue("seq_parameter_set_id", 31)
    chroma_format_idc = 1
    separate_colour_plane = False
    bit_depth_luma = bit_depth_chroma = 8
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue("chroma_format_idc", 3)
        if chroma_format_idc == 3:
            separate_colour_plane = r.flag()
        bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", 6)
        bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", 6)
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if r.flag():
                    _skip_h264_scaling_list(r, 16 if index < 6 else 64)
    r.ue("log2_max_frame_num_minus4", 12)
    poc_type = r.ue("pic_order_cnt_type", 2)
    if poc_type == 0:
        r.ue("log2_max_pic_order_cnt_lsb_minus4", 12)
    elif poc_type == 1:
        r.skip(1)  # delta_pic_order_always_zero_flag
        r.se("offset_for_non_ref_pic")
        r.se("offset_for_top_to_bottom_field")
        for _ in range(r.ue("num_ref_frames_in_pic_order_cnt_cycle", 255)):
            r.se("offset_for_ref_frame")
    r.ue("max_num_ref_frames", 16)
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_in_mbs = r.ue("pic_width_in_mbs_minus1", 4095) + 1
    height_in_map_units = r.ue("pic_height_in_map_units_minus1", 4095) + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_in_mbs * 16
    height = (2 - frame_mbs_only) * height_in_map_units * 16
    if r.flag():  # frame_cropping_flag
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        if chroma_array_type == 0:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_width = 1 if chroma_format_idc == 3 else 2
            sub_height = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
        left = r.ue("frame_crop_left_offset")
        right = r.ue("frame_crop_right_offset")
        top = r.ue("frame_crop_top_offset")
        bottom = r.ue("frame_crop_bottom_offset")
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
        if width <= 0 or height <= 0:
            raise ValueError(f"H.264 SPS: cropping leaves an empty picture ({width}x{height})")
    return H264Sps(
        sps_id=sps_id,
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
    )


def h264_pps_id(nal: bytes) -> int:
    if not nal or h264_nal_type(nal) != H264_NAL_PPS:
        raise ValueError("not an H.264 PPS")
    return BitReader(unescape_rbsp(nal[1:]), "H.264 PPS").ue("pic_parameter_set_id", 255)


@dataclass(frozen=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord (avcC payload)."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    chroma_format_idc: int | None = None
    bit_depth_luma: int | None = None
    bit_depth_chroma: int | None = None


def build_avcc(sps: list[bytes], pps: list[bytes]) -> bytes:
    """Build an avcC record (4-byte NAL lengths) from SPS and PPS NAL units."""
    if not sps or not pps:
        raise ValueError(f"avcC needs at least one SPS and one PPS (got {len(sps)} and {len(pps)})")
    if len(sps) > 31 or len(pps) > 255:
        raise ValueError(f"avcC holds at most 31 SPS and 255 PPS (got {len(sps)}, {len(pps)})")
    first = parse_h264_sps(sps[0])
    for nal in pps:
        h264_pps_id(nal)
    record = bytearray(
        [1, first.profile_idc, first.constraint_flags, first.level_idc, 0xFC | 3, 0xE0 | len(sps)]
    )
    record += _nal_list_bytes(sps, "SPS")
    record.append(len(pps))
    record += _nal_list_bytes(pps, "PPS")
    if first.profile_idc not in _AVCC_NO_EXTENSION_PROFILES:
        record += bytes(
            [
                0xFC | first.chroma_format_idc,
                0xF8 | (first.bit_depth_luma - 8),
                0xF8 | (first.bit_depth_chroma - 8),
                0,  # numOfSequenceParameterSetExt
            ]
        )
    return bytes(record)


def parse_avcc(record: bytes) -> AvcConfig:
    r = _ByteReader(record, "avcC record")
    version = r.int(1, "configurationVersion")
    if version != 1:
        raise ValueError(f"avcC configurationVersion is {version}, expected 1")
    profile_idc = r.int(1, "AVCProfileIndication")
    constraint_flags = r.int(1, "profile_compatibility")
    level_idc = r.int(1, "AVCLevelIndication")
    length_size = (r.int(1, "lengthSizeMinusOne") & 0x03) + 1
    if length_size == 3:
        raise ValueError("avcC lengthSizeMinusOne is 2: a 3-byte NAL length is not allowed")
    sps = tuple(
        _read_record_nal(r, "SPS", H264_NAL_SPS, h264_nal_type)
        for _ in range(r.int(1, "numOfSequenceParameterSets") & 0x1F)
    )
    pps = tuple(
        _read_record_nal(r, "PPS", H264_NAL_PPS, h264_nal_type)
        for _ in range(r.int(1, "numOfPictureParameterSets"))
    )
    chroma = luma_depth = chroma_depth = None
    # Old muxers omit the extension for high profiles; it is optional to us.
    if profile_idc not in _AVCC_NO_EXTENSION_PROFILES and r.left >= 4:
        chroma = r.int(1, "chroma_format") & 0x03
        luma_depth = (r.int(1, "bit_depth_luma_minus8") & 0x07) + 8
        chroma_depth = (r.int(1, "bit_depth_chroma_minus8") & 0x07) + 8
    if not sps:
        raise ValueError("avcC record holds no SPS")
    return AvcConfig(
        profile_idc=profile_idc,
        constraint_flags=constraint_flags,
        level_idc=level_idc,
        length_size=length_size,
        sps=sps,
        pps=pps,
        chroma_format_idc=chroma,
        bit_depth_luma=luma_depth,
        bit_depth_chroma=chroma_depth,
    )
