"""H.265: VPS/SPS parsing and the hvcC config record (ISO 14496-15)."""

from __future__ import annotations

from dataclasses import dataclass

from flumph.media.bitstream.bits import (
    BitReader,
    _ByteReader,
    _nal_list_bytes,
    _read_record_nal,
    unescape_rbsp,
)
from flumph.media.bitstream.nal import HEVC_NAL_PPS, HEVC_NAL_SPS, HEVC_NAL_VPS, hevc_nal_type


@dataclass(frozen=True)
class HevcProfileTierLevel:
    profile_space: int
    tier_flag: int
    profile_idc: int
    compatibility_flags: int  # 32 bits, flag j at bit 31 - j
    constraint_flags: int  # 48 bits, general_progressive_source_flag first
    level_idc: int


@dataclass(frozen=True)
class HevcSps:
    sps_id: int
    vps_id: int
    max_sub_layers: int
    temporal_id_nesting: bool
    ptl: HevcProfileTierLevel
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


@dataclass(frozen=True)
class HevcVps:
    vps_id: int
    max_sub_layers: int
    ptl: HevcProfileTierLevel


def _parse_hevc_ptl(r: BitReader, max_sub_layers_minus1: int) -> HevcProfileTierLevel:
    ptl = HevcProfileTierLevel(
        profile_space=r.u(2),
        tier_flag=r.u(1),
        profile_idc=r.u(5),
        compatibility_flags=r.u(32),
        constraint_flags=r.u(48),
        level_idc=r.u(8),
    )
    present = [(r.flag(), r.flag()) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))  # reserved_zero_2bits
    for profile_present, level_present in present:
        r.skip((88 if profile_present else 0) + (8 if level_present else 0))
    return ptl


def _hevc_rbsp(nal: bytes, expected_type: int, what: str) -> BitReader:
    nal_type = hevc_nal_type(nal)
    if nal_type != expected_type:
        raise ValueError(f"not an H.265 {what}: NAL type {nal_type}, expected {expected_type}")
    return BitReader(unescape_rbsp(nal[2:]), f"H.265 {what}")


def parse_hevc_vps(nal: bytes) -> HevcVps:
    r = _hevc_rbsp(nal, HEVC_NAL_VPS, "VPS")
    vps_id = r.u(4)
    r.skip(2 + 6)  # base_layer_internal/available, vps_max_layers_minus1
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise ValueError(f"H.265 VPS: vps_max_sub_layers_minus1 {max_sub_layers_minus1} > 6")
    r.skip(1 + 16)  # temporal_id_nesting, reserved_0xffff_16bits
    ptl = _parse_hevc_ptl(r, max_sub_layers_minus1)
    return HevcVps(vps_id=vps_id, max_sub_layers=max_sub_layers_minus1 + 1, ptl=ptl)


def parse_hevc_sps(nal: bytes) -> HevcSps:
    """Parse an H.265 SPS NAL unit (with its 2-byte header) up to the bit depths."""
    r = _hevc_rbsp(nal, HEVC_NAL_SPS, "SPS")
    vps_id = r.u(4)
    max_sub_layers_minus1 = r.u(3)
    if max_sub_layers_minus1 > 6:
        raise ValueError(f"H.265 SPS: sps_max_sub_layers_minus1 {max_sub_layers_minus1} > 6")
    temporal_id_nesting = r.flag()
    ptl = _parse_hevc_ptl(r, max_sub_layers_minus1)
    sps_id = r.ue("sps_seq_parameter_set_id", 15)
    chroma_format_idc = r.ue("chroma_format_idc", 3)
    if chroma_format_idc == 3:
        r.skip(1)  # separate_colour_plane_flag
    width = r.ue("pic_width_in_luma_samples", 65535)
    height = r.ue("pic_height_in_luma_samples", 65535)
    if r.flag():  # conformance_window_flag
        sub_width = 2 if chroma_format_idc in (1, 2) else 1
        sub_height = 2 if chroma_format_idc == 1 else 1
        left = r.ue("conf_win_left_offset")
        right = r.ue("conf_win_right_offset")
        top = r.ue("conf_win_top_offset")
        bottom = r.ue("conf_win_bottom_offset")
        width -= sub_width * (left + right)
        height -= sub_height * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError(f"H.265 SPS: picture size {width}x{height} is empty")
    bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", 8)
    bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", 8)
    return HevcSps(
        sps_id=sps_id,
        vps_id=vps_id,
        max_sub_layers=max_sub_layers_minus1 + 1,
        temporal_id_nesting=temporal_id_nesting,
        ptl=ptl,
        chroma_format_idc=chroma_format_idc,
        bit_depth_luma=bit_depth_luma,
        bit_depth_chroma=bit_depth_chroma,
        width=width,
        height=height,
    )


def hevc_pps_id(nal: bytes) -> int:
    return _hevc_rbsp(nal, HEVC_NAL_PPS, "PPS").ue("pps_pic_parameter_set_id", 63)


def hevc_vps_id(nal: bytes) -> int:
    return _hevc_rbsp(nal, HEVC_NAL_VPS, "VPS").u(4)


@dataclass(frozen=True)
class HevcNalArray:
    complete: bool
    nal_type: int
    nals: tuple[bytes, ...]


