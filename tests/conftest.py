"""Shared fixtures: real processes on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from flumph.agent.threadpolicy import leave_realtime_scheduling

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(autouse=True)
def normal_scheduling() -> None:
    """No test starts on a realtime thread. Encoders opened in this process by a test's own helpers
    (not the agent's, which does this itself) can leave it at SCHED_FIFO 99 when run as root; a
    browser or server launched from such a thread inherits it and, busy, starves a 2-core machine.
    """
    leave_realtime_scheduling()


def wait_until(condition: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it is true; past ``timeout`` fail, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ingest:
    http_port: int
    srt_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}"

    def srt_url(self, stream_id: str, extra: str = "") -> str:
        # ffmpeg 5.1 takes latency in microseconds and does not decode %23: use publish:<id>.
        return f"srt://127.0.0.1:{self.srt_port}?streamid=publish:{stream_id}&latency=120000{extra}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def streams(self) -> list[dict[str, object]]:
        r = httpx.get(f"{self.http}/api/streams", timeout=5)
        r.raise_for_status()
        data: list[dict[str, object]] = r.json()
        return data

    def errors(self) -> list[dict[str, object]]:
        r = httpx.get(f"{self.http}/api/errors", timeout=5)
        r.raise_for_status()
        data: list[dict[str, object]] = r.json()
        return data

    def wait_stream(
        self, stream_id: str, timeout: float = 15.0, frames: int = 1
    ) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.streams():
                if s["id"] == stream_id and int(s["frames"]) >= frames:  # type: ignore[call-overload]
                    return s
            time.sleep(0.05)
        raise AssertionError(f"stream {stream_id} did not appear; ingest log:\n{self.log()}")


def start_ingest(
    tmp: Path, env_extra: dict[str, str] | None = None, args: list[str] | None = None
) -> Ingest:
    http_port, srt_port = free_port(), free_port(socket.SOCK_DGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env.update(env_extra or {})
    log_path = tmp / f"ingest-{http_port}.log"
    cmd = [
        sys.executable, "-m", "flumph", "ingest",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--srt-host", "127.0.0.1", "--srt-port", str(srt_port),
        "--log-level", "debug", *(args or []),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    ing = Ingest(http_port, srt_port, proc, log_path, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited with {proc.returncode}:\n{ing.log()}")
        try:
            if httpx.get(f"{ing.http}/health", timeout=1).status_code == 200:
                return ing
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"ingest did not become healthy:\n{ing.log()}")


def stop_ingest(ing: Ingest) -> None:
    ing.proc.terminate()
    try:
        ing.proc.wait(10)
    except subprocess.TimeoutExpired:
        ing.proc.kill()
        ing.proc.wait()
        raise AssertionError(f"ingest did not stop within 10 s of SIGTERM:\n{ing.log()}") from None


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    ing = start_ingest(tmp_path, args=["--reconnect-grace-s", "2"])
    yield ing
    stop_ingest(ing)


@pytest.fixture(scope="module")
def shared_ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    ing = start_ingest(tmp_path_factory.mktemp("ingest"), args=["--reconnect-grace-s", "2"])
    yield ing
    stop_ingest(ing)
