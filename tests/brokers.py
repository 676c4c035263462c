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

import pytest

from flumph.mqtt import MqttSettings
from tests.conftest import free_port

BACKEND_USER, BACKEND_PASSWORD = "flumph-backend", "backend-secret"


@dataclass
class Broker:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    users: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def settings(self, user: str | None = None, **kw: object) -> MqttSettings:
        password = self.users.get(user) if user else None
        return MqttSettings(url=self.url, username=user, password=password, **kw)  # type: ignore[arg-type]

    def cli_auth(self, user: str | None) -> list[str]:
        """Arguments for mosquitto_pub/mosquitto_sub."""
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-V", "mqttv311"]
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
