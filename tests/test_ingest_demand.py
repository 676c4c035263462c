"""On-demand support in the ingest: viewers that wait for a known device, and the retained viewer
demand it publishes over MQTT (real mosquitto, real ffmpeg publisher)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from flumph.lifecycle import provisioned_status
from tests.brokers import Broker, start_mosquitto
from tests.conftest import Ingest, start_ingest, stop_ingest
from tests.peers import decode_fmp4, ffmpeg_publish


def provision(broker: Broker, device_id: str) -> None:
    """What `flumph ctl add` does: a retained status makes the device known."""
    subprocess.run(
        ["mosquitto_pub", *broker.cli_auth(None), "-t", f"flumph/{device_id}/status", "-r",
         "-q", "1", "-m", provisioned_status()],
        check=True, timeout=10,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mqtt_ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ingest, Broker]]:
    tmp = tmp_path_factory.mktemp("demand")
    broker = start_mosquitto(tmp)
    ing = start_ingest(tmp, args=["--mqtt", broker.url, "--reconnect-grace-s", "2"])
    try:
        yield ing, broker
    finally:
        stop_ingest(ing)
        broker.stop()


def retained(broker: Broker, topic: str) -> dict[str, object] | None:
    r = subprocess.run(
        ["mosquitto_sub", *broker.cli_auth(None), "-t", topic, "-C", "1", "-W", "1",
         "--retained-only"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return json.loads(r.stdout) if r.stdout.strip() else None


def wait_retained(broker: Broker, topic: str, viewers: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = retained(broker, topic)
        if last is not None and last.get("viewers") == viewers:
            return
        time.sleep(0.1)
    raise AssertionError(f"{topic}: wanted viewers={viewers}, last retained {last}")


async def test_waiting_viewer_gets_the_stream_when_it_starts(
    mqtt_ingest: tuple[Ingest, Broker],
) -> None:
    shared_ingest, broker = mqtt_ingest
    provision(broker, "late-cam")
    await asyncio.sleep(0.5)  # the ingest hears of it
    async with websockets.connect(f"{shared_ingest.ws}/ws/view/late-cam", max_size=None) as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": "late-cam", "wait": True}))
        assert json.loads(await ws.recv()) == {"type": "subscribed", "stream_id": "late-cam"}
        assert json.loads(await ws.recv()) == {"type": "waiting", "stream_id": "late-cam"}
        info = {s["id"]: s for s in shared_ingest.streams()}["late-cam"]
        assert info["publishing"] is False and info["viewers"] == 1
        proc = ffmpeg_publish(shared_ingest.srt_url("late-cam"), seconds=2)
        parts: list[bytes] = []
        media = None
        while True:
            msg = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(msg, bytes):
                parts.append(msg)
                continue
            doc = json.loads(msg)
            if doc["type"] == "media":
                media = doc["mime"]
            if doc["type"] == "ended":
                break
        await asyncio.to_thread(proc.communicate, timeout=30)
    assert media is not None and "avc1." in media
    assert decode_fmp4(parts).frames >= 28


async def test_wait_only_for_device_ids(shared_ingest: Ingest) -> None:
    async with websockets.connect(f"{shared_ingest.ws}/ws/view/Not_A_Device") as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": "Not_A_Device", "wait": True}))
        reply = json.loads(await ws.recv())
    assert reply["type"] == "error" and "wait is only for device ids" in reply["message"]


async def test_demand_published_and_stale_demand_cleared(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    try:
        # A crashed ingest left a retained demand for a camera nobody watches, and one for an id
        # that is no device at all (a viewer of a typo, before devices had to be known).
        for device in ("ghost", "phantom"):
            subprocess.run(
                ["mosquitto_pub", *broker.cli_auth(None), "-t", f"flumph/{device}/demand", "-r",
                 "-q", "1", "-m", json.dumps({"viewers": 3, "ts": 1.0})],
                check=True, timeout=10,
            )  # fmt: skip
        provision(broker, "ghost")
        provision(broker, "cam7")
        ing = start_ingest(tmp_path, args=["--mqtt", broker.url])
        try:
            await asyncio.to_thread(wait_retained, broker, "flumph/ghost/demand", 0)
            deadline = time.monotonic() + 10
            while retained(broker, "flumph/phantom/demand") is not None:  # deleted
                assert time.monotonic() < deadline, "the unknown device's demand stayed"
                await asyncio.sleep(0.1)
            async with websockets.connect(f"{ing.ws}/ws/view/cam7") as ws:
                await ws.send(json.dumps({"type": "subscribe", "stream_id": "cam7", "wait": True}))
                await ws.recv()
                await asyncio.to_thread(wait_retained, broker, "flumph/cam7/demand", 1)
                async with websockets.connect(f"{ing.ws}/ws/view/cam7") as ws2:
                    await ws2.send(
                        json.dumps({"type": "subscribe", "stream_id": "cam7", "wait": True})
                    )
                    await ws2.recv()
                    await asyncio.to_thread(wait_retained, broker, "flumph/cam7/demand", 2)
            await asyncio.to_thread(wait_retained, broker, "flumph/cam7/demand", 0)
            # The empty stream the waiting viewers created is gone with them.
            assert not [s for s in ing.streams() if s["id"] == "cam7"]
        finally:
            stop_ingest(ing)
    finally:
        broker.stop()
