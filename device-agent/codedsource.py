"""Coded sources: a camera's or a file's own H.264/H.265/AV1, opened with PyAV for its packets.

Demux only: what the agent forwards (``codec = "copy"``, passthrough.py) is read here without a
decoder or an encoder. A keyframe is decoded only when a snapshot is asked for. :func:`plan`
opens a source for a streaming session and decides (copydecision.py) whether to forward it or to
hand the session to the encode path.

Timeouts: opening gives up after ``OPEN_TIMEOUT_S``; a read blocks in FFmpeg for at most
``READ_TIMEOUT_S``, so a camera that goes silent without closing the connection is a source that
dropped (the pipeline's watchdog restarts it). An RTSP source is pulled over TCP (what crosses NAT
and loses nothing) and closing the container ends its session (TEARDOWN), so an on-demand stop
really stops pulling from the camera.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import av

from flumph.agent.copydecision import SourceInfo, decide, raw_source_refusal, redact_url
from flumph.agent.copyframes import CopyShaper
from flumph.agent.sources import SourceError
from flumph.media import bitstream as bs
from flumph.media.matroska_header import AV1, H264
from flumph.settings import StreamSettings

OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
# A network source's codec and size come from its SDP (or the first parameter sets): probing
# more only delays the start (measured on an RTSP H.264 source: 2.4 s with FFmpeg's defaults,
# all of it buffered frames; 0.4 s with these). Never "fflags=nobuffer": it drops what the probe
# read, the first keyframe among it.
NETWORK_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
# PyAV always runs avformat_find_stream_info, which opens each stream's decoder to fill in what
# the header lacks, and for an RTSP H.264 source decoded the first packets with it (seen with gdb
# breakpoints on avcodec_open2 / avcodec_send_packet). An empty decoder whitelist makes that open
# fail before the decoder initialises; codec, size, rate and extradata still come from the SDP and
# the parser (checked the same way: no decoder opened, no packet decoded). Only for demuxers that
# create their streams in the header (PyAV refuses per-stream options otherwise): RTSP and V4L2.
NO_DECODER = {"codec_whitelist": "none"}
_MAX_STREAMS = 16
_NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def is_raw_source(spec: str) -> bool:
    """Sources that give pictures, never a coded stream: the synthetic and OpenCV cameras."""
    return spec == "synthetic" or spec.isdigit() or spec.startswith("camera:")


@dataclass(frozen=True)
class SourcePacket:
    data: bytes
    keyframe: bool
    pts_s: float | None
    read_at: float  # time.monotonic() when the demuxer returned it


class EncodedSource:
    """A coded source opened for its packets: demux only.

    ``av_format`` forces a demuxer (FFmpeg's ``-f``). A V4L2 device is asked for its own H.264
    (``input_format=h264``). A file plays at its own pace and loops, like a camera.
    """

    def __init__(self, url: str, av_format: str | None = None) -> None:
        self.name = redact_url(f"av:{av_format}:{url}" if av_format else url)
        self._url, self._format = url, av_format
        self._is_file = av_format is None and os.path.isfile(url)
        self._options: dict[str, str] = {}
        if url.startswith(_NETWORK_SCHEMES):
            self._options.update(NETWORK_OPTIONS)
        if url.startswith(("rtsp://", "rtsps://")):
            self._options["rtsp_transport"] = "tcp"  # what crosses NAT and loses nothing
        if av_format == "v4l2":
            self._options["input_format"] = "h264"
        probes_in_header = url.startswith(("rtsp://", "rtsps://")) or av_format == "v4l2"
        self._stream_options = [NO_DECODER] * _MAX_STREAMS if probes_in_header else []
        self._open()
        cc = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate
        declared = self._stream.bit_rate or None
        self.info = SourceInfo(
            name=self.name,
            codec=cc.name,
            width=cc.width,
            height=cc.height,
            fps=float(rate) if rate else None,
            bitrate_kbps=declared / 1000 if declared else None,
        )
        self.extradata = bytes(cc.extradata or b"")

    def _open(self) -> None:
        try:
            self._container = av.open(
                self._url,
                format=self._format,
                container_options=self._options,
                stream_options=self._stream_options,  # type: ignore[arg-type]  # (stub says str)
                timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"cannot open {self.name}: {_why(e)}") from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{self.name} has no video stream")
        self._stream = self._container.streams.video[0]
        self._packets = self._container.demux(self._stream)
        self._time_base = self._stream.time_base
        self._pace: tuple[float, float] | None = None  # (first pts, monotonic at it) for files
        self._frames = 0

    def read(self) -> SourcePacket:
        """The next packet; raises SourceError when the source ended or failed."""
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                if not self._is_file:
                    raise SourceError(f"{self.name} ended the stream") from None
                self._container.close()  # a file loops; raw H.264/H.265 cannot seek: reopen
                self._open()
                continue
            except (av.FFmpegError, OSError) as e:
                raise SourceError(f"{self.name}: {_why(e)}") from None
            if packet.size == 0:  # the demuxer's flush packet
                continue
            pts_s = None
            if packet.pts is not None and self._time_base is not None:
                pts_s = float(packet.pts * self._time_base)
            if self._is_file:
                if pts_s is None:  # a raw elementary stream has no times: its frame rate paces
                    pts_s = self._frames / (self.info.fps or 25.0)
                self._frames += 1
                self._wait_until_due(pts_s)
            return SourcePacket(bytes(packet), bool(packet.is_keyframe), pts_s, time.monotonic())

    def _wait_until_due(self, pts_s: float) -> None:
        now = time.monotonic()
        if self._pace is None:
            self._pace = (pts_s, now)
        delay = (pts_s - self._pace[0]) - (now - self._pace[1])
        if delay > 0:
            time.sleep(min(delay, 1.0))

    def close(self) -> None:
        self._container.close()


def _why(error: Exception) -> str:
    # FFmpeg's message repeats the URL as given, password included: keep only the reason.
    if isinstance(error, av.FFmpegError | OSError) and error.strerror:
        return f"{error.strerror} (errno {error.errno})"
    return type(error).__name__


def open_encoded(spec: str) -> EncodedSource | None:
    """The source ``spec`` opened for its packets, or None when it gives raw pictures.

    ``/dev/videoN`` is the V4L2 demuxer asking the camera for H.264 (OpenCV, which the encode path
    uses for it, only gives pictures)."""
    if is_raw_source(spec):
        return None
    if spec.startswith("/dev/video"):
        return EncodedSource(spec, "v4l2")
    if spec.startswith("av:"):
        fmt, sep, url = spec.removeprefix("av:").partition(":")
        if not sep or not fmt or not url:
            raise ValueError(f"source {spec!r}: expected av:FORMAT:URL (e.g. av:v4l2:/dev/video0)")
        return EncodedSource(url, fmt)
    return EncodedSource(spec)


@dataclass(frozen=True)
class Plan:
    """How a streaming session starts: ``source`` to forward, or None to encode (``reason``)."""

    source: EncodedSource | None
    reason: str | None  # None: not a question (an encoder codec, or raw pictures with auto)
    info: SourceInfo | None


def plan(settings: StreamSettings, spec: object, known: SourceInfo | None = None) -> Plan:
    """Open and judge the source for ``codec = "copy"``/``"auto"``; raises SourceError (or
    ValueError) naming the problem when copy cannot start. ``spec`` is the pipeline's source: a
    string, or a frame-source factory (raw pictures). ``known``: the same source as measured in
    an earlier session (its bitrate, when it declares none)."""
    if settings.codec not in ("copy", "auto"):
        return Plan(None, None, None)
    source = open_encoded(spec) if isinstance(spec, str) else None
    if source is None:
        if settings.codec == "copy":
            raise SourceError(raw_source_refusal(spec if isinstance(spec, str) else "this source"))
        return Plan(None, None, None)
    info = source.info
    if known is not None and known.name == info.name and known.bitrate_measured:
        info = replace(info, bitrate_kbps=known.bitrate_kbps, bitrate_measured=True)
    try:
        decision = decide(settings, info)
    except BaseException:
        source.close()
        raise
    if decision.copy:
        return Plan(source, decision.reason, info)
    source.close()
    return Plan(None, decision.reason, info)


def snapshot_from_source(source: EncodedSource, timeout_s: float = 10.0) -> av.VideoFrame:
    """Read ``source`` up to its first keyframe and decode that (the source is closed after)."""
    try:
        shaper = CopyShaper(source.info.codec, source.extradata)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            packet = source.read()
            try:
                shaped = shaper.shape(packet.data, packet.keyframe)
            except ValueError:
                continue
            if packet.keyframe and shaper.config is not None:
                return decode_keyframe(shaper.codec, shaper.config, shaped.data)
        raise SourceError(f"{source.name} sent no keyframe within {timeout_s:.0f} s")
    finally:
        source.close()


def _parameter_sets_annexb(codec: str, config: bytes) -> bytes:
    if codec == H264:
        avc = bs.parse_avcc(config)
        return bs.to_annexb([*avc.sps, *avc.pps])
    return bs.to_annexb(nal for array in bs.parse_hvcc(config).arrays for nal in array.nals)


def decode_keyframe(codec: str, config: bytes, data: bytes) -> av.VideoFrame:
    """One keyframe (as the writer takes it) decoded to a picture, for a snapshot."""
    if codec == AV1:
        stream = bs.parse_av1c(config).config_obus + data
    else:
        stream = _parameter_sets_annexb(codec, config) + data
    decoder = av.CodecContext.create(codec, "r")
    assert isinstance(decoder, av.VideoCodecContext)
    frames = list(decoder.decode(av.Packet(stream)))
    frames += list(decoder.decode(None))
    if not frames or not isinstance(frames[0], av.VideoFrame):
        raise SourceError(f"the source's last {codec} keyframe did not decode")
    return frames[0]
