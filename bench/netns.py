"""IP-level bytes for real: two network namespaces joined by a veth, whose kernel counters give
the bytes per direction (needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass


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
