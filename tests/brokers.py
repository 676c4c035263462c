"""Real MQTT brokers for tests, on free loopback ports: Debian's mosquitto, and (added by the
broker work) the embedded one. Both take the same accounts and the same ACL idea: a device
account reaches only ``<prefix>/<its id>/...``; the backend and ops accounts reach everything."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flumph.mqtt import MqttSettings
from tests.conftest import free_port

BACKEND_USER, BACKEND_PASSWORD = "flumph-backend", "backend-secret"
OPS_USER, OPS_PASSWORD = "flumph-ops", "ops-secret"
SERVICE_USERS = (BACKEND_USER, OPS_USER)


@dataclass
class Broker:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    users: dict[str, str] = field(default_factory=dict)
    # mosquitto as deploy/mosquitto configures it: devices on their own listener (client id =
    # username), the backend and ops accounts on ``port``.
    device_port: int | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def port_for(self, user: str | None) -> int:
        """Where ``user`` logs in: the devices' listener for a device account, if there is one."""
        if self.device_port is not None and user is not None and user not in SERVICE_USERS:
            return self.device_port
        return self.port

    def settings(self, user: str | None = None, **kw: object) -> MqttSettings:
        password = self.users.get(user) if user else None
        port = self.port_for(user)
        url = self.url if port == self.port else f"mqtt://127.0.0.1:{port}"
        return MqttSettings(url=url, username=user, password=password, **kw)

    def cli_auth(self, user: str | None) -> list[str]:
        """Arguments for mosquitto_pub/mosquitto_sub."""
        args = ["-h", "127.0.0.1", "-p", str(self.port_for(user)), "-V", "mqttv311"]
        if user:
            args += ["-u", user, "-P", self.users[user]]
        return args

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"broker exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"broker did not listen on {port}:\n{log.read_text()}")


def start_mosquitto(
    tmp: Path,
    users: dict[str, str] | None = None,
    *,
    acl: bool = True,
    port: int | None = None,
    persistence: bool = True,
) -> Broker:
    """Debian's mosquitto with a password file and deploy/mosquitto/acl when ``users`` given."""
    port = port or free_port()
    conf = tmp / f"mosquitto-{port}.conf"
    log = tmp / f"mosquitto-{port}.log"
    lines = [f"listener {port} 127.0.0.1", "log_dest stderr", "log_type all"]
    if os.geteuid() == 0:
        # As root mosquitto would switch to its own user, who cannot read pytest's temp dirs.
        lines.append("user root")
    if persistence:
        lines += ["persistence true", f"persistence_location {tmp}/"]
    if users:
        pwfile = tmp / "mosquitto.passwd"
        pwfile.write_text("")
        for user, password in users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(pwfile), user, password], check=True, timeout=30
            )
        lines += ["allow_anonymous false", f"password_file {pwfile}"]
        if acl:
            from tests.conftest import ROOT

            lines.append(f"acl_file {ROOT / 'deploy' / 'mosquitto' / 'acl'}")
    else:
        lines.append("allow_anonymous true")
    conf.write_text("\n".join(lines) + "\n")
    with log.open("wb") as f:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=f, stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    return Broker("mosquitto", port, proc, log, dict(users or {}))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    b = start_mosquitto(tmp_path)
    yield b
    b.stop()


def start_mosquitto_deploy(tmp: Path, users: dict[str, str]) -> Broker:
    """mosquitto running deploy/mosquitto/mosquitto.conf itself, moved to loopback ports and temp
    paths: devices on ``device_port`` (client id = username), the service accounts on ``port``."""
    from tests.conftest import ROOT

    device_port, service_port = free_port(), free_port()
    text = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    text = text.replace("listener 1883\n", f"listener {device_port} 127.0.0.1\n")
    text = text.replace("listener 1884\n", f"listener {service_port} 127.0.0.1\n")
    text = text.replace("/mosquitto/data/", f"{tmp}/")
    text = text.replace("/mosquitto/config/acl", str(ROOT / "deploy" / "mosquitto" / "acl"))
    text = text.replace("/mosquitto/config/", f"{tmp}/")
    assert f"listener {device_port}" in text and f"listener {service_port}" in text, text
    for name, accounts in (
        ("passwd", {u: p for u, p in users.items() if u not in SERVICE_USERS}),
        ("passwd-services", {u: p for u, p in users.items() if u in SERVICE_USERS}),
    ):
        path = tmp / name
        path.write_text("")
        for user, password in accounts.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(path), user, password], check=True, timeout=30
            )
    extra = ["log_dest stderr", "log_type all"] + (["user root"] if os.geteuid() == 0 else [])
    conf = tmp / f"mosquitto-deploy-{service_port}.conf"
    conf.write_text("\n".join(extra) + "\n" + text)
    log = tmp / f"mosquitto-deploy-{service_port}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=f, stderr=subprocess.STDOUT)
    wait_port(device_port, proc, log)
    wait_port(service_port, proc, log)
    return Broker("mosquitto", service_port, proc, log, dict(users), device_port)


# --- the embedded broker (flumph broker), and plain amqtt for comparison -------------------------


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}


def write_passwd(path: Path, users: dict[str, str]) -> Path:
    from flumph.broker.passwd import hash_password, render_passwd

    path.write_text(render_passwd({u: hash_password(p) for u, p in users.items()}))
    return path


