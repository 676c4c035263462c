"""Forwarding an RTSP camera's own H.265/H.264: the agent's pass-through vs the agent transcoding
the same source vs ``ffmpeg -i rtsp://... -c copy -f mpegts srt://...``.

The camera: GStreamer's RTSP server (tests/rtsp_server.py, run with the system python3) encoding a
camera-like clip live (the agent's synthetic camera: a photograph panned and zoomed, with sensor
noise, 640x360 15 fps, rendered once and cached) with x265/x264 at ``--source-kbps`` (CBR-ish, a
keyframe every 4 s, parameter sets in-band before each keyframe, as camera apps do). It counts the
encoded video each client is sent: the "source video bytes" of a run.

Systems, each in its own run against a fresh server (so every run starts at the clip's start):
  * agent-copy: ``flumph agent --codec copy`` (demux, live Matroska, SRT; no decoder, no encoder);
  * agent-transcode: ``flumph agent --codec <same codec> --bitrate-kbps <source kbps>`` (PyAV
    decodes, x265/x264 re-encodes at the source's size and rate, the agent's encoder settings);
  * ffmpeg-copy-ts (the peer): Debian's ``ffmpeg -rtsp_transport tcp -i rtsp://... -c copy -f
    mpegts srt://...`` (libsrt, default MPEG-TS muxer settings).
The RTSP server and the sender sit in one private network namespace, the SRT receiver (a plain
libsrt listener, ``bench.srt_receiver receive``) in another, joined by a veth: the kernel counts
the SRT link's IP-level bytes each way (veth counters minus 14 B of Ethernet per frame); the RTSP
traffic stays on the sender's loopback. CPU (utime+stime of all threads) and RSS of the sender
process come from /proc over a window after a warm-up.

Run as root:  python -m bench.agent_passthrough [--quick] [--seconds 20] [--codecs hevc,h264]
              [--json bench/out/agent_passthrough.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.clips import synthetic_frames
from bench.netns import NetnsLink
from bench.procstat import cpu_seconds, status_kib
from bench.report import OUT_DIR, REPO_DIR, format_table, machine_note, write_json
from bench.srt_receiver import finish_receiver_process, python_module, start_receiver_process

WIDTH, HEIGHT, FPS = 640, 360, 15
GOP_FRAMES = 60  # 4 s, the agent's default keyframe interval
SYSTEMS = ("agent-copy", "agent-transcode", "ffmpeg-copy-ts")
PEER = "ffmpeg-copy-ts"
WARMUP_S = 3.0
LATENCY_MS = 120
RTSP_PORT = 8554  # inside the sender's private namespace
SRT_PORT = 47400
SERVER = REPO_DIR / "tests" / "rtsp_server.py"


@dataclass
class Run:
    system: str
    codec: str
    source_kbps_setting: int
    window_s: float
    cpu_percent: float  # of one core, over the window
    rss_mib: float
    peak_rss_mib: float
    session_s: float  # sender start to exit
    source_video_bytes: int  # what the RTSP server sent this client (encoded video, before RTP)
    source_frames: int
    wire_up_bytes: int  # IP level, sender -> receiver
    wire_down_bytes: int
    delivered_bytes: int  # SRT payload the receiver got

    @property
    def wire_bytes(self) -> int:
        return self.wire_up_bytes + self.wire_down_bytes

    def ratio(self) -> float:
        return self.wire_bytes / self.source_video_bytes if self.source_video_bytes else 0.0

    def source_kbps(self) -> float:
        return self.source_video_bytes * 8 / self.session_s / 1000

    def wire_kbps(self) -> float:
        return self.wire_bytes * 8 / self.session_s / 1000


def make_source_clip(seconds: float) -> Path:
    """The synthetic camera, encoded near-losslessly once (x264 CRF 10), for GStreamer to serve."""
    path = OUT_DIR / "agent_passthrough" / f"camera-{WIDTH}x{HEIGHT}-{FPS}fps-{seconds:g}s.mkv"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    count = round(seconds * FPS)
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
        "-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "10",
        "-pix_fmt", "yuv420p", str(path.with_suffix(".part.mkv")),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    for picture in synthetic_frames(WIDTH, HEIGHT, FPS, count):
        proc.stdin.write(picture.tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg could not encode the source clip")
    path.with_suffix(".part.mkv").rename(path)
    return path


class ServerEvents:
    """tests/rtsp_server.py's JSON lines, read on a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["event"] == name:
                    return event
            if self.proc.poll() is not None and name == "ready":
                break
            time.sleep(0.05)
        raise RuntimeError(f"RTSP server: no {name!r} within {timeout} s ({self.events})")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self._thread.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def sender_command(system: str, codec: str, kbps: int, url: str, srt_host: str) -> list[str]:
    if system == "ffmpeg-copy-ts":
        srt = f"srt://{srt_host}:{SRT_PORT}?streamid=publish:bench&latency={LATENCY_MS * 1000}"
        return [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
            "-rtsp_transport", "tcp", "-i", url, "-c", "copy", "-f", "mpegts", srt,
        ]  # fmt: skip
    encode = ["--codec", "copy"]
    if system == "agent-transcode":
        encode = ["--codec", codec, "--bitrate-kbps", str(kbps), "--keyint-s", "4"]
        encode += ["--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(FPS)]
    return python_module(
        "flumph", "agent", "--device-id", "bench", "--ingest", f"srt://{srt_host}:{SRT_PORT}",
        "--source", url, "--stream", "--log-level", "warning", "--srt-latency-ms",
        str(LATENCY_MS), "--state-dir", str(OUT_DIR / "agent_passthrough" / "state"), *encode,
    )  # fmt: skip


def run_once(
    link: NetnsLink, clip: Path, system: str, codec: str, kbps: int, seconds: float
) -> Run:
    receiver = start_receiver_process(
        link.command(
            link.receiver_ns,
            python_module(
                "bench.srt_receiver", "receive", "--host", link.RECEIVER_ADDRESS,
                "--port", str(SRT_PORT), "--timeout", str(seconds + 60),
            ),
        )
    )  # fmt: skip
    server_args = [
        "/usr/bin/python3", str(SERVER), "--port", str(RTSP_PORT), "--codec", codec,
        "--size", f"{WIDTH}x{HEIGHT}", "--fps", str(FPS), "--bitrate", str(kbps),
        "--gop", str(GOP_FRAMES), "--source", str(clip),
    ]  # fmt: skip
    server = ServerEvents(
        subprocess.Popen(
            link.command(link.sender_ns, server_args),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    )
    server.wait("ready", 20)
    url = f"rtsp://127.0.0.1:{RTSP_PORT}/cam"
    before = link.counters()
    started = time.monotonic()
    sender = subprocess.Popen(
        link.command(
            link.sender_ns, sender_command(system, codec, kbps, url, link.RECEIVER_ADDRESS)
        ),
        cwd=REPO_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(WARMUP_S)
    cpu0, t0 = cpu_seconds(sender.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_seconds(sender.pid), time.monotonic()
    rss, peak = status_kib(sender.pid, "VmRSS"), status_kib(sender.pid, "VmHWM")
    # ffmpeg ends its output cleanly on SIGINT; the agent on SIGTERM (it closes the RTSP session).
    sender.send_signal(signal.SIGINT if system.startswith("ffmpeg") else signal.SIGTERM)
    try:
        _, err = sender.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        sender.kill()
        _, err = sender.communicate()
        raise RuntimeError(f"{system} did not stop: {err[-800:]}") from None
    session_s = time.monotonic() - started
    if sender.returncode not in (0, 255, -signal.SIGINT):
        raise RuntimeError(f"{system} exited with {sender.returncode}: {err.strip()[-800:]}")
    done = server.wait("media-done", 15)
    server.stop()
    report = finish_receiver_process(receiver, timeout=15)
    time.sleep(0.3)  # the last shutdown packets
    delta = link.counters().minus(before)
    return Run(
        system, codec, kbps, round(t1 - t0, 2),
        round((cpu1 - cpu0) / (t1 - t0) * 100, 2), round(rss / 1024, 1), round(peak / 1024, 1),
        round(session_s, 2), int(done["video_bytes"]), int(done["frames"]),
        delta.link_tx_bytes - 14 * delta.link_tx_packets,
        delta.link_rx_bytes - 14 * delta.link_rx_packets, report.bytes,
    )  # fmt: skip


def report(runs: list[Run]) -> str:
    peers = {r.codec: r for r in runs if r.system == PEER}
    rows = []
    for r in runs:
        peer = peers.get(r.codec)
        cpu_vs = f"{r.cpu_percent / peer.cpu_percent:.2f}" if peer and peer.cpu_percent else "-"
        wire_vs = f"{r.ratio() / peer.ratio():.3f}" if peer and peer.ratio() else "-"
        rows.append([
            r.codec, r.system, r.cpu_percent, cpu_vs, r.rss_mib, r.peak_rss_mib,
            round(r.source_kbps(), 1), round(r.wire_kbps(), 1), round(r.ratio(), 3), wire_vs,
        ])  # fmt: skip
    headers = [
        "source", "system", "CPU %", f"CPU / {PEER}", "RSS MiB", "peak MiB",
        "source kbit/s", "wire kbit/s (up+down)", "wire / source", f"ratio / {PEER}",
    ]  # fmt: skip
    title = f"RTSP {WIDTH}x{HEIGHT} {FPS} fps -> SRT: forward vs transcode vs {PEER}"
    return format_table(title, headers, rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    p.add_argument("--quick", action="store_true", help="10 s windows, H.265 only")
    p.add_argument("--codecs", default="hevc,h264")
    p.add_argument("--source-kbps", type=int, default=250)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    why_not = NetnsLink.available()
    if why_not:
        print(f"bench.agent_passthrough: {why_not}", file=sys.stderr)
        return 2
    seconds = 10.0 if args.quick else args.seconds
    codecs = ["hevc"] if args.quick else args.codecs.split(",")
    systems = args.systems.split(",")
    clip = make_source_clip(WARMUP_S + seconds + 30)
    print(f"{machine_note()}; source clip {clip.name}", flush=True)
    runs: list[Run] = []
    with NetnsLink() as link:
        for codec in codecs:
            for system in systems:
                run = run_once(link, clip, system, codec, args.source_kbps, seconds)
                runs.append(run)
                print(
                    f"  {codec} {system:16s} CPU {run.cpu_percent:5.2f} %  RSS {run.rss_mib} MiB"
                    f"  wire/source {run.ratio():.3f}",
                    flush=True,
                )
    print()
    print(report(runs))
    print(f"\n{machine_note()}")
    write_json(args.json, {"runs": [asdict(r) | {"ratio": r.ratio()} for r in runs]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
