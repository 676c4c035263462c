"""Shared by the rate benchmarks and tests: the agent's pipeline streaming the synthetic camera to a
real ingest through bench/linkproxy.py (its own process), and what the ingest received.

"The bitrate the ingest receives" is the SRT payload the proxy delivered to the ingest's socket,
second by second (retransmissions included, SRT headers not): Matroska framing and all, as the
carrier would count it minus the IP/UDP/SRT headers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.linkproxy import LinkProxyProcess
from flumph.agent.pipeline import Pipeline
from flumph.settings import StreamSettings


@dataclass
class Run:
    settings: StreamSettings
    payload_kbps: list[float]  # per second of the proxy's clock
    status: dict[str, Any]  # pipeline.status() at the end
    samples: list[dict[str, Any]] = field(default_factory=list)  # status, "t" since start
    proxy: dict[str, Any] = field(default_factory=dict)
    offset_s: float = 0.0  # pipeline start on the proxy's clock
    started_at: float = 0.0  # time.monotonic() of the pipeline's start

    def windows(self, seconds: int = 10, skip_s: int = 10) -> list[float]:
        """Delivered / target over every whole-second window of ``seconds`` that starts at least
        ``skip_s`` after the stream did (the stream's first and last partial seconds excluded)."""
        start = int(self.offset_s + 0.999) + skip_s
        per = self.payload_kbps[:-1]  # the last second is cut short by the stop
        target = self.settings.bitrate_kbps
        return [
            sum(per[j : j + seconds]) / seconds / target
            for j in range(start, len(per) - seconds + 1)
        ]


def stream_through_proxy(
    settings: StreamSettings,
    ingest_srt_port: int,
    seconds: float,
    *,
    device_id: str = "bench",
    proxy_options: dict[str, object] | None = None,
    every_second: Callable[[Pipeline, float], None] | None = None,
    state_dir: Path | None = None,
    sample_every_s: float = 1.0,
) -> Run:
    """Stream ``settings`` for ``seconds`` to the ingest through a link proxy (unlimited unless
    ``proxy_options`` say otherwise, e.g. ``{"schedule": "800kbps for 20s, 150kbps"}``)."""
    tmp = Path(tempfile.mkdtemp(prefix="flumph-rate-"))
    link = LinkProxyProcess(
        ("127.0.0.1", ingest_srt_port), tmp / "link.json", **(proxy_options or {})
    )
    pipeline = Pipeline(
        device_id=device_id,
        ingest=f"srt://127.0.0.1:{link.port}",
        settings=settings.model_copy(update={"streaming": True}),
        state_dir=state_dir or tmp,
        backoff_base_s=0.1,
        backoff_cap_s=0.5,
    )
    samples: list[dict[str, Any]] = []
    try:
        started = time.monotonic()
        pipeline.start()
        offset = started - link.started_at
        while (elapsed := time.monotonic() - started) < seconds:
            time.sleep(min(sample_every_s, seconds - elapsed))
            status = pipeline.status()
            status["t"] = round(time.monotonic() - started, 2)
            srt_link = pipeline.publisher.link_stats() if pipeline.publisher else None
            status["srt_dropped_sent"] = srt_link[2].packets_dropped_sent if srt_link else None
            samples.append(status)
            if every_second is not None:
                every_second(pipeline, time.monotonic() - started)
    finally:
        pipeline.stop()
        summary = link.stop()
    status = pipeline.status()
    return Run(settings, summary["payload_kbps"], status, samples, summary, offset, started)


@dataclass
class IngestProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    srt_port: int

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_ingest(log_path: Path, *extra: str) -> IngestProcess:
    """``flumph ingest`` on free loopback ports, healthy when this returns."""
    http_port, srt_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    cmd = [sys.executable, "-m", "flumph", "ingest", "--host", "127.0.0.1",
           "--port", str(http_port), "--srt-host", "127.0.0.1", "--srt-port", str(srt_port),
           "--log-level", "warning", *extra]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ingest exited: {log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1).status_code == 200:
                return IngestProcess(proc, http_port, srt_port)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("ingest did not become healthy")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
