"""Keyframes on demand vs a fixed 4 s interval (issue #11): bytes per hour at equal PSNR, and
what a joining viewer waits for and downloads.

    python -m bench.keyframes_on_demand                     # ~6 min
    python -m bench.keyframes_on_demand --codecs av1 --clip-s 60 --joins 4

**Bytes at equal quality** (offline, stream time, the agent's encoders and options): the
synthetic camera at 640x360 15 fps. Baseline: a keyframe every 4 s at ``--kbps``. On demand: the
30 s default plus a forced keyframe per viewer join (``--joins-per-hour``, spread evenly), at
``--kbps`` x 1.1, 1.0, 0.9, 0.8, 0.7, 0.6; the rate whose mean PSNR-Y equals the baseline's is
interpolated and its bytes per hour reported. PSNR-Y is measured on the decoded stream against
the camera's frames.

**Join** (real processes: embedded broker, ingest, ``flumph agent`` at AV1 640x360 15 fps
``--kbps``): ``--joins`` viewers join one after the other, 3.3 s apart so they meet the GOP at
different ages. Baseline: 4 s keyframes, the ingest serves the GOP cache (no MQTT). On demand:
30 s keyframes, the ingest asks for a keyframe (MQTT). Per join: time to the first picture,
how old that picture was (its capture stamp against the join), time to the first picture
captured after the join ("live"), and the bytes received until then.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from statistics import mean
from typing import Any

import av
import numpy as np
import websockets

from bench.clips import synthetic_frames
from bench.rate_common import free_port, start_ingest
from bench.report import OUT_DIR, format_table, machine_note, write_json
from flumph.agent.encoders import SOFTWARE, EncoderSelector
from flumph.agent.sources import read_stamp
from flumph.settings import StreamSettings

WIDTH, HEIGHT, FPS = 640, 360, 15
SCALES = (1.1, 1.0, 0.9, 0.8, 0.7, 0.6)


# --- bytes at equal PSNR ------------------------------------------------------------------------


def encode_and_score(
    codec: str, kbps: int, keyint_s: float, forced: set[int], pictures: list[np.ndarray]
) -> tuple[int, float]:
    """(bytes, mean PSNR-Y) of the clip through the agent's encoder for ``codec``."""
    settings = StreamSettings(
        codec=codec, width=WIDTH, height=HEIGHT, fps=FPS, bitrate_kbps=kbps, keyint_s=keyint_s
    )
    encoder = EncoderSelector(available={SOFTWARE[codec]}).open(settings).encoder
    decoder = av.CodecContext.create(
        {"av1": "libdav1d", "hevc": "hevc", "h264": "h264"}[codec], "r"
    )
    assert isinstance(decoder, av.VideoCodecContext)
    decoder.extradata = encoder.extradata or None  # parameter sets: only there (global header)
    total = 0
    scores: list[float] = []
    packets = []
    for n, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        packets += encoder.encode(frame, force_keyframe=n == 0 or n in forced)
    packets += encoder.flush()
    for p in packets:
        total += len(p.data)
        packet = av.Packet(p.data)
        packet.pts = p.pts
        packet.time_base = Fraction(1, FPS)
        for decoded in decoder.decode(packet):
            index = int(decoded.pts) if decoded.pts is not None else len(scores)
            y = np.asarray(decoded.to_ndarray(format="yuv420p")[:HEIGHT], dtype=np.float64)
            ref = pictures[index][:HEIGHT].astype(np.float64)
            mse = float(np.mean((y - ref) ** 2))
            scores.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    return total, mean(scores)


def bytes_at_equal_psnr(
    codec: str, kbps: int, clip_s: int, joins_per_hour: float
) -> dict[str, Any]:
    pictures = list(synthetic_frames(WIDTH, HEIGHT, FPS, clip_s * FPS))
    base_bytes, base_psnr = encode_and_score(codec, kbps, 4.0, set(), pictures)
    joins = round(joins_per_hour * clip_s / 3600)
    forced = {round((i + 0.5) * clip_s * FPS / joins) for i in range(joins)} if joins else set()
    points = []
    for scale in SCALES:
        b, q = encode_and_score(codec, round(kbps * scale), 30.0, forced, pictures)
        points.append((scale, b, q))
    # Interpolate bytes at the baseline's PSNR between the two nearest points (by PSNR).
    points.sort(key=lambda p: p[2])
    equal = None
    for (_, b0, q0), (_, b1, q1) in itertools.pairwise(points):
        if q0 <= base_psnr <= q1 and q1 > q0:
            equal = b0 + (b1 - b0) * (base_psnr - q0) / (q1 - q0)
    per_hour = 3600 / clip_s
    same_rate = next(p for p in points if p[0] == 1.0)
    return {
        "codec": codec,
        "base_mb_h": base_bytes * per_hour / 1e6,
        "base_psnr": base_psnr,
        "same_rate_mb_h": same_rate[1] * per_hour / 1e6,
        "same_rate_psnr": same_rate[2],
        "equal_psnr_mb_h": None if equal is None else equal * per_hour / 1e6,
        "points": points,
        "forced_keyframes": len(forced),
    }


# --- join ---------------------------------------------------------------------------------------


