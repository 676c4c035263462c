"""Encoder choice and low-delay encoding through PyAV.

``codec`` setting -> candidates, best first (hardware before software):
  auto: hardware H.265, else SVT-AV1     av1: hardware AV1, else SVT-AV1
  hevc: hardware H.265, else x265        h264: hardware H.264, else x264
A hardware encoder counts only if it really opens and encodes a frame at the requested size here
(PyAV lists nvenc/qsv/amf/v4l2m2m wrappers on machines that have none of that hardware). Every
attempt is reported with its result.

Low-delay settings, all giving one packet out per frame in (measured): SVT-AV1 preset 10 with
``pred-struct=1`` (low delay; its default random-access mode holds 66 frames) and ``rc=2`` (CBR;
low delay refuses VBR), no scene-change keyframes (``rtc=1`` measured no faster here and overshot
more at 100 kbit/s); x265 ultrafast + zerolatency, no B-frames, no scene-cut keyframes, parameter
sets only in extradata (they go to the Matroska hvcC) and no SEI banner (it made the extradata
2.4 KB); x264 veryfast + zerolatency. Rate accuracy: see ``_options`` and ratecontrol.py (what
looked like an SVT-AV1 floor, 1.41x at 100 kbit/s 360p30, was its keyframes every 4 s).
Keyframes come every ``keyint_s`` and when asked for (a reconnect or a new viewer stream).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.codec.context import Flags
from av.video.frame import PictureType

from flumph.agent.codecconfig import codec_private
from flumph.agent.threadpolicy import leave_realtime_scheduling
from flumph.media.matroska_header import AV1, H264, HEVC
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.encoders")

HARDWARE = {
    HEVC: ("hevc_mediacodec", "hevc_v4l2m2m", "hevc_vaapi", "hevc_qsv", "hevc_nvenc", "hevc_amf"),
    AV1: ("av1_mediacodec", "av1_vaapi", "av1_qsv", "av1_nvenc", "av1_amf"),
    H264: ("h264_mediacodec", "h264_v4l2m2m", "h264_vaapi", "h264_qsv", "h264_nvenc", "h264_amf"),
}
SOFTWARE = {AV1: "libsvtav1", HEVC: "libx265", H264: "libx264"}
SVT_PRESET = 10


class EncoderError(RuntimeError):
    """No candidate encoder could be opened; ``attempts`` says why for each."""

    def __init__(self, message: str, attempts: tuple[EncoderAttempt, ...]) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class EncoderAttempt:
    encoder: str
    result: str  # "opened", "not in this FFmpeg build", "failed: <why>", "skipped: failed before"


@dataclass(frozen=True)
class EncodedPacket:
    data: bytes
    keyframe: bool
    pts: int  # frame index in 1/fps units, as given to encode()
    encoded_at: float  # time.monotonic() when the encoder returned it


def candidates(codec: str) -> list[tuple[str, str]]:
    """(encoder name, codec family) in order of preference for a ``codec`` setting."""
    if codec == "auto":
        return [(name, HEVC) for name in HARDWARE[HEVC]] + [(SOFTWARE[AV1], AV1)]
    if codec in SOFTWARE:
        return [(name, codec) for name in HARDWARE[codec]] + [(SOFTWARE[codec], codec)]
    raise ValueError(f"codec {codec!r} is not one of auto, av1, hevc, h264")


def _options(name: str, s: StreamSettings) -> dict[str, str]:
    kbps, keyint = s.bitrate_kbps, s.keyint_frames()
    if name == "libsvtav1":
        params = f"pred-struct=1:rc=2:tbr={kbps}:keyint={keyint}:scd=0"
        return {"preset": str(SVT_PRESET), "svtav1-params": params}
    # x264/x265: a VBV of half a second (rather than 1 s) held every 10 s window of the synthetic
    # camera within 0.94-1.00 of the target (was 0.85-1.06) and caps a keyframe at about half a
    # second of the rate, which a constrained link can carry within SRT's latency; x265's own ABR
    # drifts with the picture's complexity (0.84-0.99) unless strict-cbr holds it (0.97-1.01).
    # SVT-AV1's CBR needed nothing (0.96-1.02); its keyframes (1-1.5 s of the rate) are what the
    # rate controller's gate pays back (see ratecontrol.py).
    vbv = max(1, kbps // 2)
    if name == "libx265":
        params = (
            f"log-level=error:bframes=0:repeat-headers=0:info=0:scenecut=0:keyint={keyint}:min-keyint={keyint}"
            f":vbv-maxrate={kbps}:vbv-bufsize={vbv}:strict-cbr=1"
        )
        return {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "x265-params": params,
        }
    if name == "libx264":
        params = f"scenecut=0:vbv-maxrate={kbps}:vbv-bufsize={vbv}"
        return {
            "preset": "veryfast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": params,
        }
    if name.endswith("_nvenc"):
        return {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "cbr"}
    if name.endswith("_qsv"):
        return {"async_depth": "1", "low_delay_brc": "1"}
    if name.endswith("_amf"):
        return {"usage": "ultralowlatency", "rc": "cbr"}
    if name.endswith("_vaapi"):
        return {"rc_mode": "CBR"}
    if name.endswith("_mediacodec"):
        return {"bitrate_mode": "cbr"}
    return {}


def _pixel_format(name: str) -> str:
    formats = [f.name for f in (av.Codec(name, "w").video_formats or ())]
    for wanted in ("yuv420p", "nv12"):
        if wanted in formats:
            return wanted
    return formats[0] if formats else "yuv420p"


class VideoEncoder:
    """One opened encoder: frames in, one packet out per frame."""

    def __init__(self, name: str, family: str, settings: StreamSettings) -> None:
        self.name = name
        self.family = family
        self.settings = settings
        cc = av.CodecContext.create(name, "w")
        assert isinstance(cc, av.VideoCodecContext)
        cc.width, cc.height = settings.width, settings.height
        cc.pix_fmt = _pixel_format(name)
        cc.time_base = Fraction(1, settings.fps)
        cc.framerate = Fraction(settings.fps, 1)
        cc.bit_rate = settings.bitrate_kbps * 1000
        cc.gop_size = settings.keyint_frames()
        cc.max_b_frames = 0
        # Parameter sets in extradata, for the Matroska CodecPrivate, not repeated in-band.
        cc.flags |= Flags.global_header
        cc.options = _options(name, settings)
        cc.open()
        leave_realtime_scheduling()
        self._cc = cc
        self._next_pts = 0
        self.frames_in = 0
        self.packets_out = 0
        self.encode_seconds = 0.0

    @property
    def next_pts(self) -> int:
        """The pts the next frame given to ``encode`` will carry."""
        return self._next_pts

    @property
    def extradata(self) -> bytes:
        return bytes(self._cc.extradata or b"")

    def codec_private(self, first_keyframe: bytes) -> bytes:
        """av1C/hvcC/avcC from extradata, or from the first keyframe's in-band headers."""
        return codec_private(self.family, self.extradata or first_keyframe)

    def _prepare(self, frame: av.VideoFrame) -> av.VideoFrame:
        cc = self._cc
        if (frame.width, frame.height, frame.format.name) != (cc.width, cc.height, cc.pix_fmt):
            frame = frame.reformat(cc.width, cc.height, cc.pix_fmt)
        return frame

    def encode(self, frame: av.VideoFrame, force_keyframe: bool = False) -> list[EncodedPacket]:
        frame = self._prepare(frame)
        frame.pts = self._next_pts
        frame.time_base = self._cc.time_base
        # Decoded frames (y4m, rawvideo) arrive marked I, which would make every frame intra.
        frame.pict_type = PictureType.I if force_keyframe else PictureType.NONE
        self._next_pts += 1
        started = time.perf_counter()
        packets = self._cc.encode(frame)
        self.encode_seconds += time.perf_counter() - started
        self.frames_in += 1
        now = time.monotonic()
        out = [EncodedPacket(bytes(p), p.is_keyframe, int(p.pts or 0), now) for p in packets]
        self.packets_out += len(out)
        return out

    def flush(self) -> list[EncodedPacket]:
        try:
            packets = self._cc.encode(None)
        except av.FFmpegError:
            return []
        now = time.monotonic()
        return [EncodedPacket(bytes(p), p.is_keyframe, int(p.pts or 0), now) for p in packets]

    def close(self) -> None:
        # SVT-AV1 complains ("deinit called without sending EOS") unless flushed first.
        self.flush()


