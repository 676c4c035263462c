"""Uplink adaptation (issue #11): capacity steps 800 -> 150 -> 800 kbit/s under a 500 kbit/s
stream for 60 s, ``adapt_to_link`` on vs off, in the same run.

    python -m bench.rate_adaptation                    # on, off: ~2.5 min
    python -m bench.rate_adaptation --schedule "800kbps for 20s, 150kbps for 20s, 800kbps" \\
        --seconds 60 --queue-bytes 65536 --delay-ms 20 --json bench/out/adapt.json

The agent's pipeline (synthetic camera, AV1 640x360 30 fps at 500 kbit/s, SRT latency 120 ms)
streams through bench/linkproxy.py (its own process: token bucket, ``--queue-bytes`` tail-drop
queue, ``--delay-ms`` each way) into a real ingest; a viewer on the ingest's WebSocket records
when each frame arrives. Each configuration gets its own stream id and a fresh proxy whose
schedule starts with the stream.

Columns: frames delivered to the viewer / frames the camera captured (target >= 90 % with
adaptation); longest freeze = longest time without a frame at the viewer, overall and in the
150 kbit/s phase (target <= 1 s with adaptation); SRT packets the sender dropped as too late; the
proxy's tail drops; time from the capacity drop until the encoder's target is at or under the
capacity (adapt down), and from the capacity's return until the target is back at the setting
(adapt up); kbit/s delivered to the ingest in each phase.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.linkproxy import capacity_at, parse_schedule
from bench.rate_common import Run, start_ingest, stream_through_proxy
from bench.rate_viewer import Viewer, ViewerLog
from bench.report import OUT_DIR, format_table, machine_note, write_json
from flumph.settings import StreamSettings


def phases(schedule: str, seconds: float) -> list[tuple[float, float, float | None]]:
    """(start, end, kbps) of each step on the proxy's clock, cut at ``seconds``."""
    out = []
    t = 0.0
    for step in parse_schedule(schedule):
        end = seconds if step.seconds is None else min(seconds, t + step.seconds)
        out.append((t, end, step.kbps))
        t = end
        if t >= seconds:
            break
    return out


def analyse(run: Run, log: ViewerLog, schedule: str, seconds: float) -> dict[str, Any]:
    steps = parse_schedule(schedule)
    fps = run.settings.fps
    t0 = run.started_at  # monotonic of the pipeline's start; proxy clock = t + offset
    warm = 2.0  # connecting, first keyframe
    end = t0 + seconds - run.offset_s - 0.5
    captured = int((end - (t0 + warm)) * fps)
    delivered = log.frames_between(t0 + warm, end)
    freeze, freeze_at = log.longest_gap(t0 + warm, end)
    result: dict[str, Any] = {
        "delivered_pct": round(100 * delivered / max(1, captured), 1),
        "freeze_s": round(freeze, 2),
        "freeze_at_s": round(freeze_at - t0 + run.offset_s, 1),
    }
    low = min(phases(schedule, seconds), key=lambda p: p[2] if p[2] is not None else 1e9)
    low_start, low_end, low_kbps = low
    result["freeze_low_phase_s"] = round(
        log.longest_gap(t0 + low_start - run.offset_s, t0 + low_end - run.offset_s)[0], 2
    )
    last = run.samples[-1] if run.samples else {}
    result["srt_dropped_sent"] = last.get("srt_dropped_sent")
    result["proxy_queue_drops"] = run.proxy.get("up", {}).get("dropped_queue")
    # Adapt down: capacity drop -> the target at or under the capacity.
    down = up = None
    setting = run.settings.bitrate_kbps
    for s in run.samples:
        t_proxy = s["t"] + run.offset_s
        rate = s.get("rate") or {}
        target = rate.get("target_kbps")
        if target is None:
            continue
        in_low = low_kbps is not None and low_start <= t_proxy < low_end
        if down is None and in_low and low_kbps is not None and target <= low_kbps:
            down = round(t_proxy - low_start, 2)
        if up is None and t_proxy >= low_end and target >= setting:
            up = round(t_proxy - low_end, 2)
    result["adapt_down_s"] = down
    result["adapt_up_s"] = up
    per = run.payload_kbps
    result["phase_kbps"] = [
        round(sum(per[int(a) : int(b)]) / max(1, int(b) - int(a))) for a, b, _ in
        phases(schedule, seconds)
    ]  # fmt: skip
    result["capacity"] = [capacity_at(steps, a) for a, _, _ in phases(schedule, seconds)]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rate_adaptation", description=__doc__)
    p.add_argument("--schedule", default="800kbps for 20s, 150kbps for 20s, 800kbps")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--kbps", type=int, default=500)
    p.add_argument("--codec", default="av1")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--latency-ms", type=int, default=120)
    p.add_argument("--delay-ms", type=float, default=20.0)
    p.add_argument("--queue-bytes", type=int, default=65536)
    p.add_argument("--modes", default="on,off")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    OUT_DIR.mkdir(exist_ok=True)
    ingest = start_ingest(OUT_DIR / "rate_adaptation_ingest.log")
    ws = f"ws://127.0.0.1:{ingest.http_port}"
    rows: list[list[object]] = []
    doc: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}, "runs": {}}
    print(f"capacity {args.schedule}; {machine_note()}", flush=True)
    try:
        for mode in args.modes.split(","):
            settings = StreamSettings(
                codec=args.codec,
                bitrate_kbps=args.kbps,
                fps=args.fps,
                srt_latency_ms=args.latency_ms,
                adapt_to_link=mode == "on",
            )
            device = f"adapt-{mode}-{int(time.time())}"
            viewer = Viewer(ws, device).start()
            run = stream_through_proxy(
                settings,
                ingest.srt_port,
                args.seconds,
                device_id=device,
                proxy_options={
                    "schedule": args.schedule,
                    "delay_ms": args.delay_ms,
                    "queue_bytes": args.queue_bytes,
                },
                sample_every_s=0.25,
            )
            log = viewer.stop()
            r = analyse(run, log, args.schedule, args.seconds)
            doc["runs"][mode] = r | {"per_second": run.payload_kbps, "samples": [
                {"t": s["t"], "rate": s.get("rate"), "drops": s.get("srt_dropped_sent")}
                for s in run.samples
            ]}  # fmt: skip
            rows.append([
                mode, f"{r['delivered_pct']} %", r["freeze_s"], r["freeze_low_phase_s"],
                r["srt_dropped_sent"], r["proxy_queue_drops"], r["adapt_down_s"], r["adapt_up_s"],
                " / ".join(str(k) for k in r["phase_kbps"]),
            ])  # fmt: skip
            print("  ", *rows[-1], flush=True)
    finally:
        ingest.stop()
    print()
    print(format_table(
        f"{args.kbps} kbit/s {args.codec} {args.fps} fps through {args.schedule} "
        f"(queue {args.queue_bytes} B, {args.delay_ms:g} ms each way, SRT latency "
        f"{args.latency_ms} ms), {args.seconds:g} s",
        ["adapt", "frames delivered", "longest freeze s", "freeze @150 s", "SRT drops",
         "queue drops", "adapt down s", "adapt up s", "kbit/s per phase"],
        rows,
    ))  # fmt: skip
    print(f"\n{machine_note()}")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
