"""Real encoder output for the media tests: small clips encoded and muxed in memory with PyAV.

No tests live here; the other test_media_* modules import these helpers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise

import av
import numpy as np

from flumph.media.repackager import Packet

FPS = 30
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    # Low delay as the agent runs it; SVT-AV1 low-delay refuses VBR, so CBR (rc=2).
    "libsvtav1": {"preset": "10", "svtav1-params": "pred-struct=1:rc=2"},
    "libx265": {"preset": "ultrafast", "tune": "zerolatency", "x265-params": "log-level=error"},
    "libx264": {"preset": "ultrafast", "tune": "zerolatency"},
}
KEYINT_OPTION = {"libsvtav1": "keyint", "libx265": "keyint", "libx264": "keyint"}
CODEC_OF_ENCODER = {"libsvtav1": "av1", "libx265": "hevc", "libx264": "h264"}


def synthetic_frames(
    count: int, width: int, height: int, start: int = 0, pix_fmt: str = "yuv420p"
) -> Iterator[av.VideoFrame]:
    """A moving gradient with a sliding block: cheap, and different every frame."""
    xs = np.arange(width, dtype=np.int32)[None, :]
    ys = np.arange(height, dtype=np.int32)[:, None]
    for index in range(start, start + count):
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:, :, 0] = (xs + index * 4) % 256
        rgb[:, :, 1] = (ys * 2 + index) % 256
        rgb[:, :, 2] = 40
        top = (index * 3) % max(1, height - 20)
        rgb[top : top + 20, width // 4 : width // 4 + 40, 2] = 220
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        frame.pts = index
        # Frames that look intra-coded make some encoders code everything as I frames.
        frame.pict_type = av.video.frame.PictureType.NONE
        yield frame


def encoder_options(
    encoder: str, keyint: int | None, extra: dict[str, str] | None
) -> dict[str, str]:
    options = dict(ENCODER_OPTIONS[encoder])
    if keyint is not None:
        if encoder == "libsvtav1":
            options["svtav1-params"] += f":keyint={keyint}"
        elif encoder == "libx265":
            options["x265-params"] += f":keyint={keyint}:min-keyint={keyint}"
        else:
            options["g"] = str(keyint)
    options.update(extra or {})
    return options


def new_encoder(
    encoder: str,
    width: int,
    height: int,
    keyint: int | None = None,
    pix_fmt: str = "yuv420p",
    extra: dict[str, str] | None = None,
) -> av.VideoCodecContext:
    """A standalone encoder without global header: parameter sets travel in-band."""
    context = av.CodecContext.create(encoder, "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = width, height, pix_fmt
    context.time_base = Fraction(1, FPS)
    context.framerate = Fraction(FPS)
    context.bit_rate = 300_000
    context.options = encoder_options(encoder, keyint, extra)
    return context


def open_output(
    target: io.BytesIO | str, container: str, **options: str
) -> av.container.OutputContainer:
    out = av.open(target, "w", format=container, options=options)
    assert isinstance(out, av.container.OutputContainer)
    return out


def open_input(data: bytes, **options: str) -> av.container.InputContainer:
    source = av.open(io.BytesIO(data), options=options)
    assert isinstance(source, av.container.InputContainer)
    return source


def add_video_stream(
    out: av.container.OutputContainer,
    encoder: str,
    width: int,
    height: int,
    pix_fmt: str = "yuv420p",
    keyint: int | None = None,
    extra: dict[str, str] | None = None,
) -> av.VideoStream:
    stream = out.add_stream(encoder, rate=FPS, options=encoder_options(encoder, keyint, extra))
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = Fraction(1, FPS)
    stream.bit_rate = 300_000
    return stream


@dataclass
class Segment:
    """Part of a clip made by one encoder."""

    encoder: str
    count: int
    width: int = 320
    height: int = 240
    keyint: int | None = None
    pix_fmt: str = "yuv420p"
    extra: dict[str, str] | None = None


def mux_clip(container: str, *segments: Segment) -> bytes:
    """Encode segments back to back into ONE video stream of an in-memory container.

    The first segment uses the stream's own encoder (global header where the container
    wants one); later segments come from separate encoders with in-band parameter sets,
    which is how a mid-stream change of size or config looks on the wire.
    """
    first = segments[0]
    buf = io.BytesIO()
    with open_output(buf, container) as out:
        stream = add_video_stream(
            out,
            first.encoder,
            first.width,
            first.height,
            first.pix_fmt,
            first.keyint,
            first.extra,
        )
        start = 0
        for index, segment in enumerate(segments):
            frames = synthetic_frames(
                segment.count, segment.width, segment.height, start, segment.pix_fmt
            )
            if index == 0:
                for frame in frames:
                    out.mux(stream.encode(frame))
                out.mux(stream.encode(None))
            else:
                encoder = new_encoder(
                    segment.encoder,
                    segment.width,
                    segment.height,
                    segment.keyint,
                    segment.pix_fmt,
                    segment.extra,
                )
                for item in [*frames, None]:
                    for packet in encoder.encode(item):
                        packet.stream = stream
                        out.mux(packet)
            start += segment.count
    return buf.getvalue()


@dataclass
class Demuxed:
    codec_name: str
    extradata: bytes | None
    width: int
    height: int
    time_base: Fraction
    packets: list[Packet]


def demux(data: bytes, **open_options: str) -> Demuxed:
    with open_input(data, **open_options) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        extradata = bytes(context.extradata) if context.extradata else None
        packets = [
            Packet(data=bytes(p), pts=p.pts, dts=p.dts, keyframe=p.is_keyframe)
            for p in container.demux(stream)
            if p.size
        ]
        assert stream.time_base is not None
        return Demuxed(
            codec_name=context.name,
            extradata=extradata,
            width=context.width,
            height=context.height,
            time_base=Fraction(stream.time_base),
            packets=packets,
        )


@dataclass
class Decoded:
    codec_name: str
    width: int
    height: int
    frames: list[av.VideoFrame]
    packet_keyframes: list[bool]


def decode(data: bytes) -> Decoded:
    """Decode everything in an in-memory file with PyAV."""
    with open_input(data) as container:
        stream = container.streams.video[0]
        keyframes: list[bool] = []
        frames: list[av.VideoFrame] = []
        for packet in container.demux(stream):
            if packet.size:
                keyframes.append(packet.is_keyframe)
            frames.extend(packet.decode())
        return Decoded(
            codec_name=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=frames,
            packet_keyframes=keyframes,
        )


def iter_boxes(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, bytes]]:
    """(type, payload) of the ISO BMFF boxes in data[start:end]; asserts the sizes add up."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        assert size >= 8, f"box at {pos} has size {size}"
        assert pos + size <= end, f"box at {pos} overruns its parent"
        yield data[pos + 4 : pos + 8], data[pos + 8 : pos + size]
        pos += size


