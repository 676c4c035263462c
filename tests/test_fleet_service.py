"""The fleet service as a real `flumph dashboard` process against real brokers (mosquitto with
the deploy ACL, and the embedded one), driven by mosquitto_pub/mosquitto_sub, the HTTP API and
small paho devices (peers of the service, speaking the contract).

One dashboard per broker for the module (on-demand linger 1 s, command timeout 3 s); each test
uses its own device ids so the tests do not see each other's state.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from flumph.config import ConfigError
from flumph.control import Ack, Command, Status, Telemetry, Topics, decode
from flumph.dashboard.main import load, parse_args
from flumph.lifecycle import provisioned_status
from flumph.mqtt import make_client
from tests.brokers import (
    BACKEND_PASSWORD,
    BACKEND_USER,
    OPS_PASSWORD,
    OPS_USER,
    Broker,
    Probe,
    start_embedded,
    start_mosquitto,
)
from tests.conftest import free_port

T = Topics()
DEVICES = [f"cam{i}" for i in range(1, 31)]
USERS = {BACKEND_USER: BACKEND_PASSWORD, OPS_USER: OPS_PASSWORD} | {d: f"{d}-pw" for d in DEVICES}
LINGER_S = 1.0


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {result!r})")
        time.sleep(0.05)


@dataclass
class Dashboard:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=10)
        r.raise_for_status()
        return r.json()

    def device(self, device_id: str) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/devices/{device_id}", timeout=10)
        return r.json() if r.status_code == 200 else {}

    def stop(self) -> int:
        """SIGTERM; uvicorn re-raises it once shut down, so a clean stop ends by that signal."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
            return 0 if rc == -signal.SIGTERM else rc
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"dashboard did not stop on SIGTERM:\n{self.log()}") from None


def start_dashboard(tmp: Path, broker: Broker, *args: str) -> Dashboard:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["FLUMPH_DASHBOARD_MQTT_PASSWORD"] = BACKEND_PASSWORD
    log_path = tmp / f"dashboard-{port}.log"
    cmd = [
        sys.executable, "-m", "flumph", "dashboard", "--host", "127.0.0.1", "--port", str(port),
        "--mqtt", broker.url, "--mqtt-username", BACKEND_USER,
        "--ondemand-linger-s", str(LINGER_S), "--heartbeat-default-s", "120",
        "--command-timeout-s", "3", "--log-level", "debug", *args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    dash = Dashboard(port, proc, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}:\n{dash.log()}")
        try:
            return bool(dash.get("/api/health")["mqtt"]["ready"])
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, "dashboard ready")
    return dash


