"""H.264/H.265 NAL units and AV1 OBUs: splitting, parameter-set parsing, config records.

Everything here is bytes in, values or bytes out. Malformed input raises ValueError with a
message naming the structure and the field that did not fit; no other exception escapes
for any input bytes (the fuzz tests hold us to that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# --- NAL unit types -----------------------------------------------------------------------

H264_NAL_IDR = 5
H264_NAL_SEI = 6
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9
H264_NAL_FILLER = 12

HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_AUD = 35
HEVC_NAL_FILLER = 38
HEVC_NAL_SEI_PREFIX = 39
HEVC_NAL_SEI_SUFFIX = 40

_START_CODE = b"\x00\x00\x01"
_SHOWN_BYTES = 16
_MAX_RECORD_NAL = 0xFFFF  # config records store NAL lengths in 16 bits


def h264_nal_type(nal: bytes) -> int:
    if not nal:
        raise ValueError("empty H.264 NAL unit has no header")
    return nal[0] & 0x1F


def hevc_nal_type(nal: bytes) -> int:
    if len(nal) < 2:
        raise ValueError(f"H.265 NAL unit of {len(nal)} byte(s) is shorter than its 2-byte header")
    return (nal[0] >> 1) & 0x3F


# --- Bit reading ----------------------------------------------------------------------------


class BitReader:
    """MSB-first reader over an RBSP; every overrun is a ValueError naming ``what``."""

    def __init__(self, data: bytes, what: str) -> None:
        self._value = int.from_bytes(data, "big")
        self._total = len(data) * 8
        self._pos = 0
        self.what = what

    @property
    def bits_left(self) -> int:
        return self._total - self._pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self._pos + n > self._total:
            raise ValueError(
                f"{self.what} is truncated: needed {n} more bit(s) at bit {self._pos} "
                f"of {self._total}"
            )
        shift = self._total - self._pos - n
        self._pos += n
        return (self._value >> shift) & ((1 << n) - 1)

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._total:
            raise ValueError(
                f"{self.what} is truncated: needed {n} more bit(s) at bit {self._pos} "
                f"of {self._total}"
            )
        self._pos += n

    def ue(self, field: str, maximum: int = 0xFFFFFFFE) -> int:
        """Unsigned exp-Golomb, bounded so garbage cannot produce huge values."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros > 31:
                raise ValueError(f"{self.what}: exp-Golomb code of {field} is longer than 32 bits")
        value = (1 << leading_zeros) - 1 + self.u(leading_zeros)
        if value > maximum:
            raise ValueError(f"{self.what}: {field} = {value} exceeds its maximum {maximum}")
        return value

    def se(self, field: str) -> int:
        code = self.ue(field)
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def uvlc(self, field: str) -> int:
        """AV1 uvlc(): like ue() but saturating at 2**32 - 1."""
        leading_zeros = 0
        while self.u(1) == 0:
            leading_zeros += 1
            if leading_zeros >= 32:
                return (1 << 32) - 1
        return (1 << leading_zeros) - 1 + self.u(leading_zeros)


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (the 0x03 of every 0x000003)."""
    # bytes.replace scans left to right without overlap, which is exactly the rule: the
    # zero count restarts after each removed 0x03.
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


# --- Annex B and length-prefixed framing -------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream into NAL units (start codes and trailing zeros removed)."""
    if not data:
        return []
    first = data.find(_START_CODE)
    if first < 0 or data[:first].strip(b"\x00"):
        raise ValueError(
            f"Annex B data does not start with a start code (first bytes: "
            f"'{data[:_SHOWN_BYTES].hex()}')"
        )
    nals: list[bytes] = []
    start = first + len(_START_CODE)
    while True:
        nxt = data.find(_START_CODE, start)
        end = len(data) if nxt < 0 else nxt
        # Trailing zeros belong to the next 4-byte start code or are trailing_zero_8bits.
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        start = nxt + len(_START_CODE)


def is_annexb(data: bytes) -> bool:
    return data.startswith(_START_CODE) or data.startswith(b"\x00" + _START_CODE)


