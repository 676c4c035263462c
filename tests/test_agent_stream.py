"""The agent's pipeline end to end: synthetic camera -> encoder -> live Matroska -> SRT -> a real
libsrt listener (our SrtServer, or srt-live-transmit) -> decoded back with PyAV."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest
from pydantic import ValidationError

from flumph.agent.encoders import EncoderError, EncoderSelector
from flumph.agent.pipeline import Pipeline
from flumph.agent.sources import read_stamp
from flumph.agent.usage import FILE_NAME, UsageStore
from flumph.media.ebml import split_documents
from flumph.settings import StreamSettings
from flumph.srt import Accept, SrtOptions, SrtServer, SrtSocket
from tests.conftest import Ingest, wait_until
from tests.peers import Received, decode_fmp4, watch

SMALL = {"width": 320, "height": 180, "fps": 15, "bitrate_kbps": 200}


@dataclass
class Connection:
    streamid: str
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False


class Collector:
    """SrtServer handler keeping each connection's bytes."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self._by_sid: dict[int, Connection] = {}
        self._lock = threading.Lock()

    def check(self, streamid: str, peer: tuple[str, int]) -> Accept:
        return Accept()

    def on_connect(self, conn: SrtSocket) -> None:
        with self._lock:
            c = Connection(conn.streamid)
            self.connections.append(c)
            self._by_sid[conn.sid] = c

    def on_data(self, conn: SrtSocket, data: bytes) -> None:
        with self._lock:
            self._by_sid[conn.sid].data += data

    def on_close(self, conn: SrtSocket, error: str | None) -> None:
        with self._lock:
            self._by_sid[conn.sid].closed = True


def listen(port: int = 0) -> tuple[SrtServer, Collector]:
    collector = Collector()
    server = SrtServer("127.0.0.1", port, SrtOptions(), collector)
    server.start()
    return server, collector


@dataclass
class Decoded:
    codec: str
    width: int
    height: int
    keyframes: list[int]  # indices of keyframes among the decoded frames
    stamps: list[int]  # frame numbers read back from the synthetic camera's picture


def decode(document: bytes) -> Decoded:
    with av.open(io.BytesIO(document), "r") as c:
        stream = c.streams.video[0]
        frames = list(c.decode(stream))
        name = stream.codec_context.name
    assert frames, "no frame decoded"
    return Decoded(
        {"libdav1d": "av1"}.get(name, name),
        frames[0].width,
        frames[0].height,
        [i for i, f in enumerate(frames) if f.key_frame],
        [read_stamp(f.to_ndarray()[: f.height].astype(np.uint8))[0] for f in frames],
    )


def make_pipeline(
    port: int, state_dir: Path, source: str = "synthetic", **settings: object
) -> Pipeline:
    values = {**SMALL, "streaming": True, **settings}
    return Pipeline(
        device_id="cam-1",
        ingest=f"srt://127.0.0.1:{port}",
        settings=StreamSettings.model_validate(values),
        source=source,
        state_dir=state_dir,
        backoff_base_s=0.1,
        backoff_cap_s=0.5,
    )


@pytest.mark.parametrize("codec", ["av1", "hevc"])
def test_stream_decodes_with_codec_size_count_and_keyframe_interval(
    codec: str, tmp_path: Path
) -> None:
    server, got = listen()
    pipeline = make_pipeline(server.port, tmp_path, codec=codec, keyint_s=1.0)
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 45, what="45 frames sent")
    finally:
        pipeline.stop()
        server.stop()
    status = pipeline.status()
    assert [c.streamid for c in got.connections] == ["publish:cam-1"]
    docs = split_documents(bytes(got.connections[0].data))
    assert len(docs) == 1
    d = decode(docs[0])
    assert (d.codec, d.width, d.height) == (codec, 320, 180)
    # Every frame the agent sent arrived (drained before close) and decodes.
    assert len(d.stamps) == status["frames_sent"]
    # Keyframes every keyint_s * fps = 15 encoded frames, starting with the first.
    assert d.keyframes == list(range(0, len(d.stamps), 15))
    # Capture ticks increase; any gap is a frame the agent counted as dropped.
    gaps = sum(b - a - 1 for a, b in zip(d.stamps, d.stamps[1:], strict=False))
    assert all(b > a for a, b in zip(d.stamps, d.stamps[1:], strict=False))
    dropped = (
        status["frames_dropped_busy"]
        + status["frames_skipped_late"]
        + status["frames_dropped_offline"]
        + status["frames_skipped_rate"]  # a keyframe a second costs more than 200 kbit/s allows
    )
    assert gaps <= dropped
    assert status["encoder"] == {"av1": "libsvtav1", "hevc": "libx265"}[codec]
    assert status["container_overhead_bytes_per_frame"] < 12
    assert status["send_latency_ms_p50"] is not None