@dataclass
class Stack:
    broker: Broker
    dash: Dashboard
    tmp: Path

    def pub(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        cmd = ["mosquitto_pub", *self.broker.cli_auth(OPS_USER), "-q", "1", "-t", topic, "-s"]
        if retain:
            cmd.append("-r")
        subprocess.run(cmd, input=data, check=True, timeout=15)

    def retained(self, topic: str) -> bytes | None:
        """The retained message on ``topic`` as mosquitto_sub sees it, or None."""
        cmd = ["mosquitto_sub", *self.broker.cli_auth(OPS_USER), "-t", topic, "-C", "1",
               "-W", "2", "--retained-only"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, timeout=20)
        return r.stdout.rstrip(b"\n") if r.returncode == 0 and r.stdout else None

    def desired(self, device_id: str) -> dict[str, Any] | None:
        raw = self.retained(T.desired(device_id))
        return json.loads(raw) if raw else None

    def wait_desired(
        self, device_id: str, check: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        def ok() -> dict[str, Any] | None:
            d = self.desired(device_id)
            return d if d is not None and check(d) else None

        result: dict[str, Any] = wait_until(ok, timeout, f"desired of {device_id}")
        return result

    def post(self, path: str, body: Any = None, **params: Any) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.dash.url + path, content=content, params=params, timeout=30)


@pytest.fixture(scope="module", params=["mosquitto", "embedded"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"fleet-{request.param}")
    start = start_mosquitto if request.param == "mosquitto" else start_embedded
    broker = start(tmp, USERS)
    try:
        # The devices the tests use are known (added, as `flumph ctl add` does): a set or a
        # command for an unknown id is refused (tests/test_lifecycle.py).
        ops = Probe(broker, OPS_USER)
        for device_id in DEVICES:
            ops.publish(T.status(device_id), provisioned_status(), retain=True)
        ops.close()
        dash = start_dashboard(tmp, broker)
        yield Stack(broker, dash, tmp)
        assert dash.stop() == 0, dash.log()
        assert "Traceback" not in dash.log(), dash.log()
    finally:
        broker.stop()


class FakeDevice:
    """A device's MQTT side in a few lines: will, birth, acks commands, answers snapshots."""

    def __init__(
        self,
        broker: Broker,
        device_id: str,
        *,
        ack_error: str | None = None,
        snapshot: bytes | None = None,
        answer: bool = True,
        user: str | None = None,
    ) -> None:
        self.id = device_id
        self.ack_error, self.snapshot, self.answer = ack_error, snapshot, answer
        self.commands: list[tuple[str, str]] = []
        self.client = make_client(
            broker.settings(user or device_id), f"fake-{device_id}-{uuid.uuid4().hex[:6]}"
        )
        self.client.will_set(T.status(device_id), Status(state="offline").payload(), 1, True)
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port, keepalive=60)
        self.client.loop_start()
        self.client.subscribe(T.cmd_all(device_id), qos=1)
        assert self._subscribed.wait(15)

    def publish(self, kind: str, payload: bytes, *, retain: bool = False) -> None:
        topic = getattr(T, kind)(self.id)
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(15)

    def birth(self) -> None:
        self.publish("status", Status(state="online").payload(), retain=True)

    def telemetry(self, **fields: Any) -> None:
        self.publish("telemetry", Telemetry(**fields).payload())

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        name = msg.topic.rsplit("/", 1)[-1]
        cid = decode(Command, msg.payload).id
        self.commands.append((name, cid))
        if not self.answer:
            return
        if name == "snapshot" and self.snapshot is not None:
            client.publish(T.snapshot(self.id), self.snapshot, qos=1, retain=True)
        ack = Ack(id=cid, ok=self.ack_error is None, error=self.ack_error)
        client.publish(T.ack(self.id), ack.payload(), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices(stack: Stack) -> Iterator[Callable[..., FakeDevice]]:
    made: list[FakeDevice] = []

    def make(device_id: str, **kw: Any) -> FakeDevice:
        dev = FakeDevice(stack.broker, device_id, **kw)
        made.append(dev)
        return dev

    yield make
    for dev in made:
        dev.close()


# --- shadow merge ---------------------------------------------------------------------------


def test_set_topic_is_merged_into_retained_desired(stack: Stack) -> None:
    stack.pub(T.set("cam1"), '{"streaming":true}')
    assert stack.wait_desired("cam1", lambda d: d.get("v") == 1) == {"v": 1, "streaming": True}
    stack.pub(T.set("cam1"), '{"bitrate_kbps": 300, "codec": "av1"}')
    d = stack.wait_desired("cam1", lambda d: d["v"] == 2)
    assert d == {"v": 2, "streaming": True, "bitrate_kbps": 300, "codec": "av1"}
    view = stack.dash.device("cam1")
    assert view["desired_v"] == 2 and view["sync"] == "pending"
    assert view["ondemand"]["pinned"] is True  # an operator's explicit start


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b'{"bitrate_kbps": 5}', "bitrate_kbps"),
        (b'{"resolution": "4k"}', "unknown setting(s) resolution"),
        (b"streaming please", "not JSON"),
        (b'{"always_on": true, "streaming": false}', "contradicts"),
    ],
)
def test_invalid_patch_is_refused_and_desired_unchanged(
    stack: Stack, payload: bytes, fragment: str
) -> None:
    dev = f"bad-{uuid.uuid4().hex[:6]}"  # only ops publishes here: no device account needed
    stack.pub(T.status(dev), provisioned_status(), retain=True)
    wait_until(lambda: stack.dash.device(dev), 10, "provisioned")
    stack.pub(T.set(dev), '{"fps": 10}')
    before = stack.wait_desired(dev, lambda d: d.get("fps") == 10)
    stack.pub(T.set(dev), payload)
    err = wait_until(lambda: stack.dash.device(dev).get("last_set_error"), 10, "set error")
    assert fragment in err["error"], err
    assert stack.desired(dev) == before
    # The HTTP API refuses the same patch with 422 and the same message.
    r = stack.post(f"/api/devices/{dev}/set", payload)
    assert r.status_code == 422 and fragment in r.json()["detail"], r.text
    assert stack.desired(dev) == before
    # A good patch clears the error.
    stack.pub(T.set(dev), '{"fps": 12}')
    wait_until(lambda: stack.dash.device(dev).get("last_set_error") is None, 10, "cleared")