def to_annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def to_length_prefixed(nals: Iterable[bytes]) -> bytes:
    """Join NAL units, each preceded by its 4-byte big-endian length."""
    out = bytearray()
    for index, nal in enumerate(nals):
        if not nal:
            raise ValueError(f"NAL unit {index} is empty")
        if len(nal) > 0xFFFFFFFF:
            raise ValueError(f"NAL unit {index} of {len(nal)} bytes does not fit a 4-byte length")
        out += len(nal).to_bytes(4, "big")
        out += nal
    return bytes(out)


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units (lengths of ``length_size`` bytes, big-endian)."""
    if length_size not in (1, 2, 4):
        raise ValueError(f"NAL length size {length_size} is not 1, 2 or 4")
    nals: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            raise ValueError(
                f"length-prefixed data is truncated: {len(data) - pos} byte(s) left at offset "
                f"{pos}, less than a {length_size}-byte length"
            )
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size > len(data) - pos:
            raise ValueError(
                f"length-prefixed data is truncated: NAL unit at offset {pos - length_size} "
                f"claims {size} bytes but {len(data) - pos} remain"
            )
        if size:
            nals.append(data[pos : pos + size])
        pos += size
    return nals


# --- H.264 -------------------------------------------------------------------------------------

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


def _nal_list_bytes(nals: Sequence[bytes], what: str) -> bytes:
    out = bytearray()
    for nal in nals:
        if not nal or len(nal) > _MAX_RECORD_NAL:
            raise ValueError(f"{what} of {len(nal)} bytes cannot be stored in a config record")
        out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


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


class _ByteReader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n > self.left:
            raise ValueError(
                f"{self.what} is truncated: {field} needs {n} byte(s) at offset {self.pos}, "
                f"{self.left} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self, n: int, field: str) -> int:
        return int.from_bytes(self.take(n, field), "big")


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


def _read_record_nal(
    r: _ByteReader, what: str, expected_type: int, type_of: Callable[[bytes], int]
) -> bytes:
    size = r.int(2, f"{what} length")
    nal = r.take(size, what)
    try:
        got: int | str = type_of(nal)
    except ValueError:
        got = "none (too short)"
    if got != expected_type:
        raise ValueError(f"{r.what}: {what} has NAL type {got}, expected {expected_type}")
    return nal


# --- H.265 -------------------------------------------------------------------------------------


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


# --- AV1 -----------------------------------------------------------------------------------------

OBU_SEQUENCE_HEADER = 1
OBU_TEMPORAL_DELIMITER = 2
OBU_FRAME_HEADER = 3
OBU_TILE_GROUP = 4
OBU_METADATA = 5
OBU_FRAME = 6
OBU_TILE_LIST = 8
OBU_PADDING = 15


@dataclass(frozen=True)
class Obu:
    obu_type: int
    extension: int | None  # the extension header byte, when present
    payload: bytes
    raw: bytes  # the OBU exactly as it appeared, header included


def _read_leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for index in range(8):
        if pos + index >= len(data):
            raise ValueError(f"AV1 OBU size field is truncated at offset {pos + index}")
        byte = data[pos + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value > 0xFFFFFFFF:
                raise ValueError(f"AV1 OBU size {value} exceeds 2**32 - 1")
            return value, pos + index + 1
    raise ValueError(f"AV1 OBU size field at offset {pos} is longer than 8 bytes")


def leb128(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"leb128 value {value} is outside 0..2**32-1")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def split_obus(data: bytes) -> list[Obu]:
    """Split low-overhead AV1 data into OBUs; an OBU without a size field runs to the end."""
    obus: list[Obu] = []
    pos = 0
    while pos < len(data):
        start = pos
        header = data[pos]
        if header & 0x80:
            raise ValueError(f"AV1 OBU at offset {pos} has its forbidden bit set")
        obu_type = (header >> 3) & 0x0F
        has_extension = bool(header & 0x04)
        has_size = bool(header & 0x02)
        pos += 1
        extension = None
        if has_extension:
            if pos >= len(data):
                raise ValueError(f"AV1 OBU at offset {start} is truncated in its extension header")
            extension = data[pos]
            pos += 1
        if has_size:
            size, pos = _read_leb128(data, pos)
        else:
            size = len(data) - pos
        if size > len(data) - pos:
            raise ValueError(
                f"AV1 OBU of type {obu_type} at offset {start} claims {size} bytes but "
                f"{len(data) - pos} remain"
            )
        obus.append(
            Obu(
                obu_type=obu_type,
                extension=extension,
                payload=data[pos : pos + size],
                raw=data[start : pos + size],
            )
        )
        pos += size
    return obus


def obu_bytes(obu_type: int, payload: bytes, extension: int | None = None) -> bytes:
    """Serialize an OBU with a size field."""
    header = (obu_type << 3) | 0x02 | (0x04 if extension is not None else 0)
    ext = b"" if extension is None else bytes([extension])
    return bytes([header]) + ext + leb128(len(payload)) + payload


@dataclass(frozen=True)
class Av1SequenceHeader:
    profile: int
    still_picture: bool
    level_idx: int  # of operating point 0
    tier: int  # of operating point 0
    max_width: int
    max_height: int
    bit_depth: int
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    color_range: int

    @property
    def high_bitdepth(self) -> bool:
        return self.bit_depth > 8

    @property
    def twelve_bit(self) -> bool:
        return self.bit_depth == 12


def _skip_av1_operating_points(
    r: BitReader, decoder_model_info: bool, buffer_delay_bits: int, display_delay: bool
) -> tuple[int, int]:
    level0 = tier0 = 0
    for index in range(r.u(5) + 1):
        r.skip(12)  # operating_point_idc
        level = r.u(5)
        tier = r.u(1) if level > 7 else 0
        if index == 0:
            level0, tier0 = level, tier
        if decoder_model_info and r.flag():
            r.skip(2 * buffer_delay_bits + 1)  # decoder/encoder_buffer_delay, low_delay_mode
        if display_delay and r.flag():
            r.skip(4)  # initial_display_delay_minus_1
    return level0, tier0


def parse_av1_sequence_header(payload: bytes) -> Av1SequenceHeader:
    """Parse a sequence_header_obu() payload (AV1 spec 5.5) through color_config()."""
    r = BitReader(payload, "AV1 sequence header")
    profile = r.u(3)
    if profile > 2:
        raise ValueError(f"AV1 sequence header: seq_profile {profile} is reserved")
    still_picture = r.flag()
    reduced = r.flag()
    if reduced:
        level0, tier0 = r.u(5), 0
    else:
        timing_info = r.flag()
        decoder_model_info = False
        buffer_delay_bits = 0
        if timing_info:
            r.skip(64)  # num_units_in_display_tick, time_scale
            if r.flag():  # equal_picture_interval
                r.uvlc("num_ticks_per_picture_minus_1")
            decoder_model_info = r.flag()
            if decoder_model_info:
                buffer_delay_bits = r.u(5) + 1
                r.skip(32 + 5 + 5)
        display_delay = r.flag()
        level0, tier0 = _skip_av1_operating_points(
            r, decoder_model_info, buffer_delay_bits, display_delay
        )
    width_bits = r.u(4) + 1
    height_bits = r.u(4) + 1
    max_width = r.u(width_bits) + 1
    max_height = r.u(height_bits) + 1
    if not reduced and r.flag():  # frame_id_numbers_present_flag
        r.skip(4 + 3)
    r.skip(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if not reduced:
        r.skip(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = r.flag()
        if order_hint:
            r.skip(2)  # enable_jnt_comp, enable_ref_frame_mvs
        force_screen_content_tools = 2 if r.flag() else r.u(1)
        if force_screen_content_tools > 0 and not r.flag():
            r.skip(1)  # seq_force_integer_mv
        if order_hint:
            r.skip(3)  # order_hint_bits_minus_1
    r.skip(3)  # enable_superres, enable_cdef, enable_restoration
    return _parse_av1_color_config(r, profile, still_picture, level0, tier0, max_width, max_height)


def _parse_av1_color_config(
    r: BitReader,
    profile: int,
    still_picture: bool,
    level0: int,
    tier0: int,
    max_width: int,
    max_height: int,
) -> Av1SequenceHeader:
    high_bitdepth = r.flag()
    if profile == 2 and high_bitdepth:
        bit_depth = 12 if r.flag() else 10
    else:
        bit_depth = 10 if high_bitdepth else 8
    monochrome = False if profile == 1 else r.flag()
    primaries = transfer = matrix = 2  # CP/TC/MC_UNSPECIFIED
    if r.flag():  # color_description_present_flag
        primaries, transfer, matrix = r.u(8), r.u(8), r.u(8)
    sample_position = 0
    if monochrome:
        color_range = r.u(1)
        subsampling_x = subsampling_y = 1
    elif primaries == 1 and transfer == 13 and matrix == 0:  # sRGB
        color_range = 1
        subsampling_x = subsampling_y = 0
    else:
        color_range = r.u(1)
        if profile == 0:
            subsampling_x = subsampling_y = 1
        elif profile == 1:
            subsampling_x = subsampling_y = 0
        elif bit_depth == 12:
            subsampling_x = r.u(1)
            subsampling_y = r.u(1) if subsampling_x else 0
        else:
            subsampling_x, subsampling_y = 1, 0
        if subsampling_x and subsampling_y:
            sample_position = r.u(2)
    return Av1SequenceHeader(
        profile=profile,
        still_picture=still_picture,
        level_idx=level0,
        tier=tier0,
        max_width=max_width,
        max_height=max_height,
        bit_depth=bit_depth,
        monochrome=monochrome,
        subsampling_x=subsampling_x,
        subsampling_y=subsampling_y,
        chroma_sample_position=sample_position,
        color_primaries=primaries,
        transfer_characteristics=transfer,
        matrix_coefficients=matrix,
        color_range=color_range,
    )


def find_sequence_header(obus: Iterable[Obu]) -> Obu | None:
    for obu in obus:
        if obu.obu_type == OBU_SEQUENCE_HEADER:
            return obu
    return None


@dataclass(frozen=True)
class Av1Config:
    """An AV1CodecConfigurationRecord (av1C payload)."""

    profile: int
    level_idx: int
    tier: int
    high_bitdepth: bool
    twelve_bit: bool
    monochrome: bool
    subsampling_x: int
    subsampling_y: int
    chroma_sample_position: int
    initial_presentation_delay_minus_one: int | None
    config_obus: bytes

    @property
    def bit_depth(self) -> int:
        if self.twelve_bit:
            return 12
        return 10 if self.high_bitdepth else 8

    def sequence_header(self) -> Av1SequenceHeader | None:
        obu = find_sequence_header(split_obus(self.config_obus))
        return None if obu is None else parse_av1_sequence_header(obu.payload)


def parse_av1c(record: bytes) -> Av1Config:
    if len(record) < 4:
        raise ValueError(f"av1C record of {len(record)} bytes is shorter than its 4-byte header")
    if record[0] != 0x81:
        raise ValueError(f"av1C starts with 0x{record[0]:02x}, expected 0x81 (marker 1, version 1)")
    flags = record[2]
    config_obus = record[4:]
    split_obus(config_obus)  # validates the framing
    delay_present = bool(record[3] & 0x10)
    return Av1Config(
        profile=record[1] >> 5,
        level_idx=record[1] & 0x1F,
        tier=flags >> 7,
        high_bitdepth=bool(flags & 0x40),
        twelve_bit=bool(flags & 0x20),
        monochrome=bool(flags & 0x10),
        subsampling_x=(flags >> 3) & 1,
        subsampling_y=(flags >> 2) & 1,
        chroma_sample_position=flags & 0x03,
        initial_presentation_delay_minus_one=(record[3] & 0x0F) if delay_present else None,
        config_obus=config_obus,
    )


def av1c_from_sequence_header(obus: bytes) -> bytes:
    """Build an av1C record from AV1 OBUs that include a sequence header OBU."""
    header_obu = find_sequence_header(split_obus(obus))
    if header_obu is None:
        raise ValueError("AV1 data holds no sequence header OBU to build av1C from")
    seq = parse_av1_sequence_header(header_obu.payload)
    flags = (
        (seq.tier << 7)
        | (int(seq.high_bitdepth) << 6)
        | (int(seq.twelve_bit) << 5)
        | (int(seq.monochrome) << 4)
        | (seq.subsampling_x << 3)
        | (seq.subsampling_y << 2)
        | seq.chroma_sample_position
    )
    config_obu = obu_bytes(OBU_SEQUENCE_HEADER, header_obu.payload, header_obu.extension)
    # initial_presentation_delay is left absent, as FFmpeg writes it.
    return bytes([0x81, (seq.profile << 5) | seq.level_idx, flags, 0]) + config_obu
