"""MSE/RFC 6381 codec strings derived from the stream's own config record."""

from __future__ import annotations

from typing import Literal

from flumph.media.bitstream import parse_av1c, parse_avcc, parse_hvcc

Codec = Literal["av1", "hevc", "h264"]


def _reverse_bits32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def av1_codec_string(av1c: bytes) -> str:
    """``av01.P.LLT.DD`` (AV1-ISOBMFF, Codecs Parameter String).

    The optional tail (mono, subsampling, colour) is written only when the stream is not
    4:2:0 colour, because the short form means exactly "4:2:0, BT.709, limited range" to a
    browser and is what every encoder we use produces.
    """
    config = parse_av1c(av1c)
    tier = "H" if config.tier else "M"
    short = f"av01.{config.profile}.{config.level_idx:02d}{tier}.{config.bit_depth:02d}"
    if not config.monochrome and (config.subsampling_x, config.subsampling_y) == (1, 1):
        return short
    seq = config.sequence_header()
    primaries, transfer, matrix, full_range = (1, 1, 1, 0)
    if seq is not None and seq.color_primaries != 2:
        primaries = seq.color_primaries
    if seq is not None and seq.transfer_characteristics != 2:
        transfer = seq.transfer_characteristics
    if seq is not None and seq.matrix_coefficients != 2:
        matrix = seq.matrix_coefficients
    if seq is not None:
        full_range = seq.color_range
    subsampling = (
        f"{config.subsampling_x}{config.subsampling_y}"
        f"{config.chroma_sample_position if config.subsampling_x and config.subsampling_y else 0}"
    )
    return (
        f"{short}.{int(config.monochrome)}.{subsampling}."
        f"{primaries:02d}.{transfer:02d}.{matrix:02d}.{full_range}"
    )


def hevc_codec_string(hvcc: bytes) -> str:
    """``hvc1.[A-C]P.C.TL.B...`` (ISO/IEC 14496-15 Annex E); always the hvc1 sample entry."""
    ptl = parse_hvcc(hvcc).ptl
    space = ("", "A", "B", "C")[ptl.profile_space]
    compatibility = f"{_reverse_bits32(ptl.compatibility_flags):X}"
    tier = "H" if ptl.tier_flag else "L"
    constraint_bytes = list(ptl.constraint_flags.to_bytes(6, "big"))
    while constraint_bytes and constraint_bytes[-1] == 0:
        constraint_bytes.pop()
    fields = [f"hvc1.{space}{ptl.profile_idc}", compatibility, f"{tier}{ptl.level_idc}"]
    fields += [f"{byte:02X}" for byte in constraint_bytes]
    return ".".join(fields)


def avc_codec_string(avcc: bytes) -> str:
    """``avc1.PPCCLL`` from the record's profile, constraint flags and level (RFC 6381)."""
    config = parse_avcc(avcc)
    return f"avc1.{config.profile_idc:02X}{config.constraint_flags:02X}{config.level_idc:02X}"


def codec_string(codec: Codec, config: bytes) -> str:
    """The MSE codec string for a track of ``codec`` described by its av1C/hvcC/avcC record."""
    if codec == "av1":
        return av1_codec_string(config)
    if codec == "hevc":
        return hevc_codec_string(config)
    if codec == "h264":
        return avc_codec_string(config)
    raise ValueError(f"codec {codec!r} has no codec string here: expected av1, hevc or h264")
