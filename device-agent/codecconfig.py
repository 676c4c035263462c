"""Decoder configuration records for Matroska ``CodecPrivate``: av1C, hvcC, avcC. Pure bytes.

Built from what an encoder opened with ``AV_CODEC_FLAG_GLOBAL_HEADER`` leaves in ``extradata``
(Annex B parameter sets for H.264/H.265, a sequence header OBU for AV1), or from the first
keyframe's in-band headers when a (hardware) encoder leaves extradata empty. Parameter sets are
carried only here, never in-band, so a viewer that starts from this record can decode.
Layouts: AV1 Codec ISO Media File Format Binding §2.3; ISO/IEC 14496-15 §5.3.3 (avcC) and
§8.3.3 (hvcC).
"""

from __future__ import annotations

from dataclasses import dataclass

# Codec families as the agent names them.
AV1 = "av1"
HEVC = "hevc"
H264 = "h264"

MATROSKA_CODEC_IDS = {AV1: "V_AV1", HEVC: "V_MPEGH/ISO/HEVC", H264: "V_MPEG4/ISO/AVC"}

_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34
_H264_SPS, _H264_PPS = 7, 8
_OBU_SEQUENCE_HEADER = 1


class BitReader:
    """MSB-first bit reader with the Exp-Golomb and AV1 uvlc codes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise ValueError(
                    f"bitstream truncated: needed bit {self._pos} of {len(self._data) * 8}"
                )
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bitstream: Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def uvlc(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros >= 32:
                return (1 << 32) - 1
        return (1 << zeros) - 1 + self.u(zeros)


def split_annex_b(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 or 00 00 00 01)."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    nals = []
    for n, start in enumerate(starts):
        end = starts[n + 1] - 3 if n + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00") if n + 1 < len(starts) else data[start:end]
        if nal:
            nals.append(nal)
    return nals


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _hevc_nal_type(nal: bytes) -> int:
    return (nal[0] >> 1) & 0x3F


@dataclass(frozen=True)
class _HevcSps:
    ptl: bytes  # general_profile_space..general_level_idc, 12 bytes as coded
    max_sub_layers: int
    temporal_id_nesting: int
    chroma_format_idc: int
    bit_depth_luma_minus8: int
    bit_depth_chroma_minus8: int


def _parse_hevc_sps(nal: bytes) -> _HevcSps:
    rbsp = unescape_rbsp(nal[2:])
    if len(rbsp) < 14:
        raise ValueError(f"HEVC SPS too short ({len(nal)} bytes)")
    r = BitReader(rbsp)
    r.u(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.u(3)
    nesting = r.u(1)
    ptl = rbsp[1:13]
    r.u(96)
    sub_profile, sub_level = [], []
    for _ in range(max_sub_layers_minus1):
        sub_profile.append(r.u(1))
        sub_level.append(r.u(1))
    if max_sub_layers_minus1 > 0:
        for _ in range(max_sub_layers_minus1, 8):
            r.u(2)
    for i in range(max_sub_layers_minus1):
        if sub_profile[i]:
            r.u(88)
        if sub_level[i]:
            r.u(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma = r.ue()
    if chroma == 3:
        r.u(1)
    r.ue()  # pic_width_in_luma_samples
    r.ue()  # pic_height_in_luma_samples
    if r.u(1):  # conformance_window_flag
        for _ in range(4):
            r.ue()
    return _HevcSps(ptl, max_sub_layers_minus1 + 1, nesting, chroma, r.ue(), r.ue())


def hvcc_from_annex_b(data: bytes) -> bytes:
    """An hvcC record from Annex B VPS/SPS/PPS (anything else, e.g. SEI, is left out)."""
    arrays: dict[int, list[bytes]] = {_HEVC_VPS: [], _HEVC_SPS: [], _HEVC_PPS: []}
    for nal in split_annex_b(data):
        kind = _hevc_nal_type(nal)
        if kind in arrays and nal not in arrays[kind]:
            arrays[kind].append(nal)
    missing = [name for name, k in (("VPS", 32), ("SPS", 33), ("PPS", 34)) if not arrays[k]]
    if missing:
        raise ValueError(f"HEVC parameter sets missing: {', '.join(missing)}")
    sps = _parse_hevc_sps(arrays[_HEVC_SPS][0])
    out = bytearray([1])
    out += sps.ptl
    out += (0xF000).to_bytes(2, "big")  # min_spatial_segmentation_idc = 0 (unknown)
    out.append(0xFC)  # parallelismType = 0 (unknown)
    out.append(0xFC | sps.chroma_format_idc)
    out.append(0xF8 | sps.bit_depth_luma_minus8)
    out.append(0xF8 | sps.bit_depth_chroma_minus8)
    out += b"\x00\x00"  # avgFrameRate unspecified
    out.append((sps.max_sub_layers << 3) | (sps.temporal_id_nesting << 2) | 3)  # 4-byte lengths
    out.append(len(arrays))
    for kind, nals in arrays.items():
        out.append(0x80 | kind)  # array_completeness: parameter sets are never sent in-band
        out += len(nals).to_bytes(2, "big")
        for nal in nals:
            out += len(nal).to_bytes(2, "big") + nal
    return bytes(out)


_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def avcc_from_annex_b(data: bytes) -> bytes:
    """An avcC record from Annex B SPS/PPS."""
    sps_list = [n for n in split_annex_b(data) if n[0] & 0x1F == _H264_SPS]
    pps_list = [n for n in split_annex_b(data) if n[0] & 0x1F == _H264_PPS]
    if not sps_list or not pps_list:
        raise ValueError("H.264 parameter sets missing: " + ("SPS" if not sps_list else "PPS"))
    sps = sps_list[0]
    if len(sps) < 4:
        raise ValueError(f"H.264 SPS too short ({len(sps)} bytes)")
    profile = sps[1]
    out = bytearray([1, profile, sps[2], sps[3], 0xFF, 0xE0 | len(sps_list)])
    for nal in sps_list:
        out += len(nal).to_bytes(2, "big") + nal
    out.append(len(pps_list))
    for nal in pps_list:
        out += len(nal).to_bytes(2, "big") + nal
    if profile in _H264_HIGH_PROFILES:
        r = BitReader(unescape_rbsp(sps[4:]))
        r.ue()  # seq_parameter_set_id
        chroma = r.ue()
        if chroma == 3:
            r.u(1)
        luma, chroma_depth = r.ue(), r.ue()
        out += bytes([0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth, 0])
    return bytes(out)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        if pos + i >= len(data):
            raise ValueError("AV1 OBU size truncated")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("AV1 OBU size longer than 8 bytes")


def iter_obus(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(obu_type, whole OBU, payload) for each OBU of a low-overhead bitstream."""
    out = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if header & 0x80:
            raise ValueError(f"AV1 OBU forbidden bit set at offset {pos}")
        obu_type = (header >> 3) & 0x0F
        start = pos
        pos += 2 if header & 0x04 else 1
        if not header & 0x02:
            raise ValueError("AV1 OBU without size field (not a low-overhead bitstream)")
        size, pos = _leb128(data, pos)
        if pos + size > len(data):
            raise ValueError(f"AV1 OBU at offset {start} runs past the end ({size} bytes)")
        out.append((obu_type, data[start : pos + size], data[pos : pos + size]))
        pos += size
    return out


