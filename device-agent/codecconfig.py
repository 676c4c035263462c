"""Decoder configuration records for Matroska ``CodecPrivate``: av1C, hvcC, avcC.

Built from what an encoder opened with ``AV_CODEC_FLAG_GLOBAL_HEADER`` leaves in ``extradata``
(Annex B parameter sets for H.264/H.265, a sequence header OBU for AV1), or from the first
keyframe's in-band headers when a (hardware) encoder leaves extradata empty. Parameter sets are
carried only here, never in-band, so a viewer that starts from this record can decode (hence the
hvcC arrays are marked complete). The record layouts themselves live in the core's pure
``flumph.media.bitstream``, shared with the ingest; this module picks the agent's inputs.
"""

from __future__ import annotations

from flumph.media import bitstream as bs
from flumph.media.matroska_header import AV1, H264, HEVC


def split_annex_b(data: bytes) -> list[bytes]:
    return bs.split_annexb(data)


def _unique(nals: list[bytes]) -> list[bytes]:
    return list(dict.fromkeys(nals))


def hvcc_from_annex_b(data: bytes) -> bytes:
    """An hvcC record from Annex B VPS/SPS/PPS (anything else, e.g. SEI, is left out)."""
    nals = split_annex_b(data)
    sets = {
        kind: _unique([n for n in nals if bs.hevc_nal_type(n) == kind])
        for kind in (bs.HEVC_NAL_VPS, bs.HEVC_NAL_SPS, bs.HEVC_NAL_PPS)
    }
    names = {bs.HEVC_NAL_VPS: "VPS", bs.HEVC_NAL_SPS: "SPS", bs.HEVC_NAL_PPS: "PPS"}
    missing = [names[k] for k, v in sets.items() if not v]
    if missing:
        raise ValueError(f"HEVC parameter sets missing: {', '.join(missing)}")
    return bs.build_hvcc(
        sets[bs.HEVC_NAL_VPS],
        sets[bs.HEVC_NAL_SPS],
        sets[bs.HEVC_NAL_PPS],
        array_completeness=True,
    )


def avcc_from_annex_b(data: bytes) -> bytes:
    """An avcC record from Annex B SPS/PPS."""
    nals = split_annex_b(data)
    sps = _unique([n for n in nals if bs.h264_nal_type(n) == bs.H264_NAL_SPS])
    pps = _unique([n for n in nals if bs.h264_nal_type(n) == bs.H264_NAL_PPS])
    if not sps or not pps:
        raise ValueError("H.264 parameter sets missing: " + ("SPS" if not sps else "PPS"))
    return bs.build_avcc(sps, pps)


def av1c_from_obus(data: bytes) -> bytes:
    """An av1C record from a bitstream holding a sequence header OBU (which it carries)."""
    return bs.av1c_from_sequence_header(data)


def codec_private(codec: str, headers: bytes) -> bytes:
    """The Matroska CodecPrivate for ``codec`` from extradata or a keyframe's in-band headers."""
    if codec == AV1:
        return av1c_from_obus(headers)
    if codec == HEVC:
        return hvcc_from_annex_b(headers)
    if codec == H264:
        return avcc_from_annex_b(headers)
    raise ValueError(f"codec {codec!r} is not one of av1, hevc, h264")
