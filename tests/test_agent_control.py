"""The agent's MQTT side against real brokers (mosquitto and the embedded one): a real `flumph
agent` process streaming into the real ingest, driven with mosquitto_pub/mosquitto_sub."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from flumph.agent.control import AgentControl
from flumph.agent.encoders import EncoderSelector
from flumph.agent.pipeline import Pipeline
from flumph.control import Topics
from flumph.mqtt import MqttSettings
from flumph.settings import StreamSettings
from tests.brokers import Broker, Probe, Received, start_embedded, start_mosquitto
from tests.conftest import Ingest, free_port, wait_until

DEV = "cam-7"
T = Topics()
KEEPALIVE_S = 5  # MqttSettings' minimum
# How late each broker's keepalive timer may fire the will. Debian's mosquitto 2.0.11 checks
# keepalives only every 6 s, in whole seconds (its keepalive.c: `last_keepalive_check + 5 < now`,
# `keepalive*3/2` in integer arithmetic): measured with a raw client that goes silent, keepalive
# 5 s -> will after 10.7-11.3 s, 20 s -> 34.7 s, 30 s -> 46.7 s. Negligible at the 300 s default.
WILL_LATENESS_S = {"mosquitto": 7.0, "embedded": 1.0}
SMALL = ["--width", "320", "--height", "180", "--fps", "10", "--codec", "av1"]


def start_broker(kind: str, tmp: Path, port: int | None = None) -> Broker:
    """Either broker, with its retained messages kept on disk (same tmp + port = restart)."""
    if kind == "mosquitto":
        return start_mosquitto(tmp, port=port, persistence=True)
    return start_embedded(tmp, port=port)


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    b = start_broker(request.param, tmp_path)
    yield b
    b.stop()


# --- helpers ----------------------------------------------------------------------------------


class Watch:
    """Everything published under the device's topics, kept in order; waits search from a mark."""

    def __init__(self, broker: Broker, user: str | None = None, **settings: object) -> None:
        self.probe = Probe(broker, user, None, **settings)
        assert self.probe.subscribe(f"{T.prefix}/{DEV}/#") == [1]
        self.history: list[Received] = []

    def mark(self) -> int:
        self._drain(0)
        return len(self.history)

    def _drain(self, wait: float) -> None:
        self.history += self.probe.received(wait) if wait else self.probe.received(0.05)

    def wait(
        self,
        topic: str,
        pred: Callable[[dict[str, Any]], object] = lambda d: True,
        since: int = 0,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for m in self.history[checked:]:
                if m.topic == topic and m.payload:
                    doc: dict[str, Any] = json.loads(m.payload)
                    if pred(doc):
                        return doc
            checked = max(checked, len(self.history))
            if time.monotonic() > deadline:
                seen = [(m.topic, m.payload[:300]) for m in self.history[since:]]
                raise AssertionError(f"nothing matching on {topic} within {timeout} s; saw {seen}")
            self._drain(0.2)

    def ack(self, command_id: str, since: int) -> dict[str, Any]:
        return self.wait(T.ack(DEV), lambda d: d["id"] == command_id, since)

    def close(self) -> None:
        self.probe.close()


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent ignored SIGTERM:\n{self.log()}") from None
        return self.proc.returncode


def start_agent(tmp: Path, broker: Broker, ingest_url: str, *args: str) -> Agent:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["SVT_LOG"] = "1"
    log_path = tmp / f"agent-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable, "-m", "flumph", "agent", "--device-id", DEV, "--ingest", ingest_url,
        "--state-dir", str(tmp / "agent-state"), *SMALL,
        "--mqtt", broker.url, "--mqtt-keepalive-s", str(KEEPALIVE_S),
        "--mqtt-reconnect-min-s", "1", "--mqtt-reconnect-max-s", "2", *args,
    ]  # fmt: skip
    with log_path.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    return Agent(proc, log_path)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def pub(broker: Broker, topic: str, payload: str, retain: bool = False) -> None:
    """mosquitto_pub, as an operator would type it."""
    cmd = ["mosquitto_pub", *broker.cli_auth(None), "-q", "1", "-t", topic, "-m", payload]
    subprocess.run(cmd + (["-r"] if retain else []), check=True, timeout=20)


