"""Keyframes on demand (issue #11): a viewer joining a stream whose cached GOP is long gets a fresh
keyframe, asked of the device over MQTT, within the SRT latency + RTT + 2 frames.

Real peers: a broker with the deploy ACL (mosquitto with deploy/mosquitto/acl, and the embedded
broker with broker/acl.py), the ingest on the backend account (which the ACL lets publish
``<p>/<dev>/cmd/keyframe``), a ``flumph agent`` process on its own device account streaming the
synthetic camera with the default 30 s keyframe interval, and a WebSocket viewer. The picture's
stamp says when the keyframe the viewer got was captured.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import websockets

from flumph.agent.sources import read_stamp
from flumph.broker.acl import Acl
from tests.brokers import BACKEND_PASSWORD, BACKEND_USER, Broker, start_embedded, start_mosquitto
from tests.conftest import Ingest, start_ingest, stop_ingest

DEV, DEV_PASSWORD = "kf-cam", "kf-cam-secret"
FPS = 15
SRT_LATENCY_MS = 120


def test_the_acl_lets_the_ingest_account_ask_for_keyframes_and_a_device_not_for_others() -> None:
    acl = Acl()
    assert acl.allows(BACKEND_USER, f"flumph/{DEV}/cmd/keyframe")
    assert not acl.allows("other-cam", f"flumph/{DEV}/cmd/keyframe")
    text = (Path(__file__).resolve().parent.parent / "deploy/mosquitto/acl").read_text()
    assert f"user {BACKEND_USER}\ntopic readwrite flumph/#" in text


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    users = {BACKEND_USER: BACKEND_PASSWORD, DEV: DEV_PASSWORD}
    start = start_mosquitto if request.param == "mosquitto" else start_embedded
    b = start(tmp_path, users)
    yield b
    b.stop()


@pytest.fixture
def ingest_with_mqtt(tmp_path: Path, broker: Broker) -> Iterator[Ingest]:
    env = {"FLUMPH_INGEST_MQTT_USERNAME": BACKEND_USER,
           "FLUMPH_INGEST_MQTT_PASSWORD": BACKEND_PASSWORD}  # fmt: skip
    ing = start_ingest(tmp_path, env, ["--mqtt", broker.url, "--srt-latency-ms", "120"])
    yield ing
    stop_ingest(ing)


@pytest.fixture
def agent(tmp_path: Path, broker: Broker, ingest_with_mqtt: Ingest) -> Iterator[Path]:
    password_file = tmp_path / "agent-password"
    password_file.write_text(DEV_PASSWORD + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    log = tmp_path / "agent.log"
    cmd = [
        sys.executable, "-m", "flumph", "agent", "--device-id", DEV,
        "--ingest", f"srt://127.0.0.1:{ingest_with_mqtt.srt_port}", "--stream",
        "--state-dir", str(tmp_path / "agent-state"), "--codec", "av1", "--width", "320",
        "--height", "180", "--fps", str(FPS), "--bitrate-kbps", "150",
        "--srt-latency-ms", str(SRT_LATENCY_MS),
        "--mqtt", broker.url, "--mqtt-username", DEV, "--mqtt-password-file", str(password_file),
    ]  # fmt: skip
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    yield log
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def join(ws_base: str) -> tuple[float, float, list[bytes], list[float]]:
    """Subscribe; (join wall time, join monotonic, init + first fragments, their arrivals)."""
    async with websockets.connect(f"{ws_base}/ws/view/{DEV}", max_size=None) as ws:
        joined_wall, joined = time.time(), time.monotonic()
        await ws.send(json.dumps({"type": "subscribe", "stream_id": DEV}))
        parts: list[bytes] = []
        arrivals: list[float] = []
        while len(parts) < 3:
            msg = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(msg, bytes):
                parts.append(msg)
                arrivals.append(time.monotonic())
        return joined_wall, joined, parts, arrivals


def first_picture(parts: list[bytes]) -> tuple[bool, int]:
    """(the first frame is a keyframe, its capture wall time in ms mod 2**32) from init + frags."""
    with av.open(io.BytesIO(b"".join(parts)), format="mp4", mode="r") as c:
        frame = next(c.decode(c.streams.video[0]))
        luma = np.asarray(frame.to_ndarray(format="yuv420p")[: frame.height], dtype=np.uint8)
        return bool(frame.key_frame), read_stamp(luma)[1]


@pytest.mark.slow
def test_a_viewer_of_a_long_cached_gop_gets_a_fresh_keyframe_at_once(
    ingest_with_mqtt: Ingest, agent: Path
) -> None:
    ingest_with_mqtt.wait_stream(DEV, timeout=30, frames=FPS * 3)  # the cached GOP is > 3 s old
    joined_wall, joined, parts, arrivals = asyncio.run(join(ingest_with_mqtt.ws))
    is_key, captured_ms = first_picture(parts)
    assert is_key
    # Fresh: captured after the viewer joined (not the cache's keyframe from the stream's start).
    age_ms = (int(joined_wall * 1000) - captured_ms) % 2**32
    assert age_ms > 2**31 or age_ms < 1000 / FPS, f"keyframe captured {age_ms} ms before the join"
    waited = arrivals[1] - joined  # parts[0] is the init segment
    budget = (
        SRT_LATENCY_MS / 1000 + 2 / FPS + 0.25
    )  # RTT ~0 on loopback; MQTT hop and a loaded machine
    assert waited <= budget, f"fresh keyframe after {waited:.3f} s (budget {budget:.3f} s)"
    log = ingest_with_mqtt.log()
    assert f"asked {DEV} for a keyframe" in log
    print(f"fresh keyframe {waited * 1000:.0f} ms after the join")