def test_live_setting_change_starts_a_new_document_that_decodes(tmp_path: Path) -> None:
    server, got = listen()
    pipeline = make_pipeline(server.port, tmp_path, codec="av1", keyint_s=2.0)
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 15, what="first part")
        before = pipeline.stats.frames_sent
        pipeline.apply(pipeline.settings.model_copy(update={"codec": "hevc", "width": 256,
                                                             "height": 144}))  # fmt: skip
        wait_until(lambda: pipeline.stats.frames_sent >= before + 15, what="second part")
        before = pipeline.stats.frames_sent
        # A latency change reconnects (SRT latency is fixed at the handshake).
        pipeline.apply(pipeline.settings.model_copy(update={"srt_latency_ms": 200}))
        wait_until(lambda: pipeline.stats.frames_sent >= before + 10, what="third part")
    finally:
        pipeline.stop()
        server.stop()
    assert len(got.connections) == 2
    first = split_documents(bytes(got.connections[0].data))
    assert len(first) == 2, "the encoder change must start a new Matroska header"
    a, b = decode(first[0]), decode(first[1])
    assert (a.codec, a.width, a.height) == ("av1", 320, 180)
    assert (b.codec, b.width, b.height) == ("hevc", 256, 144)
    assert a.keyframes[0] == 0 and b.keyframes[0] == 0
    # The stream went on under the same capture clock: no tick repeats across the change.
    assert b.stamps[0] > a.stamps[-1]
    (c,) = [decode(d) for d in split_documents(bytes(got.connections[1].data))]
    assert (c.codec, c.width, c.height) == ("hevc", 256, 144)
    assert c.stamps[0] > b.stamps[-1]
    assert pipeline.status()["srt_connects"] == 2


def test_a_setting_no_encoder_accepts_changes_nothing(tmp_path: Path) -> None:
    server, _ = listen()
    pipeline = make_pipeline(server.port, tmp_path, codec="av1")
    # A device whose FFmpeg has SVT-AV1 and nothing else.
    pipeline.selector = EncoderSelector(available={"libsvtav1"})
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 5, what="frames sent")
        with pytest.raises(EncoderError, match="libx264: not in this FFmpeg build"):
            pipeline.apply(pipeline.settings.model_copy(update={"codec": "h264"}))
        with pytest.raises(ValidationError, match="width"):
            pipeline.apply(pipeline.settings.model_copy(update={"width": 321}))
        assert pipeline.settings.codec == "av1" and pipeline.settings.width == 320
        sent = pipeline.stats.frames_sent
        wait_until(lambda: pipeline.stats.frames_sent >= sent + 5, what="streaming goes on")
    finally:
        pipeline.stop()
        server.stop()


def test_reconnects_after_the_listener_restarts_and_loses_only_the_outage(
    tmp_path: Path,
) -> None:
    server, first = listen()
    port = server.port
    pipeline = make_pipeline(port, tmp_path, codec="av1", fps=15)
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 20, what="frames before the outage")
        server.stop()
        down_at = time.monotonic()
        time.sleep(1.0)
        server, second = listen(port)
        outage = time.monotonic() - down_at
        wait_until(lambda: second.connections and len(second.connections[0].data) > 20_000,
                 what="data after the restart")  # fmt: skip
    finally:
        pipeline.stop()
        server.stop()
    before = decode(split_documents(bytes(first.connections[0].data))[0])
    after_docs = split_documents(bytes(second.connections[0].data))
    assert len(after_docs) == 1
    after = decode(after_docs[0])
    assert after.keyframes[0] == 0, "a new connection must start with a keyframe"
    lost = after.stamps[0] - before.stamps[-1] - 1
    # Lost: the outage itself, plus at most one backoff step (cap 0.5 s) and the time to notice
    # and to connect (generous for a noisy machine).
    assert 0 < lost <= (outage + 0.5 + 1.5) * 15, (lost, outage)
    assert pipeline.status()["srt_connects"] == 2


def test_usage_counts_both_directions_and_survives_a_restart(tmp_path: Path) -> None:
    server, _ = listen()
    try:
        pipeline = make_pipeline(server.port, tmp_path, codec="av1")
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 20, what="frames sent")
        pipeline.stop()
        saved = json.loads((tmp_path / FILE_NAME).read_text())
        month = saved["months"][-1]
        assert month["payload_bytes_sent"] >= pipeline.stats.written_bytes
        # IP-level estimate: at least the payload plus 44 bytes per packet; ACKs came back.
        assert month["wire_bytes_sent"] > month["payload_bytes_sent"]
        assert month["wire_bytes_received"] > 0
        # A new process with the same state directory goes on from there.
        again = make_pipeline(server.port, tmp_path, codec="av1")
        assert again.usage.current().wire_bytes_sent == month["wire_bytes_sent"]
        again.start()
        wait_until(lambda: again.stats.frames_sent >= 10, what="frames after the restart")
        again.stop()
        assert UsageStore(tmp_path).current().wire_bytes_sent > month["wire_bytes_sent"]
    finally:
        server.stop()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(shutil.which("srt-live-transmit") is None, reason="srt-tools not installed")
