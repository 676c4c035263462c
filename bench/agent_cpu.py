"""Agent process CPU and memory while streaming, vs an ffmpeg CLI process doing the same job.

For 640x360 15 fps (250 kbit/s) and 1280x720 30 fps (500 kbit/s), AV1 and H.265, each in its own
run: ``python -m flumph agent --stream --source synthetic ...`` (the whole agent process: synthetic
camera, encoder, live Matroska, SRT) streams to a local libsrt listener in this process; the peer is
``ffmpeg -re -f lavfi -i testsrc2=... -c:v libsvtav1|libx265 <the agent's encoder options>
-f matroska srt://...`` (Debian ffmpeg 5.1: SVT-AV1 1.4, not PyAV's 4.1; and a cheap test pattern
instead of the agent's photograph pan with noise, whose own cost is measured apart and shown).
After the first bytes arrive and a warm-up, CPU (utime+stime of all threads, /proc) is read over a
window; RSS at its end and the peak (VmHWM).

    python -m bench.agent_cpu [--quick] [--seconds 20] [--json bench/out/agent_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds, machine_cpu, status_kib
from bench.report import REPO_DIR, format_table, machine_note, write_json
from bench.srt_receiver import CountingReceiver

CASES = [(640, 360, 15, 250), (1280, 720, 30, 500)]
CODECS = ("av1", "hevc")
SYSTEMS = ("agent", "ffmpeg")
PEER = "ffmpeg"
WARMUP_S = 3.0
FFMPEG_ENCODERS = {"av1": "libsvtav1", "hevc": "libx265"}


@dataclass
class Run:
    system: str
    codec: str
    width: int
    height: int
    fps: int
    kbps: int
    window_s: float
    cpu_percent: float  # of one core
    rss_mib: float
    peak_rss_mib: float
    received_kbps: float  # SRT payload over the window
    blocks_per_s: float  # Matroska blocks (frames) that arrived in the window, per second
    machine_busy_percent: float  # all cores, everyone
    source_percent: float  # the picture source alone, measured apart (% of one core)


def agent_command(
    codec: str, w: int, h: int, fps: int, kbps: int, port: int, state: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flumph",
        "agent",
        "--device-id",
        "bench-cpu",
        "--ingest",
        f"srt://127.0.0.1:{port}",
        "--stream",
        "--source",
        "synthetic",
        "--codec",
        codec,
        "--width",
        str(w),
        "--height",
        str(h),
        "--fps",
        str(fps),
        "--bitrate-kbps",
        str(kbps),
        "--state-dir",
        state,
        "--log-level",
        "warning",
    ]


def ffmpeg_command(codec: str, w: int, h: int, fps: int, kbps: int, port: int) -> list[str]:
    from flumph.agent.encoders import _options  # the agent's own encoder options, bench-only
    from flumph.settings import StreamSettings

    settings = StreamSettings(codec=codec, width=w, height=h, fps=fps, bitrate_kbps=kbps)
    name = FFMPEG_ENCODERS[codec]
    options = [arg for k, v in _options(name, settings).items() for arg in (f"-{k}", v)]
    url = f"srt://127.0.0.1:{port}?streamid=publish:bench-ffmpeg&latency=120000"
    return [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={w}x{h}:rate={fps}",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        name,
        *options,
        "-b:v",
        f"{kbps}k",
        "-g",
        str(settings.keyint_frames()),
        "-bf",
        "0",
        "-f",
        "matroska",
        url,
    ]


def count_block_offsets(data: bytes) -> list[int]:
    """Start offsets of every SimpleBlock/BlockGroup in a concatenation of Matroska documents
    (a stream cut short at the end is fine)."""
    from flumph.media.ebml import iter_elements

    offsets = []
    try:
        for e in iter_elements(data):
            if e.id in (0xA3, 0xA0):
                offsets.append(e.start)
    except ValueError:
        pass  # the tail of the last frame
    return offsets


def synthetic_source_percent(w: int, h: int, fps: int, frames: int = 60) -> float:
    from flumph.agent.sources import SyntheticSource

    source = SyntheticSource(w, h, fps)
    source.read(0, time.time())
    start = time.process_time()
    for i in range(frames):
        source.read(i, time.time())
    return (time.process_time() - start) / frames * fps * 100


def testsrc2_percent(w: int, h: int, fps: int, frames: int = 150) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={w}x{h}:rate={fps}",
            "-pix_fmt",
            "yuv420p",
            "-frames:v",
            str(frames),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ffmpeg's own start-up is included: an upper bound.
    return cpu / frames * fps * 100


def run_once(
    system: str, codec: str, case: tuple[int, int, int, int], window_s: float, source_pct: float
) -> Run:
    w, h, fps, kbps = case
    receiver = CountingReceiver(keep_data=True)
    receiver.start()
    env = dict(os.environ, SVT_LOG="1")
    with tempfile.TemporaryDirectory(prefix="flumph-cpu-") as state:
        argv = (
            agent_command(codec, w, h, fps, kbps, receiver.port, state)
            if system == "agent"
            else ffmpeg_command(codec, w, h, fps, kbps, receiver.port)
        )
        proc = subprocess.Popen(
            argv,
            cwd=REPO_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while receiver.report.first_data_at is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read() if proc.stderr else ""
                    raise RuntimeError(f"{system} {codec} sent nothing: {err.strip()[-800:]}")
                time.sleep(0.05)
            time.sleep(WARMUP_S)
            cpu0, wall0, bytes0 = cpu_seconds(proc.pid), time.monotonic(), receiver.report.bytes
            busy0, total0 = machine_cpu()
            time.sleep(window_s)
            cpu1, wall1, bytes1 = cpu_seconds(proc.pid), time.monotonic(), receiver.report.bytes
            busy1, total1 = machine_cpu()
            rss, peak = status_kib(proc.pid, "VmRSS") / 1024, status_kib(proc.pid, "VmHWM") / 1024
            if proc.poll() is not None:
                raise RuntimeError(f"{system} {codec} exited during the window")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            receiver.stop()
    data = bytes(receiver.report.data)
    blocks = sum(1 for o in count_block_offsets(data) if bytes0 <= o < bytes1)
    span = wall1 - wall0
    return Run(
        system,
        codec,
        w,
        h,
        fps,
        kbps,
        span,
        (cpu1 - cpu0) / span * 100,
        rss,
        peak,
        (bytes1 - bytes0) * 8 / span / 1000,
        blocks / span,
        (busy1 - busy0) / max(1, total1 - total0) * 100,
        source_pct,
    )


def report(runs: list[Run]) -> tuple[str, dict[str, Any]]:
    peers = {(r.codec, r.width, r.fps): r for r in runs if r.system == PEER}
    rows = []
    for r in runs:
        q = peers.get((r.codec, r.width, r.fps))
        rows.append(
            [
                f"{r.height}p{r.fps}",
                r.kbps,
                r.codec,
                r.system,
                f"{r.cpu_percent:.1f}",
                f"{r.source_percent:.1f}",
                f"{r.cpu_percent - r.source_percent:.1f}",
                f"{r.cpu_percent / q.cpu_percent:.2f}" if q else None,
                f"{r.rss_mib:.0f}",
                f"{r.peak_rss_mib:.0f}",
                f"{r.rss_mib / q.rss_mib:.2f}" if q else None,
                f"{r.received_kbps:.0f}",
                f"{r.blocks_per_s:.1f}",
                f"{r.machine_busy_percent:.0f}",
            ]
        )
    table = format_table(
        f"Streaming process CPU and memory ({runs[0].window_s:.0f} s window after warm-up)",
        [
            "size",
            "kbps",
            "codec",
            "system",
            "CPU %",
            "source %",
            "CPU - source",
            f"CPU ÷ {PEER}",
            "RSS MiB",
            "peak MiB",
            f"RSS ÷ {PEER}",
            "recv kbps",
            "frames/s",
            "machine busy %",
        ],
        rows,
    )
    notes = (
        "CPU %: utime+stime of all the process's threads ÷ wall time, in % of one core. "
        "source %: the picture source alone, measured apart (agent: its synthetic camera's "
        "render + frame conversion; ffmpeg: lavfi testsrc2, start-up included). frames/s: "
        "Matroska blocks that arrived during the window (ffmpeg's muxer sends a cluster at a "
        "time, so its count is lumpy). machine busy: all cores, all tenants."
    )
    return table + "\n" + notes, {"runs": [asdict(r) for r in runs]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.agent_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="8 s windows")
    p.add_argument("--seconds", type=float, help="measurement window (default 20, quick 8)")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    window = args.seconds or (8.0 if args.quick else 20.0)
    from flumph.srt import set_libsrt_log_level

    set_libsrt_log_level(2)
    print(
        f"agent_cpu: {len(CASES)} sizes × {len(CODECS)} codecs × {len(SYSTEMS)} systems, "
        f"{window:g} s windows ({machine_note()})",
        flush=True,
    )
    runs = []
    for case in CASES:
        w, h, fps, _ = case
        sources = {
            "agent": synthetic_source_percent(w, h, fps),
            "ffmpeg": testsrc2_percent(w, h, fps),
        }
        for codec in CODECS:
            for system in SYSTEMS:
                run = run_once(system, codec, case, window, sources[system])
                runs.append(run)
                print(
                    f"  {h}p{fps} {codec:4s} {system:6s} CPU {run.cpu_percent:5.1f}% "
                    f"RSS {run.rss_mib:.0f} MiB, {run.received_kbps:.0f} kbit/s, "
                    f"{run.blocks_per_s:.1f} frames/s",
                    flush=True,
                )
    text, doc = report(runs)
    print()
    print(text)
    doc["window_s"] = window
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
