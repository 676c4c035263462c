"""Kept for benchmarks still landing from other branches (ingest-perf): the /proc readers now
live in :mod:`bench.procstat`. Import from there; delete this file once nothing imports it."""

from bench.procstat import (
    cpu_seconds,
    listening_udp_ports,
    machine_cpu,
    pss_bytes,
    rss_bytes,
    status_kib,
    total_cpu,
    total_pss,
    total_rss,
)

__all__ = [
    "cpu_seconds",
    "listening_udp_ports",
    "machine_cpu",
    "pss_bytes",
    "rss_bytes",
    "status_kib",
    "total_cpu",
    "total_pss",
    "total_rss",
]
