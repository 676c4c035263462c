"""Idle control-plane bytes per hour on the wire: a real idle `flumph agent` vs a bare paho client
at paho's default keepalive of 60 s (the peer), plain MQTT and TLS.

The client runs in one network namespace and mosquitto in another, joined by a veth whose kernel
counters (both directions, minus the 14 B Ethernet header a frame; ARP pinned away) are sampled
every 0.1 s.
Traffic arrives in bursts ("events": a keepalive exchange, a heartbeat); each event's bytes and
IP packets are measured directly, then bytes/hour = 3600/K x ping + 3600/H x heartbeat. One
direct run at a short keepalive and heartbeat checks that model against the total counted.

    python -m bench.control_idle --quick            # ~3 min
    python -m bench.control_idle --json bench/out/control_idle.json   # ~8 min
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.control_common import BrokerProc, start_mosquitto, verdict, work_dir
from bench.netns import IpCounters, NetnsLink
from bench.report import REPO_DIR, format_table, machine_note, write_json
from flumph.mqtt import DEFAULT_KEEPALIVE_S

PEER_KEEPALIVE_S = 60  # paho's default
HEARTBEAT_S = 3600  # the agent's default idle heartbeat
TARGET_BYTES_PER_HOUR = 2000
SAMPLE_S = 0.1
EVENT_GAP_S = 1.0  # counter changes closer than this belong to one event

# A bare paho client: what an MQTT device with library defaults costs while idle.
_PEER = """
import ssl, sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port, keepalive, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-peer",
                protocol=mqtt.MQTTv311)
if ca:
    c.tls_set_context(ssl.create_default_context(cafile=ca))
c.connect(host, port, keepalive=keepalive)
c.loop_forever()
"""


@dataclass
class Event:
    at: float
    bytes: int
    packets: int


@dataclass
class Run:
    client: str  # agent | paho
    transport: str  # plain | tls
    keepalive_s: int
    heartbeat_s: int | None
    window_s: float
    total_bytes: int = 0
    total_packets: int = 0
    events: list[Event] = field(default_factory=list)


ETHERNET_HEADER = 14


def _total(c: IpCounters) -> tuple[int, int]:
    """IP bytes and packets through the veth, both directions.

    Not the namespace's IpExt octets: paho wakes its network thread through a TCP socket pair on
    127.0.0.1, so every publish from another thread also moves ~200 B over loopback, which never
    reaches a network. The veth's link counters see only the wire; neighbours are made permanent
    (see ``pin_neighbours``), so every frame is IPv4 with a 14 B Ethernet header.
    """
    packets = c.link_tx_packets + c.link_rx_packets
    return c.link_tx_bytes + c.link_rx_bytes - ETHERNET_HEADER * packets, packets


def _veth(link: NetnsLink, ns: str) -> tuple[str, str]:
    """(name, MAC) of the one non-loopback interface in ``ns``."""
    out = subprocess.run(link.command(ns, ["ip", "-o", "link", "show"]), capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            return name, line.split("link/ether")[1].split()[0]
    raise RuntimeError(f"no veth in namespace {ns}")


def pin_neighbours(link: NetnsLink) -> None:
    """Permanent ARP entries both ways, so no ARP frame ever crosses the veth."""
    s_dev, s_mac = _veth(link, link.sender_ns)
    r_dev, r_mac = _veth(link, link.receiver_ns)
    for ns, dev, address, mac in (
        (link.sender_ns, s_dev, link.RECEIVER_ADDRESS, r_mac),
        (link.receiver_ns, r_dev, link.SENDER_ADDRESS, s_mac),
    ):
        cmd = ["ip", "neigh", "replace", address, "lladdr", mac, "dev", dev, "nud", "permanent"]
        subprocess.run(link.command(ns, cmd), check=True, capture_output=True)


def client_command(
    link: NetnsLink, broker: BrokerProc, client: str, tls: bool, keepalive_s: int, heartbeat_s: int
) -> list[str]:
    port = broker.tls_port if tls else broker.port
    ca = str(broker.ca_file) if tls and broker.ca_file else ""
    if client == "paho":
        argv = [sys.executable, "-c", _PEER, broker.host, str(port), str(keepalive_s), ca]
    else:
        scheme = "mqtts" if tls else "mqtt"
        argv = [sys.executable, "-m", "flumph", "agent", "--device-id", "bench-idle",
                "--mqtt", f"{scheme}://{broker.host}:{port}",
                "--mqtt-keepalive-s", str(keepalive_s),
                "--heartbeat-interval-s", str(heartbeat_s),
                # never contacted: the agent stays idle without --stream
                "--ingest", f"srt://{broker.host}:9000", "--source", "synthetic",
                "--log-level", "warning"]  # fmt: skip
        if ca:
            argv += ["--mqtt-ca-file", ca]
    return link.command(link.sender_ns, argv)


def settle(link: NetnsLink, proc: subprocess.Popen[bytes], quiet_s: float, limit_s: float) -> None:
    """Wait until the client has connected (bytes moved) and then been quiet for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    last, last_change = _total(link.counters())[0], time.monotonic()
    moved = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"client exited with {proc.returncode}")
        time.sleep(SAMPLE_S)
        now_bytes = _total(link.counters())[0]
        if now_bytes != last:
            moved, last, last_change = True, now_bytes, time.monotonic()
        elif moved and time.monotonic() - last_change >= quiet_s:
            return
    raise RuntimeError("client did not connect and go quiet in time")


