"""Is a port free for the server that will bind it? Checked before anything starts, so that a
busy port is one line naming the port and the flag to change, with exit code 1, instead of a
server that half-starts and dies with a traceback.

Each check binds the way the server it guards will:

- TCP (uvicorn, the embedded MQTT broker): asyncio's ``create_server`` sets ``SO_REUSEADDR`` on
  every listening socket, so a port whose only users are connections in TIME_WAIT (a server
  stopped a moment ago: ``flumph up`` restarted right after Ctrl-C) is free to it. Without the
  option the check would refuse that port for up to a minute while the server itself would bind.
  A port that something *listens* on is refused either way.
- UDP (the SRT listener): bound without ``SO_REUSEADDR``. UDP has no TIME_WAIT, and on Linux two
  UDP sockets that both set ``SO_REUSEADDR`` may share a port, so a check with it could pass
  while another SRT listener holds the port and steals half its packets; without it, any holder
  is found.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PortWanted:
    flag: str  # the command-line option that changes it, e.g. "--port"
    host: str
    port: int
    udp: bool = False
    host_flag: str = "--host"

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{'udp' if self.udp else 'tcp'}"


def _addresses(host: str, port: int, kind: int) -> list[tuple[int, tuple[object, ...]]]:
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)
    seen: list[tuple[int, tuple[object, ...]]] = []
    for family, _, _, _, address in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address) not in seen:
            seen.append((family, address))
    return seen


def bind_problem(wanted: PortWanted) -> str | None:
    """Why ``wanted`` cannot be bound now (one line that names the flag), or None if it can."""
    if wanted.port == 0:
        return None  # any free port: nothing to collide with
    kind = socket.SOCK_DGRAM if wanted.udp else socket.SOCK_STREAM
    try:
        addresses = _addresses(wanted.host, wanted.port, kind)
    except OSError as e:
        return (
            f"cannot bind {wanted.label}: {wanted.host!r} does not resolve ({e}): "
            f"check {wanted.host_flag}"
        )
    for family, address in addresses:
        with socket.socket(family, kind) as s:
            if not wanted.udp:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except PermissionError:
                return (
                    f"{wanted.label}: permission denied (ports below 1024 need privileges): "
                    f"choose another with {wanted.flag}"
                )
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return (
                        f"{wanted.label} is in use: stop what holds it or choose another "
                        f"with {wanted.flag}"
                    )
                if e.errno == errno.EADDRNOTAVAIL:
                    return (
                        f"cannot bind {wanted.label}: {wanted.host} is not an address of this "
                        f"machine: check {wanted.host_flag}"
                    )
                return f"cannot bind {wanted.label}: {e.strerror or e}"
    return None


def first_problem(wanted: Iterable[PortWanted]) -> str | None:
    for w in wanted:
        problem = bind_problem(w)
        if problem is not None:
            return problem
    return None
