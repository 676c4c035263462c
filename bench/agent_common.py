"""Shared pieces of the agent benchmarks (agent_wire, agent_quality, agent_cpu).

- the synthetic camera rendered on a fixed clock (so a clip is the same whatever the machine's
  speed), encoded with the agent's own encoders, kept as IVF/raw + a JSON sidecar;
- /proc readings (process CPU and RSS, machine busy share);
- a counting SRT receiver, in-process or as ``python -m bench.agent_common receive``;
- a pair of network namespaces joined by a veth, whose kernel counters give IP-level bytes per
  direction for real (needs root);
- table printing and JSON output.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

OUT_DIR = Path(__file__).resolve().parent / "out"
REPO_DIR = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")

U8Array = npt.NDArray[np.uint8]

# --- output -----------------------------------------------------------------------------------


def format_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "-" * len(title)]
    for n, row in enumerate(cells):
        padded = (c.rjust(w) if n else c.ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append("  ".join(padded))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_json(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nJSON written to {path}")


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


# --- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` so far (0 once it has gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores, from /proc/stat: everyone's load, other tenants'
    included."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


# --- the synthetic camera on a fixed clock -----------------------------------------------------


def synthetic_frames(
    width: int, height: int, fps: int, count: int, seed: int = 7
) -> Iterator[U8Array]:
    """``count`` I420 pictures (shape (h*3/2, w)) of the agent's synthetic camera, frame i shown as
    if captured i/fps seconds after the start, however fast this machine renders."""
    from flumph.agent.sources import SyntheticSource

    source = SyntheticSource(width, height, fps, seed=seed)
    wall0 = 1_767_225_600.0  # a fixed clock for the overlay text (2026-01-01 00:00 UTC)
    for i in range(count):
        # The source moves with time.monotonic(); putting its start i/fps back makes the motion
        # depend on the frame index alone (a private attribute, on purpose: bench-only).
        source._t0 = time.monotonic() - i / fps
        yield source.render(i, wall0 + i / fps)


# --- encoded clips ----------------------------------------------------------------------------


@dataclass
class EncodedClip:
    codec: str  # av1 | hevc | h264
    encoder: str
    width: int
    height: int
    fps: int
    target_kbps: int
    extradata: bytes
    packets: list[bytes] = field(default_factory=list)
    keyframes: list[bool] = field(default_factory=list)
    encode_wall_s: float = 0.0  # inside encode() calls
    encode_cpu_s: float = 0.0  # process CPU (all threads) inside encode() calls

    @property
    def video_bytes(self) -> int:
        return sum(len(p) for p in self.packets)

    @property
    def seconds(self) -> float:
        return len(self.packets) / self.fps

    @property
    def achieved_kbps(self) -> float:
        return self.video_bytes * 8 / self.seconds / 1000 if self.packets else 0.0

    def sidecar(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "encoder": self.encoder,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "target_kbps": self.target_kbps,
            "extradata": self.extradata.hex(),
            "keyframes": [i for i, k in enumerate(self.keyframes) if k],
            "frames": len(self.packets),
            "video_bytes": self.video_bytes,
            "encode_wall_s": self.encode_wall_s,
            "encode_cpu_s": self.encode_cpu_s,
        }


def encode_frames(
    codec: str, width: int, height: int, fps: int, kbps: int, frames: Iterator[U8Array]
) -> EncodedClip:
    """Encode I420 pictures with the encoder the agent would open for ``codec`` here (software
    only: hardware probing is skipped), with the agent's settings."""
    import av

    from flumph.agent.encoders import SOFTWARE, EncoderSelector
    from flumph.settings import StreamSettings

    settings = StreamSettings(codec=codec, width=width, height=height, fps=fps, bitrate_kbps=kbps)
    encoder = EncoderSelector(available={SOFTWARE[codec]}).open(settings).encoder
    clip = EncodedClip(codec, encoder.name, width, height, fps, kbps, b"")
    for n, picture in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        packets = encoder.encode(frame, force_keyframe=n == 0)
        clip.encode_wall_s += time.perf_counter() - wall0
        clip.encode_cpu_s += time.process_time() - cpu0
        for p in packets:
            clip.packets.append(p.data)
            clip.keyframes.append(p.keyframe)
    for p in encoder.flush():
        clip.packets.append(p.data)
        clip.keyframes.append(p.keyframe)
    clip.extradata = encoder.extradata
    return clip


# AV01 is what ffmpeg reads; H265/H264 in IVF are only for our own reader (bench files).
_IVF_FOURCC = {"av1": b"AV01", "hevc": b"H265", "h264": b"H264"}


def write_ivf(path: Path, clip: EncodedClip) -> None:
    """The clip as IVF (what ``ffmpeg -i`` reads with timestamps) + ``<path>.json`` sidecar."""
    fourcc = _IVF_FOURCC.get(clip.codec)
    if fourcc is None:
        raise ValueError(f"codec {clip.codec!r} is not one of av1, hevc, h264")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(b"DKIF")
        f.write(
            struct.pack(
                "<HH4sHHIIII",
                0,
                32,
                fourcc,
                clip.width,
                clip.height,
                clip.fps,
                1,
                len(clip.packets),
                0,
            )
        )
        for pts, packet in enumerate(clip.packets):
            f.write(struct.pack("<IQ", len(packet), pts) + packet)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(clip.sidecar(), indent=1))