def measure(
    link: NetnsLink,
    broker: BrokerProc,
    client: str,
    tls: bool,
    keepalive_s: int,
    heartbeat_s: int,
    window_s: float,
) -> Run:
    run = Run(client, "tls" if tls else "plain", keepalive_s,
              heartbeat_s if client == "agent" else None, window_s)  # fmt: skip
    log = (work_dir("control") / f"idle-{client}-{run.transport}-{keepalive_s}.log").open("wb")
    cmd = client_command(link, broker, client, tls, keepalive_s, heartbeat_s)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_DIR)
    try:
        # Quiet for 2 s, shorter than any keepalive or heartbeat measured here (>= 5 s).
        settle(link, proc, quiet_s=2.0, limit_s=60)
        start_bytes, start_packets = _total(link.counters())
        t0 = time.monotonic()
        prev_b, prev_p = start_bytes, start_packets
        current: Event | None = None
        last_change = t0
        while (now := time.monotonic()) - t0 < window_s:
            time.sleep(SAMPLE_S)
            b, p = _total(link.counters())
            now = time.monotonic()
            if b != prev_b:
                if current is None or now - last_change > EVENT_GAP_S:
                    current = Event(round(now - t0, 2), 0, 0)
                    run.events.append(current)
                current.bytes += b - prev_b
                current.packets += p - prev_p
                last_change = now
            prev_b, prev_p = b, p
        run.total_bytes, run.total_packets = prev_b - start_bytes, prev_p - start_packets
        if proc.poll() is not None:
            raise RuntimeError(f"client exited during the window with {proc.returncode}")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return run


