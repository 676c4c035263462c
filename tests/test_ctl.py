"""`flumph ctl` against Debian's mosquitto (password file + the deploy ACL, ops account): what
lands on the broker is read back with mosquitto_sub; the devices are small paho peers; the
backend for --confirm is a real `flumph dashboard` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from flumph.control import Topics
from flumph.ctl.main import main as ctl_main
from flumph.lifecycle import provisioned_status
from tests.brokers import OPS_PASSWORD, OPS_USER, Broker, MosquittoSub, Probe, start_mosquitto
from tests.conftest import free_port
from tests.test_fleet_service import USERS, FakeDevice, start_dashboard, wait_until

T = Topics()
DEVICES = [f"cam{i}" for i in range(1, 13)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    users = {u: p for u, p in USERS.items() if not u.startswith("cam") or u in DEVICES}
    b = start_mosquitto(tmp_path_factory.mktemp("ctl"), users)
    # The devices the tests act on are known (`flumph ctl add`); tests/test_lifecycle.py covers
    # unknown ones.
    ops = Probe(b, OPS_USER)
    for device_id in DEVICES:
        ops.publish(T.status(device_id), provisioned_status(), retain=True)
    ops.close()
    yield b
    b.stop()


def ctl_env(broker: Broker | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    if broker is not None:
        env |= {
            "FLUMPH_CTL_MQTT_URL": broker.url,
            "FLUMPH_CTL_MQTT_USERNAME": OPS_USER,
            "FLUMPH_CTL_MQTT_PASSWORD": OPS_PASSWORD,
        }
    return env


def ctl(broker: Broker | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flumph", "ctl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ctl_env(broker), timeout=timeout)


@pytest.fixture
def devices(broker: Broker) -> Iterator[Callable[..., FakeDevice]]:
    made: list[FakeDevice] = []

    def make(device_id: str, **kw: Any) -> FakeDevice:
        made.append(FakeDevice(broker, device_id, **kw))
        return made[-1]

    yield make
    for d in made:
        d.close()


def Sub(broker: Broker, topic: str) -> MosquittoSub:
    """mosquitto_sub as the ops account."""
    return MosquittoSub(broker, OPS_USER, topic)


# --- exit codes for bad input (checked before any connection: the URL is never reached) -----


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["set", "cam1", "bogus=1"], "unknown setting(s) bogus"),
        (["set", "cam1", "bitrate_kbps=5"], "bitrate_kbps"),
        (["set", "cam1", "codec=mpeg2"], "codec"),
        (["set", "cam1", "streaming"], "'streaming' is not key=value"),
        (["start", "Cam_1"], "device id 'Cam_1'"),
        (["--timeout", "-1", "devices"], "timeout_s"),
        (["--mqtt", "http://example", "devices"], "mqtt"),
    ],
)
def test_bad_input_exits_2_naming_it(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    for k in [k for k in os.environ if k.startswith("FLUMPH_")]:
        monkeypatch.delenv(k)
    # A port nothing listens on: validation must come first.
    monkeypatch.setenv("FLUMPH_CTL_MQTT_URL", f"mqtt://127.0.0.1:{free_port()}")
    assert ctl_main(args) == 2
    assert fragment in capsys.readouterr().err


def test_command_line_usage_errors_and_help() -> None:
    r = ctl(None, "frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = ctl(None)
    assert r.returncode == 2 and "COMMAND" in r.stderr
    r = ctl(None, "--help")
    assert r.returncode == 0 and "Exit codes" in r.stdout
    env_typo = ctl_env(None) | {"FLUMPH_CTL_PASWORD": "x"}
    r = subprocess.run([sys.executable, "-m", "flumph", "ctl", "devices"], capture_output=True,
                       text=True, env=env_typo, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "FLUMPH_CTL_PASWORD names no setting" in r.stderr


def test_unreachable_or_refusing_broker_exits_1(broker: Broker) -> None:
    r = ctl(None, "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "start", "cam1")
    assert r.returncode == 1 and "cannot reach MQTT broker" in r.stderr
    r = ctl(broker, "--password", "wrong", "devices")
    assert r.returncode == 1 and "refused the connection" in r.stderr, r.stderr


# --- patches on the broker ------------------------------------------------------------------


def test_patches_go_to_set_and_without_a_backend_nobody_answers(broker: Broker) -> None:
    sub = Sub(broker, T.set("cam1"))
    try:
        for args in (["start", "cam1"], ["stop", "cam1", "--no-wait"],
                     ["set", "cam1", "bitrate_kbps=300", "codec=av1", "keyint_s=2.5"]):  # fmt: skip
            r = ctl(broker, "--timeout", "1", *args)
            assert r.returncode == 1 and "sent" in r.stdout, r
            assert "no answer on set/accepted or set/rejected within 1 s" in r.stderr, r.stderr
        got = [json.loads(p) for _, p in sub.publishes(T.set("cam1"), 3)]
        tokens = [g.pop("client_token") for g in got]
        assert len(set(tokens)) == 3 and all(t.startswith("ctl-") for t in tokens)
        assert got == [
            {"streaming": True},
            {"streaming": False},
            {"bitrate_kbps": 300, "codec": "av1", "keyint_s": 2.5},
        ]
        headers = [h for h, _ in sub.publishes(T.set("cam1"), 3)]
        assert all("q1, r0" in h for h in headers), headers  # QoS 1, never retained
    finally:
        sub.close()


class SickDevice(FakeDevice):
    """Answers every new ``desired`` with a ``reported`` error instead of applying it."""

    def __init__(self, broker: Broker, device_id: str, error: str) -> None:
        super().__init__(broker, device_id)
        self.error = error
        self._subscribed.clear()
        self.client.subscribe(T.desired(device_id), qos=1)
        assert self._subscribed.wait(15)

    def _on_message(self, client: Any, _u: Any, msg: Any) -> None:
        if msg.topic != T.desired(self.id):
            super()._on_message(client, _u, msg)
            return
        v = json.loads(msg.payload)["v"]
        reported = {"applied_v": None, "error": f"desired v{v}: {self.error}"}
        client.publish(T.reported(self.id), json.dumps(reported), qos=1, retain=True)


def start_agent(tmp: Path, broker: Broker, device_id: str) -> subprocess.Popen[bytes]:
    """A real `flumph agent` on the synthetic camera, idle (nobody asked it to stream)."""
    cmd = [sys.executable, "-m", "flumph", "agent", "--device-id", device_id,
           "--ingest", f"srt://127.0.0.1:{free_port()}", "--source", "synthetic",
           "--state-dir", str(tmp / f"agent-{device_id}"), "--mqtt", broker.url,
           "--mqtt-username", device_id, "--mqtt-password", broker.users[device_id]]  # fmt: skip
    with (tmp / f"agent-{device_id}.log").open("wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ctl_env(None))


def test_set_waits_until_the_device_applied_it(
    broker: Broker, tmp_path: Path, devices: Callable[..., FakeDevice]
) -> None:
    """Against a real `flumph dashboard` and a real `flumph agent`."""
    dash = start_dashboard(tmp_path, broker)
    agent = start_agent(tmp_path, broker, "cam10")
    try:
        wait_until(lambda: dash.device("cam10").get("presence") == "online", 30, "cam10 online")
        # The agent applies the patch: ctl says so once reported.applied_v reaches the version.
        r = ctl(broker, "--timeout", "30", "set", "cam10", "fps=12")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[-1] == "cam10 applied v1", r.stdout
        r = ctl(broker, "--timeout", "30", "set", "cam10", "bitrate_kbps=300", "width=320")
        assert r.returncode == 0 and "cam10 applied v2" in r.stdout, r.stderr
        # A patch only the backend can refuse (its always_on rule): exit 1 with its reason.
        r = ctl(broker, "set", "cam10", "always_on=true", "streaming=false")
        assert r.returncode == 1, r
        assert "cam10 refused the patch: patch: streaming: false contradicts" in r.stderr
        # --no-wait: the backend's answer only (ghost-1 is added, never connects).
        assert ctl(broker, "add", "ghost-1").returncode == 0
        r = ctl(broker, "stop", "ghost-1", "--no-wait")
        assert r.returncode == 0 and "accepted as v1 (not waiting for ghost-1)" in r.stdout, r
        # A device added that never connects: said at once, not after the timeout.
        r = ctl(broker, "--timeout", "30", "set", "ghost-1", "fps=5")
        assert r.returncode == 1
        assert "accepted as v2, but ghost-1 has not come online since it was added" in r.stderr
        # An offline device (its retained will): said at once, not after the timeout.
        gone = devices("cam11")
        gone.publish("status", b'{"state": "offline", "ts": 1}', retain=True)
        t0 = time.monotonic()
        r = ctl(broker, "--timeout", "30", "set", "cam11", "fps=5")
        assert r.returncode == 1 and "cam11 is offline: it applies v1 when it" in r.stderr, r
        assert time.monotonic() - t0 < 15
        # A device that reports an error instead of applying (a peer speaking the contract: the
        # real agent cannot be made to fail on demand here).
        sick = SickDevice(broker, "cam12", "encoder hevc_v4l2m2m: no such device")
        try:
            sick.birth()
            r = ctl(broker, "--timeout", "30", "set", "cam12", "codec=hevc")
        finally:
            sick.close()
        assert r.returncode == 1, r
        assert "cam12 did not apply v1: desired v1: encoder hevc_v4l2m2m" in r.stderr
    finally:
        agent.terminate()
        agent.wait(30)
        assert dash.stop() == 0, dash.log()


# --- reading the fleet ----------------------------------------------------------------------


def test_devices_table_from_retained_state(
    broker: Broker, devices: Callable[..., FakeDevice]
) -> None:
    dev = devices("cam3")
    dev.birth()
    reported = {"applied_v": 4, "settings": {}, "encoder": "libsvtav1", "streaming": True}
    dev.publish("reported", json.dumps(reported).encode(), retain=True)
    subprocess.run(
        ["mosquitto_pub", *broker.cli_auth(OPS_USER), "-q", "1", "-r", "-t", T.desired("cam3"),
         "-m", '{"v": 5, "streaming": true}'], check=True, timeout=15,
    )  # fmt: skip
    other = devices("cam4")
    other.publish("reported", b'{"applied_v": "x"}', retain=True)
    r = ctl(broker, "devices")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()}
    assert rows["DEVICE"][:6] == ["DEVICE", "STATUS", "STREAMING", "WANTED", "DESIRED", "APPLIED"]
    assert rows["cam3"] == ["cam3", "online", "yes", "yes", "5", "4", "-", "libsvtav1", "-"]
    assert rows["cam4"][:6] == ["cam4", "offline", "invalid", "-", "-", "invalid"]  # added
    listed = {d["device"]: d for d in json.loads(ctl(broker, "devices", "--json").stdout)}
    assert listed["cam3"]["desired"] == {"v": 5, "streaming": True}
    assert "applied_v" in listed["cam4"]["reported"]["invalid"]


def test_snapshot_waits_for_a_new_still(
    broker: Broker, devices: Callable[..., FakeDevice], tmp_path: Path
) -> None:
    new = cv2.imencode(".jpg", np.full((72, 128, 3), 200, np.uint8))[1].tobytes()
    dev = devices("cam5", snapshot=new)
    dev.publish("snapshot", b"\xff\xd8\xff old still", retain=True)
    out = tmp_path / "still.jpg"
    r = ctl(broker, "snapshot", "cam5", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == new and f"({len(new)} bytes)" in r.stdout
    devices("cam6", answer=False)
    r = ctl(broker, "--timeout", "1", "snapshot", "cam6", "-o", str(tmp_path / "none"))
    assert r.returncode == 1 and "no new snapshot from cam6" in r.stderr
    assert not (tmp_path / "none").exists()
    devices("cam7", ack_error="snapshot: camera busy")
    r = ctl(broker, "snapshot", "cam7", "-o", str(tmp_path / "none"))
    assert r.returncode == 1 and "refused the snapshot: snapshot: camera busy" in r.stderr


def test_cmd_waits_for_the_ack(broker: Broker, devices: Callable[..., FakeDevice]) -> None:
    dev = devices("cam8")
    r = ctl(broker, "cmd", "cam8", "keyframe")
    assert r.returncode == 0 and "keyframe ok" in r.stdout
    assert [name for name, _ in dev.commands] == ["keyframe"]


def test_watch_prints_lines_until_count_or_ctrl_c(
    broker: Broker, devices: Callable[..., FakeDevice]
) -> None:
    dev = devices("cam9")
    dev.birth()
    cmd = [sys.executable, "-m", "flumph", "ctl", "watch", "cam9", "--count", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=ctl_env(broker))
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            dev.telemetry(streaming=False, heartbeat_s=300)
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    lines = out.splitlines()
    assert lines[0].endswith("cam9 status (retained) online"), lines
    assert lines[1].endswith("cam9 telemetry idle heartbeat=300s"), lines
    # Without --count it runs until Ctrl-C, which is a normal end.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flumph", "ctl", "watch"], stdout=subprocess.PIPE, text=True,
        env=ctl_env(broker),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "status (retained)" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
