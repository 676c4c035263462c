"""A counting SRT receiver for the benchmarks: in-process, or as a child process
(``python -m bench.srt_receiver receive``) that prints "ready" and, at the end, its report as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.report import REPO_DIR


@dataclass
class ReceiverReport:
    connections: int = 0
    bytes: int = 0  # SRT payload delivered to the application
    messages: int = 0
    first_data_at: float | None = None  # time.monotonic()
    last_data_at: float | None = None
    # The receiver's own SRT statistics at the last poll (from its side: sent = downstream).
    wire_bytes_sent_estimate: int = 0
    wire_bytes_received_estimate: int = 0
    acks_sent: int = 0
    packets_received: int = 0
    closed: bool = False
    keep_data: bool = False
    data: bytearray = field(default_factory=bytearray, repr=False)

    def public(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("data")
        return doc


class CountingReceiver:
    """An SrtServer that accepts every caller, counts what it delivers and polls its statistics
    (srt_bstats fails once the peer has closed, so they are polled during the session)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep_data: bool = False) -> None:
        from flumph.srt import SrtOptions, SrtServer

        self.report = ReceiverReport(keep_data=keep_data)
        self._lock = threading.Lock()
        self._server = SrtServer(host, port, SrtOptions(latency_ms=120), self)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="stats-poll", daemon=True)
        self.closed = threading.Event()

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()
        self._poller.start()

    def stop(self) -> None:
        self._poll_once()
        self._stop.set()
        self._server.stop()
        self._poller.join(2.0)

    # SrtServerHandler
    def check(self, streamid: str, peer: tuple[str, int]) -> Any:
        from flumph.srt import Accept

        return Accept()

    def on_connect(self, conn: Any) -> None:
        with self._lock:
            self.report.connections += 1

    def on_data(self, conn: Any, data: bytes) -> None:
        now = time.monotonic()
        with self._lock:
            r = self.report
            r.bytes += len(data)
            r.messages += 1
            r.first_data_at = r.first_data_at or now
            r.last_data_at = now
            if r.keep_data:
                r.data += data

    def on_close(self, conn: Any, error: str | None) -> None:
        with self._lock:
            self.report.closed = True
        self.closed.set()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            self._poll_once()

    def _poll_once(self) -> None:
        from flumph.srt import SrtError

        for conn in self._server.connections():
            try:
                s = conn.stats()
            except SrtError:
                continue
            with self._lock:
                r = self.report
                r.wire_bytes_sent_estimate = s.wire_bytes_sent
                r.wire_bytes_received_estimate = s.wire_bytes_received
                r.acks_sent = s.acks_sent
                r.packets_received = s.packets_received


def receive_main(argv: list[str]) -> int:
    """``receive --host H --port P --timeout S``: print "ready", count until the caller closes
    (or SIGTERM, or the timeout), print the report as JSON on one line."""
    p = argparse.ArgumentParser(prog="python -m bench.srt_receiver receive")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    from flumph.srt import set_libsrt_log_level

    set_libsrt_log_level(2)
    receiver = CountingReceiver(args.host, args.port)
    receiver.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and not receiver.closed.is_set() and time.monotonic() < deadline:
        stop.wait(0.05)
    receiver.stop()
    print(json.dumps(receiver.report.public()), flush=True)
    return 0


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def start_receiver_process(command: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_DIR
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        raise RuntimeError(
            f"receiver did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc


def finish_receiver_process(proc: subprocess.Popen[str], timeout: float) -> ReceiverReport:
    """Wait for the receiver to see the caller close (else SIGTERM it) and parse its report."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"receiver printed no report; stderr: {err.strip()[-500:]}")
    doc = json.loads(lines[-1])
    doc.pop("data", None)
    return ReceiverReport(**doc)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "receive":
        raise SystemExit(receive_main(sys.argv[2:]))
    print("usage: python -m bench.srt_receiver receive --port P [--host H] [--timeout S]")
    raise SystemExit(2)
