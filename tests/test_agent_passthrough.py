"""Pass-through against a real RTSP server (GStreamer's, tests/rtsp_server.py) serving H.264 and
H.265: the agent forwards the camera's own stream to the real ingest without opening a decoder or
an encoder, survives the camera server restarting, stops pulling when streaming stops, and
reports what it does; and the watchdog restarts an encode pipeline whose thread died."""

from __future__ import annotations

import asyncio
import io
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from flumph.agent import pipeline as pipeline_module
from flumph.agent.pipeline import Pipeline, SourceFactory
from flumph.agent.sources import SyntheticSource
from flumph.media.ebml import split_documents
from flumph.settings import StreamSettings
from tests.conftest import Ingest, wait_until
from tests.peers import decode_fmp4, watch
from tests.rtsp import RtspServer
from tests.test_agent_control import DEV, Agent, T, Watch, pub, start_agent, start_broker
from tests.test_agent_stream import listen, make_pipeline

SOURCE_SIZE = (480, 272)  # not the agent's default 640x360: what arrives must be the source's


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.stop()


@pytest.fixture
def servers() -> Iterator[list[RtspServer]]:
    started: list[RtspServer] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)


def rtsp(servers: list[RtspServer], codec: str = "hevc", **kw: Any) -> RtspServer:
    server = RtspServer(codec, size="x".join(map(str, SOURCE_SIZE)), **kw)
    servers.append(server)
    return server.start()


def copy_pipeline(port: int, state_dir: Path, source: str, **settings: object) -> Pipeline:
    return make_pipeline(port, state_dir, source, **{"codec": "copy", **settings})