def start_embedded(
    tmp: Path,
    users: dict[str, str] | None = None,
    *,
    acl: bool = True,
    port: int | None = None,
    state_dir: Path | None = None,
    ws_port: int | None = None,
    extra_args: list[str] | None = None,
) -> Broker:
    """`flumph broker` as a process: a password file (and the device ACL) when ``users`` given,
    otherwise anonymous. Pass the same ``port`` and ``state_dir`` to restart it."""
    import sys

    port = port or free_port()
    state_dir = state_dir or tmp / f"broker-state-{port}"
    log = tmp / f"embedded-{port}-{time.monotonic_ns()}.log"
    cmd = [
        sys.executable, "-m", "flumph", "broker",
        "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir),
    ]  # fmt: skip
    if users:
        cmd += ["--passwd-file", str(write_passwd(tmp / f"broker-{port}.passwd", users))]
        if not acl:
            cmd.append("--no-acl")
    if ws_port is not None:
        cmd += ["--ws-port", str(ws_port)]
    cmd += extra_args or []
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_clean_env())
    wait_port(port, proc, log)
    return Broker("embedded", port, proc, log, dict(users or {}))


# Plain amqtt 0.12.1 with the same accounts and ACL plugins, but upstream's Broker class and no
# retained store: what the embedded broker's fixes are measured against.
_PLAIN_AMQTT = """
import asyncio, signal, sys
from amqtt.broker import Broker
from flumph.broker.config import BrokerSettings
from flumph.broker.server import amqtt_config

port, passwd, acl = int(sys.argv[1]), sys.argv[2] or None, sys.argv[3] == "1"

async def main():
    settings = BrokerSettings(host="127.0.0.1", port=port, passwd_file=passwd, acl=acl)
    broker = Broker(amqtt_config(settings, fixes=False))
    await broker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await broker.shutdown()

asyncio.run(main())
"""


def start_plain_amqtt(
    tmp: Path, users: dict[str, str] | None = None, *, acl: bool = True, port: int | None = None
) -> Broker:
    import sys

    port = port or free_port()
    log = tmp / f"amqtt-{port}-{time.monotonic_ns()}.log"
    passwd = str(write_passwd(tmp / f"amqtt-{port}.passwd", users)) if users else ""
    cmd = [sys.executable, "-c", _PLAIN_AMQTT, str(port), passwd, "1" if acl else "0"]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_clean_env())
    wait_port(port, proc, log)
    return Broker("amqtt", port, proc, log, dict(users or {}))


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Broker]:
    b = start_embedded(tmp_path)
    yield b
    b.stop()


# --- a paho client for tests --------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float


class Probe:
    """A connected paho client that records what it receives; blocking helpers for tests."""

    def __init__(
        self, broker: Broker, user: str | None = None, client_id: str | None = None, **kw: object
    ) -> None:
        import queue

        from flumph.mqtt import make_client

        self.client = make_client(broker.settings(user, **kw), client_id)
        self.messages: queue.Queue[Received] = queue.Queue(maxsize=10_000)
        self._acks: queue.Queue[object] = queue.Queue(maxsize=100)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", broker.port_for(user), keepalive=60)
        self.client.loop_start()
        rc = self._acks.get(timeout=15)
        if rc != 0:
            self.close()
            raise ConnectionRefusedError(f"CONNACK {rc} for user {user!r}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._acks.put(rc.value)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        self.messages.put(Received(msg.topic, bytes(msg.payload), msg.retain, time.monotonic()))

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, codes: Any, props: Any) -> None:
        self._acks.put([c.value for c in codes])

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        """SUBACK codes: the granted QoS, or 128 when refused."""
        self.client.subscribe(topic, qos)
        codes = self._acks.get(timeout=15)
        assert isinstance(codes, list)
        return codes

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=15)

    def received(self, wait: float) -> list[Received]:
        """Everything received within ``wait`` seconds from now."""
        import queue

        deadline = time.monotonic() + wait
        out = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def wait_for(self, topic: str, timeout: float = 15) -> Received:
        import queue

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if m.topic == topic:
                return m
        raise AssertionError(f"nothing on {topic} within {timeout} s")

    def until(self, topic: str, timeout: float = 15) -> list[Received]:
        """Everything received up to and including the first message on ``topic``."""
        import queue

        out: list[Received] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
            if out[-1].topic == topic:
                return out
        raise AssertionError(f"nothing on {topic} within {timeout} s (got {out})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MosquittoSub:
    """mosquitto_sub -d -v as ``user`` on ``topics``: every line kept, PUBLISHes with the header
    that shows their QoS and retain flag (``q1, r0``), the SUBACK lines (``Subscribed ...: 128``
    when refused)."""

    def __init__(self, broker: Broker, user: str | None, *topics: str) -> None:
        import threading

        args = [a for t in topics for a in ("-t", t)]
        # stdbuf: mosquitto_sub's stdout is block-buffered into a pipe.
        cmd = ["stdbuf", "-oL", "mosquitto_sub", *broker.cli_auth(user), "-d", "-v", "-q", "1",
               *args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.subacks: list[str] = []
        self.subscribed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self.subscribed.wait(15), "mosquitto_sub did not subscribe"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("Subscribed"):
                self.subacks.append(line)
                self.subscribed.set()
            self.lines.append(line)

    def messages(self) -> list[tuple[str, str, str]]:
        """(header, topic, payload) of every PUBLISH received so far."""
        out, header = [], ""
        for line in list(self.lines):
            if "received PUBLISH" in line:
                header = line
            elif header and " " in line and not line.startswith("Client "):
                topic, _, payload = line.partition(" ")
                out.append((header, topic, payload))
                header = ""
        return out

    def publishes(self, topic: str, n: int, timeout: float = 15) -> list[tuple[str, str]]:
        """(header, payload) of the first ``n`` messages on ``topic``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [(h, p) for h, t, p in self.messages() if t == topic]
            if len(got) >= n:
                return got[:n]
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} messages on {topic}:\n" + "\n".join(self.lines))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
