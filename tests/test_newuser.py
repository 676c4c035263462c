"""Behave as a new user: the README's run command, in a clean HOME, until the demo streams."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port


def readme_run_command() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"## Two commands.*?```sh\n(.+?)\n```", text, re.S)
    assert m, "README.md lost its run command"
    return m.group(1).strip()


def test_readme_run_command_brings_up_a_streaming_demo(tmp_path: Path) -> None:
    cmd = readme_run_command()
    assert cmd == "scripts/run-demo"
    home = tmp_path / "home"
    home.mkdir()
    ports = {
        "--port": free_port(),
        "--dashboard-port": free_port(),
        "--mqtt-port": free_port(),
        "--srt-port": free_port(socket.SOCK_DGRAM),
    }
    args = [str(ROOT / cmd)] + [x for k, v in ports.items() for x in (k, str(v))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUMPH_", "XDG_"))}
    env["HOME"] = str(home)
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    url: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            m = re.search(r"Flumph is up: open (http://\S+)", line)
            if m:
                url.append(m.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240  # the bootstrap may still install packages
        while not url and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert url, "no URL printed:\n" + "\n".join(lines[-40:])
        # Never silent while it installs: it says what it is doing before the URL.
        before = lines[: next(i for i, line in enumerate(lines) if "Flumph is up" in line)]
        said = [line for line in before if line.startswith(("run-demo: ", "bootstrap: "))]
        assert said[0].startswith("run-demo: checking"), before
        assert any(line.startswith("run-demo: starting flumph up --demo") for line in said), said
        assert url[0] == f"http://127.0.0.1:{ports['--dashboard-port']}/"
        ingest = f"http://127.0.0.1:{ports['--port']}"
        assert httpx.get(f"{ingest}/health", timeout=5).json()["status"] == "ok"
        device: dict[str, object] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            devices = httpx.get(f"{url[0]}api/devices", timeout=5).json()
            device = next((d for d in devices if d["id"] == "demo"), {})
            if device.get("presence") == "online" and device.get("streaming"):
                break
            time.sleep(0.5)
        assert device.get("presence") == "online", device
        assert device.get("streaming") is True, device
        streams = httpx.get(f"{ingest}/api/streams", timeout=5).json()
        demo = next(s for s in streams if s["id"] == "demo")
        assert demo["codec"] == "av1" and demo["publishing"] and demo["frames"] > 0
        # State lives under the clean HOME, not somewhere shared.
        assert (home / ".local" / "state" / "flumph" / "broker").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("flumph up did not stop within 20 s of SIGTERM") from None
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()