def sub_retained(broker: Broker, topic: str) -> bytes:
    """mosquitto_sub for the one retained message on ``topic``."""
    cmd = ["mosquitto_sub", *broker.cli_auth(None), "-t", topic, "-C", "1", "-W", "15"]
    return subprocess.run(cmd, check=True, capture_output=True, timeout=30).stdout


def stream_frames(ingest: Ingest) -> int:
    return next((int(s["frames"]) for s in ingest.streams() if s["id"] == DEV), 0)  # type: ignore[call-overload]


def error_names(what: str, reported: dict[str, Any]) -> bool:
    return what in (reported["error"] or "")


def decode_picture(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data), "r") as c:
        frame = next(c.decode(video=0))
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (frame.width, frame.height)
    return frame.width, frame.height


# --- a real agent process ---------------------------------------------------------------------


def test_desired_drives_streaming_and_a_bad_document_changes_nothing(
    broker: Broker, ingest: Ingest, tmp_path: Path, agents: list[Agent]
) -> None:
    watch = Watch(broker)
    agent = start_agent(tmp_path, broker, f"srt://127.0.0.1:{ingest.srt_port}")
    agents.append(agent)
    try:
        watch.wait(T.status(DEV), lambda d: d["state"] == "online")
        first = watch.wait(T.reported(DEV))
        assert first["applied_v"] is None and first["streaming"] is False
        # Idle: one heartbeat after connecting, saying when the next one comes.
        heartbeat = watch.wait(T.telemetry(DEV))
        assert heartbeat["streaming"] is False and heartbeat["heartbeat_s"] == 3600
        assert "fps" not in heartbeat  # compact: no nulls on a metered link
        # The birth is retained: a client that subscribes later sees it too.
        birth = json.loads(sub_retained(broker, T.status(DEV)))
        assert birth["state"] == "online" and birth["agent"]

        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":1,"streaming":true,"bitrate_kbps":300}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 1, mark)
        assert r["streaming"] and r["settings"]["bitrate_kbps"] == 300 and not r["error"]
        assert r["encoder"] == "libsvtav1" and "chose libsvtav1" in r["encoder_reason"]
        ingest.wait_stream(DEV, timeout=30, frames=10)

        bad = [
            ('{"v":2,"bitrate_kbps":5}', "bitrate_kbps"),
            ('{"v":3,"nosuch":1}', "nosuch"),
            ("streaming please", "not JSON"),
        ]
        for payload, named in bad:
            mark = watch.mark()
            pub(broker, T.desired(DEV), payload, retain=True)
            r = watch.wait(T.reported(DEV), partial(error_names, named), mark)
            assert r["applied_v"] == 1 and r["streaming"]
            assert r["settings"]["bitrate_kbps"] == 300

        frames = stream_frames(ingest)
        wait_until(lambda: stream_frames(ingest) >= frames + 10, "streaming to go on", timeout=30)
        mark = watch.mark()
        t = watch.wait(T.telemetry(DEV), lambda d: d["streaming"] and d.get("fps"), mark)
        assert t["encoder"] == "libsvtav1" and (t["width"], t["height"]) == (320, 180)
        assert t["bitrate_kbps"] > 0 and t["srt"]["rtt_ms"] is not None
        assert t["usage"]["bytes_sent"] > 0

        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":4,"streaming":false,"bitrate_kbps":300}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 4, mark)
        assert r["streaming"] is False and r["error"] is None

        mark = watch.mark()
        assert agent.stop() == 0, agent.log()
        # A clean stop says offline itself (a clean disconnect discards the will).
        watch.wait(T.status(DEV), lambda d: d["state"] == "offline", mark)
        assert json.loads(sub_retained(broker, T.status(DEV)))["state"] == "offline"
    except BaseException:
        print(agent.log())
        raise
    finally:
        watch.close()


