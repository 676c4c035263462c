"""Helpers that drive the real peers: the ffmpeg CLI, a WebSocket viewer, PyAV decoding back."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import av
import websockets

FFMPEG = "ffmpeg"

# Encoder arguments per codec, small and quick on two cores.
ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency"],
    "hevc": ["-c:v", "libx265", "-preset", "ultrafast", "-tune", "zerolatency",
             "-x265-params", "log-level=none"],
    "av1": ["-c:v", "libsvtav1", "-preset", "10", "-svtav1-params", "pred-struct=1:rc=2",
            "-b:v", "300k"],
    "mpeg2": ["-c:v", "mpeg2video"],
}  # fmt: skip


def ffmpeg_publish(
    url: str,
    *,
    codec: str = "h264",
    container: str = "mpegts",
    size: str = "320x240",
    fps: int = 15,
    seconds: float = 3.0,
    gop: int = 15,
    realtime: bool = True,
) -> subprocess.Popen[bytes]:
    """Start Debian's ffmpeg publishing a test pattern over SRT (the way OBS and encoders do)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin"]
    if realtime:
        cmd.append("-re")
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds)]
    cmd += [*ENCODERS[codec], "-g", str(gop), "-pix_fmt", "yuv420p", "-f", container, url]
    # Read stderr with communicate() (see tests' finish()); stdout carries nothing.
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ffmpeg_file(
    path: Path, *, codec: str, container: str, size: str = "320x240", fps: int = 15,
    seconds: float = 2.0, gop: int = 15,
) -> Path:  # fmt: skip
    """Encode a test pattern to a file (for replays through our own SRT caller)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
           "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds), *ENCODERS[codec],
           "-g", str(gop), "-pix_fmt", "yuv420p", "-f", container, str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return path


@dataclass
class Received:
    texts: list[dict[str, object]] = field(default_factory=list)
    binaries: list[bytes] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)  # monotonic time of each binary
    sequence: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, object]]:
        return [t for t in self.texts if t.get("type") == kind]

    def segments(self) -> list[tuple[str, list[bytes]]]:
        """Split the binary stream at each `media` message: (mime, [init, frag, frag, ...])."""
        out: list[tuple[str, list[bytes]]] = []
        for item in self.sequence:
            if isinstance(item, str):
                msg = json.loads(item)
                if msg.get("type") == "media":
                    out.append((str(msg["mime"]), []))
            elif out:
                out[-1][1].append(item)
        return out


async def watch(
    ws_base: str,
    stream_id: str,
    *,
    seconds: float = 10.0,
    until_ended: bool = True,
    max_binaries: int | None = None,
    subscribe_id: str | None = None,
) -> Received:
    """A viewer speaking the relay protocol; collects everything until `ended`, close or timeout."""
    got = Received()
    async with websockets.connect(f"{ws_base}/ws/view/{stream_id}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": subscribe_id or stream_id}))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                msg = await asyncio.wait_for(ws.recv(), remaining)
                got.sequence.append(msg)
                if isinstance(msg, bytes):
                    got.binaries.append(msg)
                    got.arrival.append(loop.time())
                    if max_binaries is not None and len(got.binaries) >= max_binaries:
                        break
                else:
                    doc = json.loads(msg)
                    got.texts.append(doc)
                    if doc.get("type") == "ended" and until_ended:
                        # Let the server's close frame arrive.
                        await asyncio.wait_for(ws.wait_closed(), 5)
                        break
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        got.close_code = ws.close_code
    return got


@dataclass
class Decoded:
    codec: str
    width: int
    height: int
    frames: int
    keyframes: int


def decode_fmp4(parts: list[bytes]) -> Decoded:
    """Decode init + fragments with PyAV, as a player would."""
    buf = io.BytesIO(b"".join(parts))
    with av.open(buf, mode="r", format="mp4") as c:
        vs = c.streams.video[0]
        frames = keyframes = 0
        width = height = 0
        for frame in c.decode(vs):
            frames += 1
            keyframes += int(frame.key_frame)
            width, height = frame.width, frame.height
        return Decoded(vs.codec_context.codec.canonical_name, width, height, frames, keyframes)
