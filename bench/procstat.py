"""What the kernel says about processes and the machine, read from /proc (Linux): CPU time and
memory of a process (all its threads included), the machine's busy share, bound UDP ports. The one
place the benchmarks read /proc."""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process so far (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS``, ``VmHWM``), 0 once the process has gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS: resident memory, shared library pages included."""
    return status_kib(pid, "VmRSS") * 1024


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages divided among the processes sharing them, so a sum over
    many processes of one program is not inflated by the libraries they all map."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def total_cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def total_rss(pids: Iterable[int]) -> int:
    return sum(rss_bytes(p) for p in pids)


def total_pss(pids: Iterable[int]) -> int:
    return sum(pss_bytes(p) for p in pids)


def listening_udp_ports() -> set[int]:
    """Local UDP ports with a bound socket (IPv4 and IPv6), from /proc/net/udp*."""
    ports: set[int] = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    local = line.split()[1]
                    ports.add(int(local.rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores summed (/proc/stat):
    everyone's load, other tenants' included."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / _TICKS, total / _TICKS


def thread_cpu(pid: int) -> dict[str, float]:
    """utime + stime so far of each thread of ``pid``, summed by thread name (``comm``: libsrt
    names its threads ``SRT:RcvQ``, ``SRT:SndQ``, ``SRT:TsbPd``, ...; Python's ``threading`` names
    are not visible here, ``srt-epoll`` shows as ``python``-ish unless set). Threads that ended are
    missing, so take differences over a window where the set is stable."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                raw = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return out