def _probe(name: str, family: str, settings: StreamSettings) -> None:
    """Open ``name`` for real and encode one grey frame at the requested size; raise on failure."""
    encoder = VideoEncoder(name, family, settings)
    grey = np.full((settings.height * 3 // 2, settings.width), 128, dtype=np.uint8)
    encoder.encode(av.VideoFrame.from_ndarray(grey, format="yuv420p"), force_keyframe=True)
    encoder.close()


def _describe(error: Exception) -> str:
    # PyAV's message repeats the whole options dict; its errno text is what tells encoders apart.
    if isinstance(error, av.FFmpegError) and error.strerror:
        return f"{type(error).__name__} {error.errno}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class EncoderChoice:
    encoder: VideoEncoder
    attempts: tuple[EncoderAttempt, ...]

    @property
    def reason(self) -> str:
        tried = "; ".join(f"{a.encoder}: {a.result}" for a in self.attempts)
        return f"chose {self.encoder.name} for codec={self.encoder.settings.codec} ({tried})"


class EncoderSelector:
    """Opens the best encoder for a setting; remembers which hardware failed (it won't recover)."""

    def __init__(self, available: set[str] | None = None) -> None:
        self._available = set(av.codecs_available) if available is None else available
        self._failed: dict[str, str] = {}
        self._probed_ok: set[str] = set()

    def open(self, settings: StreamSettings) -> EncoderChoice:
        attempts: list[EncoderAttempt] = []
        for name, family in candidates(settings.codec):
            if name not in self._available:
                attempts.append(EncoderAttempt(name, "not in this FFmpeg build"))
                continue
            if name in self._failed:
                attempts.append(
                    EncoderAttempt(name, f"skipped: failed before ({self._failed[name]})")
                )
                continue
            hardware = name != SOFTWARE[family]
            try:
                if hardware and name not in self._probed_ok:
                    _probe(name, family, settings)
                    self._probed_ok.add(name)
                encoder = VideoEncoder(name, family, settings)
            except (av.FFmpegError, ValueError, OSError, RuntimeError) as e:
                why = _describe(e)
                if hardware:
                    self._failed[name] = why
                attempts.append(EncoderAttempt(name, f"failed: {why}"))
                log.debug("encoder %s failed to open: %s", name, why)
                continue
            attempts.append(EncoderAttempt(name, "opened"))
            choice = EncoderChoice(encoder, tuple(attempts))
            log.info("%s", choice.reason)
            return choice
        raise EncoderError(
            f"no encoder could be opened for codec={settings.codec}: "
            + "; ".join(f"{a.encoder}: {a.result}" for a in attempts),
            tuple(attempts),
        )
