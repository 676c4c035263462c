"""Ingest cost against a native server, in one run: Node-Media-Server 4.4.3 (npm; RTMP in) vs the
Flumph ingest (SRT in), the SRT receive floor (libsrt accept-and-discard with ``flumph.srt``) and
one ``ffmpeg -c copy`` fMP4 process per stream (the peer of bench/ingest_fanout.py).

    python -m bench.peer_nms                               # 20 streams, 30 s windows, ~3 min
    python -m bench.peer_nms --streams 50 --systems nms,flumph --json bench/out/nms.json

Every system gets the same H.264 clip (640x360, 15 fps, 250 kbps, a keyframe every 4 s: the
ingest benches' clip, in H.264 because the Debian ffmpeg 5.1 cannot put AV1 into FLV). NMS is fed
by one ``ffmpeg -re -stream_loop -1 -i clip -c copy -f flv rtmp://…`` per stream; the SRT systems
by bench/ingest_publisher.py (each frame's bytes at its time, as live Matroska, as our agent sends).
No viewers: this is the cost of taking streams in. CPU and RSS are the server's process only, read
from /proc over the window. NMS is installed by this script into bench/out/nms (never a runtime
dependency of Flumph) and started on free loopback ports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat as ps
from bench.ingest_clip import FPS, OUT_DIR, relayout
from bench.ingest_fanout import _read_event, _send_plan, _spawn
from bench.ingest_systems import (
    FfmpegFleet,
    free_tcp_port,
    free_udp_ports,
    start_ingest,
    stop_process,
)

NMS_VERSION = "4.4.3"
NMS_DIR = OUT_DIR / "nms"
SYSTEMS = (
    "nms", "srt-floor", "srt-floor-lazy", "srt-floor-tsbpd", "flumph", "flumph-tsbpd", "ffmpeg"
)  # fmt: skip
MB = 1024 * 1024
_IDLE_S = 2.0


@dataclass(frozen=True)
class Settings:
    streams: int
    seconds: float
    warmup: float
    stagger: float
    latency_ms: int
    log_dir: Path


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the clip and the peer's installation -----------------------------------------------------


def x264_clip(path: Path, size: str, fps: int, kbps: int, gop: int, seconds: int) -> Path:
    """A testsrc2 clip in H.264 (libx264 veryfast, no B-frames, CBR-ish) as Matroska, made once
    by the ffmpeg CLI at ``path`` and checked to re-lay as the publisher sends it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mkv")
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-b:v", f"{kbps}k",
            "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k", "-g", str(gop),
            "-pix_fmt", "yuv420p", "-f", "matroska", str(partial),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
        relayout(partial.read_bytes(), fps)  # it must re-lay as the publisher sends it
        partial.replace(path)
    return path


def h264_clip(seconds: int) -> Path:
    """The ingest benches' clip as H.264 (libx264, no B-frames), cached in bench/out/."""
    path = OUT_DIR / f"h264-360p-250k-{FPS}fps-g60-{seconds}s.mkv"
    return x264_clip(path, "640x360", FPS, 250, 60, seconds)


def ensure_nms() -> Path:
    """node-media-server@4.4.3 installed with npm into bench/out/nms; its bin/app.js."""
    app = NMS_DIR / "node_modules" / "node-media-server" / "bin" / "app.js"
    package = app.parent.parent / "package.json"
    if not package.exists() or json.loads(package.read_text())["version"] != NMS_VERSION:
        if shutil.which("npm") is None or shutil.which("node") is None:
            raise SystemExit("node and npm are needed for the NMS peer (Debian: apt install npm)")
        NMS_DIR.mkdir(parents=True, exist_ok=True)
        cmd = ["npm", "install", "--prefix", str(NMS_DIR), "--no-audit", "--no-fund",
               "--loglevel=error", f"node-media-server@{NMS_VERSION}"]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=600)
    return app


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} is not listening on {port} after {timeout_s} s"
                ) from None
            time.sleep(0.1)