def test_concurrent_patches_each_get_their_own_version(stack: Stack) -> None:
    probe = Probe(stack.broker, OPS_USER)
    try:
        probe.subscribe(T.desired("cam3"))
        publishers = [Probe(stack.broker, OPS_USER) for _ in range(3)]
        keys = ["fps", "bitrate_kbps", "srt_latency_ms"]

        def blast(p: Probe, key: str) -> None:
            for i in range(10):
                p.client.publish(T.set("cam3"), json.dumps({key: 20 + i}), qos=1)

        threads = [
            threading.Thread(target=blast, args=(p, k))
            for p, k in zip(publishers, keys, strict=True)
        ]
        for t in threads:
            t.start()
        with httpx.Client(base_url=stack.dash.url, timeout=30) as http:
            api = [http.post("/api/devices/cam3/set", content=b'{"keyint_s": 2}') for _ in range(5)]
        for t in threads:
            t.join()
        assert all(r.status_code == 200 for r in api), [r.text for r in api]
        versions: list[int] = []
        while len(versions) < 35:
            msg = probe.wait_for(T.desired("cam3"), timeout=15)
            versions.append(json.loads(msg.payload)["v"])
        assert versions == list(range(1, 36))
        final = stack.wait_desired("cam3", lambda d: d["v"] == 35)
        assert final == {"v": 35, "fps": 29, "bitrate_kbps": 29, "srt_latency_ms": 29,
                         "keyint_s": 2}  # fmt: skip
        for p in publishers:
            p.close()
    finally:
        probe.close()


def test_api_set_returns_the_new_desired(stack: Stack) -> None:
    r = stack.post("/api/devices/cam4/set", {"codec": "hevc", "width": 1280, "height": 720})
    assert r.status_code == 200, r.text
    assert r.json() == {"v": 1, "codec": "hevc", "width": 1280, "height": 720}
    # Already on the broker when the API answers.
    assert stack.desired("cam4") == r.json()
    r = stack.post("/api/devices/cam4/set", {"always_on": True})
    assert r.json() == {"v": 2, "codec": "hevc", "width": 1280, "height": 720,
                        "always_on": True, "streaming": True}  # fmt: skip
    r = stack.post("/api/devices/cam4/set", {"streaming": False})  # explicit stop wins
    assert (r.json()["always_on"], r.json()["streaming"]) == (False, False)
    assert stack.post("/api/devices/Not_A_Device/set", {"fps": 10}).status_code == 422
    page = httpx.get(stack.dash.url + "/", timeout=10)
    assert page.status_code == 200 and 'href="/api/devices"' in page.text


def test_restarted_backend_merges_onto_the_retained_desired(stack: Stack) -> None:
    stack.pub(T.set("cam5"), '{"fps": 10}')
    stack.wait_desired("cam5", lambda d: d["v"] == 1)
    # A patch published retained by mistake: the running backend merges it (live delivery)...
    stack.pub(T.set("cam5"), '{"fps": 11}', retain=True)
    stack.wait_desired("cam5", lambda d: d["v"] == 2)
    # ...and a backend starting later must neither merge it again nor start from v1.
    second = start_dashboard(stack.tmp, stack.broker, "--no-ondemand")
    try:
        err = wait_until(lambda: second.device("cam5").get("last_set_error"), 10, "retained set")
        assert "retained" in err["error"]
        assert wait_until(lambda: stack.retained(T.set("cam5")) is None, 10, "deleted")
        assert stack.desired("cam5") == {"v": 2, "fps": 11}
        r = httpx.post(f"{second.url}/api/devices/cam5/set", content=b'{"fps": 12}', timeout=30)
        assert r.json() == {"v": 3, "fps": 12}
        assert second.device("cam5")["desired_v"] == 3
        # A live-feed client open while the service stops sees its stream end cleanly.
        ended: list[str] = []

        def watch_feed() -> None:
            try:
                with httpx.stream("GET", f"{second.url}/api/events", timeout=30) as feed:
                    for line in feed.iter_lines():
                        if line.startswith("event: "):
                            ended.append(line)
                ended.append("end")
            except httpx.HTTPError as e:
                ended.append(f"error: {e!r}")

        reader = threading.Thread(target=watch_feed)
        reader.start()
        wait_until(lambda: ended, 10, "first event")
    finally:
        assert second.stop() == 0
    reader.join(15)
    assert ended == ["event: devices", "end"]