def test_commands_are_acked_by_id(
    broker: Broker, ingest: Ingest, tmp_path: Path, agents: list[Agent]
) -> None:
    watch = Watch(broker)
    agent = start_agent(tmp_path, broker, f"srt://127.0.0.1:{ingest.srt_port}", "--stream")
    agents.append(agent)
    try:
        # --stream: streaming before any desired exists.
        watch.wait(T.reported(DEV), lambda d: d["streaming"] and d["applied_v"] is None)
        ingest.wait_stream(DEV, timeout=30, frames=5)

        mark = watch.mark()
        pub(broker, T.cmd(DEV, "keyframe"), '{"id":"k1"}')
        pub(broker, T.cmd(DEV, "snapshot"), '{"id":"s1"}')
        assert watch.ack("k1", mark)["ok"] is True
        assert watch.ack("s1", mark)["ok"] is True
        streaming_snapshot = sub_retained(broker, T.snapshot(DEV))
        assert streaming_snapshot[4:12] == b"ftypavif" and len(streaming_snapshot) <= 20_000
        assert decode_picture(streaming_snapshot) == (320, 180)

        mark = watch.mark()
        pub(broker, T.cmd(DEV, "restart"), '{"id":"r1"}')
        assert watch.ack("r1", mark)["ok"] is True
        r = watch.wait(T.reported(DEV), lambda d: d["streaming"], mark)
        assert r["error"] is None
        frames = stream_frames(ingest)
        wait_until(
            lambda: stream_frames(ingest) >= frames + 10, "streaming after the restart", timeout=30
        )

        mark = watch.mark()
        pub(broker, T.cmd(DEV, "keyframe"), "{oops")
        ack = watch.ack("", mark)
        assert not ack["ok"] and "not JSON" in ack["error"] and 'id ""' in ack["error"]
        pub(broker, T.cmd(DEV, "snapshot"), '{"id":"m1","quality":9}')
        ack = watch.ack("m1", mark)
        assert not ack["ok"] and "quality: unknown key" in ack["error"]
        pub(broker, f"{T.prefix}/{DEV}/cmd/reboot", '{"id":"b1"}')
        ack = watch.ack("b1", mark)
        assert not ack["ok"] and "unknown command 'reboot'" in ack["error"]

        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":1,"streaming":false}', retain=True)
        watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 1 and not d["streaming"], mark)
        pub(broker, T.cmd(DEV, "keyframe"), '{"id":"k2"}')
        ack = watch.ack("k2", mark)
        assert not ack["ok"] and "not streaming" in ack["error"]
        # Idle: the snapshot comes from the camera opened just for it.
        pub(broker, T.cmd(DEV, "snapshot"), '{"id":"s2"}')
        assert watch.ack("s2", mark)["ok"] is True
        idle_snapshot = sub_retained(broker, T.snapshot(DEV))
        assert idle_snapshot != streaming_snapshot and len(idle_snapshot) <= 20_000
        assert decode_picture(idle_snapshot) == (320, 180)
        assert agent.stop() == 0, agent.log()
    except BaseException:
        print(agent.log())
        raise
    finally:
        watch.close()


