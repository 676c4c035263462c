"""Publisher process: replays the clip to N SRT listeners at once, each frame at its own time.

Run by ingest_fanout (``python -m bench.ingest_publisher``): reads one JSON plan line on stdin,
connects every target (in parallel, retrying while a listener is still starting), prints
``{"event": "started", "t0": ...}`` (time.monotonic, which is system-wide on Linux), then one
scheduler thread paces all sends: stream k starts at t0 + stagger·k/N and sends frame i's bytes at
start + pts_i as live-mode messages of at most 1316 bytes, until the common end time. The result
(per stream: when each frame's last byte was handed to libsrt, SRT sender statistics) goes to the
plan's result file.
"""

from __future__ import annotations

import heapq
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flumph import srt

from .ingest_clip import FPS, Clip, relayout

_CONNECT_WORKERS = 16
_START_MARGIN_S = 0.3


@dataclass
class Target:
    stream_id: str
    host: str
    port: int
    sock: srt.SrtSocket | None = None
    start: float = 0.0
    sent_at: list[float] = field(default_factory=list)  # per frame index: last byte handed over
    error: str | None = None
    connect_attempts: int = 0
    rejections: list[str] = field(default_factory=list)
    stats: dict[str, int | float] = field(default_factory=dict)


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _connect(target: Target, latency_ms: int, deadline: float) -> None:
    """Connect, retrying as an agent would (with jitter) while the listener is not up yet or
    refuses (a full backlog); refusals are counted, they are a finding about the listener."""
    options = srt.SrtOptions(streamid=f"publish:{target.stream_id}", latency_ms=latency_ms)
    while True:
        target.connect_attempts += 1
        try:
            target.sock = srt.SrtSocket.connect(target.host, target.port, options, timeout_s=1.0)
            return
        except srt.SrtError as e:
            if isinstance(e, srt.SrtRejected):
                target.rejections.append(str(e))
            if time.monotonic() >= deadline:
                target.error = f"connect failed after {target.connect_attempts} attempts: {e}"
                return
            time.sleep(random.uniform(0.05, 0.3))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    xs = sorted(values)
    return {
        "p50": xs[len(xs) // 2],
        "p99": xs[min(len(xs) - 1, int(0.99 * len(xs)))],
        "max": xs[-1],
    }


def _pace(
    clip: Clip, targets: list[Target], end: float, lags: list[float], blocked: list[float]
) -> None:
    """Send every frame of every live target at its time, noting how late each send started
    (``lags``) and how long each ``send`` call took (``blocked``), in seconds."""
    heap: list[tuple[float, int, int]] = []  # (due, target index, frame index)
    for k, t in enumerate(targets):
        if t.sock is not None:
            heapq.heappush(heap, (t.start, k, 0))
    while heap:
        due, k, i = heapq.heappop(heap)
        if due >= end or i >= len(clip.frames):
            continue
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        began = time.monotonic()
        lags.append(began - due)
        target = targets[k]
        assert target.sock is not None
        data = clip.frames[i].data
        if i == 0:
            data = clip.header + data
        try:
            target.sock.send(data)
        except srt.SrtError as e:
            target.error = f"send of frame {i} failed: {e}"
            continue
        done = time.monotonic()
        blocked.append(done - began)
        target.sent_at.append(done)
        if i + 1 < len(clip.frames):
            heapq.heappush(heap, (target.start + clip.frames[i + 1].pts_ms / 1000, k, i + 1))


def _sender_stats(target: Target) -> None:
    if target.sock is None:
        return
    try:
        s = target.sock.stats()
    except srt.SrtError as e:
        target.stats = {"error": 1}
        target.error = target.error or f"stats: {e}"
        return
    target.stats = {
        "packets_sent": s.packets_sent,
        "packets_retransmitted": s.packets_retransmitted,
        "packets_lost_sent": s.packets_lost_sent,
        "packets_dropped_sent": s.packets_dropped_sent,
        "rtt_ms": s.rtt_ms,
    }


def run(plan: dict[str, Any]) -> dict[str, Any]:
    # "fps": the clip's frame rate when it is not the ingest benches' (bench/peer_fanout.py: 30).
    clip = relayout(Path(plan["clip"]).read_bytes(), int(plan.get("fps", FPS)))
    latency_ms = int(plan.get("latency_ms", 120))
    targets = [Target(t["id"], t["host"], int(t["port"])) for t in plan["targets"]]
    connect_started = time.monotonic()
    deadline = connect_started + float(plan.get("connect_timeout_s", 30.0))
    with ThreadPoolExecutor(_CONNECT_WORKERS, thread_name_prefix="connect") as pool:
        for t in targets:
            pool.submit(_connect, t, latency_ms, deadline)
    connect_s = time.monotonic() - connect_started
    t0 = time.monotonic() + _START_MARGIN_S
    stagger = float(plan["stagger_s"])
    n = len(targets)
    for k, t in enumerate(targets):
        t.start = t0 + stagger * k / n
    end = t0 + float(plan["send_s"])
    _emit({"event": "started", "t0": t0, "connect_s": connect_s, "end": end})
    lags: list[float] = []
    blocked: list[float] = []
    sender = threading.Thread(target=_pace, args=(clip, targets, end, lags, blocked), name="pace")
    sender.start()
    sender.join()
    # Let the last frames play out at the receivers (they hold each packet for the latency).
    time.sleep(latency_ms / 1000 + 0.3)
    for t in targets:
        _sender_stats(t)
    with ThreadPoolExecutor(_CONNECT_WORKERS, thread_name_prefix="close") as pool:
        for t in targets:
            if t.sock is not None:
                pool.submit(t.sock.close, 1.0)
    return {
        "t0": t0,
        "end": end,
        "connect_s": connect_s,
        "lag_s": _percentiles(lags),
        "send_call_s": _percentiles(blocked),
        "streams": [
            {
                "id": t.stream_id,
                "start": t.start,
                "sent_at": t.sent_at,
                "error": t.error,
                "connect_attempts": t.connect_attempts,
                "rejections": t.rejections[:3],
                "rejected": len(t.rejections),
                "stats": t.stats,
            }
            for t in targets
        ],
    }


def main() -> int:
    plan = json.loads(sys.stdin.readline())
    srt.set_libsrt_log_level(2)
    result = run(plan)
    Path(plan["result_path"]).write_text(json.dumps(result), encoding="utf-8")
    _emit({"event": "done"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
