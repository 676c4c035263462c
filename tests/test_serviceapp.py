"""Every uvicorn service runs on the loop uvicorn's ``loop`` setting picks: uvloop when installed
(``asyncio.run(server.serve())`` used to bypass that choice and always ran asyncio's own loop)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
import uvloop
from fastapi import FastAPI

from flumph.service.app import run_on_server_loop
from tests.conftest import free_port


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_loop_is_uvloop_when_installed() -> None:
    config = uvicorn.Config(FastAPI(), loop="auto")
    assert run_on_server_loop(loop_module(), config).startswith("uvloop")


def test_the_asyncio_setting_keeps_asyncio() -> None:
    config = uvicorn.Config(FastAPI(), loop="asyncio")
    assert run_on_server_loop(loop_module(), config).startswith("asyncio")


def command(service: str, tmp: Path) -> tuple[list[str], int]:
    port = free_port()
    common = ["--host", "127.0.0.1", "--port", str(port)]
    if service == "ingest":
        return ["ingest", *common, "--srt-port", str(free_port(socket.SOCK_DGRAM))], port
    if service == "dashboard":
        return ["dashboard", *common, "--mqtt", f"mqtt://127.0.0.1:{free_port()}"], port
    return [
        "up", *common, "--dashboard-port", str(port), "--mqtt-port", str(free_port()),
        "--srt-port", str(free_port(socket.SOCK_DGRAM)), "--state-dir", str(tmp / "up"),
    ], port  # fmt: skip


@pytest.mark.parametrize("service", ["ingest", "dashboard", "up"])
def test_each_service_process_runs_on_uvloop(service: str, tmp_path: Path) -> None:
    args, port = command(service, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flumph", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{service} exited:\n{log.read_text()}"
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, f"{service} never answered:\n{log.read_text()}"
                time.sleep(0.2)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert Path(uvloop.__file__).parent.name + "/loop." in maps, "uvloop is not loaded"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
