"""Shared pieces of the control-plane benchmarks (control_idle, control_latency,
control_broker_load): the two brokers as processes (optionally inside a network namespace, and
mosquitto with a TLS listener on a throwaway CA), a minimal MQTT 3.1.1 codec for load clients,
percentiles.

Why a codec of our own for the load clients: a paho client costs a thread and ~1 ms of Python
per message; thousands of simulated devices must not make the client side the bottleneck.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import OUT_DIR, REPO_DIR

# --- brokers ----------------------------------------------------------------------------------


@dataclass
class BrokerProc:
    kind: str  # embedded | mosquitto
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    tls_port: int | None = None
    ca_file: Path | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{self.host}:{self.tls_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _netns(ns: str | None, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else argv


def wait_listening(
    host: str, port: int, proc: subprocess.Popen[bytes], log: Path, ns: str | None = None
) -> None:
    deadline = time.monotonic() + 20
    probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=0.5).close()"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}:\n{log.read_text()}")
        if ns is None:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return
            except OSError:
                pass
        elif (
            subprocess.run(
                _netns(ns, [sys.executable, "-c", probe]), capture_output=True
            ).returncode
            == 0
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"broker did not listen on {host}:{port}:\n{log.read_text()}")


def make_tls_files(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``ip`` (IP SAN): (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{ip}\n")

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=flumph bench CA")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={ip}")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def start_mosquitto(
    workdir: Path, host: str = "127.0.0.1", ns: str | None = None, tls: bool = False
) -> BrokerProc:
    """Debian's mosquitto, anonymous, no persistence; with ``tls`` a second listener on a
    throwaway CA (TLS 1.2+, the server's default ciphers)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port() if ns is None else 1883
    tls_port = (free_port() if ns is None else 8883) if tls else None
    lines = ["per_listener_settings false", "allow_anonymous true", "log_dest stderr",
             "log_type error", "log_type warning", f"listener {port} {host}"]  # fmt: skip
    if os.geteuid() == 0:
        lines.append("user root")  # mosquitto would switch to its own user otherwise
    ca = None
    if tls_port is not None:
        ca, cert, key = make_tls_files(workdir / "tls", host)
        lines += [
            f"listener {tls_port} {host}",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
        ]
    conf = workdir / f"mosquitto-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / f"mosquitto-{port}-{time.monotonic_ns()}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            _netns(ns, ["mosquitto", "-c", str(conf)]), stdout=f, stderr=subprocess.STDOUT
        )
    wait_listening(host, port, proc, log, ns)
    if tls_port is not None:
        wait_listening(host, tls_port, proc, log, ns)
    return BrokerProc("mosquitto", host, port, proc, log, tls_port, ca)


def start_embedded(workdir: Path, host: str = "127.0.0.1", ns: str | None = None) -> BrokerProc:
    """``python -m flumph broker``, anonymous (no passwd file, so no ACL), fresh state dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port() if ns is None else 1883
    state = workdir / f"embedded-state-{port}-{time.monotonic_ns()}"
    log = workdir / f"embedded-{port}-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUMPH_")}
    argv = [sys.executable, "-m", "flumph", "broker", "--host", host, "--port", str(port),
            "--state-dir", str(state), "--log-level", "warning"]  # fmt: skip
    with log.open("wb") as f:
        proc = subprocess.Popen(
            _netns(ns, argv), stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO_DIR
        )
    wait_listening(host, port, proc, log, ns)
    return BrokerProc("embedded", host, port, proc, log)


def start_broker(
    kind: str, workdir: Path, host: str = "127.0.0.1", ns: str | None = None
) -> BrokerProc:
    if kind == "mosquitto":
        return start_mosquitto(workdir, host, ns)
    if kind == "embedded":
        return start_embedded(workdir, host, ns)
    raise ValueError(f"unknown broker {kind!r} (embedded | mosquitto)")


def broker_pid(broker: BrokerProc) -> int:
    """The broker's own pid (under ``ip netns exec`` the Popen pid execs into it, same pid)."""
    return broker.proc.pid


def work_dir(name: str) -> Path:
    d = OUT_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --- a minimal MQTT 3.1.1 codec (load clients only) --------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(client_id: str, keepalive_s: int) -> bytes:
    # protocol name, level 4, flags: clean session
    return _packet(
        0x10, _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive_s) + _utf8(client_id)
    )


def publish_packet(topic: str, payload: bytes) -> bytes:
    """QoS 0, not retained."""
    return _packet(0x30, _utf8(topic) + payload)


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 0) -> bytes:
    return _packet(0x82, struct.pack("!H", packet_id) + _utf8(topic_filter) + bytes([qos]))


PINGREQ = b"\xc0\x00"


class PacketReader:
    """Splits a byte stream into (first byte, body) MQTT packets."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            if len(self._buf) < 2:
                return out
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(self._buf):
                    return out
                byte = self._buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
                if i > 4:
                    raise ValueError("malformed MQTT remaining length")
            if len(self._buf) < i + length:
                return out
            out.append((self._buf[0], bytes(self._buf[i : i + length])))
            del self._buf[: i + length]


def parse_publish(first: int, body: bytes) -> tuple[str, bytes]:
    """(topic, payload) of a PUBLISH body."""
    (n,) = struct.unpack_from("!H", body)
    topic = body[2 : 2 + n].decode()
    offset = 2 + n + (2 if first & 0x06 else 0)  # packet id when QoS > 0
    return topic, body[offset:]
