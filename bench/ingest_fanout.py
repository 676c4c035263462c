"""Fan-out benchmark of the ingest: N concurrent SRT publishers, one WebSocket viewer each, against
one ``ffmpeg -c copy -f mp4 -movflags frag_every_frame...`` process per stream fed the same bytes.

    python -m bench.ingest_fanout                       # levels 1,10,50,100,200; ~8-10 minutes
    python -m bench.ingest_fanout --levels 1,10 --seconds 10 --json bench/out/quick.json
    python -m bench.ingest_fanout --levels "" --profile 100   # py-spy profile of the ingest only

See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import random
import re
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat as ps
from bench.ingest_clip import OUT_DIR, ensure_clip, load_clip
from bench.ingest_report import (
    MB,
    added_latency,
    delivery,
    first_frame_ms,
    percentile,
    render,
)
from bench.ingest_systems import REPO, FfmpegFleet, IngestProcess, start_ingest, stop_process

SYSTEMS = ("flumph", "ffmpeg")
_IDLE_S = 2.0


@dataclass(frozen=True)
class Settings:
    seconds: float  # measurement window
    warmup: float  # after the last stream started, before the window
    stagger: float  # stream starts spread over this many seconds
    tail: float  # sending continues this long after the window
    latency_ms: int
    deflate: bool  # viewers offer permessage-deflate, as browsers do
    log_dir: Path
    ingest_prelude: str | None = None  # experiment: Python run in the ingest before it starts
    srt_tsbpd: bool = False  # True: the ingest holds packets for latency_ms (its default: off)

    @property
    def send_s(self) -> float:
        return self.stagger + self.warmup + self.seconds + self.tail


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _spawn(module: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_event(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    pipe: IO[str] | None = proc.stdout
    assert pipe is not None
    ready, _, _ = select.select([pipe], [], [], timeout_s)
    line = pipe.readline() if ready else ""
    if not line:
        what = " ".join(map(str, proc.args)) if isinstance(proc.args, list) else repr(proc.args)
        raise RuntimeError(f"{what} said nothing within {timeout_s:.0f} s (exit {proc.poll()})")
    event: dict[str, Any] = json.loads(line)
    return event


def _send_plan(proc: subprocess.Popen[str], plan: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(plan) + "\n")
    proc.stdin.flush()


def _sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


class Window:
    """CPU of named process groups and of the machine between start() and stop()."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.machine_busy = 0.0  # share of all cores
        self.machine_busy_s = 0.0
        self._machine0 = (0.0, 0.0)
        self.t0 = self.t1 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._cpu0 = {k: ps.total_cpu(p) for k, p in self.groups.items()}
        self._machine0 = ps.machine_cpu()

    def stop(self) -> None:
        self.t1 = time.monotonic()
        self.cpu = {k: ps.total_cpu(p) - self._cpu0[k] for k, p in self.groups.items()}
        busy, total = ps.machine_cpu()
        self.machine_busy_s = busy - self._machine0[0]
        self.machine_busy = self.machine_busy_s / max(1e-9, total - self._machine0[1])


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "count": len(values),
    }


