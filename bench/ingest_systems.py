"""The systems under test, started and stopped as processes: the Flumph ingest, and the peer (one
``ffmpeg -c copy -f mp4 -movflags frag_every_frame...`` SRT listener per stream, with a reader that
cuts each one's stdout into fragments and timestamps them)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .ingest_fmp4 import BoxStream, fragment_info, init_timescale
from .procstat import listening_udp_ports

REPO = Path(__file__).resolve().parent.parent


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_ports(n: int) -> list[int]:
    """n distinct free UDP ports (held together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


# --- the Flumph ingest --------------------------------------------------------------------------


@dataclass
class IngestProcess:
    proc: subprocess.Popen[bytes]
    http_port: int
    srt_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def viewer_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws/view/"

    def get_json(self, path: str, timeout_s: float = 10.0) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        stop_process(self.proc)


def start_ingest(
    log_dir: Path,
    max_streams: int,
    prelude: str | None = None,
    timeout_s: float = 30.0,
    extra_args: tuple[str, ...] = (),
    python: str = sys.executable,
    cwd: Path = REPO,
) -> IngestProcess:
    """``python -m flumph ingest`` on free loopback ports. ``prelude`` (an experiment, the
    ingest's code untouched) is Python run in the ingest's interpreter before it starts;
    ``python`` and ``cwd`` run another checkout's ingest (bench/ingest_ab.py)."""
    http_port = free_tcp_port()
    (srt_port,) = free_udp_ports(1)
    log_path = log_dir / f"ingest-{http_port}.log"
    if prelude is None:
        launcher = [python, "-m", "flumph"]
    else:
        launcher = [
            python, "-c",
            f"{prelude}\nimport sys\nfrom flumph.cli import main\n"
            "raise SystemExit(main(sys.argv[1:]))",
        ]  # fmt: skip
    cmd = [
        *launcher, "ingest",
        "--host", "127.0.0.1", "--port", str(http_port),
        "--srt-host", "127.0.0.1", "--srt-port", str(srt_port),
        "--log-level", "warning",
        # The default limit (100, the seed's MAX_STREAMS) is below the top level.
        "--max-streams", str(max_streams),
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    ingest = IngestProcess(proc, http_port, srt_port, log_path)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the ingest exited with {proc.returncode}; see {log_path}")
        try:
            if ingest.get_json("/health", timeout_s=1.0).get("status") == "ok":
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            ingest.stop()
            raise RuntimeError(f"the ingest did not answer /health within {timeout_s} s")
        time.sleep(0.1)
    if srt_port not in listening_udp_ports():
        ingest.stop()
        raise RuntimeError(f"the ingest answers HTTP but no UDP socket is bound on {srt_port}")
    return ingest


# --- the peer: one ffmpeg per stream ------------------------------------------------------------


def ffmpeg_command(port: int, latency_ms: int) -> list[str]:
    # -flush_packets 1: hand each fragment to the pipe when written, as the ingest does.
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-i", f"srt://127.0.0.1:{port}?mode=listener&latency={latency_ms * 1000}",
        "-c", "copy", "-f", "mp4",
        "-movflags", "frag_every_frame+empty_moov+default_base_moof",
        "-flush_packets", "1", "pipe:1",
    ]  # fmt: skip


@dataclass
class PipeLog:
    """What one ffmpeg wrote: like a viewer's log, from the first byte on."""

    stream_id: str
    timescale: int = 0
    frames: list[tuple[int, float, bool]] = field(default_factory=list)
    bytes_out: int = 0
    error: str | None = None


class FfmpegFleet:
    def __init__(self, stream_ids: list[str], log_dir: Path, latency_ms: int) -> None:
        self.stream_ids = stream_ids
        self.ports = free_udp_ports(len(stream_ids))
        self.log_path = log_dir / f"ffmpeg-{self.ports[0]}.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = {sid: PipeLog(sid) for sid in stream_ids}
        self._latency_ms = latency_ms
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self, timeout_s: float = 120.0) -> None:
        with open(self.log_path, "ab") as log:
            for port in self.ports:
                self.procs.append(
                    subprocess.Popen(
                        ffmpeg_command(port, self._latency_ms),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=log,
                    )
                )
        self._reader = threading.Thread(target=self._read_all, name="ffmpeg-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        wanted = set(self.ports)
        while not wanted <= listening_udp_ports():
            dead = [p.returncode for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{len(dead)} ffmpeg listeners exited; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ffmpeg listeners not all bound within {timeout_s} s")
            time.sleep(0.1)

    def _read_all(self) -> None:
        selector = selectors.DefaultSelector()
        cutters: dict[int, tuple[PipeLog, BoxStream]] = {}
        for sid, proc in zip(self.stream_ids, self.procs, strict=True):
            pipe: IO[bytes] | None = proc.stdout
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            selector.register(pipe.fileno(), selectors.EVENT_READ)
            cutters[pipe.fileno()] = (self.logs[sid], BoxStream())
        while cutters and not self._stop.is_set():
            for key, _ in selector.select(timeout=0.2):
                fd = int(key.fd)
                log, cutter = cutters[fd]
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                now = time.monotonic()
                if not data:
                    selector.unregister(fd)
                    del cutters[fd]
                    continue
                log.bytes_out += len(data)
                try:
                    for fragment in cutter.feed(data):
                        if not log.timescale and cutter.init is not None:
                            log.timescale = init_timescale(cutter.init)
                        decode_time, sync = fragment_info(fragment)
                        log.frames.append((decode_time, now, sync))
                except ValueError as e:
                    log.error = f"unreadable fMP4 from ffmpeg: {e}"
                    selector.unregister(fd)
                    del cutters[fd]
        selector.close()

    def finish(self, timeout_s: float = 10.0) -> None:
        """Wait for every ffmpeg to end (its caller has closed), then stop the stragglers."""
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.05, deadline - time.monotonic()))
        for proc in self.procs:
            stop_process(proc, 3.0)
        if self._reader is not None:
            self._reader.join(5.0)
        self._stop.set()
        for proc in self.procs:
            if proc.stdout is not None:
                proc.stdout.close()
