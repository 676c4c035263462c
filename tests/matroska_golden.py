"""Deterministic writer inputs whose output was captured from the agent's writer (device-agent/
mkvlive.py) before it moved to the core: ``tests/data/matroska/writer-golden.bin`` holds those
bytes, and the core writer must reproduce them exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

GOLDEN = Path(__file__).resolve().parent / "data" / "matroska" / "writer-golden.bin"

_TD = b"\x12\x00"  # AV1 temporal delimiter OBU with an empty size field


def _obu(obu_type: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([(obu_type << 3) | 0x02, len(payload)]) + payload


def _annex_b(nals: list[bytes], long_start: bool) -> bytes:
    start = b"\x00\x00\x00\x01" if long_start else b"\x00\x00\x01"
    return b"".join(start + n for n in nals)


# (codec, width, height, codec_private, fps, [(timestamp_ms, keyframe, packet)])
Case = tuple[str, int, int, bytes, float | None, list[tuple[int, bool, bytes]]]


def cases() -> list[Case]:
    av1 = [
        (0, True, _TD + _obu(1, b"\x00\x00\x00\x02\xaf\xff\x9b\x5f") + _obu(6, bytes(range(40)))),
        (67, False, _TD + _obu(6, b"\x10" * 20)),
        (133, False, _obu(6, b"\x20" * 90)),  # no temporal delimiter
        (40_200, False, _TD + _obu(6, b"\x30" * 5)),  # > 30 s after the cluster: a new one
        (40_267, True, _obu(6, b"\x40" * 120)),
    ]
    hevc = [
        (0, True, _annex_b([b"\x40\x01\x0c", b"\x42\x01\x01", b"\x26\x01" + b"\xaa" * 300], True)),
        (33, False, _annex_b([b"\x02\x01" + b"\xbb" * 16], False)),
        (66, False, (18).to_bytes(4, "big") + b"\x02\x01" + b"\xcc" * 16),  # already prefixed
        (10, False, _annex_b([b"\x02\x01\xdd"], True)),  # backwards: a new cluster
    ]
    h264 = [
        (1000, True, _annex_b([b"\x67\x64\x00\x28", b"\x68\xee", b"\x65" + b"\x11" * 20000], True)),
        (1033, False, _annex_b([b"\x41" + b"\x22" * 50, b"\x41\x23"], False)),
        (31_033, False, _annex_b([b"\x41\x24"], True)),  # exactly 30 s: same cluster
        (31_034, False, _annex_b([b"\x41\x25"], True)),
    ]
    return [
        ("av1", 640, 360, b"\x81\x00\x0c\x00", 15.0, av1),
        ("hevc", 3840, 2160, bytes(range(23)), None, hevc),
        ("h264", 1920, 1080, b"\x01\x64\x00\x28\xff\xe1", 29.97, h264),
    ]


@contextmanager
def fixed_track_uid() -> Iterator[None]:
    """The writer draws a random TrackUID; pin it so the bytes are reproducible."""
    with mock.patch("secrets.token_bytes", lambda n: bytes(range(1, n + 1))):
        yield


def render(track_info: Callable[..., Any], writer: Callable[[Any], Any]) -> bytes:
    """Every case through ``writer(track_info(...))``: the documents back to back."""
    out = bytearray()
    with fixed_track_uid():
        for codec, width, height, private, fps, frames in cases():
            w = writer(track_info(codec, width, height, private, fps))
            for timestamp_ms, keyframe, packet in frames:
                out += w.write(timestamp_ms, keyframe, packet)
    return bytes(out)
