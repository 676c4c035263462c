"""Drives tests/rtsp_server.py (GStreamer's RTSP server) from the venv: start, stop, restart on the
same port, and the events it prints (clients connecting and leaving)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port

SERVER = Path(__file__).resolve().parent / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # python3-gi is a Debian package: the venv cannot import gi


class RtspServer:
    def __init__(
        self,
        codec: str = "hevc",
        *,
        size: str = "480x272",
        fps: int = 15,
        bitrate: int = 300,
        gop: int = 15,
        shared: bool = False,
        port: int | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = ["--port", str(self.port), "--codec", codec, "--size", size, "--fps", str(fps)]
        self.args += ["--bitrate", str(bitrate), "--gop", str(gop), *(extra or [])]
        if shared:
            self.args.append("--shared")
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self._reader = threading.Thread()

    def start(self, timeout: float = 20.0) -> RtspServer:
        mark = len(self.events)
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        self.wait_event("ready", since=mark, timeout=timeout)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["at"] = time.monotonic()
            with self._lock:
                self.events.append(event)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._reader.join(5.0)  # it reads to the end of the pipe, then the pipe is closed
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self.proc = None

    def count(self, name: str, since: int = 0) -> int:
        with self._lock:
            return sum(1 for e in self.events[since:] if e["event"] == name)

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_event(self, name: str, since: int = 0, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for event in self.events[since:]:
                    if event["event"] == name:
                        return event
                if name != "error" and any(e["event"] == "error" for e in self.events[since:]):
                    raise AssertionError(f"RTSP server error: {self.events[since:]}")
            if self.proc is not None and self.proc.poll() is not None and name == "ready":
                raise AssertionError(f"RTSP server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} from the RTSP server within {timeout} s: {self.events}")
