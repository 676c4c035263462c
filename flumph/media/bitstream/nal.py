"""H.264/H.265 NAL unit types and framing: Annex B start codes and length prefixes."""

from __future__ import annotations

from collections.abc import Iterable

from flumph.media.bitstream.bits import _SHOWN_BYTES

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


def h264_nal_type(nal: bytes) -> int:
    if not nal:
        raise ValueError("empty H.264 NAL unit has no header")
    return nal[0] & 0x1F


def hevc_nal_type(nal: bytes) -> int:
    if len(nal) < 2:
        raise ValueError(f"H.265 NAL unit of {len(nal)} byte(s) is shorter than its 2-byte header")
    return (nal[0] >> 1) & 0x3F


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
