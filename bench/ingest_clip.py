"""The replayed stream: AV1 360p, 250 kbps, 15 fps, as our agent sends it over SRT.

Encoded once with Debian's ffmpeg CLI (libsvtav1, low delay, CBR) and cached under bench/out/. The
file's EBML is then walked and re-laid the way the device agent writes live Matroska: EBML header,
Segment of unknown size, Info, Tracks, then a Cluster of unknown size at each keyframe with one
SimpleBlock per frame. Block payloads are kept byte for byte; only a block's 16-bit cluster-relative
timestamp is rewritten when the clustering changes. The result is a header plus one byte chunk per
frame, so a replay can send each frame's bytes at its own time.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"

WIDTH, HEIGHT, FPS, BITRATE_KBPS, GOP_FRAMES = 640, 360, 15, 250, 60

EBML_ID = 0x1A45DFA3
SEGMENT_ID = 0x18538067
INFO_ID = 0x1549A966
TRACKS_ID = 0x1654AE6B
CLUSTER_ID = 0x1F43B675
TIMESTAMP_ID = 0xE7
SIMPLEBLOCK_ID = 0xA3
BLOCKGROUP_ID = 0xA0
UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"
_MAX_BLOCK_OFFSET_MS = 30_000  # SimpleBlock timestamps are int16 ms relative to their cluster


@dataclass(frozen=True)
class ClipFrame:
    pts_ms: int
    keyframe: bool
    data: bytes  # the bytes to send for this frame: [Cluster head +] SimpleBlock


@dataclass(frozen=True)
class Clip:
    header: bytes  # everything before the first Cluster
    frames: list[ClipFrame]
    fps: int

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps

    @property
    def bitrate_kbps(self) -> float:
        total = len(self.header) + sum(len(f.data) for f in self.frames)
        return total * 8 / self.duration_s / 1000

    def index_of_pts(self) -> dict[int, int]:
        return {f.pts_ms: i for i, f in enumerate(self.frames)}


# --- EBML ---------------------------------------------------------------------------------------


def _read_vint(data: bytes, pos: int, *, is_id: bool) -> tuple[int | None, int]:
    if pos >= len(data):
        raise ValueError(f"EBML {'ID' if is_id else 'size'} truncated at offset {pos}")
    first = data[pos]
    if first == 0:
        raise ValueError(f"invalid EBML byte 0x00 at offset {pos}")
    length = 9 - first.bit_length()
    if pos + length > len(data):
        raise ValueError(f"EBML {'ID' if is_id else 'size'} truncated at offset {pos}")
    raw = int.from_bytes(data[pos : pos + length], "big")
    if is_id:
        return raw, pos + length
    value = raw & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return None, pos + length  # unknown size
    return value, pos + length


def _encode_size(size: int) -> bytes:
    for length in range(1, 9):
        if size < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | size).to_bytes(length, "big")
    raise ValueError(f"EBML size {size} too large")


def _encode_id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def _uint_element(element_id: int, value: int) -> bytes:
    payload = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return _encode_id(element_id) + _encode_size(len(payload)) + payload


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(id, element start, payload start, payload end) of each child in data[start:end]."""
    out = []
    pos = start
    while pos < end:
        raw_id, p = _read_vint(data, pos, is_id=True)
        element_id = int(raw_id or 0)
        size, p = _read_vint(data, p, is_id=False)
        if size is not None:
            stop = p + size
        elif element_id == CLUSTER_ID:
            stop = _next_cluster(data, p, end)  # an unknown-size Cluster ends at the next one
        else:
            raise ValueError(f"element 0x{element_id:X} at offset {pos} has unknown size")
        if stop > len(data):
            raise ValueError(f"element 0x{element_id:X} at offset {pos} runs past the data")
        out.append((element_id, pos, p, stop))
        pos = stop
    return out


def _next_cluster(data: bytes, pos: int, end: int) -> int:
    while pos < end:
        element_id, p = _read_vint(data, pos, is_id=True)
        if element_id == CLUSTER_ID:
            return pos
        size, p = _read_vint(data, p, is_id=False)
        if size is None:
            raise ValueError(f"element 0x{element_id:X} at offset {pos} has unknown size")
        pos = p + size
    return end