# --- presence -------------------------------------------------------------------------------

DEVICE_SCRIPT = """
import sys, time
from flumph.control import Status, Topics
from flumph.mqtt import MqttSettings, make_client
port, dev = int(sys.argv[1]), sys.argv[2]
t = Topics()
c = make_client(MqttSettings(url=f"mqtt://127.0.0.1:{port}", username=dev, password=dev + "-pw"))
c.will_set(t.status(dev), Status(state="offline").payload(), 1, True)
c.connect("127.0.0.1", port, keepalive=60)
c.loop_start()
c.publish(t.status(dev), Status(state="online").payload(), 1, True).wait_for_publish(10)
print("up", flush=True)
time.sleep(600)
"""


def test_presence_from_birth_and_will(stack: Stack) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", DEVICE_SCRIPT, str(stack.broker.port), "cam6"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        wait_until(lambda: stack.dash.device("cam6").get("presence") == "online", 10, "online")
        proc.kill()  # the kernel closes its socket: the broker publishes the will
        wait_until(lambda: stack.dash.device("cam6").get("presence") == "offline", 15, "will")
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_presence_ages_out_from_the_heartbeat(
    stack: Stack, devices: Callable[..., FakeDevice]
) -> None:
    dev = devices("cam7")
    dev.birth()
    dev.telemetry(streaming=False, heartbeat_s=0.8)  # grace: 1.5 x 0.8 s
    wait_until(lambda: stack.dash.device("cam7").get("presence") == "online", 10, "online")
    assert stack.dash.device("cam7")["presence_grace_s"] == pytest.approx(1.2)
    # Still connected (no will), but silent.
    wait_until(
        lambda: stack.dash.device("cam7").get("presence") == "offline (silent)", 10, "silent"
    )
    dev.telemetry(streaming=False, heartbeat_s=0.8)
    wait_until(lambda: stack.dash.device("cam7").get("presence") == "online", 10, "back")


# --- device state, commands, snapshots -----------------------------------------------------


def test_device_view_from_reported_and_telemetry(
    stack: Stack, devices: Callable[..., FakeDevice]
) -> None:
    dev = devices("cam8")
    dev.birth()
    stack.post("/api/devices/cam8/set", {"streaming": True, "codec": "av1"})
    dev.publish("reported", json.dumps({
        "applied_v": 1, "settings": {"codec": "av1", "bitrate_kbps": 250, "fps": 15},
        "encoder": "libsvtav1", "streaming": True, "error": None,
    }).encode(), retain=True)  # fmt: skip
    dev.telemetry(
        streaming=True, fps=14.8, bitrate_kbps=251.5, encoder="libsvtav1", width=640,
        height=360, srt={"rtt_ms": 42.0, "loss_pct": 0.3, "retransmits": 2},
        usage={"month": "2026-11", "bytes_sent": 300_000_000, "bytes_received": 10_000_000,
               "budget_bytes": 1_000_000_000},
    )  # fmt: skip
    view = wait_until(lambda: (v := stack.dash.device("cam8")) and v.get("srt") and v, 10, "tel")
    assert view["presence"] == "online" and view["streaming"] is True
    assert view["sync"] == "applied" and (view["desired_v"], view["applied_v"]) == (1, 1)
    assert view["video"] == {
        "codec": "av1", "encoder": "libsvtav1", "width": 640, "height": 360, "fps": 14.8,
        "bitrate_kbps": 251.5, "target_fps": 15, "target_bitrate_kbps": 250,
    }  # fmt: skip
    assert view["srt"] == {"rtt_ms": 42.0, "loss_pct": 0.3, "retransmits": 2}
    assert view["usage"]["used_pct"] == 31.0
    listed = {d["id"]: d for d in stack.dash.get("/api/devices")}
    assert listed["cam8"]["sync"] == "applied"
    r = httpx.get(f"{stack.dash.url}/api/devices/never-added", timeout=10)
    assert r.status_code == 404 and "unknown device 'never-added'" in r.json()["detail"]


