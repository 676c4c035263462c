"""From raw phase records to figures, and from figures to the printed tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

MB = 1024 * 1024

TARGET_CPU_RATIO = 0.5
TARGET_LATENCY_P99_MS = 5.0
TARGET_FIRST_FRAME_MS = 100.0
TARGET_LOSSLESS_LEVEL = 200


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan when there are no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    rank = max(1, -(-len(xs) * p // 100))
    return xs[min(len(xs), int(rank)) - 1]


@dataclass
class Delivery:
    sent: int = 0  # frames the publisher sent in the range a receiver should have got
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    unmapped: int = 0  # fragments whose decode time matches no frame of the clip
    streams_with_loss: int = 0
    e2e_ms: list[float] = field(default_factory=list)  # frames sent inside the window


def delivery(
    publisher: dict[str, Any],
    receivers: list[dict[str, Any]],
    pts_index: dict[int, int],
    window: tuple[float, float],
    latency_ms: float,
) -> Delivery:
    """Frames lost per stream: every frame sent from the first one the receiver got (a viewer
    joining late starts at the GOP cache's keyframe) to the last one sent, minus those received.
    A receiver that got nothing counts every frame sent after it connected as lost."""
    d = Delivery()
    by_id = {r["stream_id"]: r for r in receivers}
    for stream in publisher["streams"]:
        sent_at: list[float] = stream["sent_at"]
        receiver = by_id.get(stream["id"])
        received: dict[int, float] = {}
        timescale = receiver["timescale"] if receiver else 0
        for decode_time, t_recv, _ in receiver["frames"] if receiver else []:
            index = pts_index.get(round(decode_time * 1000 / timescale)) if timescale else None
            if index is None or index >= len(sent_at):
                d.unmapped += 1
            elif index in received:
                d.duplicates += 1
            else:
                received[index] = t_recv
        if received:
            first = min(received)
        else:
            joined = receiver.get("t_connect", 0.0) if receiver else 0.0
            first = next((i for i, t in enumerate(sent_at) if t >= joined), len(sent_at))
        expected = range(first, len(sent_at))
        lost = sum(1 for i in expected if i not in received)
        d.sent += len(expected)
        d.received += len(received)
        d.lost += lost
        d.streams_with_loss += lost > 0
        for i, t_recv in received.items():
            if window[0] <= sent_at[i] <= window[1]:
                d.e2e_ms.append((t_recv - sent_at[i]) * 1000 - latency_ms)
    return d


def first_frame_ms(viewers: list[dict[str, Any]]) -> list[float]:
    return [
        (v["t_first_key"] - v["t_connect"]) * 1000
        for v in viewers
        if v.get("t_first_key") and v.get("t_connect")
    ]


def added_latency(api_streams: list[dict[str, Any]]) -> dict[str, float]:
    """The ingest reports p50/p99/max per stream; across streams: the median p50, the worst p99
    (what the target is checked against), the median p99 and the worst max."""
    rows = [s["added_latency_ms"] for s in api_streams if s.get("added_latency_ms")]
    if not rows:
        nan = float("nan")
        return {"p50": nan, "p99": nan, "p99_median": nan, "max": nan, "streams": 0}
    return {
        "p50": statistics.median(r["p50"] for r in rows),
        "p99": max(r["p99"] for r in rows),
        "p99_median": statistics.median(r["p99"] for r in rows),
        "max": max(r["max"] for r in rows),
        "streams": len(rows),
    }


# --- printing -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    if value is None or value != value:  # None or nan
        return "—"
    return f"{value:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or a != a or b != b or b == 0:
        return None
    return a / b


def render(levels: list[dict[str, Any]]) -> str:
    """Three tables: cost (against ffmpeg), delivery, and the machine's load."""
    cost_rows, delivery_rows, load_rows = [], [], []
    for level in levels:
        n = level["streams"]
        ours: dict[str, Any] = level.get("flumph") or {}
        peer: dict[str, Any] = level.get("ffmpeg") or {}
        cpu_ratio = _ratio(ours.get("cpu_s_per_stream_min"), peer.get("cpu_s_per_stream_min"))
        rss_ratio = _ratio(ours.get("rss_mb_per_stream"), peer.get("rss_mb_per_stream"))
        total_ratio = _ratio(ours.get("rss_mb_total"), peer.get("rss_mb_total"))
        # A system that lost frames did less work than asked: its cost is not comparable.
        short = "*" if ours.get("frames_lost") or peer.get("frames_lost") else ""
        cost_rows.append(
            [
                str(n),
                _f(ours.get("cpu_s_per_stream_min"), 3),
                _f(peer.get("cpu_s_per_stream_min"), 3),
                _f(cpu_ratio) + short,
                _verdict(None if cpu_ratio is None else cpu_ratio <= TARGET_CPU_RATIO),
                _f(ours.get("rss_mb_per_stream")),
                _f(ours.get("rss_mb_total"), 1),
                _f(peer.get("rss_mb_per_stream")),
                _f(peer.get("rss_mb_total"), 1),
                _f(rss_ratio),
                _f(total_ratio),
                _f(_ratio(ours.get("pss_mb_total"), peer.get("pss_mb_total"))),
            ]
        )
        lat = ours.get("added_latency_ms") or {}
        first = ours.get("first_frame_ms") or {}
        lost = ours.get("frames_lost")
        lossless_target = n >= TARGET_LOSSLESS_LEVEL
        delivery_rows.append(
            [
                str(n),
                f"{ours.get('frames_sent', '—')}/{ours.get('frames_received', '—')}",
                f"{lost if lost is not None else '—'}"
                + (f" {_verdict(lost == 0)}" if lossless_target and lost is not None else ""),
                f"{peer.get('frames_lost', '—')}",
                f"{ours.get('api_streams', '—')} ({_f(ours.get('api_response_s'), 2)} s)",
                _f(lat.get("p50")),
                _f(lat.get("p99")),
                _verdict(None if not lat else lat.get("p99", 1e9) <= TARGET_LATENCY_P99_MS),
                _f((ours.get("e2e_ms") or {}).get("p50"), 1),
                _f((ours.get("e2e_ms") or {}).get("p99"), 1),
                _f((peer.get("e2e_ms") or {}).get("p50"), 1),
                _f((peer.get("e2e_ms") or {}).get("p99"), 1),
                _f(first.get("p50"), 1),
                _f(first.get("p99"), 1),
                _verdict(None if not first else first.get("p99", 1e9) <= TARGET_FIRST_FRAME_MS),
            ]
        )
        for name, phase in (("flumph", ours), ("ffmpeg", peer)):
            if phase:
                load_rows.append(
                    [
                        str(n),
                        name,
                        _f(phase.get("window_s"), 1),
                        _f(phase.get("cpu_s"), 2),
                        _f(phase.get("publisher_cpu_s"), 2),
                        _f(phase.get("viewer_cpu_s"), 2),
                        _f(phase.get("bench_cpu_s"), 2),
                        _f(phase.get("other_cpu_s"), 2),
                        _f(phase.get("machine_busy"), 2),
                        _f((phase.get("publisher_lag_ms") or {}).get("p99"), 2),
                        str(phase.get("srt_retransmits", "—")),
                        str(phase.get("srt_sender_drops", "—")),
                        str(phase.get("connects_refused", "—")),
                        str(len(phase.get("errors", []))),
                    ]
                )
    cost = _table(
        [
            "streams", "CPU s/stream-min", "ffmpeg", "ratio", "≤0.5×",
            "RSS MB/stream (Δ)", "RSS MB total", "ffmpeg MB/stream", "ffmpeg total",
            "ratio/stream", "ratio total", "ratio PSS",
        ],
        cost_rows,
    )  # fmt: skip
    deliver = _table(
        [
            "streams", "frames sent/recv", "lost", "ffmpeg lost",
            "API streams", "added p50 ms", "added p99 ms", "≤5 ms",
            "e2e-hold p50", "e2e-hold p99", "ffmpeg e2e-120 p50", "ffmpeg p99",
            "1st frame p50 ms", "p99 ms", "≤100 ms",
        ],
        delivery_rows,
    )  # fmt: skip
    load = _table(
        [
            "streams", "system", "window s", "SUT CPU s", "publisher CPU s", "viewers CPU s",
            "bench CPU s", "others CPU s", "machine busy", "pub lag p99 ms", "SRT retrans",
            "SRT snd drops", "refused connects", "errors",
        ],
        load_rows,
    )  # fmt: skip
    return (
        "Cost per stream (flumph ingest vs one ffmpeg -c copy per stream)\n"
        + cost
        + (
            "\n* frames were lost at this level: the system that lost them did less work than asked"
            if any("*" in row[3] for row in cost_rows)
            else ""
        )
        + "\n\nDelivery (flumph; lossless target applies at 200 streams)\n"
        + deliver
        + "\n\nLoad during the measurement window\n"
        + load
    )