def relayout(webm: bytes, fps: int) -> Clip:
    """Re-lay a Matroska/WebM file as a live stream: header + one chunk per frame."""
    top = _children(webm, 0, len(webm))
    if not top or top[0][0] != EBML_ID:
        raise ValueError("data does not start with an EBML header")
    segment = next((c for c in top if c[0] == SEGMENT_ID), None)
    if segment is None:
        raise ValueError("no Segment element")
    _, ebml_start, _, ebml_end = top[0]
    header = bytearray(webm[ebml_start:ebml_end])
    header += _encode_id(SEGMENT_ID) + UNKNOWN_SIZE
    frames: list[ClipFrame] = []
    cluster_ms: int | None = None
    for element_id, start, p, stop in _children(webm, segment[2], segment[3]):
        if element_id in (INFO_ID, TRACKS_ID):
            if frames:
                raise ValueError("Info/Tracks after the first Cluster")
            header += webm[start:stop]
        elif element_id == CLUSTER_ID:
            cluster_ms = _relayout_cluster(webm, p, stop, frames, cluster_ms)
    if not frames:
        raise ValueError("no SimpleBlock found")
    if not frames[0].keyframe:
        raise ValueError("the first frame is not a keyframe")
    return Clip(bytes(header), frames, fps)


def _relayout_cluster(
    data: bytes, start: int, end: int, frames: list[ClipFrame], cluster_ms: int | None
) -> int | None:
    source_cluster_ms = 0
    for element_id, _, p, stop in _children(data, start, end):
        if element_id == TIMESTAMP_ID:
            source_cluster_ms = int.from_bytes(data[p:stop], "big")
        elif element_id == BLOCKGROUP_ID:
            raise ValueError("BlockGroup found: the clip must use SimpleBlocks")
        elif element_id == SIMPLEBLOCK_ID:
            block = data[p:stop]
            if block[0] != 0x81:
                raise ValueError(f"SimpleBlock of track {block[0] & 0x7F}, expected track 1")
            pts_ms = source_cluster_ms + int.from_bytes(block[1:3], "big", signed=True)
            keyframe = bool(block[3] & 0x80)
            head = b""
            if (
                cluster_ms is None
                or keyframe
                or not 0 <= pts_ms - cluster_ms <= _MAX_BLOCK_OFFSET_MS
            ):
                cluster_ms = pts_ms
                head = _encode_id(CLUSTER_ID) + UNKNOWN_SIZE + _uint_element(TIMESTAMP_ID, pts_ms)
            relative = (pts_ms - cluster_ms).to_bytes(2, "big", signed=True)
            body = block[:1] + relative + block[3:]
            chunk = head + _encode_id(SIMPLEBLOCK_ID) + _encode_size(len(body)) + body
            frames.append(ClipFrame(pts_ms, keyframe, chunk))
    return cluster_ms


# --- encoding and cache -------------------------------------------------------------------------


def clip_path(seconds: int) -> Path:
    return OUT_DIR / f"av1-{HEIGHT}p-{BITRATE_KBPS}k-{FPS}fps-g{GOP_FRAMES}-{seconds}s.webm"


def encode_clip(path: Path, seconds: int) -> None:
    """Encode a moving test pattern with libsvtav1 as our agent configures it (low delay, CBR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.webm")
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-t", str(seconds),
        "-c:v", "libsvtav1", "-preset", "8", "-svtav1-params", "pred-struct=1:rc=2",
        "-b:v", f"{BITRATE_KBPS}k", "-g", str(GOP_FRAMES), "-pix_fmt", "yuv420p",
        "-f", "webm", str(partial),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    partial.replace(path)


def verify(clip: Clip) -> None:
    """Decode the re-laid stream back with PyAV: every frame there, in order, keyframes kept."""
    import av

    data = clip.header + b"".join(f.data for f in clip.frames)
    with av.open(io.BytesIO(data), mode="r", format="matroska") as container:
        packets = [p for p in container.demux(video=0) if p.size]
    if len(packets) != len(clip.frames):
        raise ValueError(f"re-laid clip demuxes to {len(packets)} frames, not {len(clip.frames)}")
    for packet, frame in zip(packets, clip.frames, strict=True):
        tb = packet.time_base
        pts_ms = round(float((packet.pts or 0) * tb) * 1000) if tb is not None else -1
        if pts_ms != frame.pts_ms or packet.is_keyframe != frame.keyframe:
            raise ValueError(f"re-laid clip differs at pts {frame.pts_ms} ms")


def ensure_clip(min_seconds: float) -> Path:
    """The cached clip at least ``min_seconds`` long (encoded and verified on first use)."""
    seconds = max(60, -(-int(min_seconds + 1) // 30) * 30)
    path = clip_path(seconds)
    if not path.exists():
        encode_clip(path, seconds)
        try:
            verify(load_clip(path))
        except Exception:
            path.unlink(missing_ok=True)
            raise
    return path


def load_clip(path: Path) -> Clip:
    return relayout(path.read_bytes(), FPS)
