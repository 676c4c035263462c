"""Fan-out cost against Node-Media-Server, in one run: one 1 Mbps 720p30 H.264 stream watched by
V viewers, NMS 4.4.3 (RTMP in, HTTP-FLV out) vs the Flumph ingest (SRT in, fMP4 over WebSocket).

    python -m bench.peer_fanout                                  # 150 and 400 viewers, 20 s windows
    python -m bench.peer_fanout --viewers 1000 --systems flumph  # the no-frame-lost check

The clip (libx264 1280x720 30 fps 1 Mbps, no B-frames, a keyframe every 2 s) is made once by the
ffmpeg CLI and cached in bench/out/. NMS is fed by ``ffmpeg -re -stream_loop -1 -c copy -f flv``,
Flumph by bench/ingest_publisher.py (the clip re-laid as our agent's live Matroska). Viewers run
in separate processes (bench/fanout_viewers.py, up to 250 per process), join over ``--spread`` s,
and read everything the server sends; the window opens ``--warmup`` s after the last joined. CPU
is the server process's only (all threads, /proc). Flumph's viewers parse each fragment's decode
time, so a gap in a viewer's timeline is a lost frame, and they time their first decodable frame
(TCP connect → end of the first fragment, which the GOP cache makes a keyframe).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat as ps
from bench.ingest_clip import OUT_DIR
from bench.ingest_fanout import _read_event, _send_plan, _spawn
from bench.ingest_systems import free_tcp_port, free_udp_ports, stop_process
from bench.peer_nms import NMS_VERSION, _wait_tcp, rtmp_publishers, start_nms, x264_clip

FPS = 30
TIMESCALE = 1000  # Matroska's millisecond timestamps carry through to the fragments
VIEWERS_PER_PROCESS = 250
SYSTEMS = ("nms", "flumph")
STREAM = "cam-fan"


@dataclass(frozen=True)
class Settings:
    seconds: float
    warmup: float
    spread: float
    log_dir: Path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def clip_720p(seconds: int) -> Path:
    path = OUT_DIR / f"h264-720p-1M-{FPS}fps-g60-{seconds}s.mkv"
    return x264_clip(path, "1280x720", FPS, 1000, 60, seconds)


def start_flumph(log_dir: Path, viewers: int) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port = free_tcp_port()
    (srt_port,) = free_udp_ports(1)
    cmd = [
        sys.executable, "-m", "flumph", "ingest", "--host", "127.0.0.1", "--port", str(http_port),
        "--srt-host", "127.0.0.1", "--srt-port", str(srt_port), "--log-level", "warning",
        "--max-viewers-per-stream", str(viewers),
    ]  # fmt: skip
    with open(log_dir / f"fanout-ingest-{http_port}.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    _wait_tcp(http_port, proc, "flumph ingest")
    return proc, http_port, srt_port


def _viewer_processes(
    kind: str, port: int, viewers: int, s: Settings
) -> list[subprocess.Popen[bytes]]:
    procs = []
    n_procs = math.ceil(viewers / VIEWERS_PER_PROCESS)
    for k in range(n_procs):
        share = viewers // n_procs + (1 if k < viewers % n_procs else 0)
        plan = {"kind": kind, "host": "127.0.0.1", "port": port, "stream": STREAM,
                "viewers": share, "spread_s": s.spread, "seconds": s.warmup + s.seconds + 1,
                "fps": FPS, "timescale": TIMESCALE}  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "bench.fanout_viewers"],
                                cwd=Path(__file__).resolve().parent.parent,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(plan) + "\n").encode())
        proc.stdin.close()
        procs.append(proc)
    return procs


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def run_phase(system: str, viewers: int, clip: Path, s: Settings) -> dict[str, Any]:
    sut: subprocess.Popen[bytes] | None = None
    feeders: list[subprocess.Popen[Any]] = []
    watchers: list[subprocess.Popen[bytes]] = []
    try:
        send_s = 3 + s.spread + s.warmup + s.seconds + 4
        if system == "nms":
            sut, rtmp_port, port = start_nms(s.log_dir)
            feeders += rtmp_publishers(clip, rtmp_port, [STREAM], s.log_dir / "fan-rtmp.log")
        else:
            sut, port, srt_port = start_flumph(s.log_dir, viewers)
            publisher = _spawn("bench.ingest_publisher")
            feeders.append(publisher)
            plan = {"clip": str(clip), "fps": FPS, "latency_ms": 120, "stagger_s": 0.0,
                    "send_s": send_s, "connect_timeout_s": 30,
                    "targets": [{"id": STREAM, "host": "127.0.0.1", "port": srt_port}],
                    "result_path": str(s.log_dir / "fan-publisher.json")}  # fmt: skip
            _send_plan(publisher, plan)
            _read_event(publisher, 60)
        time.sleep(3.0)  # a GOP in the cache before anyone joins
        watchers = _viewer_processes(system, port, viewers, s)
        time.sleep(s.spread + s.warmup)
        cpu0, t0 = ps.total_cpu([sut.pid]), time.monotonic()
        time.sleep(s.seconds)
        cpu = ps.total_cpu([sut.pid]) - cpu0
        window_s = time.monotonic() - t0
        rss = ps.total_rss([sut.pid])
        results: list[dict[str, Any]] = []
        for proc in watchers:
            assert proc.stdout is not None
            out = proc.stdout.read()  # its stdin is closed already: no communicate()
            proc.wait(60)
            results += json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for proc in watchers:
            stop_process(proc)
        for proc in feeders:
            stop_process(proc)
        if sut is not None:
            stop_process(sut)
    ok = [r for r in results if "error" not in r]
    row: dict[str, Any] = {
        "system": system,
        "viewers": viewers,
        "window_s": window_s,
        "cpu_percent": cpu / window_s * 100,
        "cpu_percent_per_viewer": cpu / window_s * 100 / viewers,
        "rss_mb": rss / 1024 / 1024,
        "connected": len(ok),
        "mbit_per_viewer": (
            sum(r["bytes"] for r in ok) * 8 / max(1, len(ok)) / (s.spread + s.warmup + s.seconds)
        )
        / 1e6,
    }
    if system == "flumph":
        firsts = [r["first_frame_ms"] for r in ok if r.get("first_frame_ms") is not None]
        row.update(
            frames=sum(r["frames"] for r in ok),
            lost=sum(r["lost"] for r in ok),
            dropped_told=sum(r["dropped_told"] for r in ok),
            first_frame_p50_ms=_percentile(firsts, 0.5),
            first_frame_p99_ms=_percentile(firsts, 0.99),
        )
    else:
        firsts = [r["first_64k_ms"] for r in ok if r.get("first_64k_ms") is not None]
        row.update(first_64k_p50_ms=_percentile(firsts, 0.5))
    return row


LABELS = {"nms": f"Node-Media-Server {NMS_VERSION} (HTTP-FLV)", "flumph": "Flumph ingest (fMP4/WS)"}


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | viewers | connected | server CPU % | CPU % per viewer | ÷ NMS "
        "| Mbit/s per viewer | frames lost (told) | 1st frame p50 / p99 ms | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(
                f"| {LABELS[r['system']]} | {r['viewers']} | failed: {r['failed']} |||||||"
            )
            continue
        nms = next(
            (x for x in rows if x["system"] == "nms" and x["viewers"] == r["viewers"]
             and "failed" not in x), None,
        )  # fmt: skip
        ratio = r["cpu_percent_per_viewer"] / nms["cpu_percent_per_viewer"] if nms else float("nan")
        if r["system"] == "flumph":
            lost = f"{r['lost']} of {r['frames'] + r['lost']} ({r['dropped_told']})"
            first = f"{r['first_frame_p50_ms']:.1f} / {r['first_frame_p99_ms']:.1f}"
        else:
            lost, first = "n/a", f"64 KB: {r['first_64k_p50_ms']:.1f} p50"
        lines.append(
            f"| {LABELS[r['system']]} | {r['viewers']} | {r['connected']} | {r['cpu_percent']:.1f} "
            f"| {r['cpu_percent_per_viewer']:.4f} | {ratio:.2f} | {r['mbit_per_viewer']:.2f} "
            f"| {lost} | {first} | {r['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer_fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--viewers", default="150,400", help="comma list (default 150,400)")
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="after the last join (default 3)")
    p.add_argument("--spread", type=float, default=2.0, help="joins spread over (default 2 s)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma list of nms, flumph")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = p.parse_args(argv)
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    if not systems or any(x not in SYSTEMS for x in systems):
        p.error(f"--systems must name some of {', '.join(SYSTEMS)}, got {args.systems!r}")
    levels = [int(x) for x in args.viewers.split(",") if x.strip()]
    if not levels or min(levels) < 1 or args.seconds < 2:
        p.error("--viewers must be positive integers, --seconds >= 2")
    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    s = Settings(args.seconds, args.warmup, args.spread, log_dir)
    clip = clip_720p(60)
    rows = []
    for viewers in levels:
        for system in systems:
            _say(f"{system} x{viewers} viewers ...")
            try:
                row = run_phase(system, viewers, clip, s)
                _say(f"  {row['cpu_percent_per_viewer']:.4f} CPU % per viewer")
            except Exception as e:  # one failed phase must not lose the others' figures
                _say(f"  FAILED: {e!r}")
                row = {"system": system, "viewers": viewers, "failed": repr(e)}
            rows.append(row)
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
