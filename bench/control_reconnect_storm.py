"""Reconnect storm: N devices (real paho clients from flumph.mqtt.make_client) connected to a
broker that restarts; how they come back with jittered reconnect delays (flumph's default) and
without (paho's own backoff: the peer).

Per policy and broker: a fresh broker (anonymous, like control_broker_load), worker processes of
up to 250 paho clients each (one network thread per client, as on a device), all connected; then
the broker is stopped, left down for ``--down`` seconds, and started again on the same port. Each
client's CONNACKs are timestamped (wall clock, shared by the processes). Reported: the peak of
connects completed per second (1 s bins, and the densest 100 ms scaled to a second), the time
from the broker listening again to all devices online, the median, and the broker's CPU seconds
over that time.

    python -m bench.control_reconnect_storm                 # 1000 devices, embedded broker
    python -m bench.control_reconnect_storm --devices 300 --brokers embedded,mosquitto
    python -m bench.control_reconnect_storm --passwords      # argon2 logins (embedded)
    python -m bench.control_reconnect_storm worker …        # (internal) one worker process
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.control_common import free_port, percentile, wait_listening, work_dir
from bench.report import REPO_DIR, format_table, machine_note, write_json
from flumph.mqtt import MqttSettings, make_client

PER_WORKER = 250
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 120.0
KEEPALIVE_S = 60


# --- worker process -----------------------------------------------------------------------------


def worker(port: int, first: int, count: int, jitter: bool, password: str | None) -> None:
    def settings(i: int) -> MqttSettings:
        return MqttSettings(
            url=f"mqtt://127.0.0.1:{port}",
            username=f"storm-{first + i:05d}" if password else None,
            password=password,
            reconnect_min_s=RECONNECT_MIN_S,
            reconnect_max_s=RECONNECT_MAX_S,
            reconnect_jitter=jitter,
            keepalive_s=KEEPALIVE_S,
        )

    lock = threading.Lock()
    connects: list[list[float]] = [[] for _ in range(count)]
    clients = []

    def on_connect(i: int) -> Any:
        def callback(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                with lock:
                    connects[i].append(time.time())

        return callback

    for i in range(count):
        c = make_client(settings(i), f"storm-{first + i:05d}")
        c.on_connect = on_connect(i)
        c.connect_async("127.0.0.1", port, keepalive=KEEPALIVE_S)
        c.loop_start()
        clients.append(c)
    for line in sys.stdin:  # "count N": how many have connected N times; "report": the times
        cmd = line.split()
        with lock:
            if cmd[0] == "count":
                n = int(cmd[1])
                print(json.dumps(sum(1 for c in connects if len(c) >= n)), flush=True)
            elif cmd[0] == "report":
                print(json.dumps([c[1] if len(c) > 1 else None for c in connects]), flush=True)
            elif cmd[0] == "quit":
                break
    for c in clients:
        c.disconnect()
        c.loop_stop()


# --- the bench ----------------------------------------------------------------------------------


@dataclass
class Broker:
    kind: str
    port: int
    workdir: Path
    passwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start on the same port (and state); the time it listened."""
        log = self.workdir / f"{self.kind}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
        if self.kind == "embedded":
            argv = [sys.executable, "-m", "flumph", "broker", "--host", "127.0.0.1",
                    "--port", str(self.port), "--state-dir", str(self.workdir / "state"),
                    "--log-level", "warning"]  # fmt: skip
            if self.passwd is not None:
                argv += ["--passwd-file", str(self.passwd)]
        else:
            conf = self.workdir / "mosquitto.conf"
            lines = ["allow_anonymous true", f"listener {self.port} 127.0.0.1", "log_dest stderr",
                     "log_type error", "max_connections -1"]  # fmt: skip
            if os.geteuid() == 0:
                lines.append("user root")
            conf.write_text("\n".join(lines) + "\n")
            argv = ["mosquitto", "-c", str(conf)]
        with log.open("wb") as f:
            self.proc = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO_DIR
            )
        wait_listening("127.0.0.1", self.port, self.proc, log)
        return time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu_s(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Workers:
    def __init__(self, port: int, devices: int, jitter: bool, password: str | None) -> None:
        self.procs = []
        for first in range(0, devices, PER_WORKER):
            n = min(PER_WORKER, devices - first)
            argv = [sys.executable, "-m", "bench.control_reconnect_storm", "worker", str(port),
                    str(first), str(n), "1" if jitter else "0", password or ""]  # fmt: skip
            self.procs.append(
                subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_DIR
                )
            )

    def ask(self, line: str) -> list[Any]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()
        out = []
        for p in self.procs:
            assert p.stdout is not None
            out.append(json.loads(p.stdout.readline()))
        return out

    def wait_connected(self, times: int, devices: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(self.ask(f"count {times}")) >= devices:
                return True
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        for p in self.procs:
            try:
                assert p.stdin is not None
                p.stdin.write("quit\n")
                p.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


@dataclass
class Row:
    broker: str
    policy: str
    devices: int
    back: int
    peak_per_s: int
    peak_100ms_per_s: int
    p50_s: float | None
    all_online_s: float | None
    broker_cpu_s: float


def peaks(times: list[float]) -> tuple[int, int]:
    def densest(width: float) -> int:
        ordered, best, j = sorted(times), 0, 0
        for i, t in enumerate(ordered):
            while ordered[j] < t - width:
                j += 1
            best = max(best, i - j + 1)
        return best

    return densest(1.0), round(densest(0.1) * 10)


def passwd_file(path: Path, devices: int) -> str:
    """One device account per client (argon2, one hash shared: the broker verifies each login
    all the same); returns the password."""
    from flumph.broker.passwd import hash_password

    password = "storm-password"
    digest = hash_password(password)
    path.write_text("".join(f"storm-{i:05d}:{digest}\n" for i in range(devices)))
    return password


def run_one(
    kind: str, devices: int, jitter: bool, down_s: float, out: Path, passwords: bool
) -> Row:
    workdir = out / f"{kind}-{'jitter' if jitter else 'fixed'}-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    broker = Broker(kind, free_port(), workdir)
    password = None
    if passwords:
        broker.passwd = workdir / "passwd"
        password = passwd_file(broker.passwd, devices)
    broker.start()
    workers = Workers(broker.port, devices, jitter, password)
    try:
        if not workers.wait_connected(1, devices, 300):
            raise RuntimeError("the devices did not all connect before the restart")
        broker.stop()
        time.sleep(down_s)
        up = broker.start()
        cpu0 = broker.cpu_s()
        workers.wait_connected(2, devices, 300)
        cpu = broker.cpu_s() - cpu0
        times = [t for chunk in workers.ask("report") for t in chunk if t is not None]
    finally:
        workers.stop()
        broker.stop()
    since = [t - up for t in times]
    peak_1s, peak_100ms = peaks(times)
    name = kind + (" +argon2" if passwords else "")
    return Row(
        name, "jitter (flumph)" if jitter else "paho backoff (peer)", devices, len(times),
        peak_1s, peak_100ms, _round(percentile(since, 50)),
        _round(max(since)) if len(times) == devices else None, round(cpu, 2),
    )  # fmt: skip


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "worker":
        worker(int(args[1]), int(args[2]), int(args[3]), args[4] == "1", args[5] or None)
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--brokers", default="embedded", help="embedded,mosquitto")
    p.add_argument("--down", type=float, default=2.0, help="seconds the broker stays down")
    p.add_argument(
        "--passwords", action="store_true", help="embedded only: an argon2 account per device"
    )
    p.add_argument("--json", type=Path, help="also write the rows here")
    ns = p.parse_args(args)
    out = work_dir("control_reconnect_storm")
    rows = []
    for kind in ns.brokers.split(","):
        for jitter in (False, True):
            rows.append(run_one(kind, ns.devices, jitter, ns.down, out, ns.passwords))
            print(asdict(rows[-1]), flush=True)
    print()
    title = (
        f"Reconnect storm: {ns.devices} paho clients, broker down {ns.down:g} s then back on the "
        f"same port; reconnect delays from {RECONNECT_MIN_S:g} s (cap {RECONNECT_MAX_S:g} s)"
    )
    header = ["broker", "policy", "devices", "back", "peak conn/s (1 s)", "peak conn/s (100 ms)",
              "p50 s", "all online s", "broker CPU s"]  # fmt: skip
    print(format_table(title, header, [list(asdict(r).values()) for r in rows]))
    print(machine_note())
    if ns.json:
        write_json(ns.json, {"rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
