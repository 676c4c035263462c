"""Target vs delivered bitrate over codec x size x fps x rate (issue #11): the worst 10 s window.

    python -m bench.rate_matrix                       # 36 cells x 25 s, ~17 min
    python -m bench.rate_matrix --codecs av1 --rates 100 --seconds 40
    python -m bench.rate_matrix --no-peer --json bench/out/rate.json

**System under test**: the agent's pipeline (synthetic camera, rate loop on) streaming in real time
to a real ingest through bench/linkproxy.py (its own process, no limit), which counts the SRT
payload it delivers second by second: what the ingest receives. Windows: every whole-second 10 s
window starting 10 s after the stream did (the spec's), so ``--seconds 25`` gives 6 windows.

**Peer, same run**: the same encoder alone as the agent ran it before this work (VBV of 1 s, no
x265 strict-cbr, a keyframe every 4 s, no loop), fed the same synthetic frames offline in stream
time (so the machine's load cannot starve it). That is the "1.41x at 100 kbit/s 360p30" of the
issue.

Columns: worst window low/high (delivered / target), PASS when both are within +-10 %; reopens
(new encoders the loop opened) and frames its gate skipped; the ladder's picture when it chose a
smaller one; frames the capture missed (a loaded machine makes any encoder undershoot: read the
``missed`` column before believing a low figure).
"""

from __future__ import annotations

import argparse
import itertools
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType

from bench.rate_common import start_ingest, stream_through_proxy
from bench.report import OUT_DIR, format_table, machine_note, write_json
from flumph.agent.encoders import SOFTWARE, SVT_PRESET
from flumph.agent.sources import SyntheticSource
from flumph.settings import StreamSettings

SIZES = {"360p": (640, 360), "720p": (1280, 720)}


def before_options(name: str, kbps: int, keyint: int) -> dict[str, str]:
    """The agent's encoder options before issue #11 (git e78b862, device-agent/encoders.py)."""
    if name == "libsvtav1":
        params = f"pred-struct=1:rc=2:tbr={kbps}:keyint={keyint}:scd=0"
        return {"preset": str(SVT_PRESET), "svtav1-params": params}
    if name == "libx265":
        params = (
            f"log-level=error:bframes=0:repeat-headers=0:info=0:scenecut=0:keyint={keyint}"
            f":min-keyint={keyint}:vbv-maxrate={kbps}:vbv-bufsize={kbps}"
        )
        return {"preset": "ultrafast", "tune": "zerolatency", "x265-params": params}
    params = f"scenecut=0:vbv-maxrate={kbps}:vbv-bufsize={kbps}"
    return {"preset": "veryfast", "tune": "zerolatency", "x264-params": params}


def peer_windows(codec: str, kbps: int, w: int, h: int, fps: int, seconds: int) -> list[float]:
    name = SOFTWARE[codec]
    cc = av.CodecContext.create(name, "w")
    assert isinstance(cc, av.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = w, h, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, fps), Fraction(fps, 1)
    cc.bit_rate, cc.gop_size, cc.max_b_frames = kbps * 1000, 4 * fps, 0
    cc.options = before_options(name, kbps, 4 * fps)
    cc.open()
    src = SyntheticSource(w, h, fps, seed=1)
    per = [0.0] * seconds
    for i in range(seconds * fps):
        src._t0 = time.monotonic() - i / fps  # the camera's motion in stream time
        frame = src.read(i, 1e9 + i / fps)
        frame.pts, frame.time_base = i, cc.time_base
        frame.pict_type = PictureType.I if i == 0 else PictureType.NONE
        for p in cc.encode(frame):
            per[int(p.pts or 0) // fps] += p.size * 8 / 1000
    return [sum(per[j : j + 10]) / 10 / kbps for j in range(10, seconds - 9)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.rate_matrix", description=__doc__)
    p.add_argument("--codecs", default="av1,hevc,h264")
    p.add_argument("--sizes", default="360p,720p")
    p.add_argument("--fps", default="15,30")
    p.add_argument("--rates", default="100,250,500")
    p.add_argument("--seconds", type=int, default=25, help="per cell (>= 21)")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.seconds < 21:
        p.error("--seconds must be at least 21 (10 s skipped, one 10 s window, a spare second)")
    OUT_DIR.mkdir(exist_ok=True)
    ingest = start_ingest(OUT_DIR / "rate_matrix_ingest.log")
    rows: list[list[object]] = []
    cells: list[dict[str, Any]] = []
    print(f"rate matrix, {args.seconds} s per cell; {machine_note()}", flush=True)
    try:
        grid = itertools.product(
            args.codecs.split(","),
            args.sizes.split(","),
            [int(x) for x in args.fps.split(",")],
            [int(x) for x in args.rates.split(",")],
        )
        for codec, size, fps, kbps in grid:
            w, h = SIZES[size]
            settings = StreamSettings(
                codec=codec,
                bitrate_kbps=kbps,
                width=w,
                height=h,
                fps=fps,
            )
            run = stream_through_proxy(
                settings, ingest.srt_port, args.seconds, device_id=f"m-{codec}-{size}-{fps}-{kbps}"
            )
            win = run.windows()
            s = run.status
            ladder = s.get("ladder") or run.samples[-1].get("ladder")
            missed = s.get("frames_dropped_busy", 0) + s.get("frames_skipped_late", 0)
            peer = None if args.no_peer else peer_windows(codec, kbps, w, h, fps, args.seconds)
            ok = bool(win) and min(win) >= 0.9 and max(win) <= 1.1
            row: list[object] = [
                codec, size, fps, kbps,
                round(min(win), 2) if win else None, round(max(win), 2) if win else None,
                "PASS" if ok else "MISS", s.get("encoder_reopens"), s.get("frames_skipped_rate"),
                f"{ladder['width']}x{ladder['height']}@{ladder['fps']}" if ladder else "",
                missed,
            ]  # fmt: skip
            if peer is not None:
                row += [round(min(peer), 2), round(max(peer), 2)]
            rows.append(row)
            cells.append({
                "codec": codec, "size": size, "fps": fps, "kbps": kbps, "windows": win,
                "per_second": run.payload_kbps, "peer_windows": peer, "status": s,
            })  # fmt: skip
            print("  ", *row, flush=True)
    finally:
        ingest.stop()
    headers = ["codec", "size", "fps", "kbps", "worst low", "worst high", "+-10 %", "reopens",
               "skipped", "ladder", "missed"]  # fmt: skip
    if not args.no_peer:
        headers += ["before low", "before high"]
    print()
    title = f"Delivered / target, worst 10 s window after 10 s ({args.seconds} s per cell)"
    print(format_table(title, headers, rows))
    passed = sum(1 for r in rows if r[6] == "PASS")
    print(f"\n{passed} of {len(rows)} cells within +-10 %; {machine_note()}")
    write_json(args.json, {"seconds": args.seconds, "cells": cells})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
