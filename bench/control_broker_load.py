"""Broker load: N simulated devices connected at once, each publishing telemetry (QoS 0, ~300 B)
every 5 s, one backend subscriber on ``flumph/+/telemetry``: the embedded broker vs mosquitto.

Per level a fresh broker (anonymous, no ACL: the same work for both), then worker processes
(raw asyncio MQTT 3.1.1 clients, up to 500 devices a process, keepalive 300 s like the agent)
connect every device, and only then the window opens: each device publishes at its own phase
within the 5 s period, stamping the wall-clock send time and a sequence number. The subscriber
(this process) measures delivery delay (receive - send, same clock) and loss (sent - received).
A level "falls behind" when p99 delay > 1 s or any message is lost; the client side is
"saturated" when the workers send late (p99 of actual - scheduled send > 1 s). Levels go up
until the broker falls behind.

    python -m bench.control_broker_load --quick     # 100, 500 devices, 15 s windows, ~2 min
    python -m bench.control_broker_load --json bench/out/control_broker_load.json
    python -m bench.control_broker_load worker …    # (internal) one worker process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.control_common import (
    PINGREQ,
    BrokerProc,
    PacketReader,
    connect_packet,
    parse_publish,
    percentile,
    publish_packet,
    start_broker,
    subscribe_packet,
    work_dir,
)
from bench.procstat import cpu_seconds, status_kib
from bench.report import REPO_DIR, format_table, machine_note, write_json
from flumph.mqtt import DEFAULT_KEEPALIVE_S

PERIOD_S = 5.0
PAYLOAD_BYTES = 300
DEVICES_PER_WORKER = 500
BEHIND_P99_MS = 1000.0
GRACE_S = 5.0
CONNECTS_IN_FLIGHT = 50  # per worker: a broker is not a SYN-flood test


# --- worker process -----------------------------------------------------------------------------


def telemetry_payload(device: str, seq: int, scheduled: float) -> bytes:
    doc = {"dev": device, "seq": seq, "ts": time.time(), "sched": scheduled, "streaming": True,
           "fps": 15.0, "bitrate_kbps": 251.3, "encoder": "libsvtav1", "width": 640,
           "height": 360, "frames_dropped": 0,
           "srt": {"rtt_ms": 48.2, "loss_pct": 0.0, "retransmits": 3}}  # fmt: skip
    raw = json.dumps(doc, separators=(",", ":"))
    return (raw[:-1] + ',"pad":"' + "x" * max(0, PAYLOAD_BYTES - len(raw) - 9) + '"}').encode()


async def worker(host: str, port: int, first: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    writers: dict[str, asyncio.StreamWriter] = {}
    failures = 0
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    drains: set[asyncio.Task[None]] = set()

    async def connect(device: str) -> None:
        nonlocal failures
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
                writer.write(connect_packet(f"bench-{device}", DEFAULT_KEEPALIVE_S))
                connack = await asyncio.wait_for(reader.readexactly(4), 60)
                if connack[0] != 0x20 or connack[3] != 0:
                    raise ConnectionError(f"CONNACK {connack.hex()}")
                writers[device] = writer
                # Nothing comes back to a QoS 0 publisher; drain the socket all the same.
                drains.add(loop.create_task(_drain(reader)))
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                failures += 1

    devices = [f"load-{i:05d}" for i in range(first, first + count)]
    await asyncio.gather(*(connect(d) for d in devices))
    print(json.dumps({"ready": len(writers), "failures": failures}), flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    t0, t1 = (float(v) for v in line.split())
    sent = 0
    lags: list[float] = []
    rng = random.Random(first)

    async def device_loop(device: str, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        topic = f"flumph/{device}/telemetry"
        scheduled, seq = t0 + rng.uniform(0, PERIOD_S), 0
        while scheduled < t1:
            await asyncio.sleep(max(0.0, scheduled - time.time()))
            lags.append(time.time() - scheduled)
            try:
                writer.write(publish_packet(topic, telemetry_payload(device, seq, scheduled)))
            except (OSError, RuntimeError):
                return
            sent += 1
            seq += 1
            scheduled += PERIOD_S

    await asyncio.gather(*(device_loop(d, w) for d, w in writers.items()))
    await asyncio.sleep(1)
    ordered = sorted(lags)
    p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000 if ordered else None
    print(json.dumps({"sent": sent, "lag_p99_ms": p99, "connected": len(writers)}), flush=True)
    for w in writers.values():
        w.close()


async def _drain(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(4096):
            pass
    except OSError:
        pass


# --- the backend subscriber -----------------------------------------------------------------


class Subscriber:
    def __init__(self) -> None:
        self.delays_ms: list[float] = []
        self.received = 0
        self.late_or_bad = 0

    async def run(self, host: str, port: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(connect_packet("bench-backend", 60))
        writer.write(subscribe_packet(1, "flumph/+/telemetry", 0))
        packets = PacketReader()
        last_ping = time.monotonic()
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except TimeoutError:
                data = b""
            now = time.time()
            if time.monotonic() - last_ping > 30:
                writer.write(PINGREQ)
                last_ping = time.monotonic()
            for first, body in packets.feed(data):
                kind = first >> 4
                if kind == 9:  # SUBACK
                    ready.set()
                elif kind == 3:
                    _, payload = parse_publish(first, body)
                    try:
                        sent_at = float(json.loads(payload)["ts"])
                    except (ValueError, KeyError):
                        self.late_or_bad += 1
                        continue
                    self.received += 1
                    self.delays_ms.append((now - sent_at) * 1000)
        writer.close()


# --- one level ------------------------------------------------------------------------------------


@dataclass
class Level:
    broker: str
    devices: int
    connected: int = 0
    connect_failures: int = 0
    connect_s: float = 0.0
    sent: int = 0
    received: int = 0
    lost: int = 0
    delay_p50_ms: float | None = None
    delay_p99_ms: float | None = None
    delay_max_ms: float | None = None
    send_lag_p99_ms: float | None = None
    broker_rss_idle_mb: float = 0.0
    broker_rss_mb: float = 0.0
    broker_cpu_pct: float = 0.0
    clients_cpu_pct: float = 0.0
    subscriber_cpu_pct: float = 0.0
    behind: bool = False
    clients_saturated: bool = False
    error: str | None = None

    def row(self) -> list[object]:
        state = "BEHIND" if self.behind else "ok"
        if self.clients_saturated:
            state += " (clients late)"
        if self.error:
            state = f"ERROR: {self.error}"
        return [self.broker, self.devices, self.connected, round(self.connect_s, 1), self.sent,
                self.lost, self.delay_p50_ms, self.delay_p99_ms, self.send_lag_p99_ms,
                round(self.broker_rss_idle_mb, 1), round(self.broker_rss_mb, 1),
                round(self.broker_cpu_pct), round(self.clients_cpu_pct),
                round(self.subscriber_cpu_pct), state]  # fmt: skip


async def run_level(kind: str, devices: int, window_s: float) -> Level:
    level = Level(kind, devices)
    broker: BrokerProc = start_broker(kind, work_dir("control") / "load")
    pid = broker.proc.pid
    workers: list[asyncio.subprocess.Process] = []
    stop = asyncio.Event()
    try:
        await asyncio.sleep(1)
        level.broker_rss_idle_mb = status_kib(pid, "VmRSS") / 1024
        sub = Subscriber()
        ready = asyncio.Event()
        sub_task = asyncio.create_task(sub.run(broker.host, broker.port, ready, stop))
        await asyncio.wait_for(ready.wait(), 20)
        n_workers = max(1, math.ceil(devices / DEVICES_PER_WORKER))
        per = math.ceil(devices / n_workers)
        t_connect = time.monotonic()
        for w in range(n_workers):
            first, count = w * per, min(per, devices - w * per)
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.control_broker_load", "worker",
                "--port", str(broker.port), "--first", str(first), "--count", str(count),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO_DIR,
            ))  # fmt: skip
        for proc in workers:
            assert proc.stdout is not None
            hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
            level.connected += hello["ready"]
            level.connect_failures += hello["failures"]
        level.connect_s = time.monotonic() - t_connect
        await asyncio.sleep(2)  # let the connect storm settle before the window
        t0 = time.time() + 1
        t1 = t0 + window_s
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write(f"{t0} {t1}\n".encode())
            await proc.stdin.drain()
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu0 = (cpu_seconds(pid), sum(cpu_seconds(p.pid) for p in workers), time.process_time(),
                time.monotonic())  # fmt: skip
        rss_peak = 0
        while time.time() < t1:
            await asyncio.sleep(1)
            rss_peak = max(rss_peak, status_kib(pid, "VmRSS"))
        cpu1 = (cpu_seconds(pid), sum(cpu_seconds(p.pid) for p in workers), time.process_time(),
                time.monotonic())  # fmt: skip
        span = cpu1[3] - cpu0[3]
        level.broker_cpu_pct = 100 * (cpu1[0] - cpu0[0]) / span
        level.clients_cpu_pct = 100 * (cpu1[1] - cpu0[1]) / span
        level.subscriber_cpu_pct = 100 * (cpu1[2] - cpu0[2]) / span
        level.broker_rss_mb = rss_peak / 1024
        lags = []
        for proc in workers:
            assert proc.stdout is not None
            report = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60 + GRACE_S))
            level.sent += report["sent"]
            if report["lag_p99_ms"] is not None:
                lags.append(report["lag_p99_ms"])
        level.send_lag_p99_ms = max(lags) if lags else None
        await asyncio.sleep(GRACE_S)  # stragglers still count, however late
        stop.set()
        await sub_task
        level.received = sub.received
        level.lost = level.sent - level.received
        level.delay_p50_ms = percentile(sub.delays_ms, 50)
        level.delay_p99_ms = percentile(sub.delays_ms, 99)
        level.delay_max_ms = max(sub.delays_ms) if sub.delays_ms else None
        level.behind = (
            level.lost > 0 or level.connected < devices or (level.delay_p99_ms or 0) > BEHIND_P99_MS
        )
        level.clients_saturated = (level.send_lag_p99_ms or 0) > BEHIND_P99_MS
    except (TimeoutError, OSError, ValueError, RuntimeError) as e:
        level.error = f"{type(e).__name__}: {e}"
        level.behind = True
    finally:
        stop.set()
        for proc in workers:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        broker.stop()
    return level


async def run_all(kinds: list[str], levels: list[int], window_s: float) -> list[Level]:
    results: list[Level] = []
    for kind in kinds:
        for n in levels:
            print(f"[{kind}] {n} devices …", flush=True)
            level = await run_level(kind, n, window_s)
            print("    " + " ".join(str(c) for c in level.row()), flush=True)
            results.append(level)
            if level.behind:
                break
    return results


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["worker"]:
        w = argparse.ArgumentParser()
        w.add_argument("--host", default="127.0.0.1")
        w.add_argument("--port", type=int, required=True)
        w.add_argument("--first", type=int, required=True)
        w.add_argument("--count", type=int, required=True)
        wa = w.parse_args(argv[1:])
        asyncio.run(worker(wa.host, wa.port, wa.first, wa.count))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="levels 100,500 and 15 s windows")
    p.add_argument("--levels", help="comma list of device counts (default 500,1000,2000,4000,8000)")
    p.add_argument("--window", type=float, help="seconds of publishing per level (default 20)")
    p.add_argument("--brokers", default="embedded,mosquitto", help="comma list")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    levels_arg = args.levels or ("100,500" if args.quick else "500,1000,2000,4000,8000")
    levels = [int(v) for v in levels_arg.split(",")]
    window = args.window or (15.0 if args.quick else 20.0)
    os.environ.pop("FLUMPH_BROKER_PORT", None)
    results = asyncio.run(run_all(args.brokers.split(","), levels, window))

    print()
    print(machine_note())
    print(format_table(
        f"Broker load: telemetry QoS 0 ~{PAYLOAD_BYTES} B every {PERIOD_S:.0f} s per device, "
        f"{window:.0f} s window, one subscriber on flumph/+/telemetry",
        ["broker", "devices", "connected", "connect s", "sent", "lost", "p50 ms", "p99 ms",
         "send lag p99", "RSS idle MB", "RSS MB", "broker CPU%", "clients CPU%", "sub CPU%",
         "delivery"],
        [lv.row() for lv in results],
    ))  # fmt: skip
    summary = []
    for kind in args.brokers.split(","):
        ok = [lv.devices for lv in results if lv.broker == kind and not lv.behind]
        behind = [lv for lv in results if lv.broker == kind and lv.behind]
        first_behind = behind[0].devices if behind else None
        late = "clients late" if behind and behind[0].clients_saturated else "-"
        summary.append([kind, max(ok) if ok else 0, first_behind or "not reached", late])
    print()
    print(format_table(
        f"Most devices kept up (p99 <= {BEHIND_P99_MS:.0f} ms, no loss)",
        ["broker", "max N kept up", "first N behind", "client side"],
        summary,
    ))  # fmt: skip
    by_kind = {row[0]: row[1] for row in summary}
    if "embedded" in by_kind and "mosquitto" in by_kind and by_kind["mosquitto"]:
        e, m = int(by_kind["embedded"]), int(by_kind["mosquitto"])
        print(f"embedded / mosquitto, most devices kept up: {e / m:.2f}")
    write_json(args.json, {"machine": machine_note(), "window_s": window,
                           "levels": [asdict(lv) for lv in results]})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