def test_flumph_agent_command_streams_to_srt_live_transmit(tmp_path: Path) -> None:
    """`flumph agent --stream` against Debian's srt-live-transmit, stopped by SIGTERM."""
    port = free_udp_port()
    out = tmp_path / "out.mkv"
    with out.open("wb") as sink:
        receiver = subprocess.Popen(
            ["srt-live-transmit", "-q", f"srt://127.0.0.1:{port}?mode=listener", "file://con"],
            stdout=sink, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["SVT_LOG"] = "1"
    env["FLUMPH_AGENT_BITRATE_KBPS"] = "150"
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\ndevice_id = "phone-7"\ncodec = "hevc"\nfps = 10\n')
    agent = subprocess.Popen(
        [sys.executable, "-m", "flumph", "agent", "--config", str(config),
         "--ingest", f"srt://127.0.0.1:{port}", "--stream", "--width", "320", "--height", "180",
         "--state-dir", str(tmp_path / "state")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(
            lambda: out.exists() and out.stat().st_size > 30_000, what="bytes at the receiver"
        )
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=20)
        assert agent.returncode == 0, err.decode()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        receiver.terminate()
        receiver.wait(10)
    d = decode(out.read_bytes())
    assert (d.codec, d.width, d.height) == ("hevc", 320, 180)
    assert len(d.stamps) >= 10
    usage = json.loads((tmp_path / "state" / FILE_NAME).read_text())
    assert usage["months"][-1]["wire_bytes_sent"] >= out.stat().st_size
    assert b"chose libx265 for codec=hevc" in err


@pytest.mark.parametrize("kind", ["av", "camera"])
def test_file_and_opencv_sources_stream_at_the_requested_size(kind: str, tmp_path: Path) -> None:
    """A clip made by the ffmpeg CLI, read through PyAV (any FFmpeg input) or through OpenCV (the
    camera path: VideoCapture opens files the same way), rescaled by the agent and sent."""
    clip = tmp_path / "clip.mkv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
         "-i", "testsrc2=size=400x300:rate=30", "-t", "3", "-c:v", "libx264", "-preset",
         "ultrafast", "-pix_fmt", "yuv420p", str(clip)],
        check=True, timeout=120,
    )  # fmt: skip
    spec = str(clip) if kind == "av" else f"camera:{clip}"
    server, got = listen()
    pipeline = make_pipeline(server.port, tmp_path, spec, codec="av1", fps=10)
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 12, what="frames from the file")
    finally:
        pipeline.stop()
        server.stop()
    status = pipeline.status()
    assert status["capture_error"] is None
    with av.open(io.BytesIO(bytes(got.connections[0].data)), "r") as c:
        frames = list(c.decode(c.streams.video[0]))
    assert (frames[0].width, frames[0].height) == (320, 180)
    assert len(frames) == status["frames_sent"]
    if kind == "av":
        # A 30 fps file played in real time, decimated to the requested 10 fps.
        assert status["frames_captured"] <= status["frames_sent"] + 2


def test_flumph_ingest_repackages_the_agent_stream_across_a_codec_change(
    ingest: Ingest, tmp_path: Path
) -> None:
    """Against the real ingest: a viewer gets AV1 fMP4, then a new init segment for H.265, on the
    same WebSocket, while the agent stays on one SRT connection."""
    pipeline = make_pipeline(ingest.srt_port, tmp_path, codec="av1", frames_per_burst=2)
    viewer: dict[str, Received] = {}
    try:
        pipeline.start()
        ingest.wait_stream("cam-1", frames=5)
        thread = threading.Thread(
            target=lambda: viewer.setdefault(
                "got", asyncio.run(watch(ingest.ws, "cam-1", seconds=5.0, until_ended=False))
            )
        )
        thread.start()
        time.sleep(2.0)
        pipeline.apply(pipeline.settings.model_copy(update={"codec": "hevc"}))
        thread.join(30)
    finally:
        pipeline.stop()
    segments = viewer["got"].segments()
    assert [mime.split('"')[1][:4] for mime, _ in segments] == ["av01", "hvc1"], segments
    first, second = decode_fmp4(segments[0][1]), decode_fmp4(segments[1][1])
    assert (first.codec, first.width, first.height) == ("av1", 320, 180)
    assert (second.codec, second.width, second.height) == ("hevc", 320, 180)
    assert first.frames >= 10 and second.frames >= 10
    assert pipeline.status()["srt_connects"] == 1
