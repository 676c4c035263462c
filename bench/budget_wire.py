"""The data budget on the wire: the device's own byte count vs the kernel's, per kind of traffic,
and the bytes that pass the budget when the stream stops.

A real `flumph agent` runs in one network namespace; mosquitto and srt-live-transmit (the
receiving peers) in another. The namespaces are joined by TWO veth pairs, one carrying only SRT
(169.254.77.0/30) and one only MQTT (169.254.78.0/30), so each link's kernel counters (Ethernet
bytes − 14 B a frame; neighbours pinned, so no ARP) are the IP-level bytes of one kind, both
directions. Commands and the watching subscriber run inside the receiving namespace, next to the
broker, so they never cross a veth.

1. **Count**: one run that idles, streams, loses its SRT receiver (restarted after 3 s), idles,
   loses its broker (restarted after 4 s), answers 5 commands (`cmd/restart`, the baseline of a
   command round trip) and 5 snapshots, and stops. Device: `usage.json` after the agent exited
   (its `by_kind`). Kernel: each link over the whole run; snapshots = the MQTT link's bytes in the
   snapshot phase − those of the command phase. Plain MQTT, and (not with `--quick`) TLS.
2. **Stop**: an agent with a small budget streams from the start until it stops itself; the
   kernel's bytes on both links up to 2 s after the stop (reported, telemetry included) − the
   budget, in seconds of video (at the setting, or at the rate achieved when that is lower:
   payload received ÷ time from the first ``reported streaming`` to the stop).

    python -m bench.budget_wire --quick       # plain only, one stop case, ~2.5 min (as root)
    python -m bench.budget_wire               # plain + TLS, three stop cases, ~5 min
    python -m bench.budget_wire --json bench/out/budget_wire.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.control_common import BrokerProc, start_mosquitto, wait_listening, work_dir
from bench.netns import NetnsLink
from bench.report import REPO_DIR, format_table, machine_note, write_json

DEV = "bench-cam"
SRT_PORT = 9000
ETHERNET = 14
MQTT_SENDER, MQTT_RECEIVER = "169.254.78.1", "169.254.78.2"


# --- two links between the namespaces ---------------------------------------------------------


@dataclass(frozen=True)
class Bytes:
    """IP-level bytes through one veth, both directions (from the sender namespace's side)."""

    sent: int
    received: int

    @property
    def total(self) -> int:
        return self.sent + self.received

    def minus(self, other: Bytes) -> Bytes:
        return Bytes(self.sent - other.sent, self.received - other.received)


class TwoLinks(NetnsLink):
    """NetnsLink (its veth for SRT) plus a second veth pair for MQTT."""

    def __init__(self) -> None:
        super().__init__()
        tag = self.sender_ns[:-1]
        self.mqtt_sender_dev, self.mqtt_receiver_dev = f"{tag}c", f"{tag}d"
        self.srt_sender_dev, self.srt_receiver_dev = self._veth_sender, self._veth_receiver

    def __enter__(self) -> TwoLinks:
        super().__enter__()
        try:
            self._ip("ip", "link", "add", self.mqtt_sender_dev, "netns", self.sender_ns,
                     "type", "veth", "peer", "name", self.mqtt_receiver_dev,
                     "netns", self.receiver_ns)  # fmt: skip
            for ns, dev, address in (
                (self.sender_ns, self.mqtt_sender_dev, MQTT_SENDER),
                (self.receiver_ns, self.mqtt_receiver_dev, MQTT_RECEIVER),
            ):
                self._ip("ip", "addr", "add", f"{address}/30", "dev", dev, ns=ns)
                self._ip("ip", "link", "set", dev, "up", ns=ns)
            # One segment per packet, as on a real link: with GSO a veth carries one 64 KB
            # "packet" (and counts one set of headers) for what a NIC sends as 45 segments.
            for ns, dev in ((self.sender_ns, self.srt_sender_dev),
                            (self.sender_ns, self.mqtt_sender_dev),
                            (self.receiver_ns, self.srt_receiver_dev),
                            (self.receiver_ns, self.mqtt_receiver_dev)):  # fmt: skip
                self._ip("ip", "link", "set", "dev", dev, "gso_max_segs", "1", ns=ns)
            self._pin(self.srt_sender_dev, self.srt_receiver_dev,
                      self.SENDER_ADDRESS, self.RECEIVER_ADDRESS)  # fmt: skip
            self._pin(self.mqtt_sender_dev, self.mqtt_receiver_dev, MQTT_SENDER, MQTT_RECEIVER)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mac(self, ns: str, dev: str) -> str:
        return self._ip("cat", f"/sys/class/net/{dev}/address", ns=ns).strip()

    def _pin(self, s_dev: str, r_dev: str, s_addr: str, r_addr: str) -> None:
        """Permanent neighbours both ways: no ARP frame ever crosses the veth."""
        s_mac, r_mac = self._mac(self.sender_ns, s_dev), self._mac(self.receiver_ns, r_dev)
        for ns, dev, address, mac in ((self.sender_ns, s_dev, r_addr, r_mac),
                                      (self.receiver_ns, r_dev, s_addr, s_mac)):  # fmt: skip
            self._ip("ip", "neigh", "replace", address, "lladdr", mac, "dev", dev, "nud",
                     "permanent", ns=ns)  # fmt: skip

    def links(self) -> dict[str, Bytes]:
        out = {}
        for kind, dev in (("srt", self.srt_sender_dev), ("mqtt", self.mqtt_sender_dev)):
            text = self._ip("sh", "-c", f"cd /sys/class/net/{dev}/statistics && cat tx_bytes "
                            "rx_bytes tx_packets rx_packets", ns=self.sender_ns)  # fmt: skip
            tx_b, rx_b, tx_p, rx_p = (int(v) for v in text.split())
            out[kind] = Bytes(tx_b - ETHERNET * tx_p, rx_b - ETHERNET * rx_p)
        return out


def delta(after: dict[str, Bytes], before: dict[str, Bytes]) -> dict[str, Bytes]:
    return {k: after[k].minus(before[k]) for k in after}


# --- peers in the receiving namespace ---------------------------------------------------------


class Peers:
    """mosquitto (restartable with the same TLS files), srt-live-transmit, a subscriber."""

    def __init__(self, links: TwoLinks, workdir: Path, tls: bool) -> None:
        self.links, self.workdir, self.tls = links, workdir, tls
        self.broker: BrokerProc = start_mosquitto(workdir / "mosquitto", MQTT_RECEIVER,
                                                  links.receiver_ns, tls=tls)  # fmt: skip
        self.conf = workdir / "mosquitto" / f"mosquitto-{self.broker.port}.conf"
        self.srt_out = workdir / "received.mkv"
        self.srt: subprocess.Popen[bytes] | None = None
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._sub: subprocess.Popen[str] | None = None
        self.start_srt()
        self.subscribe()

    def ns(self, argv: list[str]) -> list[str]:
        return self.links.command(self.links.receiver_ns, argv)

    def start_srt(self) -> None:
        with self.srt_out.open("ab") as sink:
            self.srt = subprocess.Popen(
                self.ns(["srt-live-transmit", "-q",
                         f"srt://{self.links.RECEIVER_ADDRESS}:{SRT_PORT}?mode=listener",
                         "file://con"]),
                stdout=sink, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def stop_srt(self) -> None:
        if self.srt is not None:
            self.srt.terminate()
            self.srt.wait(10)
            self.srt = None

    def restart_broker(self, down_s: float) -> None:
        self.unsubscribe()
        self.broker.stop()
        time.sleep(down_s)
        log = self.workdir / "mosquitto" / f"restart-{time.monotonic_ns()}.log"
        with log.open("wb") as f:
            proc = subprocess.Popen(self.ns(["mosquitto", "-c", str(self.conf)]), stdout=f,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        wait_listening(MQTT_RECEIVER, self.broker.port, proc, log, self.links.receiver_ns)
        self.broker.proc = proc
        self.subscribe()

    def subscribe(self) -> None:
        topics = ["status", "reported", "ack", "telemetry"]
        argv = ["mosquitto_sub", "-h", MQTT_RECEIVER, "-p", str(self.broker.port), "-V",
                "mqttv311", "-v"]  # fmt: skip
        for t in topics:
            argv += ["-t", f"flumph/{DEV}/{t}"]
        self._sub = subprocess.Popen(self.ns(argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        threading.Thread(target=self._read, args=(self._sub,), daemon=True).start()
        time.sleep(0.3)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            topic, _, payload = line.strip().partition(" ")
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            if isinstance(doc, dict):
                self.messages.put((topic.rsplit("/", 1)[-1], doc))

    def unsubscribe(self) -> None:
        if self._sub is not None:
            self._sub.terminate()
            self._sub.wait(10)
            self._sub = None

    def wait(self, kind: str, pred: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                k, doc = self.messages.get(timeout=left)
            except queue.Empty:
                break
            if k == kind and pred(doc):
                return doc
        raise RuntimeError(f"no {kind} message as expected within {timeout} s")

    def publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        argv = ["mosquitto_pub", "-h", MQTT_RECEIVER, "-p", str(self.broker.port), "-V",
                "mqttv311", "-q", "1", "-t", f"flumph/{DEV}/{topic}",
                "-m", json.dumps(payload)]  # fmt: skip
        subprocess.run(self.ns(argv + (["-r"] if retain else [])), check=True, timeout=20)

    def close(self) -> None:
        self.unsubscribe()
        self.stop_srt()
        self.broker.stop()


def start_agent(links: TwoLinks, peers: Peers, state: Path, log: Path, *args: str) -> Any:
    scheme, port = ("mqtts", 8883) if peers.tls else ("mqtt", 1883)
    argv = [sys.executable, "-m", "flumph", "agent", "--device-id", DEV,
            "--ingest", f"srt://{links.RECEIVER_ADDRESS}:{SRT_PORT}",
            "--mqtt", f"{scheme}://{MQTT_RECEIVER}:{port}", "--mqtt-keepalive-s", "30",
            "--mqtt-reconnect-min-s", "1", "--mqtt-reconnect-max-s", "2",
            "--state-dir", str(state),
            "--codec", "h264", "--width", "640", "--height", "360", "--fps", "15",
            "--telemetry-interval-s", "5", "--log-level", "warning", *args]  # fmt: skip
    if peers.tls and peers.broker.ca_file is not None:
        argv += ["--mqtt-ca-file", str(peers.broker.ca_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    env["SVT_LOG"] = "1"
    env["FLUMPH_AGENT_RECONNECT_MAX_S"] = "2"  # SRT: back within 2 s of the receiver
    with log.open("wb") as f:
        return subprocess.Popen(links.command(links.sender_ns, argv), stdout=f,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO_DIR)  # fmt: skip


def stop_agent(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- 1. the count -----------------------------------------------------------------------------


@dataclass
class CountRun:
    transport: str
    phases: dict[str, dict[str, int]] = field(default_factory=dict)  # kernel bytes per phase
    kernel: dict[str, int] = field(default_factory=dict)
    device: dict[str, int] = field(default_factory=dict)
    device_total: int = 0
    kernel_total: int = 0


def count_run(links: TwoLinks, tls: bool, quick: bool) -> CountRun:
    workdir = Path(tempfile.mkdtemp(prefix="budget-wire-", dir=work_dir("budget")))
    run = CountRun("tls" if tls else "plain")
    peers = Peers(links, workdir, tls)
    hold = 6.0 if quick else 12.0
    marks: list[tuple[str, dict[str, Bytes]]] = [("start", links.links())]

    def mark(name: str) -> None:
        marks.append((name, links.links()))
        print(f"  [{run.transport}] {name}", flush=True)

    agent = start_agent(links, peers, workdir / "state", workdir / "agent.log")
    try:
        peers.wait("status", lambda d: d.get("state") == "online")
        time.sleep(hold)
        mark("connect + idle")
        peers.publish("desired", {"v": 1, "streaming": True}, retain=True)
        peers.wait("reported", lambda d: d.get("streaming"))
        time.sleep(hold)
        mark("stream")
        peers.stop_srt()
        time.sleep(3)
        peers.start_srt()
        time.sleep(hold)
        mark("SRT receiver lost 3 s, stream")
        peers.publish("desired", {"v": 2, "streaming": False}, retain=True)
        peers.wait("reported", lambda d: d.get("applied_v") == 2)
        time.sleep(hold)
        mark("stop + idle")
        peers.restart_broker(4.0)
        peers.wait("status", lambda d: d.get("state") == "online")
        time.sleep(hold / 2)
        mark("broker lost 4 s, reconnect")
        for name in ("restart", "snapshot"):
            for i in range(5):
                cid = f"{name}-{i}"
                peers.publish(f"cmd/{name}", {"id": cid})
                ack = peers.wait("ack", lambda d, cid=cid: d.get("id") == cid)
                if not ack.get("ok"):
                    raise RuntimeError(f"cmd/{name} failed: {ack}")
            time.sleep(2)
            mark(f"5 x cmd/{name}")
    finally:
        stop_agent(agent)
        time.sleep(1.5)
        mark("agent stopped")
        peers.close()
    for (_, before), (name, after) in itertools.pairwise(marks):
        d = delta(after, before)
        run.phases[name] = {"srt": d["srt"].total, "mqtt": d["mqtt"].total}
    whole = delta(marks[-1][1], marks[0][1])
    run.kernel = {"srt": whole["srt"].total, "control": whole["mqtt"].total}
    run.kernel["snapshot"] = (
        run.phases["5 x cmd/snapshot"]["mqtt"] - run.phases["5 x cmd/restart"]["mqtt"]
    )
    usage = json.loads((workdir / "state" / "usage.json").read_text())["months"][-1]
    by_kind = usage["by_kind"]
    run.device = {"srt": by_kind.get("srt", 0),
                  "control": by_kind.get("mqtt", 0) + by_kind.get("snapshot", 0),
                  "snapshot": by_kind.get("snapshot", 0)}  # fmt: skip
    run.device_total = usage["wire_bytes_sent"] + usage["wire_bytes_received"]
    run.kernel_total = whole["srt"].total + whole["mqtt"].total
    return run


# --- 2. the stop ------------------------------------------------------------------------------


@dataclass
class StopRun:
    budget_mb: float
    kbps: int
    kernel_srt: int = 0
    kernel_mqtt: int = 0
    device_used: int = 0
    stream_s: float = 0.0
    received_payload: int = 0

    @property
    def over(self) -> int:
        return self.kernel_srt + self.kernel_mqtt - round(self.budget_mb * 1e6)

    @property
    def measured_kbps(self) -> float:
        return self.received_payload * 8 / max(self.stream_s, 1e-3) / 1000

    @property
    def video_second(self) -> float:
        """One second of video in bytes, at the setting or the rate achieved, whichever is less."""
        return min(self.kbps, self.measured_kbps) * 1000 / 8


def stop_run(links: TwoLinks, budget_mb: float, kbps: int) -> StopRun:
    workdir = Path(tempfile.mkdtemp(prefix="budget-stop-", dir=work_dir("budget")))
    result = StopRun(budget_mb, kbps)
    peers = Peers(links, workdir, tls=False)
    before = links.links()
    agent = start_agent(links, peers, workdir / "state", workdir / "agent.log",
                        "--stream", "--data-budget-mb", str(budget_mb),
                        "--bitrate-kbps", str(kbps))  # fmt: skip
    try:
        peers.wait("reported", lambda d: d.get("streaming"), timeout=60)
        t0 = time.monotonic()
        stopped = peers.wait(
            "reported",
            lambda d: (
                not d.get("streaming") and (d.get("budget") or {}).get("state") == "exhausted"
            ),
            timeout=120,
        )
        result.stream_s = time.monotonic() - t0
        result.device_used = stopped["budget"]["used_bytes"]
        time.sleep(2.0)
        d = delta(links.links(), before)
        result.kernel_srt, result.kernel_mqtt = d["srt"].total, d["mqtt"].total
    finally:
        stop_agent(agent)
        peers.close()
    result.received_payload = peers.srt_out.stat().st_size
    print(f"  stop {budget_mb} MB at {kbps} kbit/s: {result.over:+d} B", flush=True)
    return result


def ratio(device: int, kernel: int) -> str:
    if not kernel:
        return "-"
    r = device / kernel
    return f"{r:.4f} {'PASS' if abs(r - 1) <= 0.02 else 'MISS'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="plain MQTT only, one stop case")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    why_not = NetnsLink.available() or (
        None if shutil.which("srt-live-transmit") else "srt-live-transmit is not installed"
    )
    if why_not:
        print(f"cannot run: {why_not}", file=sys.stderr)
        return 2
    counts: list[CountRun] = []
    stops: list[StopRun] = []
    with TwoLinks() as links:
        for tls in (False,) if args.quick else (False, True):
            counts.append(count_run(links, tls, args.quick))
        cases = [(1.0, 500)] if args.quick else [(1.0, 500), (2.0, 250), (3.0, 1000)]
        for budget_mb, kbps in cases:
            stops.append(stop_run(links, budget_mb, kbps))

    print()
    print(machine_note())
    rows = []
    for c in counts:
        for kind in ("srt", "control", "snapshot"):
            rows.append([c.transport, kind, c.device[kind], c.kernel[kind],
                         ratio(c.device[kind], c.kernel[kind])])  # fmt: skip
        rows.append([c.transport, "total", c.device_total, c.kernel_total,
                     ratio(c.device_total, c.kernel_total)])  # fmt: skip
    print(format_table(
        "The device's count vs the kernel's (IP level, both directions, bytes; target ±2 %)",
        ["MQTT", "kind", "device", "kernel", "device/kernel"],
        rows,
    ))  # fmt: skip
    print("control = MQTT link (mqtt + snapshot kinds); snapshot = MQTT link bytes of 5 snapshots "
          "- those of 5 cmd/restart")  # fmt: skip
    for c in counts:
        print()
        print(format_table(
            f"Kernel bytes per phase ({c.transport})",
            ["phase", "SRT link", "MQTT link"],
            [[name, v["srt"], v["mqtt"]] for name, v in c.phases.items()],
        ))  # fmt: skip
    print()
    print(format_table(
        "Bytes over the budget at the stop (kernel, both links, up to 2 s after the stop)",
        ["budget MB", "kbit/s", "achieved", "streamed s", "SRT link B", "MQTT link B", "over B",
         "over, s of video", "<= 1 s", "device count B", "payload received B"],
        [[s.budget_mb, s.kbps, round(s.measured_kbps), round(s.stream_s, 1), s.kernel_srt,
          s.kernel_mqtt, s.over,
          round(s.over / s.video_second, 3), "PASS" if s.over <= s.video_second else "MISS",
          s.device_used, s.received_payload] for s in stops],
    ))  # fmt: skip
    write_json(args.json, {"machine": machine_note(), "counts": [asdict(c) for c in counts],
                           "stops": [asdict(s) for s in stops]})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
