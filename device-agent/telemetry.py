"""What the agent's telemetry message says, from the pipeline's counters (pure).

Rates cover the time since the previous message: counters are sampled at each message
(:class:`Sample`) and the next one divides their growth by the time between. Totals
(``frames_dropped``, ``srt.retransmits``) are sent as they are, so they survive a lost QoS 0
message.

Cost and cadence (the session sends it, see :mod:`.control`): every ``telemetry_interval_s`` (5 s)
while streaming; while idle one heartbeat per ``heartbeat_interval_s`` (default one hour) and one
after each connect. Idle cost at the default keepalive of 360 s, IP level, plain TCP (52 B of
IPv4 + TCP-with-timestamps headers a segment), measured on a veth (bench/control_idle.py): a
keepalive exchange is PINGREQ + PINGRESP + the client's ACK, 3 segments and 4 B of MQTT = 160 B,
10 an hour = 1.60 KB/h; a heartbeat is a ~150 B PUBLISH (compact JSON, nulls left out) plus the
segments around it = 266 B. Total ~1.87 KB/h plain (TLS adds ~22-29 B per record). A heartbeat
every keepalive would cost ~3.7 KB/h more. Presence comes from the will (1.5 x keepalive), so the
heartbeat only backs up a broker whose will fails. It cannot replace the ping either: paho pings
whenever nothing came *in* for a keepalive, and a QoS 0 publish gets no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flumph.agent.destination import PAYLOAD_SIZE
from flumph.agent.pipelinestats import MIN_RATE_SPAN_S
from flumph.control import Budget, LinkStats, Message, Rate, Telemetry, Usage
from flumph.settings import StreamSettings


def compact(message: Message) -> bytes:
    """JSON without the null fields: telemetry goes out every 5 s on a metered link."""
    return message.model_dump_json(exclude_none=True).encode()


def measured(source: dict[str, Any]) -> bool:
    """A forwarded source's report has its measured rates (10 s of packets, two keyframes)."""
    return all(source.get(k) is not None for k in ("fps", "bitrate_kbps", "keyint_s"))


def grown(now: int, before: int) -> int:
    """Growth of a counter that restarts from zero on each SRT connection."""
    return now - before if now >= before else now


@dataclass(frozen=True)
class Sample:
    """Counters at the previous telemetry message, for the rates in the next one."""

    at: float
    streaming: bool
    frames_sent: int = 0
    lost: int = 0
    bytes_sent: int = 0
    bursts: int = 0


def sample_of(status: dict[str, Any], now: float, streaming: bool) -> Sample:
    """The counters of a pipeline status (``Pipeline.status()``) at ``now``."""
    return Sample(
        now,
        streaming,
        int(status["frames_sent"]),
        int(status.get("srt_packets_lost_sent") or 0),
        int(status.get("srt_bytes_sent") or 0),
        int(status.get("srt_bursts_sent") or 0),
    )


def streaming_telemetry(
    status: dict[str, Any],
    settings: StreamSettings,
    previous: Sample,
    current: Sample,
    *,
    usage: Usage,
    budget: Budget | None,
) -> Telemetry:
    """The message while streaming.

    ``fps`` (frames sent) and ``srt.loss_pct`` cover the time since the previous message;
    ``loss_pct`` is packets the receiver reported lost against data packets sent, estimated
    from bytes and bursts. ``frames_dropped`` counts since streaming started and
    ``srt.retransmits`` over the current SRT connection.
    """
    s = status
    fps = loss_pct = None
    span = current.at - previous.at
    # Rates over a short window are noise (see MIN_RATE_SPAN_S): unknown rather than wrong.
    if previous.streaming and span >= MIN_RATE_SPAN_S:
        fps = round((current.frames_sent - previous.frames_sent) / span, 2)
        # Data packets sent, estimated: full packets plus the partial last one of each burst.
        sent = grown(current.bytes_sent, previous.bytes_sent) / PAYLOAD_SIZE
        sent += grown(current.bursts, previous.bursts) / 2
        lost = grown(current.lost, previous.lost)
        loss_pct = round(100 * lost / (sent + lost), 2) if sent + lost > 0 else 0.0
    dropped = sum(
        int(s.get(k) or 0)
        for k in ("frames_dropped_busy", "frames_dropped_offline", "frames_skipped_late")
    )
    link = None
    if "srt_rtt_ms" in s:
        link = LinkStats(
            rtt_ms=s["srt_rtt_ms"], loss_pct=loss_pct, retransmits=s["srt_retransmitted"]
        )
    width, height = settings.width, settings.height
    if "source" in s:  # forwarding: the size is the source's
        width, height = s["source"]["width"], s["source"]["height"]
    return Telemetry(
        streaming=True,
        rate=Rate.model_validate(s["rate"]) if s.get("rate") else None,
        fps=fps,
        bitrate_kbps=s["bitrate_kbps"],
        encoder=s["encoder"],
        width=width,
        height=height,
        frames_dropped=dropped,
        srt=link,
        usage=usage,
        budget=budget,
    )