def test_offline_device_converges_and_survives_a_broker_restart(
    broker: Broker, ingest: Ingest, tmp_path: Path, agents: list[Agent]
) -> None:
    srt = f"srt://127.0.0.1:{ingest.srt_port}"
    # The wish is made while the device is away.
    pub(broker, T.desired(DEV), '{"v":5,"streaming":true,"bitrate_kbps":200}', retain=True)
    # A command someone retained by mistake must not run on every (re)connect.
    pub(broker, T.cmd(DEV, "restart"), '{"id":"ret1"}', retain=True)
    watch = Watch(broker)
    agent = start_agent(tmp_path, broker, srt)
    agents.append(agent)
    try:
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 5)
        assert r["streaming"] and r["settings"]["bitrate_kbps"] == 200
        ack = watch.ack("ret1", 0)
        assert not ack["ok"] and "retained" in ack["error"]
        ingest.wait_stream(DEV, timeout=30, frames=5)
        watch.close()

        broker.stop()
        restarted = time.time()
        broker = start_broker(broker.kind, tmp_path, broker.port)
        watch = Watch(broker)
        # Retained state survived; the agent is back on its own (a birth newer than the restart).
        watch.wait(T.status(DEV), lambda d: d["state"] == "online" and d["ts"] > restarted)
        assert watch.wait(T.reported(DEV))["applied_v"] == 5
        assert json.loads(sub_retained(broker, T.desired(DEV)))["v"] == 5
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":6,"streaming":true,"bitrate_kbps":150}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 6, mark)
        assert r["settings"]["bitrate_kbps"] == 150 and r["streaming"]
        frames = stream_frames(ingest)
        wait_until(
            lambda: stream_frames(ingest) >= frames + 10, "streaming through it all", timeout=30
        )

        assert agent.stop() == 0, agent.log()
        pub(broker, T.desired(DEV), '{"v":7,"streaming":false,"fps":5}', retain=True)
        mark = watch.mark()
        agent = start_agent(tmp_path, broker, srt, "--stream")
        agents.append(agent)
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 7, mark)
        assert r["streaming"] is False and r["settings"]["fps"] == 5
        assert agent.stop() == 0, agent.log()
    except BaseException:
        print(agent.log())
        raise
    finally:
        watch.close()
        broker.stop()


def test_a_silent_agent_is_shown_offline_by_its_will(
    broker: Broker, tmp_path: Path, agents: list[Agent]
) -> None:
    watch = Watch(broker)
    agent = start_agent(tmp_path, broker, f"srt://127.0.0.1:{free_port()}")
    agents.append(agent)
    try:
        watch.wait(T.status(DEV), lambda d: d["state"] == "online")
        mark = watch.mark()
        agent.proc.send_signal(signal.SIGSTOP)  # TCP stays open, nothing more is sent
        stopped = time.monotonic()
        watch.wait(T.status(DEV), lambda d: d["state"] == "offline", mark, timeout=30)
        silent_for = time.monotonic() - stopped
        # MQTT 3.1.1: the broker closes (and fires the will) after 1.5 x keepalive of silence,
        # counted from the last packet, which came before SIGSTOP.
        assert silent_for <= 1.5 * KEEPALIVE_S + WILL_LATENESS_S[broker.kind], silent_for
        mark = watch.mark()
        agent.proc.send_signal(signal.SIGCONT)
        watch.wait(T.status(DEV), lambda d: d["state"] == "online", mark)
        assert agent.stop() == 0, agent.log()
    except BaseException:
        print(agent.log())
        raise
    finally:
        watch.close()


# --- in process: failures that need a device without the encoder, a camera that is gone -------


def make_control(
    tmp_path: Path,
    broker: Broker,
    source: str = "synthetic",
    mqtt: MqttSettings | None = None,
    **settings: object,
) -> tuple[Pipeline, AgentControl]:
    values = {"width": 320, "height": 180, "fps": 10, "codec": "av1", **settings}
    pipeline = Pipeline(
        device_id=DEV,
        ingest=f"srt://127.0.0.1:{free_port()}",
        settings=StreamSettings.model_validate(values),
        source=source,
        state_dir=tmp_path / "state",
        # A device whose FFmpeg has SVT-AV1 and nothing else (no hardware exists here).
        selector=EncoderSelector(available={"libsvtav1"}),
    )
    control = AgentControl(pipeline, mqtt or broker.settings(keepalive_s=KEEPALIVE_S))
    return pipeline, control