def run_phase(
    system: str,
    n: int,
    clip_path: Path,
    pts_index: dict[int, int],
    s: Settings,
    on_window: Callable[[list[int]], None] | None = None,
) -> dict[str, Any]:
    """One system at ``n`` streams: start it, replay, measure over the window, stop it.
    ``on_window`` is called with the system's pids as the window opens (for a profiler)."""
    stream_ids = [f"cam-{k:03d}" for k in range(n)]
    run_tag = f"{system}-{n}-{int(time.time())}"
    ingest: IngestProcess | None = None
    fleet: FfmpegFleet | None = None
    viewer: subprocess.Popen[str] | None = None
    publisher: subprocess.Popen[str] | None = None
    errors: list[str] = []
    try:
        if system == "flumph":
            tsbpd = "--srt-tsbpd" if s.srt_tsbpd else "--no-srt-tsbpd"
            ingest = start_ingest(s.log_dir, max(n, 100), s.ingest_prelude, extra_args=(tsbpd,))
            sut_pids = [ingest.pid]
            targets = [{"id": i, "host": "127.0.0.1", "port": ingest.srt_port} for i in stream_ids]
            viewer = _spawn("bench.ingest_viewer")
            _read_event(viewer, 30)
        else:
            fleet = FfmpegFleet(stream_ids, s.log_dir, s.latency_ms)
            fleet.start()
            sut_pids = fleet.pids
            targets = [
                {"id": i, "host": "127.0.0.1", "port": p}
                for i, p in zip(stream_ids, fleet.ports, strict=True)
            ]
        idle_cpu0, idle_t0 = ps.total_cpu(sut_pids), time.monotonic()
        time.sleep(_IDLE_S)  # idle baseline
        idle_cpu_per_min = (ps.total_cpu(sut_pids) - idle_cpu0) / (time.monotonic() - idle_t0) * 60
        rss_idle = ps.total_rss(sut_pids)
        publisher = _spawn("bench.ingest_publisher")
        pub_result_path = s.log_dir / f"{run_tag}-publisher.json"
        _send_plan(
            publisher,
            {
                "clip": str(clip_path),
                "targets": targets,
                "latency_ms": s.latency_ms,
                "stagger_s": s.stagger,
                "send_s": s.send_s,
                "connect_timeout_s": 60,
                "result_path": str(pub_result_path),
            },
        )
        started = _read_event(publisher, 90)
        t0, end = float(started["t0"]), float(started["end"])
        viewer_result_path = s.log_dir / f"{run_tag}-viewers.json"
        stop_at = end + s.latency_ms / 1000 + 1.5
        if viewer is not None and ingest is not None:
            rng = random.Random(n)
            _send_plan(
                viewer,
                {
                    "url": ingest.viewer_url,
                    # Join once every stream runs (0.5-5.5 s old: GOP caches of 8-80 frames),
                    # spread over 2 s, before the window opens.
                    "viewers": [
                        {"id": sid, "join_at": t0 + s.stagger + rng.uniform(0.5, 2.5)}
                        for sid in stream_ids
                    ],
                    "stop_at": stop_at,
                    "deflate": s.deflate,
                    "result_path": str(viewer_result_path),
                },
            )
        # "bench" is this process: the orchestration and ffmpeg's stdout reader.
        groups = {"sut": sut_pids, "publisher": [publisher.pid], "bench": [os.getpid()]}
        if viewer is not None:
            groups["viewer"] = [viewer.pid]
        window = Window(groups)
        _sleep_until(t0 + s.stagger + s.warmup)
        window.start()
        if on_window is not None:
            on_window(sut_pids)
        rss_peak = 0
        w_end = window.t0 + s.seconds
        while time.monotonic() < w_end:
            rss_peak = max(rss_peak, ps.total_rss(sut_pids))
            _sleep_until(min(w_end, time.monotonic() + 1.0))
        window.stop()
        rss_end = ps.total_rss(sut_pids)
        pss_end = ps.total_pss(sut_pids)
        asked = time.monotonic()
        api: list[dict[str, Any]] = ingest.get_json("/api/streams", 60) if ingest else []
        api_response_s = time.monotonic() - asked
        _read_event(publisher, end - time.monotonic() + 60)
        pub = json.loads(pub_result_path.read_text(encoding="utf-8"))
        if viewer is not None:
            _read_event(viewer, stop_at - time.monotonic() + 60)
            receivers = json.loads(viewer_result_path.read_text(encoding="utf-8"))
        else:
            assert fleet is not None
            fleet.finish()
            receivers = [asdict(log) for log in fleet.logs.values()]
    finally:
        for proc in (publisher, viewer):
            if proc is not None:
                stop_process(proc)
        if ingest is not None:
            ingest.stop()
        if fleet is not None:
            fleet.finish(timeout_s=0.1)

    errors += [f"{x['id']}: {x['error']}" for x in pub["streams"] if x.get("error")]
    errors += [f"{r['stream_id']}: {r['error']}" for r in receivers if r.get("error")]
    # What the receiver's SRT holds every packet for: ffmpeg's TSBPD latency; the ingest's only
    # with --srt-tsbpd (the e2e column is the delay beyond that hold).
    hold_ms = s.latency_ms if system == "ffmpeg" or s.srt_tsbpd else 0
    d = delivery(pub, receivers, pts_index, (window.t0, window.t1), hold_ms)
    window_s = window.t1 - window.t0
    stats = Counter[str]()
    for x in pub["streams"]:
        stats.update({k: int(v) for k, v in x.get("stats", {}).items() if k != "rtt_ms"})
    phase: dict[str, Any] = {
        "system": system,
        "streams": n,
        "window_s": window_s,
        "cpu_s": window.cpu["sut"],
        "cpu_s_per_stream_min": window.cpu["sut"] / n / (window_s / 60),
        "publisher_cpu_s": window.cpu["publisher"],
        "viewer_cpu_s": window.cpu.get("viewer"),
        "bench_cpu_s": window.cpu["bench"],
        "machine_busy": window.machine_busy,
        # CPU the machine spent outside our processes (other tenants, kernel threads).
        "other_cpu_s": window.machine_busy_s - sum(window.cpu.values()),
        "idle_cpu_s_per_min": idle_cpu_per_min,
        "rss_mb_idle": rss_idle / MB,
        "rss_mb_total": rss_end / MB,
        "rss_mb_peak": rss_peak / MB,
        "pss_mb_total": pss_end / MB,
        # The ingest's marginal memory per stream; each ffmpeg process is a stream's whole cost.
        "rss_mb_per_stream": ((rss_end - rss_idle) if ingest else rss_end) / n / MB,
        "frames_sent": d.sent,
        "frames_received": d.received,
        "frames_lost": d.lost,
        "streams_with_loss": d.streams_with_loss,
        "duplicates": d.duplicates,
        "unmapped_fragments": d.unmapped,
        "e2e_ms": _summary(d.e2e_ms),
        "publisher_lag_ms": {k: v * 1000 for k, v in pub["lag_s"].items()},
        "publisher_connect_s": pub["connect_s"],
        "connects_refused": sum(int(x.get("rejected", 0)) for x in pub["streams"]),
        "refusal_example": next(
            (x["rejections"][0] for x in pub["streams"] if x.get("rejections")), None
        ),
        "srt_retransmits": stats["packets_retransmitted"],
        "srt_sender_drops": stats["packets_dropped_sent"],
        "errors": errors,
    }
    if ingest is not None:
        phase["added_latency_ms"] = added_latency(api)
        phase["first_frame_ms"] = _summary(first_frame_ms(receivers))
        phase["api_streams"] = len(api)
        phase["api_response_s"] = api_response_s
        phase["api_viewers"] = sum(int(x.get("viewers", 0)) for x in api)
        phase["viewer_frames_dropped"] = sum(int(x.get("viewer_frames_dropped", 0)) for x in api)
        phase["ws_extensions"] = sorted({e for r in receivers for e in r.get("extensions", [])})
    return phase