def test_commands_acked_failed_and_timed_out(
    stack: Stack, devices: Callable[..., FakeDevice]
) -> None:
    ok = devices("cam9")
    r = stack.post("/api/devices/cam9/cmd/keyframe", wait=5)
    assert r.status_code == 200 and r.json()["state"] == "acked", r.text
    assert ok.commands == [("keyframe", r.json()["id"])]
    devices("cam10", ack_error="restart: not allowed while recording")
    r = stack.post("/api/devices/cam10/cmd/restart", wait=5)
    assert r.json()["state"] == "failed" and "not allowed" in r.json()["error"]
    mute = devices("cam11", answer=False)
    r = stack.post("/api/devices/cam11/cmd/keyframe", wait=0.3)
    assert r.status_code == 504 and r.json()["state"] == "pending"
    r = stack.post("/api/devices/cam11/cmd/keyframe")
    assert r.status_code == 202
    wait_until(lambda: len(mute.commands) == 2, 10, "commands delivered")
    wait_until(
        lambda: [c["state"] for c in stack.dash.device("cam11")["commands"]] == ["timeout"] * 2,
        15, "timeouts",
    )  # fmt: skip
    r = stack.post("/api/devices/cam9/cmd/reboot")
    assert r.status_code == 422 and "unknown command 'reboot'" in r.json()["detail"]


def test_snapshot_served_with_its_type(stack: Stack, devices: Callable[..., FakeDevice]) -> None:
    jpeg = cv2.imencode(".jpg", np.full((90, 160, 3), 128, np.uint8))[1].tobytes()
    devices("cam12", snapshot=jpeg)
    url = f"{stack.dash.url}/api/devices/cam12/snapshot"
    assert httpx.get(url, timeout=10).status_code == 404
    r = stack.post("/api/devices/cam12/cmd/snapshot", wait=5)
    assert r.json()["state"] == "acked"
    r = wait_until(lambda: (g := httpx.get(url, timeout=10)).status_code == 200 and g, 10, "snap")
    assert r.headers["content-type"] == "image/jpeg" and r.content == jpeg
    assert stack.dash.device("cam12")["snapshot"]["bytes"] == len(jpeg)


def test_malformed_messages_are_counted_on_their_device_only(
    stack: Stack, devices: Callable[..., FakeDevice]
) -> None:
    healthy = devices("cam13")
    healthy.birth()
    strays = stack.dash.get("/api/health")["stray_messages"]
    stack.pub(T.telemetry("cam14"), b"\xff\xfe not json")
    stack.pub(T.reported("cam14"), '{"applied_v": "seven"}')
    stack.pub("flumph/CAM14/status", '{"state": "online"}')  # not a device id
    view = wait_until(lambda: (v := stack.dash.device("cam14")).get("errors") == 2 and v, 10, "err")
    assert "applied_v" in view["last_error"]
    wait_until(lambda: stack.dash.get("/api/health")["stray_messages"] == strays + 1, 10, "stray")
    healthy.telemetry(streaming=False)
    assert stack.dash.device("cam13")["errors"] == 0
    assert stack.dash.device("cam13")["presence"] == "online"


async def test_live_feed_sends_device_changes(
    stack: Stack, devices: Callable[..., FakeDevice]
) -> None:
    async with (
        asyncio.timeout(30),
        httpx.AsyncClient(base_url=stack.dash.url, timeout=30) as http,
        http.stream("GET", "/api/events", params={"device": "feed-cam"}) as r,
    ):
        assert r.headers["content-type"].startswith("text/event-stream")
        events: list[tuple[str, Any]] = []
        event = ""
        lines = r.aiter_lines()
        async for line in lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
                if event == "devices":
                    break
        assert events == [("devices", [])]
        # Never added: its first birth makes it a device (it has come online).
        dev = FakeDevice(stack.broker, "feed-cam", user=OPS_USER)
        try:
            dev.birth()
            async for line in lines:
                if line.startswith("data: "):
                    view = json.loads(line[6:])
                    if view["presence"] == "online":
                        assert view["id"] == "feed-cam"
                        break
        finally:
            dev.close()


