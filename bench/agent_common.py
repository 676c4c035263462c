"""Kept for benchmarks still landing from other branches (hardening, ingest-perf): what this
module held now lives in modules by kind: :mod:`bench.report` (tables, JSON, machine note),
:mod:`bench.procstat` (/proc), :mod:`bench.clips` (synthetic camera, encoded clips),
:mod:`bench.srt_receiver` (counting SRT receiver), :mod:`bench.netns` (veth byte counts).
Import from those; delete this file once nothing imports it."""

import sys

from bench.clips import (
    EncodedClip,
    U8Array,
    encode_frames,
    read_ivf,
    synthetic_frames,
    write_ivf,
)
from bench.netns import (
    IpCounters,
    NetnsLink,
)
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
from bench.report import (
    OUT_DIR,
    REPO_DIR,
    format_table,
    machine_note,
    write_json,
)
from bench.srt_receiver import (
    CountingReceiver,
    ReceiverReport,
    finish_receiver_process,
    python_module,
    receive_main,
    start_receiver_process,
)

__all__ = [
    "OUT_DIR",
    "REPO_DIR",
    "CountingReceiver",
    "EncodedClip",
    "IpCounters",
    "NetnsLink",
    "ReceiverReport",
    "U8Array",
    "cpu_seconds",
    "encode_frames",
    "finish_receiver_process",
    "format_table",
    "listening_udp_ports",
    "machine_cpu",
    "machine_note",
    "pss_bytes",
    "python_module",
    "read_ivf",
    "receive_main",
    "rss_bytes",
    "start_receiver_process",
    "status_kib",
    "synthetic_frames",
    "total_cpu",
    "total_pss",
    "total_rss",
    "write_ivf",
    "write_json",
]

if __name__ == "__main__":
    # `python -m bench.agent_common receive`, as older scripts start the receiver.
    if len(sys.argv) > 1 and sys.argv[1] == "receive":
        raise SystemExit(receive_main(sys.argv[2:]))
    raise SystemExit(2)
