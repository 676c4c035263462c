"""Pass through or transcode: the decision, its reason in words, and what a setting means in copy.

Pure: a description of the source and the settings in, a decision and sentences out (they go to
``reported.encoder_reason`` and ``reported.notice``, so an operator learns why without a log).

* ``codec = "copy"`` forwards the source as it is, or refuses to start, naming why (a source of
  raw pictures, a codec the ingest does not take).
* ``codec = "auto"`` forwards it when the ingest accepts its codec and no setting asks for
  something else: a different picture size, fewer frames per second, or a lower bitrate than the
  source sends (by more than :data:`RATE_TOLERANCE`). Otherwise it transcodes, and says which
  setting made it. Most RTSP cameras declare no bitrate: theirs is measured over the first 10 s
  of forwarding, and a source above the setting is then switched to transcoding
  (:func:`rate_switch`).
* In copy the encoder settings (bitrate, size, fps, keyframe interval) are the source's. A change
  to one is stored (it applies when the device encodes again) and answered with a notice that
  names the source's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flumph.agent.copyframes import PASSABLE_CODECS
from flumph.settings import StreamSettings

ENCODER_SETTINGS = ("bitrate_kbps", "width", "height", "fps", "keyint_s")
RATE_TOLERANCE = 1.2  # a declared bitrate up to 20 % above the setting still passes in auto
_FPS_SLACK = 0.5  # 14.985 fps (NTSC-style 15) is 15

_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``rtsp://user:secret@cam/stream`` -> ``rtsp://***@cam/stream``: a camera URL's password
    must not reach logs, ``reported`` or telemetry."""
    return _USERINFO.sub(r"\1***@", url)


@dataclass(frozen=True)
class SourceInfo:
    """What a coded source sends, as its demuxer and parameter sets describe it."""

    name: str  # redacted
    codec: str  # FFmpeg's name: h264, hevc, av1, mjpeg, ...
    width: int  # 0 when unknown until the first parameter sets
    height: int
    fps: float | None
    bitrate_kbps: float | None  # declared (container), or measured; None while unknown
    bitrate_measured: bool = False  # bitrate_kbps was measured over 10 s, not declared

    def describe(self) -> str:
        parts = [self.codec]
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.fps:
            parts.append(f"{self.fps:g} fps")
        if self.bitrate_kbps:
            parts.append(f"{'~' if self.bitrate_measured else ''}{self.bitrate_kbps:.0f} kbit/s")
        return " ".join(parts)


@dataclass(frozen=True)
class Decision:
    copy: bool
    reason: str


def copy_refusal(info: SourceInfo) -> str | None:
    """Why ``codec = "copy"`` cannot forward this source; None when it can."""
    if info.codec not in PASSABLE_CODECS:
        return (
            f"codec=copy: {info.name} sends {info.codec}, which the ingest does not accept "
            f"({', '.join(PASSABLE_CODECS)}); choose codec=auto to transcode it"
        )
    return None


def raw_source_refusal(name: str) -> str:
    return (
        f"codec=copy needs a source that is already encoded (rtsp://..., a video file, "
        f"av:v4l2:/dev/videoN for a camera's own H.264); {name} gives raw pictures"
    )


def decide(settings: StreamSettings, info: SourceInfo) -> Decision:
    """``codec = "copy"`` or ``"auto"`` with a coded source: forward it, or transcode and why."""
    if settings.codec == "copy":
        refusal = copy_refusal(info)
        if refusal is not None:
            raise ValueError(refusal)
        return Decision(True, f"codec=copy: forwarding {info.name} as it is ({info.describe()})")
    if settings.codec != "auto":
        return Decision(False, f"codec={settings.codec} asks for that encoder")
    if info.codec not in PASSABLE_CODECS:
        return Decision(
            False,
            f"codec=auto: transcoding, because {info.name} sends {info.codec}, which the ingest "
            f"does not accept",
        )
    asks = []
    if info.width and (info.width, info.height) != (settings.width, settings.height):
        sends = f"{info.width}x{info.height}"
        asks.append(f"{settings.width}x{settings.height} (the source sends {sends})")
    if info.fps and settings.fps < info.fps - _FPS_SLACK:
        asks.append(f"fps={settings.fps} (the source sends {info.fps:g})")
    if info.bitrate_kbps and info.bitrate_kbps > settings.bitrate_kbps * RATE_TOLERANCE:
        sends = "sends ~{:.0f}, measured" if info.bitrate_measured else "declares {:.0f}"
        sends = sends.format(info.bitrate_kbps)
        asks.append(f"bitrate_kbps={settings.bitrate_kbps} (the source {sends})")
    if asks:
        return Decision(
            False,
            "codec=auto: transcoding, because the settings ask for "
            + " and ".join(asks)
            + "; codec=copy would forward the source as it is",
        )
    rate = "" if info.bitrate_kbps else "; its bitrate is checked once measured (10 s)"
    return Decision(
        True,
        f"codec=auto: forwarding {info.name} untouched ({info.describe()}): the ingest accepts "
        f"{info.codec} and no setting asks for another size, frame rate or bitrate{rate}",
    )


def rate_switch(
    settings: StreamSettings, info: SourceInfo, measured_kbps: float
) -> Decision | None:
    """``codec = "auto"`` forwarding a source measured above the bitrate setting: the decision to
    transcode instead (None: keep forwarding)."""
    if settings.codec != "auto" or measured_kbps <= settings.bitrate_kbps * RATE_TOLERANCE:
        return None
    measured = SourceInfo(
        info.name, info.codec, info.width, info.height, info.fps, measured_kbps, True
    )
    return decide(settings, measured)


def copy_notice(changed: list[str], source: str | None) -> str | None:
    """The answer to encoder settings changed while forwarding; None if none changed.

    ``source``: what the source sends (``SourceInfo.describe`` or measured), when known.
    """
    names = [k for k in ENCODER_SETTINGS if k in changed]
    if not names:
        return None
    sends = f" (it sends {source})" if source else ""
    return (
        f"codec=copy: {', '.join(names)} not applied: the source sets them{sends}. Change them "
        f"in the source (the camera or its app), or choose codec=auto or an encoder to transcode; "
        f"the values are kept for when the device encodes"
    )