def _brief(phase: dict[str, Any]) -> str:
    text = (
        f"{phase['system']:>6} x{phase['streams']:<3}: CPU {phase['cpu_s_per_stream_min']:.3f} "
        f"s/stream-min, RSS {phase['rss_mb_total']:.0f} MB, lost {phase['frames_lost']}"
        f"/{phase['frames_sent']}, machine {phase['machine_busy']:.0%} busy"
    )
    if phase["errors"]:
        text += f", {len(phase['errors'])} errors (first: {phase['errors'][0]})"
    return text


def profile(n: int, clip_path: Path, pts_index: dict[int, int], s: Settings, native: bool) -> str:
    """One extra ingest phase at ``n`` streams with py-spy sampling the ingest during the window;
    returns the top functions by own and by total samples (py-spy's CPU competes, so this phase's
    figures are not reported)."""
    import shutil
    import threading

    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return "py-spy is not installed (pip install py-spy): no profile"
    raw = s.log_dir / f"profile-{n}-{int(time.time())}.txt"

    def start_profiler(pids: list[int]) -> None:
        cmd = [py_spy, "record", "--pid", str(pids[0]), "--duration",
               str(int(s.seconds)), "--rate", "100", "--format", "raw", "--output", str(raw),
               "--threads"]  # fmt: skip
        if native:
            cmd.append("--native")
        threading.Thread(
            target=subprocess.run,
            args=(cmd,),
            kwargs={"capture_output": True, "timeout": s.seconds + 60},
            daemon=True,
        ).start()

    run_phase("flumph", n, clip_path, pts_index, s, on_window=start_profiler)
    deadline = time.monotonic() + 30
    while not raw.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if not raw.exists():
        return "py-spy wrote no profile (is ptrace allowed?)"
    return summarize_profile(raw.read_text(encoding="utf-8"), n)


# A leaf frame on one of these source lines is a thread waiting, not working: py-spy samples such
# threads too (its idle detection misses futex and libsrt waits), so they are set apart.
_WAITING_LINE = re.compile(r"uwait\(|\.acquire\(|\.poll\(|\.select\(|\.get\(block|sleep\(|\.wait\(")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^:()]+):(?P<line>\d+)\)$")


def _is_waiting(frame: str) -> bool:
    match = _FRAME.match(frame)
    if match is None:
        return False
    name = match["file"]
    candidates = [Path(name)] if Path(name).is_absolute() else [REPO / name]
    candidates += [Path(p) / name for p in sys.path if p]
    for path in candidates:
        if path.is_file():
            lines = linecache.getlines(str(path))
            line = int(match["line"])
            return 0 < line <= len(lines) and bool(_WAITING_LINE.search(lines[line - 1]))
    return False