def test_settings_no_encoder_accepts_leave_the_previous_ones_in_force(
    broker: Broker, tmp_path: Path
) -> None:
    pipeline, control = make_control(tmp_path, broker)
    watch = Watch(broker)
    pipeline.start()
    control.start()
    try:
        watch.wait(T.reported(DEV))
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":1,"streaming":true}', retain=True)
        watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 1 and d["streaming"], mark)
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":2,"streaming":true,"codec":"h264"}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["error"] is not None, mark)
        assert "desired v2: cannot apply codec='h264'" in r["error"]
        assert "libx264: not in this FFmpeg build" in r["error"]
        assert r["applied_v"] == 1 and r["settings"]["codec"] == "av1" and r["streaming"]
        assert pipeline.streaming and pipeline.encoder_name == "libsvtav1"

        # A stale document (a version already passed) is ignored; a newer one applies.
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":3,"streaming":true,"fps":5}', retain=True)
        watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 3, mark)
        pub(broker, T.desired(DEV), '{"v":1,"streaming":false}', retain=True)
        wait_until(
            lambda: control.stale_ignored == 1, "the stale document to be ignored", timeout=30
        )
        assert pipeline.streaming and pipeline.settings.fps == 5 and control.applied_v == 3
    finally:
        control.stop()
        pipeline.stop()
        watch.close()


def test_a_camera_that_fails_to_open_leaves_the_device_idle_and_reachable(
    broker: Broker, tmp_path: Path
) -> None:
    pipeline, control = make_control(tmp_path, broker, source=str(tmp_path / "gone.mkv"))
    watch = Watch(broker)
    control.start()
    try:
        watch.wait(T.reported(DEV))
        mark = watch.mark()
        pub(broker, T.desired(DEV), '{"v":1,"streaming":true}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["error"] is not None, mark)
        assert "desired v1: cannot apply streaming=True" in r["error"]
        assert "gone.mkv" in r["error"]
        assert r["applied_v"] is None and r["streaming"] is False
        assert r["settings"]["streaming"] is False  # the previous settings stay in force
        mark = watch.mark()
        pub(broker, T.cmd(DEV, "snapshot"), '{"id":"s9"}')
        ack = watch.ack("s9", mark)
        assert not ack["ok"] and "gone.mkv" in ack["error"]
    finally:
        control.stop()
        pipeline.stop()
        watch.close()


# --- TLS and a device account under the deploy ACL ----------------------------------------------


@dataclass
class TlsBroker(Broker):
    ca_file: str = ""

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"


def make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    ca_key, ca, key, csr, cert = (
        tmp / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    ext = tmp / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=flumph test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def start_tls_mosquitto(tmp: Path, users: dict[str, str]) -> TlsBroker:
    from tests.brokers import wait_port
    from tests.conftest import ROOT

    ca, cert, key = make_ca_and_server_cert(tmp)
    port = free_port()
    pwfile = tmp / "tls.passwd"
    pwfile.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password], check=True)
    conf, log = tmp / "tls.conf", tmp / "tls-mosquitto.log"
    lines = [
        f"listener {port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}", f"keyfile {key}",
        "allow_anonymous false", f"password_file {pwfile}",
        f"acl_file {ROOT / 'deploy' / 'mosquitto' / 'acl'}", "log_dest stderr",
    ]  # fmt: skip
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    with log.open("wb") as f:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=f, stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    return TlsBroker("mosquitto", port, proc, log, dict(users), ca_file=str(ca))


def test_tls_with_a_device_account_under_the_acl(tmp_path: Path) -> None:
    users = {DEV: "device-secret", "flumph-ops": "ops-secret"}
    broker = start_tls_mosquitto(tmp_path, users)
    # The agent logs in as the device, over TLS, checking the server against the CA.
    mqtt = broker.settings(DEV, ca_file=broker.ca_file, keepalive_s=KEEPALIVE_S)
    pipeline, control = make_control(tmp_path, broker, mqtt=mqtt)
    watch = None
    try:
        watch = Watch(broker, "flumph-ops", ca_file=broker.ca_file)
        control.start()
        watch.wait(T.status(DEV), lambda d: d["state"] == "online")
        mark = watch.mark()
        watch.probe.publish(T.desired(DEV), '{"v":1,"fps":5}', retain=True)
        r = watch.wait(T.reported(DEV), lambda d: d["applied_v"] == 1, mark)
        assert r["settings"]["fps"] == 5 and r["error"] is None
        assert control.connected
    finally:
        control.stop()
        pipeline.stop()
        if watch is not None:
            watch.close()
        broker.stop()