@dataclass(frozen=True)
class HevcConfig:
    """An HEVCDecoderConfigurationRecord (hvcC payload)."""

    ptl: HevcProfileTierLevel
    min_spatial_segmentation_idc: int
    parallelism_type: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    constant_frame_rate: int
    num_temporal_layers: int
    temporal_id_nested: bool
    length_size: int
    arrays: tuple[HevcNalArray, ...]

    def nals_of_type(self, nal_type: int) -> list[bytes]:
        return [nal for array in self.arrays if array.nal_type == nal_type for nal in array.nals]


def build_hvcc(
    vps: list[bytes], sps: list[bytes], pps: list[bytes], *, array_completeness: bool = True
) -> bytes:
    """Build an hvcC record (4-byte NAL lengths) from parameter sets.

    Profile, tier, level, compatibility and the 48 constraint bits, chroma format and bit
    depths come from the first SPS; the temporal layer count is the larger of VPS and SPS,
    as FFmpeg computes it. min_spatial_segmentation_idc and parallelismType are written as 0
    ("unknown"), which is what FFmpeg writes whenever the SPS has no VUI bitstream
    restriction. array_completeness defaults to 1 because hvc1 requires it (the parameter
    sets live only in the sample entry).
    """
    if not vps or not sps or not pps:
        raise ValueError(
            f"hvcC needs at least one VPS, SPS and PPS (got {len(vps)}, {len(sps)}, {len(pps)})"
        )
    first = parse_hevc_sps(sps[0])
    temporal_layers = first.max_sub_layers
    for nal in vps:
        temporal_layers = max(temporal_layers, parse_hevc_vps(nal).max_sub_layers)
    for nal in pps:
        hevc_pps_id(nal)
    ptl = first.ptl
    record = bytearray([1, (ptl.profile_space << 6) | (ptl.tier_flag << 5) | ptl.profile_idc])
    record += ptl.compatibility_flags.to_bytes(4, "big")
    record += ptl.constraint_flags.to_bytes(6, "big")
    record.append(ptl.level_idc)
    record += (0xF000).to_bytes(2, "big")  # reserved + min_spatial_segmentation_idc = 0
    record.append(0xFC)  # reserved + parallelismType = 0
    record.append(0xFC | first.chroma_format_idc)
    record.append(0xF8 | (first.bit_depth_luma - 8))
    record.append(0xF8 | (first.bit_depth_chroma - 8))
    record += b"\x00\x00"  # avgFrameRate unknown
    record.append((temporal_layers << 3) | (int(first.temporal_id_nesting) << 2) | 3)
    record.append(3)
    for nal_type, nals in ((HEVC_NAL_VPS, vps), (HEVC_NAL_SPS, sps), (HEVC_NAL_PPS, pps)):
        record.append((0x80 if array_completeness else 0) | nal_type)
        record += len(nals).to_bytes(2, "big")
        record += _nal_list_bytes(nals, f"NAL unit of type {nal_type}")
    return bytes(record)


def parse_hvcc(record: bytes) -> HevcConfig:
    r = _ByteReader(record, "hvcC record")
    version = r.int(1, "configurationVersion")
    if version != 1:
        raise ValueError(f"hvcC configurationVersion is {version}, expected 1")
    profile_byte = r.int(1, "general_profile_space/tier/idc")
    ptl = HevcProfileTierLevel(
        profile_space=profile_byte >> 6,
        tier_flag=(profile_byte >> 5) & 1,
        profile_idc=profile_byte & 0x1F,
        compatibility_flags=r.int(4, "general_profile_compatibility_flags"),
        constraint_flags=r.int(6, "general_constraint_indicator_flags"),
        level_idc=r.int(1, "general_level_idc"),
    )
    min_spatial = r.int(2, "min_spatial_segmentation_idc") & 0x0FFF
    parallelism = r.int(1, "parallelismType") & 0x03
    chroma = r.int(1, "chromaFormat") & 0x03
    luma_depth = (r.int(1, "bitDepthLumaMinus8") & 0x07) + 8
    chroma_depth = (r.int(1, "bitDepthChromaMinus8") & 0x07) + 8
    avg_frame_rate = r.int(2, "avgFrameRate")
    flags = r.int(1, "constantFrameRate/numTemporalLayers/lengthSizeMinusOne")
    length_size = (flags & 0x03) + 1
    if length_size == 3:
        raise ValueError("hvcC lengthSizeMinusOne is 2: a 3-byte NAL length is not allowed")
    arrays: list[HevcNalArray] = []
    for index in range(r.int(1, "numOfArrays")):
        type_byte = r.int(1, f"array {index} NAL_unit_type")
        nal_type = type_byte & 0x3F
        count = r.int(2, f"array {index} numNalus")
        nals = tuple(
            _read_record_nal(r, f"array {index} NAL unit", nal_type, hevc_nal_type)
            for _ in range(count)
        )
        arrays.append(HevcNalArray(complete=bool(type_byte & 0x80), nal_type=nal_type, nals=nals))
    return HevcConfig(
        ptl=ptl,
        min_spatial_segmentation_idc=min_spatial,
        parallelism_type=parallelism,
        chroma_format_idc=chroma,
        bit_depth_luma=luma_depth,
        bit_depth_chroma=chroma_depth,
        avg_frame_rate=avg_frame_rate,
        constant_frame_rate=flags >> 6,
        num_temporal_layers=(flags >> 3) & 0x07,
        temporal_id_nested=bool(flags & 0x04),
        length_size=length_size,
        arrays=tuple(arrays),
    )