def summarize_profile(text: str, n: int, top: int = 25) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = waiting = 0
    waits: dict[str, bool] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        calls = [f for f in frames if not f.startswith(("thread", "process"))]
        if not calls:
            continue
        samples += count
        leaf = calls[-1]
        if waits.setdefault(leaf, _is_waiting(leaf)):
            waiting += count
            continue
        if frames[0].startswith("thread"):
            threads[frames[0]] += count
        own[leaf] += count
        for f in set(calls):
            total[f] += count
    busy = samples - waiting
    if not busy:
        return "empty profile"

    def block(title: str, counter: Counter[str]) -> str:
        rows = [f"{c / busy:6.1%}  {name}" for name, c in counter.most_common(top)]
        return f"{title}\n" + "\n".join(rows)

    return (
        f"py-spy profile of the ingest at {n} streams: {samples} thread samples, {waiting} of "
        f"them waiting (left out); shares below are of the {busy} working samples\n\n"
        + block("by thread:", threads)
        + "\n\n"
        + block("own time (the function itself):", own)
        + "\n\n"
        + block("total time (function and callees):", total)
    )


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        message = f"levels must be integers like 1,10,50: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if any(x < 1 for x in levels):
        raise argparse.ArgumentTypeError(f"levels must be >= 1: {text!r}")
    return levels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--levels",
        type=parse_levels,
        default=[1, 10, 50, 100, 200],
        help="concurrent publishers per phase (default 1,10,50,100,200; '' for none)",
    )
    p.add_argument(
        "--seconds", type=float, default=30.0, help="measurement window per phase (default 30)"
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=4.0,
        help="seconds between the last stream's start and the window (default 4)",
    )
    p.add_argument(
        "--stagger",
        type=float,
        default=3.0,
        help="stream starts are spread over this many seconds (default 3)",
    )
    p.add_argument(
        "--systems",
        default="flumph,ffmpeg",
        help="which systems to run: flumph, ffmpeg or both (default)",
    )
    p.add_argument(
        "--no-deflate",
        action="store_true",
        help="viewers do not offer permessage-deflate (browsers do)",
    )
    p.add_argument(
        "--ingest-prelude",
        metavar="CODE",
        help="experiment: Python run in the ingest's interpreter before it starts, e.g. "
        "'import gc; gc.disable()' (the ingest's code stays untouched)",
    )
    p.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="afterwards, profile the ingest with py-spy at N streams",
    )
    p.add_argument(
        "--srt-tsbpd",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the ingest's SRT timestamp-based delivery (its default: off; --srt-tsbpd: on)",
    )
    p.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames)")
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = p.parse_args(argv)  # fmt: skip
    systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    if not systems or any(x not in SYSTEMS for x in systems):
        p.error(f"--systems must name flumph and/or ffmpeg, got {args.systems!r}")
    if args.seconds < 2 or args.warmup < 3:
        p.error("--seconds must be >= 2 and --warmup >= 3 (viewers join 0.5-2.5 s into it)")

    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    s = Settings(
        args.seconds,
        args.warmup,
        args.stagger,
        1.0,
        120,
        not args.no_deflate,
        log_dir,
        args.ingest_prelude,
        args.srt_tsbpd,
    )
    clip_path = ensure_clip(s.send_s + 1)
    clip = load_clip(clip_path)
    pts_index = clip.index_of_pts()
    _say(
        f"clip {clip_path.name}: {len(clip.frames)} frames, {clip.bitrate_kbps:.0f} kbps, "
        f"{sum(f.keyframe for f in clip.frames)} keyframes; each phase sends {s.send_s:.0f} s"
    )
    levels: list[dict[str, Any]] = []
    started = time.monotonic()
    for n in args.levels:
        level: dict[str, Any] = {"streams": n}
        for system in systems:
            try:
                level[system] = run_phase(system, n, clip_path, pts_index, s)
                _say(_brief(level[system]))
            except Exception as e:  # one failed phase must not lose the others' figures
                _say(f"{system} x{n}: FAILED: {e!r}")
                level[system] = {"errors": [repr(e)], "failed": True}
        levels.append(level)
    report = render(levels) if levels else ""
    if report:
        print(report)
        print(f"\n({time.monotonic() - started:.0f} s; raw logs in {log_dir})")
    profile_text = None
    if args.profile:
        profile_text = profile(args.profile, clip_path, pts_index, s, args.profile_native)
        print("\n" + profile_text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "settings": {k: str(v) for k, v in asdict(s).items()},
                    "clip": {
                        "path": str(clip_path),
                        "frames": len(clip.frames),
                        "bitrate_kbps": clip.bitrate_kbps,
                    },
                    "levels": levels,
                    "profile": profile_text,
                },
                indent=1,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
