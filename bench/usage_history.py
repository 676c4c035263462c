"""The dashboard's usage history store (SQLite, one row per device, hour and kind) against the
alternative the design names: one JSON file with every device's hours, replaced atomically
(temporary file, fsync, rename) at each flush.

A fleet of N devices with ``--days`` of hourly history for 3 kinds is loaded into both, then the
tracker's workload is replayed: flushes every 10 s that each add the last hour's bytes of the
devices that reported (``--active`` of them), and reads of one device's usage document (its
period and 48 h). Prints the time per flush, per read, and the size on disk.

    python -m bench.usage_history                    # 200 devices, 62 days
    python -m bench.usage_history --devices 1000 --flushes 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flumph.dashboard.usage_history import HOUR_S, KINDS, Sample
from flumph.dashboard.usage_store import DeviceMark, UsageStore

Rows = dict[tuple[str, int, str], int]


class JsonHistory:
    """The peer: every device's hours in one JSON document, rewritten atomically per flush."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.doc: dict[str, dict[str, int]] = {}

    def write(self, rows: Rows) -> None:
        for (device, hour, kind), value in rows.items():
            hours = self.doc.setdefault(device, {})
            key = f"{hour}:{kind}"
            hours[key] = hours.get(key, 0) + value
        fd, tmp = tempfile.mkstemp(dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def hours(self, device: str, since_hour: int) -> dict[tuple[int, str], int]:
        out = {}
        for key, value in self.doc.get(device, {}).items():
            hour, kind = key.split(":")
            if int(hour) >= since_hour:
                out[(int(hour), kind)] = value
        return out


def fleet_rows(devices: int, days: int, now_hour: int) -> Rows:
    rng = random.Random(1)
    rows: Rows = {}
    for d in range(devices):
        for h in range(days * 24):
            hour = now_hour - h * HOUR_S
            for kind in KINDS:
                rows[(f"cam{d}", hour, kind)] = rng.randrange(1, 50_000_000)
    return rows


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--days", type=int, default=62)
    p.add_argument("--active", type=float, default=0.2, help="share reporting per flush")
    p.add_argument("--flushes", type=int, default=10)
    p.add_argument("--reads", type=int, default=20)
    ns = p.parse_args()
    now_hour = int(time.time() // HOUR_S) * HOUR_S
    base = fleet_rows(ns.devices, ns.days, now_hour)
    active = max(1, int(ns.devices * ns.active))
    marks = {
        f"cam{d}": DeviceMark(Sample(time.time(), "p:0", {"srt": 1}, 0.0), 0.0)
        for d in range(active)
    }
    flush_rows = {(f"cam{d}", now_hour, k): 1000 for d in range(active) for k in KINDS}
    since = now_hour - 40 * 86400
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        store = UsageStore(tmp)
        t0 = time.perf_counter()
        store.write(base, {})
        load_sqlite = time.perf_counter() - t0
        sqlite_flush = timed(lambda: store.write(flush_rows, marks), ns.flushes)
        sqlite_read = timed(lambda: store.hours("cam7", since), ns.reads)
        store.write({}, {}, prune_before=0)  # the hourly prune: also checkpoints the WAL
        sqlite_size = sum(f.stat().st_size for f in Path(tmp).glob("usage.sqlite3*"))
        store.close()

        peer = JsonHistory(Path(tmp) / "usage.json")
        t0 = time.perf_counter()
        peer.write(base)
        load_json = time.perf_counter() - t0
        json_flush = timed(lambda: peer.write(flush_rows), ns.flushes)
        json_read = timed(lambda: peer.hours("cam7", since), ns.reads)
        json_size = peer.path.stat().st_size
        results = [
            ("SQLite (flumph)", load_sqlite, sqlite_flush, sqlite_read, sqlite_size),
            ("atomic JSON file", load_json, json_flush, json_read, json_size),
        ]
    print(f"{ns.devices} devices × {ns.days} days × {len(KINDS)} kinds = {len(base):,} hourly "
          f"rows; a flush adds {len(flush_rows)} rows ({active} devices reporting)")  # fmt: skip
    print(f"{'store':<18} {'load s':>8} {'flush ms p50':>13} {'flush ms max':>13} "
          f"{'read ms p50':>12} {'disk MB':>8}")  # fmt: skip
    for name, load, flush, read, size in results:
        print(f"{name:<18} {load:8.2f} {statistics.median(flush) * 1e3:13.1f} "
              f"{max(flush) * 1e3:13.1f} {statistics.median(read) * 1e3:12.2f} "
              f"{size / 1e6:8.1f}")  # fmt: skip
    s, j = results
    print(f"JSON ÷ SQLite: flush {statistics.median(j[2]) / statistics.median(s[2]):.0f}×, "
          f"read {statistics.median(j[3]) / statistics.median(s[3]):.1f}×, "
          f"disk {j[4] / s[4]:.2f}×")  # fmt: skip


if __name__ == "__main__":
    main()