def read_ivf(path: Path) -> EncodedClip:
    meta = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    data = path.read_bytes()
    if data[:4] != b"DKIF":
        raise ValueError(f"{path} is not an IVF file")
    pos = struct.unpack_from("<H", data, 6)[0]
    packets = []
    while pos < len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        packets.append(data[pos + 12 : pos + 12 + size])
        pos += 12 + size
    keys = set(meta["keyframes"])
    return EncodedClip(
        meta["codec"],
        meta["encoder"],
        meta["width"],
        meta["height"],
        meta["fps"],
        meta["target_kbps"],
        bytes.fromhex(meta["extradata"]),
        packets,
        [i in keys for i in range(len(packets))],
        meta["encode_wall_s"],
        meta["encode_cpu_s"],
    )


# --- a counting SRT receiver ------------------------------------------------------------------


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
    p = argparse.ArgumentParser(prog="python -m bench.agent_common receive")
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


# --- IP-level bytes through a veth between two network namespaces ------------------------------


@dataclass(frozen=True)
class IpCounters:
    """Kernel counters of the sender's namespace: IP octets out (upstream) and in (downstream),
    and the veth's link counters (Ethernet frames, ARP included)."""

    ip_out_octets: int
    ip_in_octets: int
    ip_out_packets: int
    ip_in_packets: int
    link_tx_bytes: int
    link_rx_bytes: int
    link_tx_packets: int
    link_rx_packets: int

    def minus(self, before: IpCounters) -> IpCounters:
        a, b = asdict(self), asdict(before)
        return IpCounters(**{k: a[k] - b[k] for k in a})


class NetnsLink:
    """Two network namespaces (sender, receiver) joined by a veth pair, IPv6 off so that only our
    IPv4 traffic crosses it. Both namespaces are private to this run and removed on exit.

    Why: per-direction IP-level bytes counted by the kernel itself, not by SRT's own estimate; the
    addresses exist only inside these two namespaces (link-local 169.254.77.0/30).
    """

    SENDER_ADDRESS = "169.254.77.1"
    RECEIVER_ADDRESS = "169.254.77.2"

    def __init__(self) -> None:
        tag = f"fw{os.getpid() % 100000}"
        self.sender_ns, self.receiver_ns = f"{tag}s", f"{tag}r"
        self._veth_sender, self._veth_receiver = f"{tag}a", f"{tag}b"

    @staticmethod
    def available() -> str | None:
        """None if usable, else why not."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
            return "`ip netns` does not work here"
        return None

    def _ip(self, *args: str, ns: str | None = None) -> str:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
        return done.stdout

    def __enter__(self) -> NetnsLink:
        try:
            for ns in (self.sender_ns, self.receiver_ns):
                self._ip("ip", "netns", "add", ns)
                self._ip("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", ns=ns)
                self._ip("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
                self._ip("ip", "link", "set", "lo", "up", ns=ns)
            self._ip(
                "ip",
                "link",
                "add",
                self._veth_sender,
                "netns",
                self.sender_ns,
                "type",
                "veth",
                "peer",
                "name",
                self._veth_receiver,
                "netns",
                self.receiver_ns,
            )
            for ns, dev, address in (
                (self.sender_ns, self._veth_sender, self.SENDER_ADDRESS),
                (self.receiver_ns, self._veth_receiver, self.RECEIVER_ADDRESS),
            ):
                self._ip("ip", "addr", "add", f"{address}/30", "dev", dev, ns=ns)
                self._ip("ip", "link", "set", dev, "up", ns=ns)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.sender_ns, self.receiver_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def counters(self) -> IpCounters:
        dev = self._veth_sender
        out = self._ip(
            "sh",
            "-c",
            f"cat /proc/net/snmp /proc/net/netstat; cd /sys/class/net/{dev}/statistics && "
            "cat tx_bytes rx_bytes tx_packets rx_packets",
            ns=self.sender_ns,
        )
        lines = out.splitlines()
        ip = _snmp_table(lines, "Ip:")
        ipext = _snmp_table(lines, "IpExt:")
        tx_b, rx_b, tx_p, rx_p = (int(v) for v in lines[-4:])
        return IpCounters(
            ipext["OutOctets"],
            ipext["InOctets"],
            ip["OutRequests"],
            ip["InReceives"],
            tx_b,
            rx_b,
            tx_p,
            rx_p,
        )

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def _snmp_table(lines: list[str], prefix: str) -> dict[str, int]:
    rows = [line.split()[1:] for line in lines if line.startswith(prefix)]
    if len(rows) < 2:
        raise ValueError(f"{prefix} counters missing from /proc/net")
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=True)}


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
    print("usage: python -m bench.agent_common receive --port P [--host H] [--timeout S]")
    raise SystemExit(2)
