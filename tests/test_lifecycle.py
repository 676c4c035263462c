"""Device lifecycle (issue 13, attack 3): a device exists once added or once it has come online;
a set, a view or an SRT stream id never creates one; ctl and the dashboard remove one with every
retained topic. Real `flumph dashboard`, `flumph ingest`, `flumph ctl`, mosquitto (deploy ACL)
and the embedded broker, ffmpeg publishing over SRT."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from flumph.control import Topics
from tests.brokers import OPS_USER, Broker, Probe, start_embedded, start_mosquitto
from tests.conftest import Ingest, start_ingest, stop_ingest
from tests.peers import ffmpeg_publish
from tests.test_ctl import ctl
from tests.test_fleet_service import (
    USERS,
    Dashboard,
    FakeDevice,
    start_dashboard,
    wait_until,
)

T = Topics()
RETAINED = ("status", "desired", "reported", "snapshot", "demand")


class Backend:
    def __init__(self, broker: Broker, dash: Dashboard, ingest: Ingest) -> None:
        self.broker, self.dash, self.ingest = broker, dash, ingest

    def retained(self, device_id: str) -> dict[str, bytes]:
        """Every retained topic of ``device_id`` (mosquitto_sub --retained-only)."""
        r = subprocess.run(
            ["mosquitto_sub", *self.broker.cli_auth(OPS_USER), "-t", f"flumph/{device_id}/#",
             "-v", "-W", "1", "--retained-only"],
            capture_output=True, timeout=20,
        )  # fmt: skip
        out: dict[str, bytes] = {}
        for line in r.stdout.splitlines():
            topic, _, payload = line.partition(b" ")
            out[topic.decode().rsplit("/", 1)[-1]] = payload
        return out

    def devices(self) -> set[str]:
        r = httpx.get(f"{self.dash.url}/api/devices", timeout=10)
        return {d["id"] for d in r.json()}

    def pub(self, topic: str, payload: str | bytes, retain: bool = False) -> None:
        p = Probe(self.broker, OPS_USER)
        try:
            p.publish(topic, payload, retain=retain)
        finally:
            p.close()


@pytest.fixture(scope="module", params=["mosquitto", "embedded"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    tmp = tmp_path_factory.mktemp(f"lifecycle-{request.param}")
    start = start_mosquitto if request.param == "mosquitto" else start_embedded
    broker = start(tmp, USERS)
    ingest = start_ingest(
        tmp,
        env_extra={"FLUMPH_INGEST_MQTT_USERNAME": "flumph-backend",
                   "FLUMPH_INGEST_MQTT_PASSWORD": USERS["flumph-backend"]},
        args=["--mqtt", broker.url],
    )  # fmt: skip
    try:
        dash = start_dashboard(tmp, broker)
        yield Backend(broker, dash, ingest)
        assert dash.stop() == 0, dash.log()
        assert "Traceback" not in dash.log(), dash.log()
    finally:
        stop_ingest(ingest)
        broker.stop()


def test_a_set_to_an_unknown_device_is_refused_everywhere_and_leaves_nothing(
    backend: Backend,
) -> None:
    # Over MQTT, as mosquitto_pub sends it: answered on set/rejected, no desired is retained,
    # no device appears.
    answers = Probe(backend.broker, OPS_USER)
    try:
        assert answers.subscribe(T.set_rejected("typo-cam")) == [1]
        backend.pub(T.set("typo-cam"), '{"streaming": true}')
        rejected = json.loads(answers.wait_for(T.set_rejected("typo-cam"), 10).payload)
    finally:
        answers.close()
    assert rejected["error"].startswith("unknown device 'typo-cam'"), rejected
    # The HTTP API: 404 with the reason.
    r = httpx.post(
        f"{backend.dash.url}/api/devices/typo-cam/set", json={"streaming": True}, timeout=10
    )
    assert r.status_code == 404, r.text
    assert r.json()["detail"].startswith("unknown device 'typo-cam'")
    r = httpx.post(f"{backend.dash.url}/api/devices/typo-cam/cmd/keyframe", timeout=10)
    assert r.status_code == 404, r.text
    # flumph ctl: exit 2, says how to add it, publishes nothing.
    for args in (
        ("set", "typo-cam", "fps=10"),
        ("start", "typo-cam"),
        ("cmd", "typo-cam", "restart"),
    ):
        done = ctl(backend.broker, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert (
            "unknown device 'typo-cam'" in done.stderr and "flumph ctl add typo-cam" in done.stderr
        )
    assert backend.retained("typo-cam") == {}
    assert "typo-cam" not in backend.devices()


async def test_a_view_or_an_srt_stream_id_never_creates_a_device(backend: Backend) -> None:
    ing = backend.ingest
    # A viewer waiting for an unknown id is refused.
    async with websockets.connect(f"{ing.ws}/ws/view/viewed-only") as ws:
        await ws.send(json.dumps({"type": "subscribe", "stream_id": "viewed-only", "wait": True}))
        reply = json.loads(await ws.recv())
    assert reply["type"] == "error", reply
    # An SRT publisher under an id that is no device streams (open ingest), and is watched...
    proc = ffmpeg_publish(ing.srt_url("srt-only"), seconds=3)
    try:
        await asyncio.to_thread(ing.wait_stream, "srt-only", 15, 1)
        async with websockets.connect(f"{ing.ws}/ws/view/srt-only") as ws:
            await ws.send(json.dumps({"type": "subscribe", "stream_id": "srt-only"}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            await asyncio.sleep(1.0)
    finally:
        await asyncio.to_thread(proc.communicate, timeout=30)
    # ... and still no fleet device, no retained topic.
    await asyncio.sleep(0.5)
    for device_id in ("viewed-only", "srt-only"):
        assert device_id not in backend.devices()
        assert await asyncio.to_thread(backend.retained, device_id) == {}


def test_ctl_add_then_forget(backend: Backend) -> None:
    done = ctl(backend.broker, "add", "cam20")
    assert done.returncode == 0 and "added cam20" in done.stdout, done.stderr
    view = wait_until(lambda: backend.dash.device("cam20"), 10, "cam20 in the dashboard")
    assert view["presence"] == "offline"
    assert ctl(backend.broker, "add", "cam20").stdout.strip() == "cam20 is already known"
    # It can be configured before it ever connects, and it connects and reports.
    done = ctl(backend.broker, "set", "cam20", "fps=12", "--no-wait")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: json.loads(backend.retained("cam20").get("desired", b"{}")).get("fps") == 12,
               10, "desired")  # fmt: skip
    dev = FakeDevice(backend.broker, "cam20")
    dev.birth()
    dev.publish("reported", b'{"applied_v": 1, "settings": {}, "streaming": false}', retain=True)
    dev.publish("snapshot", b"\xff\xd8\xff a still", retain=True)
    wait_until(lambda: backend.dash.device("cam20").get("presence") == "online", 10, "online")
    dev.close()
    # Forget: every retained topic goes, the dashboard drops it, a dashboard restart does not
    # bring it back.
    done = ctl(backend.broker, "forget", "cam20")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "cam20" not in backend.devices(), 10, "cam20 gone")
    assert backend.retained("cam20") == {}


async def test_dashboard_adds_and_forgets_and_tells_the_page(backend: Backend) -> None:
    url = backend.dash.url
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/api/devices", json={"id": "cam21"})
        assert r.status_code == 201 and r.json()["id"] == "cam21", r.text
        r = await http.post("/api/devices", json={"id": "cam21"})
        assert r.status_code == 200
        r = await http.post("/api/devices", json={"id": "Not A Device"})
        assert r.status_code == 422 and "must match" in r.json()["detail"]
        r = await http.post("/api/devices/cam21/set", json={"bitrate_kbps": 300})
        assert r.status_code == 200, r.text
        events: list[tuple[str, Any]] = []

        async def follow() -> None:
            event = ""
            async with http.stream("GET", "/api/events", params={"device": "cam21"}) as s:
                async for line in s.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        events.append((event, json.loads(line[6:])))
                        if event == "removed":
                            return

        feed = asyncio.create_task(follow())
        await asyncio.sleep(0.5)
        r = await http.post("/api/devices/cam21/forget")
        assert r.status_code == 200 and r.json() == {"id": "cam21", "was_known": True}, r.text
        await asyncio.wait_for(feed, 10)
    assert events[-1] == ("removed", {"id": "cam21"})
    assert await asyncio.to_thread(backend.retained, "cam21") == {}
    r = await asyncio.to_thread(httpx.get, f"{url}/api/devices/cam21", timeout=10)
    assert r.status_code == 404


def test_forget_cleans_what_an_unknown_id_left_behind(backend: Backend) -> None:
    """Leftovers of the old behaviour (phantom devices): retained desired and demand of an id
    with no status. The dashboard does not list it; forget deletes them."""
    backend.pub(T.desired("ghost-9"), '{"v": 3, "streaming": true}', retain=True)
    backend.pub(T.demand("ghost-9"), '{"viewers": 0, "ts": 1.0}', retain=True)
    time.sleep(0.5)
    assert "ghost-9" not in backend.devices()
    done = ctl(backend.broker, "forget", "ghost-9")
    assert done.returncode == 0, done.stderr
    assert backend.retained("ghost-9") == {}


def test_a_forgotten_device_that_comes_online_is_known_again(backend: Backend) -> None:
    ctl(backend.broker, "add", "cam22")
    wait_until(lambda: backend.dash.device("cam22"), 10, "added")
    ctl(backend.broker, "forget", "cam22")
    wait_until(lambda: not backend.dash.device("cam22"), 10, "forgotten")
    dev = FakeDevice(backend.broker, "cam22")
    try:
        dev.birth()
        wait_until(lambda: backend.dash.device("cam22").get("presence") == "online", 10, "back")
    finally:
        dev.close()


def test_restart_keeps_the_fleet_as_left(backend: Backend, tmp_path: Path) -> None:
    """Known devices come back after a dashboard restart (they are the broker's retained
    statuses); forgotten ones and refused sets do not."""
    ctl(backend.broker, "add", "cam23")
    backend.pub(T.set("typo-2"), '{"fps": 5}')
    wait_until(lambda: backend.dash.device("cam23"), 10, "added")
    dash = start_dashboard(tmp_path, backend.broker)
    try:
        ids = {d["id"] for d in httpx.get(f"{dash.url}/api/devices", timeout=10).json()}
        assert "cam23" in ids and "typo-2" not in ids and "cam20" not in ids
    finally:
        assert dash.stop() == 0