class CodecRecorder:
    """Stands in for ``av.CodecContext``: records every codec the agent creates."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.created: list[tuple[str, str | None]] = []

    def create(self, name: str, mode: str | None = None) -> Any:
        self.created.append((name, mode))
        return self.real.create(name, mode)


def view(ingest: Ingest, seconds: float = 4.0, device: str = "cam-1") -> Any:
    return asyncio.run(watch(ingest.ws, device, seconds=seconds, until_ended=False))


def frames_at_ingest(ingest: Ingest) -> int:
    return next((int(s["frames"]) for s in ingest.streams() if s["id"] == "cam-1"), 0)  # type: ignore[call-overload]


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_copy_reaches_a_viewer_with_the_source_codec_and_size_and_no_codec_opened(
    codec: str,
    ingest: Ingest,
    servers: list[RtspServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = rtsp(servers, codec)
    # Instrument the two ways the agent could touch pictures: creating a codec (every encoder,
    # and the snapshot decoder, go through av.CodecContext.create) and opening a decoding source.
    recorder = CodecRecorder(av.CodecContext)
    monkeypatch.setattr(av, "CodecContext", recorder)
    decoding_sources: list[object] = []

    def no_decoding_source(*args: object) -> object:
        decoding_sources.append(args)
        raise AssertionError("the copy path opened a decoding source")

    monkeypatch.setattr(pipeline_module, "open_source", no_decoding_source)
    pipeline = copy_pipeline(ingest.srt_port, tmp_path, server.url)
    # And inside FFmpeg: libavformat's stream probing would open the decoder (and, for H.264,
    # decode the first packets); the agent's empty decoder whitelist must refuse it.
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as ffmpeg_log:  # this thread's: start() opens the source
            pipeline.start()
        stream = ingest.wait_stream("cam-1", frames=5)
        got = view(ingest)
        status = pipeline.status()
    finally:
        pipeline.stop()
        av.logging.set_level(None)
    monkeypatch.undo()
    assert recorder.created == [] and decoding_sources == []
    assert (16, codec, f"Codec ({codec}) not on whitelist 'none'\n") in ffmpeg_log
    # Counted like any stream: what left through SRT, headers and retransmissions included.
    assert pipeline.status()["usage_wire_bytes_sent"] >= pipeline.stats.written_bytes > 0
    assert status["encoder"] == "copy" and status["encoder_attempts"] == []
    assert status["frames_encoded"] == 0 and status["frames_sent"] > 0
    assert status["source"]["codec"] == codec
    assert (status["source"]["width"], status["source"]["height"]) == SOURCE_SIZE
    assert stream["size"] == "480x272", stream
    [(mime, parts)] = got.segments()
    assert ('"avc1.' if codec == "h264" else '"hvc1.') in mime
    decoded = decode_fmp4(parts)
    assert (decoded.codec, decoded.width, decoded.height) == (codec, *SOURCE_SIZE)
    assert decoded.frames >= 30 and decoded.keyframes >= 1
    assert "forwarding rtsp://" in (pipeline.encoder_reason or "")


def test_rtsp_server_restarting_mid_stream_is_survived(
    ingest: Ingest, servers: list[RtspServer], tmp_path: Path
) -> None:
    server = rtsp(servers, "hevc")
    pipeline = copy_pipeline(ingest.srt_port, tmp_path, server.url)
    faults: list[str | None] = []
    pipeline.on_fault = faults.append
    try:
        pipeline.start()
        ingest.wait_stream("cam-1", frames=15)
        server.stop()  # the camera's server goes away mid-stream
        wait_until(lambda: pipeline.state == "restarting", what="the watchdog noticing")
        assert pipeline.streaming  # still on: it is restarting, not stopped
        time.sleep(1.5)  # a few failed attempts (connection refused) while it is down
        server.start()
        sent = pipeline.stats.frames_sent
        wait_until(lambda: pipeline.stats.frames_sent > sent + 15, what="frames after the restart")
        wait_until(lambda: faults[-1] is None, what="the fault cleared")
        before = frames_at_ingest(ingest)
        got = view(ingest, seconds=3.0)
        assert frames_at_ingest(ingest) > before
    finally:
        pipeline.stop()
    assert pipeline.state == "idle"
    assert faults[0] is not None
    assert "ended the stream" in faults[0] and "restarting in" in faults[0]
    assert any(f and "restart failed: cannot open rtsp://" in f for f in faults), faults
    decoded = decode_fmp4(got.segments()[-1][1])
    assert (decoded.codec, decoded.width, decoded.height) == ("hevc", *SOURCE_SIZE)


def test_on_demand_stop_closes_the_rtsp_session_and_start_opens_a_new_one(
    servers: list[RtspServer], tmp_path: Path
) -> None:
    server = rtsp(servers, "h264")
    srt, _ = listen()
    pipeline = copy_pipeline(srt.port, tmp_path, server.url, streaming=False)
    try:
        pipeline.start()
        time.sleep(1.0)
        assert server.count("client-connected") == 0  # idle: nobody pulls from the camera
        pipeline.apply(pipeline.settings.model_copy(update={"streaming": True}))
        server.wait_event("client-connected")
        wait_until(lambda: pipeline.stats.frames_sent >= 10, what="frames")
        mark = server.mark()
        pipeline.apply(pipeline.settings.model_copy(update={"streaming": False}))
        server.wait_event("client-closed", since=mark, timeout=3.0)
        time.sleep(2.0)  # the watchdog does not bring it back: stopping is not a fault
        assert server.count("client-connected", since=mark) == 0
        pipeline.apply(pipeline.settings.model_copy(update={"streaming": True}))
        server.wait_event("client-connected", since=mark)
    finally:
        pipeline.stop()
        srt.stop()
    assert server.count("client-closed") == 2


def test_auto_forwards_a_matching_source_and_transcodes_when_a_setting_asks_otherwise(
    servers: list[RtspServer], tmp_path: Path
) -> None:
    server = rtsp(servers, "hevc")
    srt, got = listen()
    pipeline = copy_pipeline(
        srt.port, tmp_path, server.url, codec="auto", width=480, height=272, bitrate_kbps=1000
    )
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 20, what="forwarded frames")
        forwarded = pipeline.encoder_name, pipeline.encoder_reason
        smaller = pipeline.settings.model_copy(update={"width": 320, "height": 180})
        pipeline.apply(smaller)
        sent = pipeline.stats.frames_sent
        wait_until(lambda: pipeline.stats.frames_sent >= sent + 20, what="transcoded frames")
        transcoded = pipeline.encoder_name, pipeline.encoder_reason
    finally:
        pipeline.stop()
        srt.stop()
    assert forwarded[0] == "copy"
    assert forwarded[1] is not None and forwarded[1].startswith("codec=auto: forwarding")
    assert transcoded[0] not in (None, "copy")
    assert transcoded[1] is not None and "320x180 (the source sends 480x272)" in transcoded[1]
    sizes = []
    for connection in got.connections:
        for document in split_documents(bytes(connection.data)):
            with av.open(io.BytesIO(document), "r") as c:
                frame = next(c.decode(c.streams.video[0]))
                sizes.append((c.streams.video[0].codec_context.name, frame.width, frame.height))
    assert sizes[0] == ("hevc", *SOURCE_SIZE)
    assert sizes[-1][1:] == (320, 180)  # decoded and re-encoded at the size asked for


def test_auto_transcodes_once_the_source_is_measured_above_the_bitrate_setting(
    servers: list[RtspServer], tmp_path: Path
) -> None:
    """RTSP cameras declare no bitrate: auto forwards first, measures 10 s, then transcodes a
    source that sends more than the setting allows (here ~300 kbit/s against 100)."""
    server = rtsp(servers, "hevc", bitrate=300)
    srt, _ = listen()
    pipeline = copy_pipeline(
        srt.port, tmp_path, server.url, codec="auto", width=480, height=272, bitrate_kbps=100
    )
    faults: list[str | None] = []
    pipeline.on_fault = faults.append
    try:
        pipeline.start()
        assert pipeline.encoder_name == "copy"
        wait_until(lambda: pipeline.encoder_name not in ("copy", None), "the switch", timeout=30)
        sent = pipeline.stats.frames_sent
        wait_until(lambda: pipeline.stats.frames_sent > sent + 10, what="transcoded frames")
        reason = pipeline.encoder_reason
    finally:
        pipeline.stop()
        srt.stop()
    assert reason is not None and "bitrate_kbps=100 (the source sends ~" in reason
    assert "measured)" in reason and faults == [None]  # a decision, not a fault


def test_snapshots_keyframes_and_encoder_settings_while_forwarding(
    servers: list[RtspServer], tmp_path: Path
) -> None:
    server = rtsp(servers, "h264")
    srt, _ = listen()
    pipeline = copy_pipeline(srt.port, tmp_path, server.url)
    try:
        pipeline.start()
        wait_until(lambda: pipeline.stats.frames_sent >= 5, what="frames")
        frame = pipeline.snapshot_frame()  # the newest keyframe, decoded now
        assert (frame.width, frame.height) == SOURCE_SIZE
        with pytest.raises(ValueError, match="decides the keyframes"):
            pipeline.request_keyframe()
        pipeline.apply(pipeline.settings.model_copy(update={"bitrate_kbps": 100, "fps": 5}))
        notice = pipeline.notice
        assert pipeline.encoder_name == "copy"  # still forwarding
        pipeline.apply(pipeline.settings.model_copy(update={"streaming": False}))
        mark = server.mark()
        idle = pipeline.snapshot_frame()  # idle: the source is opened for one keyframe
    finally:
        pipeline.stop()
        srt.stop()
    assert notice is not None
    assert notice.startswith("codec=copy: bitrate_kbps, fps not applied: the source sets them")
    assert "h264 480x272" in notice
    assert (idle.width, idle.height) == SOURCE_SIZE
    assert server.count("client-connected", since=mark) == 1
    server.wait_event("client-closed", since=mark, timeout=3.0)


def test_copy_refuses_a_source_of_raw_pictures_by_name(tmp_path: Path) -> None:
    srt, _ = listen()
    pipeline = copy_pipeline(srt.port, tmp_path, "synthetic")
    try:
        with pytest.raises(Exception, match="codec=copy needs a source that is already encoded"):
            pipeline.start()
    finally:
        pipeline.stop()
        srt.stop()
    assert not pipeline.streaming


def watched_pipeline(
    port: int, state_dir: Path, source: SourceFactory | str, codec: str
) -> tuple[Pipeline, list[str | None]]:
    """A pipeline whose watchdog news (fault texts, None when frames flow again) are collected."""
    pipeline = Pipeline(
        device_id="cam-1",
        ingest=f"srt://127.0.0.1:{port}",
        settings=StreamSettings.model_validate(
            {"codec": codec, "width": 320, "height": 180, "streaming": True}
        ),
        source=source,
        state_dir=state_dir,
        backoff_base_s=0.2,
        backoff_cap_s=1.0,
    )
    faults: list[str | None] = []
    pipeline.on_fault = faults.append
    return pipeline, faults


class FailingOnce:
    """A synthetic camera whose first instance dies after ``frames`` frames (a USB camera pulled
    out); the ones opened after it work."""

    opened = 0

    def __init__(self, settings: StreamSettings, frames: int = 10) -> None:
        FailingOnce.opened += 1
        self.inner = SyntheticSource(settings.width, settings.height, settings.fps)
        self.name, self.paced = "flaky-camera", True
        self.left = frames if FailingOnce.opened == 1 else None

    def configure(self, width: int, height: int, fps: int) -> None:
        self.inner.configure(width, height, fps)

    def read(self, tick: int, wall_time: float) -> av.VideoFrame:
        if self.left is not None:
            self.left -= 1
            if self.left < 0:
                raise RuntimeError("camera unplugged")
        return self.inner.read(tick, wall_time)

    def close(self) -> None:
        self.inner.close()


def test_a_dead_capture_thread_is_reported_and_the_pipeline_restarted(tmp_path: Path) -> None:
    srt, got = listen()
    FailingOnce.opened = 0
    pipeline, faults = watched_pipeline(srt.port, tmp_path, FailingOnce, "av1")
    try:
        pipeline.start()
        wait_until(lambda: bool(faults), what="the death reported")
        wait_until(lambda: None in faults, what="frames again after the restart")
        sent = pipeline.stats.frames_sent
        wait_until(lambda: pipeline.stats.frames_sent > sent + 10, what="streaming on")
    finally:
        pipeline.stop()
        srt.stop()
    assert FailingOnce.opened == 2
    assert faults[0] is not None
    assert faults[0].startswith("capture stopped: RuntimeError: camera unplugged; restarting in")
    assert faults[-1] is None and pipeline.state == "idle"
    assert len(got.connections) == 2  # the session was restarted, SRT connection included


def test_a_dead_encode_thread_is_reported_and_the_pipeline_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flumph.agent.encoders import VideoEncoder

    real_encode = VideoEncoder.encode
    calls = {"n": 0}
    lock = threading.Lock()

    def encode_then_crash(self: VideoEncoder, *args: Any, **kw: Any) -> Any:
        with lock:
            calls["n"] += 1
            if calls["n"] == 12:
                raise MemoryError("encoder ran out of memory")
        return real_encode(self, *args, **kw)

    monkeypatch.setattr(VideoEncoder, "encode", encode_then_crash)
    srt, _ = listen()
    pipeline, faults = watched_pipeline(srt.port, tmp_path, "synthetic", "hevc")
    try:
        pipeline.start()
        wait_until(lambda: None in faults, what="the restart and new frames")
    finally:
        pipeline.stop()
        srt.stop()
    assert faults[0] is not None
    assert faults[0].startswith("the encode thread died: MemoryError: encoder ran out of memory")


def test_a_real_agent_reports_copy_and_a_killed_source_on_mqtt_then_recovers(
    ingest: Ingest, servers: list[RtspServer], tmp_path: Path, agents: list[Agent]
) -> None:
    """`flumph agent --codec copy` under MQTT (the embedded broker): reported names copy and the
    source; an encoder setting is answered with a notice, a keyframe request with the reason;
    the camera server killed mid-stream shows on reported.error with state restarting, and the
    agent streams again by itself when the server is back."""
    broker = start_broker("embedded", tmp_path)
    watcher = Watch(broker)
    try:
        server = rtsp(servers, "hevc")
        ingest_url = f"srt://127.0.0.1:{ingest.srt_port}"
        args = ["--codec", "copy", "--source", server.url, "--stream"]
        agent = start_agent(tmp_path, broker, ingest_url, *args)
        agents.append(agent)
        topic = T.reported(DEV)
        first = watcher.wait(topic, lambda d: d["state"] == "streaming" and d["source"])
        ingest.wait_stream(DEV, frames=10)
        # Once the source has been measured (two keyframes), reported says what it sends.
        measured = watcher.wait(topic, lambda d: d["source"] and d["source"]["keyint_s"])

        mark = watcher.mark()
        pub(broker, T.desired(DEV), '{"v": 5, "bitrate_kbps": 100}', retain=True)
        noticed = watcher.wait(topic, lambda d: d["applied_v"] == 5, since=mark)
        pub(broker, T.cmd(DEV, "keyframe"), '{"id": "k1"}')
        refused = watcher.ack("k1", since=mark)

        mark = watcher.mark()
        server.stop(signal.SIGKILL)
        down = watcher.wait(topic, lambda d: d["state"] == "restarting", since=mark)
        time.sleep(1.0)
        server.start()
        up = watcher.wait(topic, lambda d: d["state"] == "streaming" and not d["error"], since=mark)
        got = view(ingest, seconds=3.0, device=DEV)  # the stream, as a viewer joining now gets it
    finally:
        watcher.close()
        broker.stop()
    decoded = decode_fmp4(got.segments()[-1][1])
    assert (decoded.codec, decoded.width, decoded.height) == ("hevc", *SOURCE_SIZE)
    assert decoded.frames >= 20
    assert first["encoder"] == "copy" and first["encoder_reason"].startswith(
        "codec=copy: forwarding"
    )
    assert first["source"]["codec"] == "hevc"
    assert (first["source"]["width"], first["source"]["height"]) == SOURCE_SIZE
    assert "rtsp://127.0.0.1" in first["source"]["name"]
    source = measured["source"]
    assert source["keyint_s"] == pytest.approx(1.0, abs=0.2)  # the server's 15-frame GOP
    assert source["fps"] == pytest.approx(15, abs=1) and 100 < source["bitrate_kbps"] < 1000
    assert noticed["settings"]["bitrate_kbps"] == 100 and noticed["error"] is None
    assert noticed["notice"].startswith("codec=copy: bitrate_kbps not applied: the source sets")
    assert refused["ok"] is False and "decides the keyframes" in refused["error"]
    assert down["streaming"] is True
    assert down["error"].startswith(f"forwarding stopped: {server.url}")
    assert "restarting in" in down["error"]
    assert up["encoder"] == "copy"
