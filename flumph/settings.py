"""The stream settings a device can be told to have.

One model for every place that speaks them: the agent's config file and flags, the MQTT ``desired``
document, the agent's ``reported`` echo. Bounds are what the encoders and links here can honour;
a value outside them is refused with the key named (see ``flumph.config.format_validation_error``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from flumph.config import StrictModel

Codec = Literal["auto", "av1", "hevc", "h264", "copy"]

# Keyframe interval default. Why 30 s: a keyframe costs 1-1.5 s of the stream's bytes (SVT-AV1 at
# 100 kbit/s 360p30 delivered 1.45x the target with a 4 s interval, 0.98x with 60 s), so a short
# clock is paid for all the time on a metered link. Keyframes come when they help instead: the
# ingest asks the device for one (MQTT cmd/keyframe) when a viewer joins a stream whose cached GOP
# is long and when SRT reports losses it could not repair; the agent makes one itself after its
# sender dropped packets, on every reconnect and every encoder change. The interval is the
# backstop: it bounds the ingest's GOP cache (30 s at 30 fps fits its 1200 frames) for publishers
# nobody can ask. bench/keyframes_on_demand.py measures bytes per hour and join time against 4 s.
DEFAULT_KEYINT_S = 30.0


class StreamSettings(StrictModel):
    """What the device streams: encoder, picture, pacing and SRT link settings."""

    codec: Codec = Field(
        default="auto",
        title="Codec",
        description=(
            "auto = forward an already encoded source (RTSP camera, file) when no setting asks "
            "for another size or rate, else hardware H.265 if the device has one, else software "
            "AV1 (SVT-AV1); copy = always forward the source's own H.264/H.265/AV1"
        ),
    )
    bitrate_kbps: int = Field(default=250, ge=20, le=20000, title="Target bitrate (kbit/s)")
    width: int = Field(default=640, ge=64, le=3840, title="Width (pixels, even)")
    height: int = Field(default=360, ge=64, le=2160, title="Height (pixels, even)")
    fps: int = Field(default=15, ge=1, le=60, title="Frames per second")
    keyint_s: float = Field(
        default=DEFAULT_KEYINT_S, ge=0.5, le=60.0, title="Keyframe interval (seconds)"
    )
    srt_latency_ms: int = Field(
        default=120,
        ge=20,
        le=8000,
        title="SRT latency (ms)",
        description="cellular wants 3-4x the RTT",
    )
    frames_per_burst: int = Field(
        default=1,
        ge=1,
        le=4,
        title="Frames per SRT burst",
        description="N>1 sends N frames at once: fewer SRT ACK/ACKACK for N-1 frames of delay",
    )
    always_on: bool = Field(default=False, title="Stream even when nobody watches")
    adapt_to_link: bool = Field(
        default=True,
        title="Adapt the bitrate to the uplink",
        description="lower the encoder's rate within ~2 s when SRT's statistics show the link "
        "cannot carry it, climb back gradually, never above bitrate_kbps",
    )
    data_budget_mb: float | None = Field(
        default=None,
        gt=0,
        le=10_000_000,
        title="Data budget per period (MB of 1,000,000 bytes)",
        description="every byte both ways (SRT, MQTT, snapshots) at IP level; none = no budget; "
        "at 80 % the device warns, at 100 % it stops streaming until the period resets",
    )
    budget_reset_day: int = Field(
        default=1,
        ge=1,
        le=28,
        title="Budget period starts on day (1-28, 00:00 UTC)",
        description="the day of the month when the count restarts, as the carrier bills",
    )
    budget_pacing: bool = Field(
        default=False,
        title="Pace the bitrate to the budget",
        description="lower the bitrate cap while the period's usage runs ahead of a straight "
        "line to the budget, instead of going dark before the period ends",
    )
    streaming: bool = Field(default=False, title="Streaming now")

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int, info: ValidationInfo) -> int:
        if value % 2:
            name = info.field_name
            raise ValueError(f"{name} must be even (4:2:0 chroma halves it)")
        return value

    def keyint_frames(self) -> int:
        """The keyframe interval in frames at this fps (at least 1)."""
        return max(1, round(self.keyint_s * self.fps))