# --- on-demand streaming --------------------------------------------------------------------


def demand(stack: Stack, device_id: str, viewers: int) -> None:
    stack.pub(T.demand(device_id), json.dumps({"viewers": viewers}), retain=True)


def test_viewers_start_and_linger_then_stop(stack: Stack) -> None:
    probe = Probe(stack.broker, OPS_USER)
    try:
        probe.subscribe(T.desired("cam16"))
        demand(stack, "cam16", 1)
        start = json.loads(probe.wait_for(T.desired("cam16")).payload)
        assert start == {"v": 1, "streaming": True}
        view = stack.dash.device("cam16")
        assert view["ondemand"] == {"viewers": 1, "pinned": False, "stops_in_s": None}
        demand(stack, "cam16", 0)
        left = time.monotonic()
        stop = probe.wait_for(T.desired("cam16"))
        assert json.loads(stop.payload) == {"v": 2, "streaming": False}
        assert stop.at - left >= LINGER_S - 0.3  # not before the linger (minus process exit)
    finally:
        probe.close()


def test_viewer_back_within_linger_keeps_streaming(stack: Stack) -> None:
    demand(stack, "cam17", 2)
    stack.wait_desired("cam17", lambda d: d.get("streaming") is True)
    demand(stack, "cam17", 0)
    wait_until(lambda: stack.dash.device("cam17")["ondemand"]["stops_in_s"] is not None, 5, "ln")
    demand(stack, "cam17", 1)
    time.sleep(LINGER_S * 2)
    assert stack.desired("cam17") == {"v": 1, "streaming": True}


def test_always_on_and_operator_start_are_never_stopped_on_demand(stack: Stack) -> None:
    stack.post("/api/devices/cam18/set", {"always_on": True})
    stack.post("/api/devices/cam19/set", {"streaming": True})
    for dev in ("cam18", "cam19"):
        demand(stack, dev, 1)
        demand(stack, dev, 0)
    time.sleep(LINGER_S * 2.5)
    assert stack.desired("cam18") == {"v": 1, "always_on": True, "streaming": True}
    assert stack.desired("cam19") == {"v": 1, "streaming": True}
    # An explicit stop unpins; the next viewer starts it on demand, and the linger stops it.
    stack.post("/api/devices/cam19/set", {"streaming": False})
    demand(stack, "cam19", 1)
    stack.wait_desired("cam19", lambda d: d == {"v": 3, "streaming": True})
    demand(stack, "cam19", 0)
    stack.wait_desired("cam19", lambda d: d == {"v": 4, "streaming": False})


# --- the command line -----------------------------------------------------------------------


def test_dashboard_config_errors_name_the_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    r = subprocess.run([sys.executable, "-m", "flumph", "dashboard", "--mqtt", "http://x"],
                       capture_output=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 2 and b"mqtt.url" in r.stderr, r.stderr
    with pytest.raises(ConfigError, match="FLUMPH_DASHBOARD_LINGER names no setting"):
        load(parse_args([]), environ={"FLUMPH_DASHBOARD_LINGER": "5"})
    cfg = tmp_path / "f.toml"
    cfg.write_text("[dashboard]\nondemand_linger_s = -1\n")
    with pytest.raises(ConfigError, match="ondemand_linger_s"):
        load(parse_args(["--config", str(cfg)]), environ={})
    cfg.write_text("[dashboard]\nondemand_linger_s = 5\n[dashboard.mqtt]\nprefix = 'site/a'\n")
    loaded = load(parse_args(["--config", str(cfg), "--ondemand-linger-s", "7"]),
                  environ={"FLUMPH_DASHBOARD_MQTT_PASSWORD": "pw"})  # fmt: skip
    assert (loaded.ondemand_linger_s, loaded.mqtt.prefix, loaded.mqtt.password) == (
        7,
        "site/a",
        "pw",
    )