async def join_once(ws_base: str, device: str, seconds: float = 3.0) -> dict[str, Any]:
    parts: list[bytes] = []
    arrivals: list[float] = []
    async with websockets.connect(f"{ws_base}/ws/view/{device}", max_size=None) as ws:
        joined_wall, joined = time.time(), time.monotonic()
        await ws.send(json.dumps({"type": "subscribe", "stream_id": device}))
        deadline = joined + seconds
        while time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
            except TimeoutError:
                break
            if isinstance(msg, bytes):
                parts.append(msg)
                arrivals.append(time.monotonic())
    stamps: list[int] = []
    with av.open(io.BytesIO(b"".join(parts)), format="mp4", mode="r") as c:
        for frame in c.decode(c.streams.video[0]):
            luma = np.asarray(frame.to_ndarray(format="yuv420p")[: frame.height], dtype=np.uint8)
            stamps.append(read_stamp(luma)[1])
    join_ms = int(joined_wall * 1000) % 2**32
    ages = [((join_ms - s) % 2**32) for s in stamps]
    ages = [a - 2**32 if a > 2**31 else a for a in ages]  # negative: captured after the join
    frames_arrivals = arrivals[1:]  # arrivals[0] is the init segment
    live = next((i for i, a in enumerate(ages) if a <= 1000 / FPS), None)
    return {
        "first_ms": (frames_arrivals[0] - joined) * 1000 if frames_arrivals else None,
        "first_age_ms": ages[0] if ages else None,
        "live_ms": None if live is None else (frames_arrivals[live] - joined) * 1000,
        "bytes_to_live": None if live is None else sum(len(p) for p in parts[: live + 2]),
    }


def join_times(mode: str, kbps: int, joins: int, work: Path) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    broker_port = free_port(socket.SOCK_STREAM)
    broker = subprocess.Popen(
        [sys.executable, "-m", "flumph", "broker", "--host", "127.0.0.1", "--port",
         str(broker_port), "--state-dir", str(work / f"broker-{mode}")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    mqtt = f"mqtt://127.0.0.1:{broker_port}"
    on_demand = mode == "on demand"
    ingest = start_ingest(work / f"ingest-{mode}.log", *(["--mqtt", mqtt] if on_demand else []))
    device = "kf-bench-" + ("demand" if on_demand else "fixed")
    agent = subprocess.Popen(
        [sys.executable, "-m", "flumph", "agent", "--device-id", device, "--ingest",
         f"srt://127.0.0.1:{ingest.srt_port}", "--stream", "--state-dir", str(work / device),
         "--codec", "av1", "--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(FPS),
         "--bitrate-kbps", str(kbps), "--keyint-s", "30" if on_demand else "4",
         "--mqtt", mqtt, "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    results = []
    try:
        time.sleep(6.0)
        ws = f"ws://127.0.0.1:{ingest.http_port}"
        for _ in range(joins):
            results.append(asyncio.run(join_once(ws, device)))
            time.sleep(0.3)
    finally:
        for proc in (agent, broker):
            proc.terminate()
            proc.wait(15)
        ingest.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.keyframes_on_demand", description=__doc__)
    p.add_argument("--codecs", default="av1,hevc,h264")
    p.add_argument("--kbps", type=int, default=250)
    p.add_argument("--clip-s", type=int, default=60)
    p.add_argument("--joins-per-hour", type=float, default=60.0)
    p.add_argument("--joins", type=int, default=6)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    OUT_DIR.mkdir(exist_ok=True)
    print(f"keyframes on demand vs every 4 s; {machine_note()}", flush=True)
    rows = []
    doc: dict[str, Any] = {"bytes": [], "joins": {}}
    for codec in args.codecs.split(","):
        r = bytes_at_equal_psnr(codec, args.kbps, args.clip_s, args.joins_per_hour)
        doc["bytes"].append(r)
        eq = r["equal_psnr_mb_h"]
        rows.append([
            codec, round(r["base_mb_h"], 1), round(r["base_psnr"], 2),
            round(r["same_rate_mb_h"], 1), round(r["same_rate_psnr"], 2),
            None if eq is None else round(eq, 1),
            None if eq is None else f"{100 * (1 - eq / r['base_mb_h']):.0f} %",
        ])  # fmt: skip
        print("  ", *rows[-1], flush=True)
    print()
    print(format_table(
        f"Bytes per hour, 640x360 15 fps, {args.kbps} kbit/s setting, {args.clip_s} s clip "
        f"scaled to an hour, {args.joins_per_hour:g} joins/h",
        ["codec", "4 s MB/h", "4 s PSNR-Y", "on demand MB/h", "PSNR-Y", "MB/h at 4 s PSNR",
         "saved"],
        rows,
    ))  # fmt: skip
    jrows = []
    with tempfile.TemporaryDirectory(prefix="flumph-kf-") as tmp:
        for mode in ("every 4 s", "on demand") if args.joins else ():
            res = join_times(mode, args.kbps, args.joins, Path(tmp))
            doc["joins"][mode] = res

            def med(key: str, res: list[dict[str, Any]] = res) -> float | None:
                values = sorted(x[key] for x in res if x[key] is not None)
                return values[len(values) // 2] if values else None

            jrows.append([mode, len(res), med("first_ms"), med("first_age_ms"), med("live_ms"),
                          med("bytes_to_live")])  # fmt: skip
            print("  ", *jrows[-1], flush=True)
    print()
    print(format_table(
        f"Joining viewers (medians of {args.joins}), AV1 640x360 15 fps {args.kbps} kbit/s",
        ["keyframes", "joins", "first picture ms", "its age ms", "live picture ms",
         "bytes until live"],
        jrows,
    ))  # fmt: skip
    print(f"\n{machine_note()}")
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
