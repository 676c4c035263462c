"""Encoded clips for the agent benchmarks: the synthetic camera rendered on a fixed clock (so a
clip is the same whatever the machine's speed), encoded with the agent's own encoders, and kept as
IVF (or raw) plus a JSON sidecar."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

U8Array = npt.NDArray[np.uint8]


def synthetic_frames(
    width: int, height: int, fps: int, count: int, seed: int = 7
) -> Iterator[U8Array]:
    """``count`` I420 pictures (shape (h*3/2, w)) of the agent's synthetic camera, frame i shown as
    if captured i/fps seconds after the start, however fast this machine renders."""
    from flumph.agent.sources import SyntheticSource

    source = SyntheticSource(width, height, fps, seed=seed)
    wall0 = 1_767_225_600.0  # a fixed clock for the overlay text (2026-01-01 00:00 UTC)
    for i in range(count):
        # The source moves with time.monotonic(); putting its start i/fps back makes the motion
        # depend on the frame index alone (a private attribute, on purpose: bench-only).
        source._t0 = time.monotonic() - i / fps
        yield source.render(i, wall0 + i / fps)


@dataclass
class EncodedClip:
    codec: str  # av1 | hevc | h264
    encoder: str
    width: int
    height: int
    fps: int
    target_kbps: int
    extradata: bytes
    packets: list[bytes] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    encode_wall_s: float = 0.0  # inside encode() calls
    encode_cpu_s: float = 0.0  # process CPU (all threads) inside encode() calls

    @property
    def video_bytes(self) -> int:
        return sum(len(p) for p in self.packets)

    @property
    def seconds(self) -> float:
        return len(self.packets) / self.fps

    @property
    def achieved_kbps(self) -> float:
        return self.video_bytes * 8 / self.seconds / 1000 if self.packets else 0.0

    def sidecar(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "encoder": self.encoder,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "target_kbps": self.target_kbps,
            "extradata": self.extradata.hex(),
            "keyframes": [i for i, k in enumerate(self.keyframes) if k],
            "frames": len(self.packets),
            "video_bytes": self.video_bytes,
            "encode_wall_s": self.encode_wall_s,
            "encode_cpu_s": self.encode_cpu_s,
        }


def encode_frames(
    codec: str, width: int, height: int, fps: int, kbps: int, frames: Iterator[U8Array]
) -> EncodedClip:
    """Encode I420 pictures with the encoder the agent would open for ``codec`` here (software
    only: hardware probing is skipped), with the agent's settings."""
    import av

    from flumph.agent.encoders import SOFTWARE, EncoderSelector
    from flumph.settings import StreamSettings

    settings = StreamSettings(codec=codec, width=width, height=height, fps=fps, bitrate_kbps=kbps)
    encoder = EncoderSelector(available={SOFTWARE[codec]}).open(settings).encoder
    clip = EncodedClip(codec, encoder.name, width, height, fps, kbps, b"")
    for n, picture in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        packets = encoder.encode(frame, force_keyframe=n == 0)
        clip.encode_wall_s += time.perf_counter() - wall0
        clip.encode_cpu_s += time.process_time() - cpu0
        for p in packets:
            clip.packets.append(p.data)
            clip.keyframes.append(p.keyframe)
    for p in encoder.flush():
        clip.packets.append(p.data)
        clip.keyframes.append(p.keyframe)
    clip.extradata = encoder.extradata
    return clip


# AV01 is what ffmpeg reads; H265/H264 in IVF are only for our own reader (bench files).
_IVF_FOURCC = {"av1": b"AV01", "hevc": b"H265", "h264": b"H264"}


def write_ivf(path: Path, clip: EncodedClip) -> None:
    """The clip as IVF (what ``ffmpeg -i`` reads with timestamps) + ``<path>.json`` sidecar."""
    fourcc = _IVF_FOURCC.get(clip.codec)
    if fourcc is None:
        raise ValueError(f"codec {clip.codec!r} is not one of av1, hevc, h264")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(b"DKIF")
        f.write(
            struct.pack(
                "<HH4sHHIIII",
                0,
                32,
                fourcc,
                clip.width,
                clip.height,
                clip.fps,
                1,
                len(clip.packets),
                0,
            )
        )
        for pts, packet in enumerate(clip.packets):
            f.write(struct.pack("<IQ", len(packet), pts) + packet)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(clip.sidecar(), indent=1))


def read_ivf(path: Path) -> EncodedClip:
    meta = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    data = path.read_bytes()
    if data[:4] != b"DKIF":
        raise ValueError(f"{path} is not an IVF file")
    pos = struct.unpack_from("<H", data, 6)[0]
    packets = []
    while pos < len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        packets.append(data[pos + 12 : pos + 12 + size])
        pos += 12 + size
    keys = set(meta["keyframes"])
    return EncodedClip(
        meta["codec"],
        meta["encoder"],
        meta["width"],
        meta["height"],
        meta["fps"],
        meta["target_kbps"],
        bytes.fromhex(meta["extradata"]),
        packets,
        [i in keys for i in range(len(packets))],
        meta["encode_wall_s"],
        meta["encode_cpu_s"],
    )
