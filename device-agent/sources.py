"""Frame sources: the synthetic camera, an OpenCV camera, anything FFmpeg opens through PyAV.

A source hands out ``av.VideoFrame``s at its own pace; ``capture.Capture`` holds the requested fps.

The synthetic camera pans and zooms slowly across a real photograph shipped by scikit-image
(``skimage/data/motorcycle_left.png``, a 741x500 garage scene; matplotlib's Grace Hopper portrait is
the fallback), with light luma noise, a running clock and two machine-readable stamps.

Stamp encoding (read back with ``read_stamp``): two rows of 32 square blocks at the top-left corner,
block side ``B = stamp_block_size(width)`` (width // 40 rounded down to even, at least 4: 16 px
at 640 wide). Row 0 (y in [0, B)) holds the frame number, row 1 (y in [B, 2B)) the capture
wall-clock time in milliseconds modulo 2**32; both most significant bit first, block i covering
x in [i*B, (i+1)*B), luma 235 for a 1 bit and 16 for a 0 bit, chroma neutral (128). The frame
number counts capture ticks since the source started, so a gap in the numbers a viewer decodes is
a frame dropped somewhere.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Protocol

import av
import cv2
import numpy as np
import numpy.typing as npt

STAMP_BITS = 32
_WHITE, _BLACK = 235, 16

U8Array = npt.NDArray[np.uint8]


class SourceError(RuntimeError):
    """A source could not be opened or stopped delivering frames."""


class FrameSource(Protocol):
    name: str
    paced: bool  # True: read() returns at once and the caller must pace; False: read() blocks

    def configure(self, width: int, height: int, fps: int) -> None: ...

    def read(self, tick: int, wall_time: float) -> av.VideoFrame | None: ...

    def close(self) -> None: ...


def find_photograph() -> Path:
    """A real photograph shipped by an installed PyPI package (located without importing it)."""
    candidates = [
        ("skimage", ("data", "motorcycle_left.png")),
        ("matplotlib", ("mpl-data", "sample_data", "grace_hopper.jpg")),
    ]
    for package, parts in candidates:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        path = Path(spec.origin).parent.joinpath(*parts)
        if path.is_file():
            return path
    raise SourceError(
        "the synthetic camera needs a photograph from scikit-image "
        "(pip install scikit-image, or pip install --no-deps scikit-image for the data files only)"
    )


def stamp_block_size(width: int) -> int:
    return max(4, (width // 40) & ~1)


def write_stamp(i420: U8Array, width: int, height: int, frame_number: int, time_ms: int) -> None:
    """Stamp both rows into a contiguous I420 buffer of shape (height*3/2, width), in place."""
    block = stamp_block_size(width)
    if STAMP_BITS * block > width or 2 * block > height:
        raise ValueError(f"{width}x{height} is too small for the frame stamp")
    luma = i420[:height]
    for row, value in enumerate((frame_number, time_ms)):
        value &= (1 << STAMP_BITS) - 1
        bits = [(value >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]
        levels = np.repeat(np.where(np.array(bits, dtype=bool), _WHITE, _BLACK), block)
        luma[row * block : (row + 1) * block, : STAMP_BITS * block] = levels.astype(np.uint8)
    # Neutral chroma under the stamp: U and V planes are (height/2, width/2) each, stored as rows
    # of width/2 packed two per buffer row.
    chroma = i420[height:].reshape(2, height // 2, width // 2)
    chroma[:, :block, : STAMP_BITS * block // 2] = 128


def read_stamp(luma: U8Array) -> tuple[int, int]:
    """(frame number, capture time ms mod 2**32) from a decoded luma plane of the synthetic
    camera."""
    height, width = luma.shape
    block = stamp_block_size(width)
    if STAMP_BITS * block > width or 2 * block > height:
        raise ValueError(f"{width}x{height} is too small to hold a frame stamp")
    values = []
    lo, hi = block // 4, block - block // 4
    for row in range(2):
        value = 0
        for i in range(STAMP_BITS):
            cell = luma[row * block + lo : row * block + hi, i * block + lo : i * block + hi]
            value = (value << 1) | int(cell.mean() > (_WHITE + _BLACK) / 2)
        values.append(value)
    return values[0], values[1]


class SyntheticSource:
    """A slow pan/zoom across a photograph, with a clock, the stamps and light sensor noise."""

    paced = True

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: int = 15,
        *,
        photo: Path | None = None,
        noise_sigma: float = 2.0,
        seed: int | None = None,
    ) -> None:
        self.name = "synthetic"
        path = photo or find_photograph()
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot read photograph {path}")
        self.photo_path = path
        self._photo: U8Array = np.asarray(image, dtype=np.uint8)
        self._rng = np.random.default_rng(seed)
        self._noise_sigma = noise_sigma
        self._width = self._height = 0
        self._noise_up: U8Array = np.zeros((1, 1), np.uint8)
        self._noise_down: U8Array = np.zeros((1, 1), np.uint8)
        self._t0 = time.monotonic()
        self.configure(width, height, fps)

    def configure(self, width: int, height: int, fps: int) -> None:
        if width % 2 or height % 2:
            raise ValueError(f"synthetic source size must be even, got {width}x{height}")
        if (width, height) == (self._width, self._height):
            return
        self._width, self._height = width, height
        # A bank of noise larger than the frame; each frame reads it at a random offset (no copy).
        pad = 64
        noise = self._rng.normal(0.0, self._noise_sigma, (height + pad, width + pad))
        self._noise_up = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_down = np.clip(-noise, 0, 255).astype(np.uint8)

    def render(self, tick: int, wall_time: float) -> U8Array:
        """One I420 picture (shape (height*3/2, width)) for this tick."""
        width, height = self._width, self._height
        t = time.monotonic() - self._t0
        ph, pw = self._photo.shape[:2]
        aspect = width / height
        full_h = min(ph, pw / aspect)
        zoom = 0.78 + 0.16 * math.sin(2 * math.pi * t / 37.0)
        crop_h = full_h * zoom
        crop_w = crop_h * aspect
        cx = pw / 2 + (pw - crop_w) / 2 * math.sin(2 * math.pi * t / 23.0)
        cy = ph / 2 + (ph - crop_h) / 2 * math.sin(2 * math.pi * t / 29.0 + 1.0)
        scale = crop_w / width
        matrix = np.array(
            [[scale, 0.0, cx - crop_w / 2], [0.0, scale, cy - crop_h / 2]], dtype=np.float64
        )
        bgr = np.asarray(
            cv2.warpAffine(
                self._photo,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            ),
            dtype=np.uint8,
        )
        self._draw_clock(bgr, tick, wall_time)
        i420 = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        luma = i420[:height]
        ox, oy = (int(v) for v in self._rng.integers(0, 64, 2))
        cv2.add(luma, self._noise_up[oy : oy + height, ox : ox + width], dst=luma)
        cv2.subtract(luma, self._noise_down[oy : oy + height, ox : ox + width], dst=luma)
        write_stamp(i420, width, height, tick, int(wall_time * 1000))
        return i420

    def _draw_clock(self, bgr: U8Array, tick: int, wall_time: float) -> None:
        height = bgr.shape[0]
        scale = max(0.35, height / 720)
        text = datetime.fromtimestamp(wall_time).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        text += f"  #{tick}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        y = height - 2 * base - 4
        cv2.rectangle(bgr, (4, y - th - 4), (12 + tw, y + base + 2), (20, 20, 20), -1)
        cv2.putText(
            bgr, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (240, 240, 240), 1, cv2.LINE_AA
        )

    def read(self, tick: int, wall_time: float) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.render(tick, wall_time), format="yuv420p")

    def close(self) -> None:
        pass


class OpenCvCameraSource:
    """A camera through OpenCV: an index (``0``) or a device path (``/dev/video0``). A video file
    given here plays at its own rate and loops, like a camera that never ends."""

    paced = False

    def __init__(self, device: int | str, width: int, height: int, fps: int) -> None:
        self.name = f"opencv:{device}"
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            raise SourceError(f"OpenCV cannot open camera {device!r}")
        self._is_file = isinstance(device, str) and os.path.isfile(device)
        self._file_period = 1.0 / (self._cap.get(cv2.CAP_PROP_FPS) or 30.0)
        self._next_due = time.monotonic()
        if not self._is_file:
            self.configure(width, height, fps)

    def configure(self, width: int, height: int, fps: int) -> None:
        if self._is_file:
            return
        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._cap.set(cv2.CAP_PROP_FPS, fps)

    def read(self, tick: int, wall_time: float) -> av.VideoFrame | None:
        ok, bgr = self._cap.read()
        if not ok and self._is_file:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok:
            raise SourceError(f"{self.name} stopped delivering frames")
        if self._is_file:
            delay = self._next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_due = max(self._next_due, time.monotonic() - 1.0) + self._file_period
        return av.VideoFrame.from_ndarray(np.asarray(bgr, dtype=np.uint8), format="bgr24")

    def close(self) -> None:
        self._cap.release()


class PyAvSource:
    """Anything FFmpeg opens: a file (played in real time, looped), rtsp://, a V4L2 device...

    ``av_format`` forces a demuxer (``v4l2``, ``android_camera``), as FFmpeg's ``-f``.
    """

    def __init__(self, url: str, av_format: str | None = None, *, loop: bool | None = None) -> None:
        self.name = f"av:{av_format + ':' if av_format else ''}{url}"
        self._url, self._format = url, av_format
        is_file = av_format is None and os.path.isfile(url)
        self._loop = is_file if loop is None else loop
        self.paced = False
        self._container: av.container.InputContainer | None = None
        self._frames: object = None
        self._clock_start = 0.0
        self._pts_start: float | None = None
        self._open()

    def _open(self) -> None:
        try:
            self._container = av.open(
                self._url, format=self._format, options={"rtsp_transport": "tcp"}, timeout=10.0
            )
        except av.FFmpegError as e:
            raise SourceError(f"cannot open {self.name}: {e}") from None
        if not self._container.streams.video:
            raise SourceError(f"{self.name} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._pts_start = None

    def configure(self, width: int, height: int, fps: int) -> None:
        pass  # the encoder scales; the capture decimates to fps

    def read(self, tick: int, wall_time: float) -> av.VideoFrame | None:
        while True:
            try:
                frame: av.VideoFrame = next(self._frames)  # type: ignore[call-overload]
            except StopIteration:
                if not self._loop:
                    return None
                self.close()
                self._open()
                continue
            except av.FFmpegError as e:
                raise SourceError(f"{self.name}: {e}") from None
            if self._loop and frame.time is not None:
                # A file plays at its own speed, as a camera would deliver it.
                if self._pts_start is None:
                    self._pts_start, self._clock_start = frame.time, time.monotonic()
                delay = (frame.time - self._pts_start) - (time.monotonic() - self._clock_start)
                if delay > 0:
                    time.sleep(min(delay, 1.0))
            return frame

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def open_source(spec: str, width: int, height: int, fps: int) -> FrameSource:
    """``synthetic``; ``0`` or ``camera:0`` or ``/dev/videoN`` (OpenCV); ``av:FORMAT:URL``; a file
    or URL (PyAV)."""
    if spec == "synthetic":
        return SyntheticSource(width, height, fps)
    if spec.isdigit():
        return OpenCvCameraSource(int(spec), width, height, fps)
    if spec.startswith("camera:"):
        device = spec.removeprefix("camera:")
        return OpenCvCameraSource(int(device) if device.isdigit() else device, width, height, fps)
    if spec.startswith("/dev/video"):
        return OpenCvCameraSource(spec, width, height, fps)
    if spec.startswith("av:"):
        rest = spec.removeprefix("av:")
        fmt, sep, url = rest.partition(":")
        if not sep or not fmt or not url:
            raise ValueError(f"source {spec!r}: expected av:FORMAT:URL (e.g. av:v4l2:/dev/video0)")
        return PyAvSource(url, fmt)
    return PyAvSource(spec)