# Bytes between a box's payload start and its first child box.
_CHILD_OFFSET = {b"stsd": 8, b"avc1": 78, b"hvc1": 78, b"hev1": 78, b"av01": 78}


def find_box(data: bytes, path: list[bytes]) -> bytes | None:
    """Payload of the first box at ``path`` (e.g. [b"moov", b"trak", ...])."""
    for kind, payload in iter_boxes(data):
        if kind != path[0]:
            continue
        if len(path) == 1:
            return payload
        found = find_box(payload[_CHILD_OFFSET.get(kind, 0) :], path[1:])
        if found is not None:
            return found
    return None


SAMPLE_ENTRY_PATH = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"]


def mp4_config_record(
    encoder: str, width: int = 320, height: int = 240, **kwargs: object
) -> tuple[bytes, bytes]:
    """(config record FFmpeg wrote into an mp4, encoder extradata) for a short clip.

    H.265 is tagged hvc1 so FFmpeg writes the parameter-set arrays as complete.
    """
    pix_fmt = str(kwargs.get("pix_fmt", "yuv420p"))
    extra = kwargs.get("extra")
    assert extra is None or isinstance(extra, dict)
    buf = io.BytesIO()
    with open_output(buf, "mp4") as out:
        stream = add_video_stream(out, encoder, width, height, pix_fmt, extra=extra)
        if encoder == "libx265":
            stream.codec_tag = "hvc1"
        for frame in synthetic_frames(3, width, height, pix_fmt=pix_fmt):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        extradata = bytes(stream.codec_context.extradata or b"")
    data = buf.getvalue()
    entry = {"libsvtav1": b"av01", "libx265": b"hvc1", "libx264": b"avc1"}[encoder]
    box = {"libsvtav1": b"av1C", "libx265": b"hvcC", "libx264": b"avcC"}[encoder]
    record = find_box(data, [*SAMPLE_ENTRY_PATH, entry, box])
    assert record is not None, f"no {box!r} in FFmpeg's mp4"
    return record, extradata
