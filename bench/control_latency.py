"""Command latency on loopback: a retained ``desired`` published → the real agent applies it →
its ``reported`` with that ``applied_v`` arrives, on the embedded broker and on mosquitto (the
peer), while idle and while streaming to a real ingest.

Per broker: a fresh broker, a real ``flumph agent`` (synthetic camera, default settings: AV1 at
640x360, 15 fps) pointed at a real ``flumph ingest``, and a paho client that publishes
``{"v": n, "streaming": …, "bitrate_kbps": …}`` (QoS 1, retained, like the backend's shadow
merge) and waits for the matching ``reported``. Bitrate alternates 200/300 kbps, so every
change is a real change; while streaming each one opens a new encoder in the agent.

    python -m bench.control_latency --quick      # 15 changes a phase, ~2 min
    python -m bench.control_latency --json bench/out/control_latency.json   # 50 a phase
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.control_common import BrokerProc, free_port, percentile, start_broker, work_dir
from bench.procstat import cpu_seconds
from bench.report import REPO_DIR, format_table, machine_note, write_json
from flumph.control import Reported, Topics, decode
from flumph.mqtt import MqttSettings, make_client

DEVICE = "bench-latency"
REPLY_TIMEOUT_S = 30.0


@dataclass
class Phase:
    broker: str
    phase: str  # idle | start | streaming | stop
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def row(self) -> list[object]:
        lat = self.latencies_ms
        return [self.broker, self.phase, len(lat), percentile(lat, 50), percentile(lat, 99),
                max(lat) if lat else None, len(self.errors)]  # fmt: skip


class Shadow:
    """The backend's side: publishes desired documents, waits for the matching reported."""

    def __init__(self, broker: BrokerProc) -> None:
        self.topics = Topics()
        self.reported: queue.Queue[tuple[float, Reported]] = queue.Queue(maxsize=1000)
        self.client = make_client(MqttSettings(url=broker.url), "bench-latency-backend")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=60)
        self.client.subscribe(self.topics.reported(DEVICE), qos=1)
        self.client.loop_start()
        self.version = 0

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        at = time.perf_counter()
        with contextlib.suppress(ValueError, queue.Full):
            self.reported.put_nowait((at, decode(Reported, bytes(message.payload))))

    def wait_reported(self, accept: Any, timeout_s: float) -> tuple[float, Reported]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, rep = self.reported.get(timeout=left)
            except queue.Empty:
                break
            if accept(rep):
                return at, rep
        raise TimeoutError(f"no matching reported within {timeout_s} s")

    def change(self, **settings: Any) -> tuple[float, Reported]:
        """Publish the next desired version; (ms until its reported, that reported)."""
        self.version += 1
        v = self.version
        doc = json.dumps({"v": v, **settings}).encode()
        t0 = time.perf_counter()
        self.client.publish(self.topics.desired(DEVICE), doc, qos=1, retain=True)
        at, rep = self.wait_reported(
            lambda r: r.applied_v == v or (r.error is not None and f"v{v}" in r.error),
            REPLY_TIMEOUT_S,
        )
        if rep.applied_v != v:
            raise RuntimeError(f"desired v{v} refused: {rep.error}")
        return (at - t0) * 1000, rep

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_ingest(workdir: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    http_port, srt_port = free_port(), free_port()
    log = (workdir / f"ingest-{http_port}.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flumph", "ingest", "--host", "127.0.0.1", "--port", str(http_port),
         "--srt-host", "127.0.0.1", "--srt-port", str(srt_port), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/streams", timeout=1).close()
            return proc, http_port, srt_port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    raise RuntimeError(f"ingest did not start; see {log.name}")


def ingest_sees(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/streams", timeout=5) as r:
            return DEVICE in r.read().decode()
    except OSError:
        return False


def start_agent(workdir: Path, broker: BrokerProc, srt_port: int) -> subprocess.Popen[bytes]:
    log = (workdir / f"agent-{broker.kind}.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["SVT_LOG"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "flumph", "agent", "--device-id", DEVICE, "--mqtt", broker.url,
         "--ingest", f"srt://127.0.0.1:{srt_port}", "--source", "synthetic",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR, env=env,
    )  # fmt: skip


def run_broker(kind: str, changes: int, http_port: int, srt_port: int) -> dict[str, Any]:
    workdir = work_dir("control") / "latency"
    broker = start_broker(kind, workdir)
    agent = None
    shadow = None
    phases = {name: Phase(kind, name) for name in ("idle", "start", "streaming", "stop")}
    result: dict[str, Any] = {"broker": kind}
    try:
        shadow = Shadow(broker)
        agent = start_agent(workdir, broker, srt_port)
        shadow.wait_reported(lambda r: True, 60)  # the agent's first reported: it is up
        cpu0 = cpu_seconds(broker.proc.pid), time.monotonic()

        def measure(phase: Phase, **settings: Any) -> None:
            try:
                phase.latencies_ms.append(shadow.change(**settings)[0])
            except (TimeoutError, RuntimeError) as e:
                phase.errors.append(str(e))

        for i in range(changes):
            measure(phases["idle"], streaming=False, bitrate_kbps=200 + 100 * (i % 2))
            time.sleep(0.2)
        measure(phases["start"], streaming=True, bitrate_kbps=250)
        time.sleep(3)  # let the stream reach the ingest
        result["ingest_saw_stream"] = ingest_sees(http_port)
        for i in range(changes):
            measure(phases["streaming"], streaming=True, bitrate_kbps=200 + 100 * (i % 2))
            time.sleep(0.5)
        result["ingest_saw_stream_after"] = ingest_sees(http_port)
        measure(phases["stop"], streaming=False, bitrate_kbps=250)
        cpu1 = cpu_seconds(broker.proc.pid), time.monotonic()
        result["broker_cpu_pct"] = 100 * (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
    finally:
        if shadow is not None:
            shadow.close()
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        broker.stop()
    result["phases"] = {k: asdict(v) for k, v in phases.items()}
    result["rows"] = [p.row() for p in phases.values()]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="15 changes a phase instead of 50")
    p.add_argument("--changes", type=int, help="changes per phase (idle, streaming)")
    p.add_argument("--brokers", default="embedded,mosquitto", help="comma list")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    changes = args.changes or (15 if args.quick else 50)
    ingest, http_port, srt_port = start_ingest(work_dir("control"))
    results = []
    try:
        for kind in args.brokers.split(","):
            print(f"[{kind}] {changes} idle changes, start, {changes} streaming changes, stop")
            results.append(run_broker(kind, changes, http_port, srt_port))
    finally:
        ingest.terminate()
        ingest.wait(15)
    rows = [row for r in results for row in r["rows"]]
    print()
    print(machine_note())
    print(format_table(
        "Command latency, desired published -> reported(applied_v) received (ms, loopback)",
        ["broker", "phase", "n", "p50 ms", "p99 ms", "max ms", "errors"],
        rows,
    ))  # fmt: skip
    for r in results:
        seen = f"{r.get('ingest_saw_stream')} / {r.get('ingest_saw_stream_after')}"
        cpu = r.get("broker_cpu_pct", 0)
        print(f"{r['broker']}: ingest listed the stream (start/end) {seen}; broker CPU {cpu:.1f}%")
    by = {(r["broker"], row[1]): row for r in results for row in r["rows"]}
    if ("embedded", "streaming") in by and ("mosquitto", "streaming") in by:
        for phase in ("idle", "streaming"):
            e, m = by[("embedded", phase)][3], by[("mosquitto", phase)][3]
            if e and m:
                print(f"{phase}: embedded p50 / mosquitto p50 = {e / m:.2f}")
    write_json(args.json, {"machine": machine_note(), "changes": changes, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
