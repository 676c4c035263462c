"""Two checkouts' ingests, measured in turn under the same publishers: what a change did to the
ingest's CPU, with the machine's drift spread over both sides.

    git worktree add --detach /tmp/old <commit>
    (cd /tmp/old && python3 -m venv .venv && .venv/bin/pip install -q -e '.[server]')
    python -m bench.ingest_ab --old /tmp/old --streams 50 --seconds 15 --runs 3

Each run starts the old checkout's ingest (``python -m flumph ingest`` with that checkout's own
``.venv/bin/python``, cwd in it), feeds it N publishers from ``ingest_publisher.py`` (the same
clip and plan as ``peer_nms.py``), measures the ingest process's CPU over the window, stops it,
then does the same with this checkout. No viewers: the cost of taking streams in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench import ingest_systems
from bench import procstat as ps
from bench.ingest_fanout import _read_event, _send_plan, _spawn
from bench.peer_nms import h264_clip

THIS_CHECKOUT = ingest_systems.REPO


def measure(checkout: Path, clip: Path, streams: int, seconds: float, extra: list[str]) -> float:
    """CPU s per stream-minute of ``checkout``'s ingest over a ``seconds`` window."""
    log_dir = Path(ingest_systems.REPO) / "bench" / "out" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    ingest = ingest_systems.start_ingest(
        log_dir,
        max(streams, 100),
        extra_args=tuple(extra),
        python=str(checkout / ".venv" / "bin" / "python"),
        cwd=checkout,
    )
    publisher = _spawn("bench.ingest_publisher")
    try:
        targets = [{"id": f"cam-{k}", "host": "127.0.0.1", "port": ingest.srt_port}
                   for k in range(streams)]  # fmt: skip
        plan = {"clip": str(clip), "targets": targets, "latency_ms": 120, "stagger_s": 3.0,
                "send_s": seconds + 10, "connect_timeout_s": 60,
                "result_path": str(log_dir / "ab-publisher.json")}  # fmt: skip
        _send_plan(publisher, plan)
        started = _read_event(publisher, 90)
        time.sleep(max(0.0, float(started["t0"]) + 6.0 - time.monotonic()))
        cpu0, t0 = ps.total_cpu([ingest.pid]), time.monotonic()
        time.sleep(seconds)
        cpu = ps.total_cpu([ingest.pid]) - cpu0
        return cpu / (time.monotonic() - t0) * 60 / streams
    finally:
        publisher.kill()
        publisher.wait()
        ingest.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_ab", description=__doc__)
    p.add_argument("--old", type=Path, required=True, help="the other checkout (with a .venv)")
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tsbpd", action="store_true", help="both ingests with --srt-tsbpd")
    args = p.parse_args(argv)
    extra = ["--srt-tsbpd" if args.tsbpd else "--no-srt-tsbpd"]
    clip = h264_clip(60)
    sides = {"old": args.old.resolve(), "new": Path(THIS_CHECKOUT)}
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for run in range(args.runs):
        for name, checkout in sides.items():
            value = measure(checkout, clip, args.streams, args.seconds, extra)
            figures[name].append(value)
            load = os.getloadavg()[0]
            print(f"run {run + 1} {name}: {value:.4f} s/stream-min (load {load:.2f})", flush=True)
    print(f"\n| checkout | {args.streams} streams, CPU s per stream-minute | median |")
    print("|---|---|---|")
    for name, values in figures.items():
        runs = ", ".join(f"{v:.3f}" for v in values)
        print(f"| {name} ({sides[name]}) | {runs} | {statistics.median(values):.3f} |")
    old, new = statistics.median(figures["old"]), statistics.median(figures["new"])
    print(f"\nnew ÷ old (medians): {new / old:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