def _av1c_fields(seq: bytes) -> bytes:
    """The three av1C bytes after the marker, from a sequence header OBU payload."""
    r = BitReader(seq)
    profile = r.u(3)
    r.u(1)  # still_picture
    reduced = r.u(1)
    tier0 = 0
    if reduced:
        level0 = r.u(5)
    else:
        decoder_model = 0
        buffer_delay_len = 0
        if r.u(1):  # timing_info_present_flag
            r.u(64)
            if r.u(1):  # equal_picture_interval
                r.uvlc()
            decoder_model = r.u(1)
            if decoder_model:
                buffer_delay_len = r.u(5) + 1
                r.u(32 + 5 + 5)
        display_delay = r.u(1)
        level0 = -1
        for i in range(r.u(5) + 1):
            r.u(12)  # operating_point_idc
            level = r.u(5)
            tier = r.u(1) if level > 7 else 0
            if i == 0:
                level0, tier0 = level, tier
            if decoder_model and r.u(1):
                r.u(2 * buffer_delay_len + 1)
            if display_delay and r.u(1):
                r.u(4)
    wbits, hbits = r.u(4) + 1, r.u(4) + 1
    r.u(wbits + hbits)
    if not reduced and r.u(1):  # frame_id_numbers_present_flag
        r.u(7)
    r.u(3)  # use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    order_hint = 0
    if not reduced:
        r.u(4)  # interintra, masked compound, warped motion, dual filter
        order_hint = r.u(1)
        if order_hint:
            r.u(2)
        force_sct = 2 if r.u(1) else r.u(1)
        if force_sct > 0 and not r.u(1):
            r.u(1)
        if order_hint:
            r.u(3)
    r.u(3)  # superres, cdef, restoration
    high = r.u(1)
    twelve = r.u(1) if profile == 2 and high else 0
    mono = 0 if profile == 1 else r.u(1)
    cp, tc, mc = 2, 2, 2
    if r.u(1):
        cp, tc, mc = r.u(8), r.u(8), r.u(8)
    ssx, ssy, csp = 1, 1, 0
    if mono:
        r.u(1)
    elif cp == 1 and tc == 13 and mc == 0:
        ssx = ssy = 0
    else:
        r.u(1)  # color_range
        if profile == 0:
            ssx = ssy = 1
        elif profile == 1:
            ssx = ssy = 0
        elif twelve:
            ssx = r.u(1)
            ssy = r.u(1) if ssx else 0
        else:
            ssx, ssy = 1, 0
        if ssx and ssy:
            csp = r.u(2)
    return bytes(
        [
            (profile << 5) | level0,
            (tier0 << 7)
            | (high << 6)
            | (twelve << 5)
            | (mono << 4)
            | (ssx << 3)
            | (ssy << 2)
            | csp,
            0,  # no initial_presentation_delay
        ]
    )


def av1c_from_obus(data: bytes) -> bytes:
    """An av1C record from a bitstream holding a sequence header OBU (which it carries)."""
    for obu_type, whole, payload in iter_obus(data):
        if obu_type == _OBU_SEQUENCE_HEADER:
            return b"\x81" + _av1c_fields(payload) + whole
    raise ValueError("AV1 sequence header OBU missing")


def codec_private(codec: str, headers: bytes) -> bytes:
    """The Matroska CodecPrivate for ``codec`` from extradata or a keyframe's in-band headers."""
    if codec == AV1:
        return av1c_from_obus(headers)
    if codec == HEVC:
        return hvcc_from_annex_b(headers)
    if codec == H264:
        return avcc_from_annex_b(headers)
    raise ValueError(f"codec {codec!r} is not one of av1, hevc, h264")
