"""Commands keep their word: a busy port is exit code 1 and one line naming the port and the flag,
with no traceback; `flumph up` restarted right after Ctrl-C gets its own ports back; `--host`
binds the SRT listener too; an unreachable broker is logged with its reason every few seconds and
shown in /api/health. Real processes on loopback ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FLUMPH_", "XDG_"))}


def flumph(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flumph", *args],
        capture_output=True, text=True, timeout=timeout, env=clean_env(),
    )  # fmt: skip


@contextmanager
def held(kind: int = socket.SOCK_STREAM) -> Iterator[int]:
    """A loopback port something else holds (listening, for TCP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            s.listen()
        yield int(s.getsockname()[1])


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if " ERROR " in line or line.startswith("ERROR")]
    assert len(errors) == 1, out
    return errors[0]


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("ingest --host 127.0.0.1 --port {p} --srt-port 0", "--port"),
        ("dashboard --host 127.0.0.1 --port {p}", "--port"),
        ("broker --host 127.0.0.1 --port {p} --state-dir {tmp}", "--port"),
        ("up --port {p} --dashboard-port 0 --mqtt-port 0 --srt-port 0 --state-dir {tmp}", "--port"),
    ],
)
def test_a_busy_tcp_port_is_exit_1_and_one_line(command: str, flag: str, tmp_path: Path) -> None:
    with held() as port:
        r = flumph(*command.format(p=port, tmp=tmp_path).split())
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r)
    assert f"127.0.0.1:{port}/tcp is in use" in line and line.endswith(f"with {flag}"), line


def test_a_busy_srt_port_is_exit_1_and_names_its_flag() -> None:
    with held(socket.SOCK_DGRAM) as port:
        r = flumph("ingest", "--host", "127.0.0.1", "--port", "0", "--srt-port", str(port))
    assert r.returncode == 1, r.stderr
    line = one_error_line(r)
    assert f"127.0.0.1:{port}/udp is in use" in line and line.endswith("--srt-port"), line


def test_host_binds_the_srt_listener_too(tmp_path: Path) -> None:
    srt_port = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flumph", "ingest", "--host", "127.0.0.1",
         "--port", str(free_port()), "--srt-port", str(srt_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{srt_port}/udp" in line, line
        # Bound to 127.0.0.1 only: another loopback address may take the same port.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.2", srt_port))
        # The UDP check in flumph.service.ports sees the listener (no SO_REUSEADDR sharing).
        with held() as busy_http:
            r = flumph("ingest", "--host", "127.0.0.1", "--port", "0", "--srt-port", str(srt_port))
            assert r.returncode == 1 and f":{srt_port}/udp is in use" in r.stderr, r.stderr
            assert busy_http
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def time_wait_ports() -> set[int]:
    """Local ports with a connection in TIME_WAIT (state 06 in /proc/net/tcp)."""
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "06":
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def start_up(args: list[str]) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flumph", "up", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Flumph is up" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("flumph up did not come up:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_up_restarted_right_after_ctrl_c_gets_its_ports_back(tmp_path: Path) -> None:
    ports = {"--port": free_port(), "--dashboard-port": free_port(), "--mqtt-port": free_port()}
    args = [x for k, v in ports.items() for x in (k, str(v))]
    args += ["--srt-port", str(free_port(socket.SOCK_DGRAM)), "--state-dir", str(tmp_path)]
    proc, _ = start_up(args)
    # Connections the server closes at shutdown leave TIME_WAIT on its own ports.
    with httpx.Client() as http:
        for port in (ports["--port"], ports["--dashboard-port"]):
            assert http.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
        stop(proc)
    assert time_wait_ports() & set(ports.values()), "no TIME_WAIT: the test would prove nothing"
    again, lines = start_up(args)
    try:
        assert "in use" not in "".join(lines)
    finally:
        stop(again)


def test_an_unreachable_broker_is_logged_with_its_reason_and_shown_in_health(
    tmp_path: Path,
) -> None:
    dead = free_port()  # nothing listens there
    port = free_port()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flumph", "dashboard", "--host", "127.0.0.1",
             "--port", str(port), "--mqtt", f"mqtt://127.0.0.1:{dead}"],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=clean_env(),
        )  # fmt: skip
    said = re.compile(r"cannot reach the MQTT broker .*: connection refused .* check --mqtt")
    try:
        deadline = time.monotonic() + 60
        health: dict[str, object] = {}
        while time.monotonic() < deadline and not health.get("error"):
            time.sleep(0.2)
            with suppress(httpx.HTTPError):
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()["mqtt"]
        assert health.get("connected") is False, health
        assert f"connection refused by 127.0.0.1:{dead}" in str(health.get("error")), health
        # Said again every few seconds, not once.
        started = time.monotonic()
        while len(said.findall(log_path.read_text())) < 3 and time.monotonic() - started < 30:
            time.sleep(0.2)
        assert len(said.findall(log_path.read_text())) >= 3, log_path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    out = log_path.read_text()
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_ctl_with_an_unreachable_broker_is_exit_1_and_names_the_flag() -> None:
    dead = free_port()
    r = flumph("ctl", "--mqtt", f"mqtt://127.0.0.1:{dead}", "devices")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        f"flumph ctl: cannot reach MQTT broker mqtt://127.0.0.1:{dead}: connection refused by "
        f"127.0.0.1:{dead} (no broker listening there?); check --mqtt"
    ], r.stderr


def test_the_agent_says_why_it_cannot_reach_its_broker(tmp_path: Path) -> None:
    dead = free_port()
    log_path = tmp_path / "agent.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flumph", "agent", "--device-id", "cam-x", "--log-json",
             "--mqtt", f"mqtt://127.0.0.1:{dead}", "--state-dir", str(tmp_path / "state")],
            stdout=log, stderr=subprocess.STDOUT, text=True, env=clean_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "cannot reach the MQTT broker" not in log_path.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    said = [d for d in lines if "cannot reach the MQTT broker" in d["msg"]]
    assert f"connection refused by 127.0.0.1:{dead}" in said[0]["msg"], said
    assert said[0]["level"] == "warning" and said[0]["msg"].endswith("check --mqtt)"), said
    assert proc.returncode == 0
