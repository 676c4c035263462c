"""What libsrt's timestamp-based delivery (TSBPD) costs and buys a receive-only listener: receive
CPU, delivery delay and frames lost, with TSBPD on (libsrt's default) and off
(``SrtOptions(tsbpd=False)``), over a link with delay, jitter and loss.

    python -m bench.srt_tsbpd                                  # on/off x loss 0,1,5 %, ~3 min
    python -m bench.srt_tsbpd --loss 0,2 --streams 50 --seconds 20

Per phase: the receive floor (bench/srt_floor.py, the ingest's listener accepting and discarding)
with or without TSBPD, behind bench/linkproxy.py in its own process (``--delay-ms`` each way,
``--jitter-ms``, random loss each way); ``--streams`` SRT callers in this process (latency
``--latency-ms``, as the agent) each sending a 15 fps stream of tagged messages: a "keyframe" of
``--key-packets`` packets every 60 frames, ``--packets`` packets otherwise, 1316 bytes each, the
packets of a frame back to back. Every message carries its stream, frame, packet and send time;
the floor records its arrival (CLOCK_MONOTONIC is system-wide). Columns:

* delay p50 / p99 / max ms: a frame's last packet's send → the arrival of the packet completing the
  frame at the application (what TSBPD adds shows here: about the latency; without it, the one-way
  delay plus libsrt's acknowledgement interval, and a retransmission's round trip after a loss);
* frames lost: frames with a packet the application never got (TSBPD's too-late drop, or the
  sender's drop of packets 1 s old), of the frames sent before the last second;
* receiver CPU s per stream-minute (floor process, all threads) and libsrt's threads' share.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat as ps
from bench.ingest_clip import OUT_DIR
from bench.ingest_systems import free_udp_ports, stop_process
from bench.linkproxy import LinkProxyProcess
from bench.peer_nms import _last_json, _read_line, _spawn_bytes
from bench.srt_floor import TAG, TAG_MAGIC
from flumph import srt

FPS = 15
GOP = 60
PAYLOAD = 1316
_TAIL_S = 1.0  # frames sent in the last second are not judged (a retransmission may be on its way)
_DRAIN_S = 2.0  # after the last send: the sender's drop threshold (1 s) plus margin


@dataclass(frozen=True)
class Phase:
    tsbpd: bool
    loss_pct: float
    outage_s: float = 0.0  # the link carries nothing for this long, 4 s into the phase


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _send_all(socks: list[srt.SrtSocket], seconds: float, args: argparse.Namespace) -> int:
    """Pace every stream's frames at 15 fps (streams offset inside a frame interval); the number
    of frames each stream sent."""
    filler = bytes(PAYLOAD - TAG.size)
    frames = int(seconds * FPS)
    t0 = time.monotonic() + 0.2
    n = len(socks)
    for i in range(frames):
        for k, sock in enumerate(socks):
            due = t0 + i / FPS + k / (n * FPS)
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            packets = args.key_packets if i % GOP == 0 else args.packets
            for j in range(packets):
                tag = TAG.pack(TAG_MAGIC, k, i, j, packets, time.monotonic())
                try:
                    sock.sendmsg(tag + filler)
                except srt.SrtError:
                    break
    return frames


def run_phase(phase: Phase, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    name = f"{int(phase.tsbpd)}-{phase.loss_pct:g}-{phase.outage_s:g}"
    timeline_path = log_dir / f"tsbpd-{name}.json"
    (port,) = free_udp_ports(1)
    floor_args = ["-m", "bench.srt_floor", "--port", str(port), "--timeline", str(timeline_path),
                  "--latency-ms", str(args.latency_ms)]  # fmt: skip
    if not phase.tsbpd:
        floor_args.append("--no-tsbpd")
    floor = _spawn_bytes(floor_args)
    link: LinkProxyProcess | None = None
    socks: list[srt.SrtSocket] = []
    try:
        _read_line(floor, 30)
        link = LinkProxyProcess(
            ("127.0.0.1", port),
            log_dir / f"tsbpd-link-{name}.json",
            schedule=f"unlimited for 4s, outage for {phase.outage_s:g}s, unlimited"
            if phase.outage_s
            else "unlimited",
            delay_ms=args.delay_ms,
            jitter_ms=args.jitter_ms,
            loss_pct=phase.loss_pct,
        )
        options = srt.SrtOptions(latency_ms=args.latency_ms)
        for k in range(args.streams):
            opts = srt.SrtOptions(latency_ms=options.latency_ms, streamid=f"publish:t-{k}")
            socks.append(srt.SrtSocket.connect("127.0.0.1", link.port, opts, timeout_s=5))
        cpu0, threads0, t0 = ps.cpu_seconds(floor.pid), ps.thread_cpu(floor.pid), time.monotonic()
        frames = _send_all(socks, args.seconds, args)
        time.sleep(_DRAIN_S)
        cpu = ps.cpu_seconds(floor.pid) - cpu0
        threads1 = ps.thread_cpu(floor.pid)
        window_s = time.monotonic() - t0
        sender = [s.stats() for s in socks]
    finally:
        for s in socks:
            s.close()
        if link is not None:
            link.stop()
        stop_process(floor)
    _last_json(floor)
    arrivals = json.loads(timeline_path.read_text())
    timeline_path.unlink()
    # Per (stream, frame): packets seen, when the frame completed, its last packet's send time.
    seen: dict[tuple[int, int], set[int]] = {}
    done_at: dict[tuple[int, int], float] = {}
    sent_last: dict[tuple[int, int], float] = {}
    for at, stream, frame, packet, packets, sent in arrivals:
        key = (stream, frame)
        got = seen.setdefault(key, set())
        got.add(packet)
        sent_last[key] = max(sent_last.get(key, 0.0), sent)
        if len(got) == packets and key not in done_at:
            done_at[key] = at
    judged = int(frames - _TAIL_S * FPS)
    delays = [
        (done_at[(k, i)] - sent_last[(k, i)]) * 1000
        for k in range(args.streams)
        for i in range(judged)
        if (k, i) in done_at
    ]
    lost = args.streams * judged - len(delays)
    busy = {name: v - threads0.get(name, 0.0) for name, v in threads1.items()}
    total = sum(v for v in busy.values() if v > 0) or 1.0
    libsrt = sum(v for name, v in busy.items() if name.startswith("SRT:") and v > 0)
    return {
        "tsbpd": phase.tsbpd,
        "loss_pct": phase.loss_pct,
        "outage_s": phase.outage_s,
        "streams": args.streams,
        "frames_judged": args.streams * judged,
        "frames_lost": lost,
        "delay_ms_p50": _percentile(delays, 0.5),
        "delay_ms_p99": _percentile(delays, 0.99),
        "delay_ms_max": max(delays) if delays else float("nan"),
        "cpu_s_per_stream_min": cpu / args.streams / (window_s / 60),
        "libsrt_threads_share": libsrt / total,
        "threads_cpu_s": {k: round(v, 3) for k, v in busy.items() if v > 0},
        "retransmitted": sum(s.packets_retransmitted for s in sender),
        "sender_dropped": sum(s.packets_dropped_sent for s in sender),
        "loadavg_1min": os.getloadavg()[0],
    }


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.streams} streams, {args.seconds:g} s each, link {args.delay_ms:g} ms each way "
        f"± {args.jitter_ms:g} ms, SRT latency {args.latency_ms} ms",
        "",
        "| TSBPD | link: loss each way, outage | delay p50 / p99 / max ms | frames lost "
        "| receiver CPU s per stream-min | libsrt threads | retransmitted | sender dropped "
        "| load 1 min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        outage = f", {r['outage_s']:g} s outage" if r["outage_s"] else ""
        lines.append(
            f"| {'on' if r['tsbpd'] else 'off'} | {r['loss_pct']:g} %{outage} "
            f"| {r['delay_ms_p50']:.1f} / {r['delay_ms_p99']:.1f} / {r['delay_ms_max']:.1f} "
            f"| {r['frames_lost']} of {r['frames_judged']} | {r['cpu_s_per_stream_min']:.3f} "
            f"| {100 * r['libsrt_threads_share']:.0f} % | {r['retransmitted']} "
            f"| {r['sender_dropped']} | {r['loadavg_1min']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.srt_tsbpd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=float, default=15.0, help="sending time per phase")
    p.add_argument("--loss", default="0,1,5", help="comma list of loss %% each way")
    p.add_argument("--outages", default="", help="comma list of outage lengths (s), no loss")
    p.add_argument("--delay-ms", type=float, default=25.0, help="one way")
    p.add_argument("--jitter-ms", type=float, default=5.0)
    p.add_argument("--latency-ms", type=int, default=120)
    p.add_argument("--packets", type=int, default=2, help="packets of an ordinary frame")
    p.add_argument("--key-packets", type=int, default=24, help="packets of a keyframe")
    p.add_argument("--modes", default="on,off", help="TSBPD modes, in this order")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not 1 <= args.streams <= 60:  # bench/linkproxy.py serves at most 64 callers
        p.error("--streams must be 1..60")
    if args.seconds < 3:
        p.error("--seconds must be >= 3")
    losses = [float(x) for x in args.loss.split(",") if x.strip()]
    modes = [m.strip() == "on" for m in args.modes.split(",") if m.strip()]
    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for loss in losses:
        for tsbpd in modes:
            print(f"TSBPD {'on' if tsbpd else 'off'}, loss {loss:g} % ...", file=sys.stderr)
            rows.append(run_phase(Phase(tsbpd, loss), args, log_dir))
    for outage in [float(x) for x in args.outages.split(",") if x.strip()]:
        for tsbpd in modes:
            print(f"TSBPD {'on' if tsbpd else 'off'}, outage {outage:g} s ...", file=sys.stderr)
            rows.append(run_phase(Phase(tsbpd, 0.0, outage), args, log_dir))
    print(render(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