def typical(events: list[Event]) -> Event | None:
    """The median event (by bytes): robust to a stray retransmission."""
    if not events:
        return None
    ordered = sorted(events, key=lambda e: e.bytes)
    return ordered[len(ordered) // 2]


def per_hour(ping: int, keepalive_s: int, heartbeat: int, heartbeat_s: int | None) -> float:
    hb = 3600 / heartbeat_s * heartbeat if heartbeat_s else 0.0
    return 3600 / keepalive_s * ping + hb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter windows (~3 min in all)")
    p.add_argument("--json", type=Path, help="write every figure here")
    args = p.parse_args(argv)
    why_not = NetnsLink.available()
    if why_not:
        print(f"cannot run: {why_not}", file=sys.stderr)
        return 2
    window = 20.0 if args.quick else 45.0
    fast_k = 5  # the shortest keepalive the settings allow: many pings in a short window
    check_k, check_h, check_window = (10, 30, 60.0) if args.quick else (20, 60, 180.0)

    runs: dict[str, Run] = {}
    with NetnsLink() as link:
        pin_neighbours(link)
        broker = start_mosquitto(
            work_dir("control") / "idle-mosquitto",
            host=link.RECEIVER_ADDRESS,
            ns=link.receiver_ns,
            tls=True,
        )
        try:
            for tls in (False, True):
                t = "tls" if tls else "plain"
                print(f"[{t}] pings: agent, then paho peer, keepalive {fast_k} s, {window:.0f} s")
                runs[f"agent-{t}-ping"] = measure(link, broker, "agent", tls, fast_k, 3600, window)
                runs[f"paho-{t}-ping"] = measure(link, broker, "paho", tls, fast_k, 0, window)
                print(f"[{t}] heartbeats: agent, heartbeat every 5 s, keepalive 300 s")
                # keepalive 300 here only keeps pings out of the 5 s heartbeat measurement
                runs[f"agent-{t}-heartbeat"] = measure(link, broker, "agent", tls, 300, 5, window)
            print(f"[plain] model check: agent, keepalive {check_k} s, heartbeat {check_h} s")
            runs["agent-plain-check"] = measure(
                link, broker, "agent", False, check_k, check_h, check_window
            )
        finally:
            broker.stop()

    rows: list[list[object]] = []
    model: dict[str, Any] = {}
    for t in ("plain", "tls"):
        ping = typical(runs[f"agent-{t}-ping"].events)
        peer_ping = typical(runs[f"paho-{t}-ping"].events)
        hb = typical(runs[f"agent-{t}-heartbeat"].events)
        if ping is None or peer_ping is None or hb is None:
            raise RuntimeError(f"no events measured for {t}")
        agent_h = per_hour(ping.bytes, DEFAULT_KEEPALIVE_S, hb.bytes, HEARTBEAT_S)
        peer_h = per_hour(peer_ping.bytes, PEER_KEEPALIVE_S, 0, None)
        model[t] = {"ping": asdict(ping), "peer_ping": asdict(peer_ping),
                    "heartbeat": asdict(hb), "agent_bytes_per_hour": agent_h,
                    "peer_bytes_per_hour": peer_h}  # fmt: skip
        target = verdict(agent_h <= TARGET_BYTES_PER_HOUR) if t == "plain" else "-"
        rows.append(["flumph agent", t, DEFAULT_KEEPALIVE_S, HEARTBEAT_S,
                     f"{ping.bytes}/{ping.packets}", f"{hb.bytes}/{hb.packets}",
                     round(agent_h / 1000, 2), round(agent_h / peer_h, 2), target])  # fmt: skip
        rows.append(["paho bare (peer)", t, PEER_KEEPALIVE_S, "-",
                     f"{peer_ping.bytes}/{peer_ping.packets}", "-",
                     round(peer_h / 1000, 2), 1.0, "-"])  # fmt: skip
    print()
    print(machine_note())
    print(format_table(
        "Idle control plane, IP level both directions (mosquitto; KB = 1000 B)",
        ["client", "transport", "keepalive s", "heartbeat s", "ping B/pkts",
         "heartbeat B/pkts", "KB/h", "vs peer", "<=2 KB/h plain"],
        rows,
    ))  # fmt: skip

    check = runs["agent-plain-check"]
    plain = model["plain"]
    predicted = check.window_s / check_k * plain["ping"]["bytes"]
    predicted += check.window_s / check_h * plain["heartbeat"]["bytes"]
    print()
    print(format_table(
        "Model check: the agent at a short keepalive, all bytes counted directly (plain)",
        ["keepalive s", "heartbeat s", "window s", "events", "measured B", "model B",
         "measured/model", "measured KB/h"],
        [[check_k, check_h, round(check.window_s), len(check.events), check.total_bytes,
          round(predicted), round(check.total_bytes / predicted, 3),
          round(check.total_bytes * 3600 / check.window_s / 1000, 2)]],
    ))  # fmt: skip
    print(
        "\nping = one keepalive exchange (PINGREQ, PINGRESP, ACK); heartbeat = one idle telemetry "
        "PUBLISH (QoS 0) and its ACK;\nKB/h = 3600/keepalive x ping + 3600/heartbeat x heartbeat."
    )
    write_json(args.json, {"machine": machine_note(), "model": model,
                           "runs": {k: asdict(v) for k, v in runs.items()}})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
