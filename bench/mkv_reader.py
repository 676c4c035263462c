"""Micro-benchmark: CPU per frame of the pure live Matroska reader vs PyAV's Matroska demuxer, on
the same bytes in the same run.

    python -m bench.mkv_reader                 # the ingest benches' AV1 clip + H.264 and H.265
    python -m bench.mkv_reader --repeat 9 --chunk 1316

Each system reads the whole stream from memory, split into chunks of ``--chunk`` bytes (1316: one
SRT live message). PyAV reads through a Python file object that returns those chunks, as the ingest
feeds it today; its packets are turned into ``bytes`` as the ingest does. The reader's payloads are
memoryviews; a second row adds ``bytes()`` on each one, for a fair comparison with PyAV's copy. CPU
is this thread's time (``time.thread_time``), the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av

from bench.ingest_clip import OUT_DIR, ensure_clip, load_clip
from flumph.media.matroska_reader import MatroskaReader, Packet


class ChunkFile(io.RawIOBase):
    """A file that hands PyAV at most one chunk per read, like the ingest's feed of SRT messages."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self._next = 0
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._pending:
            if self._next >= len(self._chunks):
                return 0
            self._pending = self._chunks[self._next]
            self._next += 1
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_reader(chunks: list[bytes], copy: bool) -> int:
    reader = MatroskaReader()
    frames = 0
    for chunk in chunks:
        for event in reader.feed(chunk):
            if isinstance(event, Packet):
                if copy:
                    bytes(event.payload)
                frames += 1
    return frames


def run_pyav(chunks: list[bytes]) -> int:
    options = {"probesize": "32", "analyzeduration": "0"}  # the ingest's Matroska options
    frames = 0
    with av.open(ChunkFile(chunks), "r", format="matroska", options=options) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size:
                bytes(packet)
                frames += 1
    return frames


def best_cpu(work: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, frames = float("inf"), 0
    for _ in range(repeat):
        t0 = time.thread_time()
        frames = work()
        best = min(best, time.thread_time() - t0)
    return best, frames


def ffmpeg_stream(codec: str, seconds: int) -> bytes:
    """640x360 15 fps 250 kbps, a keyframe every 60 frames: live Matroska from the ffmpeg CLI."""
    path = OUT_DIR / f"mkv-reader-{codec}-{seconds}s.mkv"
    if not path.exists():
        encoder = {"h264": ["libx264", "-bf", "0"], "hevc": ["libx265", "-x265-params",
                   "log-level=none:bframes=0"]}[codec]  # fmt: skip
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=15", "-t", str(seconds),
            "-c:v", *encoder, "-b:v", "250k", "-g", "60",
            "-f", "matroska", "-live", "1", "pipe:1",
        ]  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(subprocess.run(cmd, check=True, capture_output=True, timeout=600).stdout)
    return path.read_bytes()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mkv_reader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--repeat", type=int, default=5, help="runs per system, best kept (default 5)")
    p.add_argument("--chunk", type=int, default=1316, help="bytes per chunk fed (default 1316)")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.chunk < 1:
        p.error("--repeat and --chunk must be >= 1")
    clip = load_clip(ensure_clip(60))
    streams = {
        "AV1 (agent layout)": clip.header + b"".join(f.data for f in clip.frames),
        "H.264 (ffmpeg -live 1)": ffmpeg_stream("h264", 60),
        "H.265 (ffmpeg -live 1)": ffmpeg_stream("hevc", 60),
    }
    print(f"CPU per frame, best of {args.repeat}, chunks of {args.chunk} bytes\n")
    print("| stream | frames | PyAV µs/frame | reader µs/frame | reader + bytes() µs/frame "
          "| reader ÷ PyAV |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, data in streams.items():
        chunks = chunked(data, args.chunk)
        pyav_s, pyav_frames = best_cpu(partial(run_pyav, chunks), args.repeat)
        view_s, frames = best_cpu(partial(run_reader, chunks, False), args.repeat)
        copy_s, _ = best_cpu(partial(run_reader, chunks, True), args.repeat)
        if frames != pyav_frames:
            raise SystemExit(f"{name}: the reader found {frames} frames, PyAV {pyav_frames}")
        us = 1e6 / frames
        print(f"| {name} | {frames} | {pyav_s * us:.1f} | {view_s * us:.2f} | {copy_s * us:.2f} "
              f"| {view_s / pyav_s:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