def start_nms(log_dir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    """NMS on free loopback ports, admin UI off, no recording: (process, RTMP port, HTTP port)."""
    app = ensure_nms()
    rtmp, http, rtmps, https = (free_tcp_port() for _ in range(4))
    run_dir = log_dir / f"nms-{rtmp}"
    run_dir.mkdir(parents=True, exist_ok=True)
    tls = {"key": str(app.parent / "key.pem"), "cert": str(app.parent / "cert.pem")}  # bundled
    config = {
        "bind": "127.0.0.1",
        "notify": {"url": ""},
        "store": {"path": str(run_dir / "data"), "maxHistory": 100},
        "auth": {"play": False, "publish": False, "secret": "bench",
                 "jwt": {"secret": "bench-" * 6, "expiresIn": "24h", "refreshExpiresIn": "7d",
                         "algorithm": "HS256", "users": []}},
        "rtmp": {"port": rtmp},
        "rtmps": {"port": rtmps, **tls},
        "http": {"port": http},
        "https": {"port": https, **tls},
        "webadmin": {"enable": False},
        "record": {"auto": False, "path": str(run_dir / "record")},
    }  # fmt: skip
    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    with open(run_dir / "nms.log", "wb") as log:
        proc = subprocess.Popen(
            ["node", str(app), "-c", str(config_path)],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_tcp(rtmp, proc, "node-media-server")
        _wait_tcp(http, proc, "node-media-server (HTTP)")
    except RuntimeError:
        stop_process(proc)
        raise
    return proc, rtmp, http


def rtmp_publishers(
    clip: Path, port: int, ids: list[str], log: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    with open(log, "ab") as out:
        for sid in ids:
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
                   "-stream_loop", "-1", "-i", str(clip), "-c", "copy", "-f", "flv",
                   f"rtmp://127.0.0.1:{port}/live/{sid}"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out))
    return procs


def flv_arrives(http_port: int, sid: str, want: int = 4096) -> bool:
    """A viewer of NMS's HTTP-FLV output gets media for ``sid`` (read after the window)."""
    url = f"http://127.0.0.1:{http_port}/live/{sid}.flv"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return len(response.read(want)) >= want
    except OSError:
        return False


# --- one phase -------------------------------------------------------------------------------


def run_phase(system: str, clip: Path, s: Settings) -> dict[str, Any]:
    ids = [f"cam-{k:03d}" for k in range(s.streams)]
    sut: list[subprocess.Popen[bytes]] = []
    feeders: list[subprocess.Popen[Any]] = []
    fleet: FfmpegFleet | None = None
    ingest = None
    check = ""
    try:
        # 1. the system under test
        if system == "nms":
            nms, rtmp_port, http_port = start_nms(s.log_dir)
            sut.append(nms)
            pids = [nms.pid]
        elif system.startswith("srt-floor"):
            (port,) = free_udp_ports(1)
            no_tsbpd = [] if system.endswith("-tsbpd") else ["--no-tsbpd"]
            lazy = ["--lazy"] if system.endswith("-lazy") else []
            floor = _spawn_bytes(["-m", "bench.srt_floor", "--port", str(port), *no_tsbpd, *lazy])
            sut.append(floor)
            _read_line(floor, 30)
            pids = [floor.pid]
            targets = [{"id": i, "host": "127.0.0.1", "port": port} for i in ids]
        elif system.startswith("flumph"):
            tsbpd = "--srt-tsbpd" if system.endswith("-tsbpd") else "--no-srt-tsbpd"
            ingest = start_ingest(s.log_dir, max(s.streams, 100), extra_args=(tsbpd,))
            pids = [ingest.pid]
            targets = [{"id": i, "host": "127.0.0.1", "port": ingest.srt_port} for i in ids]
        else:
            fleet = FfmpegFleet(ids, s.log_dir, s.latency_ms)
            fleet.start()
            pids = fleet.pids
            targets = [{"id": i, "host": "127.0.0.1", "port": p}
                       for i, p in zip(ids, fleet.ports, strict=True)]  # fmt: skip
        cpu0, t0 = ps.total_cpu(pids), time.monotonic()
        time.sleep(_IDLE_S)
        idle_cpu_per_min = (ps.total_cpu(pids) - cpu0) / (time.monotonic() - t0) * 60
        rss_idle = ps.total_rss(pids)
        # 2. the publishers
        send_s = s.stagger + s.warmup + s.seconds + 2.0
        if system == "nms":
            for k in range(s.streams):
                feeders += rtmp_publishers(clip, rtmp_port, [ids[k]], s.log_dir / "rtmp-pub.log")
                time.sleep(s.stagger / s.streams)
            window_at = time.monotonic() + s.warmup
        else:
            publisher = _spawn("bench.ingest_publisher")
            feeders.append(publisher)
            result = s.log_dir / f"{system}-{s.streams}-publisher.json"
            plan = {"clip": str(clip), "targets": targets, "latency_ms": s.latency_ms,
                    "stagger_s": s.stagger, "send_s": send_s, "connect_timeout_s": 60,
                    "result_path": str(result)}  # fmt: skip
            _send_plan(publisher, plan)
            started = _read_event(publisher, 90)
            window_at = float(started["t0"]) + s.stagger + s.warmup
        time.sleep(max(0.0, window_at - time.monotonic()))
        # 3. the window
        cpu0, t0 = ps.total_cpu(pids), time.monotonic()
        threads0 = ps.thread_cpu(pids[0]) if len(pids) == 1 else {}
        rss_peak = 0
        while time.monotonic() < t0 + s.seconds:
            rss_peak = max(rss_peak, ps.total_rss(pids))
            time.sleep(min(1.0, max(0.0, t0 + s.seconds - time.monotonic())))
        cpu = ps.total_cpu(pids) - cpu0
        window_s = time.monotonic() - t0
        threads1 = ps.thread_cpu(pids[0]) if len(pids) == 1 else {}
        threads = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
        load = os.getloadavg()[0]
        rss_end = ps.total_rss(pids)
        # 4. did every stream flow?
        if system == "nms":
            alive = sum(p.poll() is None for p in feeders)
            flowing = sum(flv_arrives(http_port, sid) for sid in ids)
            check = (
                f"{alive}/{s.streams} publishers up, {flowing}/{s.streams} streams play (HTTP-FLV)"
            )
        elif ingest is not None:
            streams = ingest.get_json("/api/streams", 30)
            live = sum(int(x.get("frames", 0)) > 0 for x in streams)
            check = f"{live}/{s.streams} streams with frames (/api/streams)"
    finally:
        for proc in feeders:
            stop_process(proc)
        if ingest is not None:
            ingest.stop()
        for proc in sut:
            stop_process(proc)
        if fleet is not None:
            fleet.finish(timeout_s=2.0)
    if system.startswith("srt-floor"):
        done = _last_json(sut[0])
        discarded = done.get("bytes", 0) / MB
        check = (
            f"{done.get('connections', '?')}/{s.streams} connections, {discarded:.1f} MB discarded"
        )
    elif system == "ffmpeg" and fleet is not None:
        got = sum(bool(log.frames) for log in fleet.logs.values())
        check = f"{got}/{s.streams} ffmpeg wrote fragments"
    per_process = system == "ffmpeg"  # one process per stream: the whole RSS is the streams' cost
    return {
        "system": system,
        "streams": s.streams,
        "window_s": window_s,
        "cpu_s": cpu,
        "cpu_s_per_stream_min": cpu / s.streams / (window_s / 60),
        "cpu_percent": cpu / window_s * 100,
        "idle_cpu_s_per_min": idle_cpu_per_min,
        "rss_mb_idle": rss_idle / MB,
        "rss_mb_end": rss_end / MB,
        "rss_mb_peak": rss_peak / MB,
        "rss_mb_per_stream": (rss_end if per_process else rss_end - rss_idle) / s.streams / MB,
        "check": check,
        "thread_cpu_s": {k: round(v, 3) for k, v in sorted(threads.items()) if v > 0},
        "loadavg_1min": load,
    }


def _spawn_bytes(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=Path(__file__).resolve().parent.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)  # fmt: skip


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else b""
    if not line:
        raise RuntimeError(f"{proc.args!r} said nothing within {timeout_s} s")
    event: dict[str, Any] = json.loads(line)
    return event


def _last_json(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    assert proc.stdout is not None
    lines = [x for x in proc.stdout.read().splitlines() if x.strip()]
    last: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return last


# --- the table -------------------------------------------------------------------------------

LABELS = {
    "nms": f"Node-Media-Server {NMS_VERSION} (RTMP in)",
    "srt-floor": "SRT receive floor (flumph.srt, accept + discard; TSBPD off)",
    "srt-floor-lazy": "SRT receive floor, each socket read every 0.1 s (the ingest, unwatched)",
    "srt-floor-tsbpd": "SRT receive floor with TSBPD (libsrt's default)",
    "flumph": "Flumph ingest (SRT in, fMP4 out; TSBPD off, the default)",
    "flumph-tsbpd": "Flumph ingest with --srt-tsbpd (TSBPD on, as before)",
    "ffmpeg": "ffmpeg -c copy fMP4, one process per stream",
}


def render(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if "failed" not in r]
    nms = next((r for r in ok if r["system"] == "nms"), None)
    ffmpeg = next((r for r in ok if r["system"] == "ffmpeg"), None)

    def ratio(r: dict[str, Any], peer: dict[str, Any] | None) -> str:
        return f"{r['cpu_s_per_stream_min'] / peer['cpu_s_per_stream_min']:.2f}" if peer else "-"

    lines = [
        "| system | streams | CPU s per stream-minute | ÷ NMS | ÷ ffmpeg | server CPU % "
        "| RSS MB idle → end | RSS MB per stream | load 1 min | check |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(
                f"| {LABELS[r['system']]} | {r['streams']} | failed: {r['failed']} ||||||||"
            )
            continue
        lines.append(
            f"| {LABELS[r['system']]} | {r['streams']} | {r['cpu_s_per_stream_min']:.3f} "
            f"| {ratio(r, nms)} | {ratio(r, ffmpeg)} | {r['cpu_percent']:.1f} "
            f"| {r['rss_mb_idle']:.0f} → {r['rss_mb_end']:.0f} | {r['rss_mb_per_stream']:.2f} "
            f"| {r['loadavg_1min']:.2f} | {r['check']} |"
        )
    split = [r for r in ok if r.get("thread_cpu_s") and r["system"] != "nms"]
    if split:
        lines += ["", "Where the SRT systems' CPU went (per-thread /proc counters, share of the "
                  "process's window CPU; srt-epoll: our receive thread, python: the event loop, "
                  "SRT:*: libsrt's own):", ""]  # fmt: skip
        for r in split:
            # Per-thread counters may add up to less than the process's (libsrt's TsbPd threads
            # run in bursts shorter than a tick): the rest is shown as not attributed.
            total = max(r["cpu_s"], sum(r["thread_cpu_s"].values())) or 1.0
            parts = sorted(r["thread_cpu_s"].items(), key=lambda kv: -kv[1])
            missing = total - sum(r["thread_cpu_s"].values())
            if missing > 0.02 * total:
                parts.append(("not attributed to a thread", missing))
            text = ", ".join(f"{name} {100 * v / total:.0f} %" for name, v in parts[:7])
            lines.append(f"* {LABELS[r['system']]}, {r['streams']} streams: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peer_nms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--streams", type=int, default=20, help="publishers (default 20)")
    p.add_argument("--seconds", type=float, default=30.0, help="measurement window (default 30)")
    p.add_argument("--warmup", type=float, default=4.0, help="after the last start (default 4)")
    p.add_argument("--stagger", type=float, default=3.0, help="starts spread over (default 3 s)")
    p.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma list of {', '.join(SYSTEMS)}"
    )
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = p.parse_args(argv)
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    if not systems or any(x not in SYSTEMS for x in systems):
        p.error(f"--systems must name some of {', '.join(SYSTEMS)}, got {args.systems!r}")
    if args.streams < 1 or args.seconds < 2 or args.warmup < 1:
        p.error("--streams must be >= 1, --seconds >= 2, --warmup >= 1")
    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    s = Settings(args.streams, args.seconds, args.warmup, args.stagger, 120, log_dir)
    clip = h264_clip(max(60, int(args.stagger + args.warmup + args.seconds + 10)))
    rows = []
    for system in systems:
        _say(f"{system} x{s.streams} ...")
        try:
            row = run_phase(system, clip, s)
            _say(f"  {row['cpu_s_per_stream_min']:.3f} s/stream-min, {row['check']}")
        except Exception as e:  # one failed system must not lose the others' figures
            _say(f"  FAILED: {e!r}")
            row = {"system": system, "streams": s.streams, "failed": repr(e)}
        rows.append(row)
    print(render(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) for k, v in asdict(s).items()}
        args.json.write_text(json.dumps({"settings": settings, "clip": str(clip), "rows": rows},
                                        indent=1), encoding="utf-8")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
