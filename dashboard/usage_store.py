"""The usage history on disk: ``<state_dir>/usage.sqlite3``.

Two tables: ``hourly`` (device, hour, kind → bytes), one row per device, hour and kind, so a
flush adds to a handful of rows instead of rewriting a file; and ``last_sample`` (per device, the
last report the increments were computed from, and when the history began), so a restarted
dashboard continues from where it stopped and counts the hours it was down. Each flush is one
transaction (WAL): a crash leaves the previous flush or the new one, never half of one.

Blocking calls: the tracker runs every one of them in its single worker thread.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .usage_history import HourRows, Sample

FILENAME = "usage.sqlite3"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hourly (
        device TEXT NOT NULL, hour INTEGER NOT NULL, kind TEXT NOT NULL, bytes INTEGER NOT NULL,
        PRIMARY KEY (device, hour, kind)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS last_sample (
        device TEXT PRIMARY KEY NOT NULL, ts REAL NOT NULL, period TEXT NOT NULL,
        counters TEXT NOT NULL, period_start REAL, since REAL NOT NULL)""",
)


class UsageStoreError(ValueError):
    """The state directory or its database cannot be used; the message names the path."""


@dataclass(frozen=True)
class DeviceMark:
    """Where a device's history stands: the last report, and when the history began."""

    sample: Sample
    since: float


def _mark_row(device: str, m: DeviceMark) -> tuple[object, ...]:
    s = m.sample
    return (device, s.ts, s.period, json.dumps(dict(s.counters)), s.period_start, m.since)


class UsageStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One worker thread uses the connection, but not the thread that opened it.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except (OSError, sqlite3.Error) as e:
            raise UsageStoreError(f"usage history {self.path}: cannot open: {e}") from None

    def marks(self) -> dict[str, DeviceMark]:
        out: dict[str, DeviceMark] = {}
        rows = self._db.execute(
            "SELECT device, ts, period, counters, period_start, since FROM last_sample"
        )
        for device, ts, period, counters, period_start, since in rows:
            try:
                parsed = json.loads(counters)
                kinds = {str(k): int(v) for k, v in parsed.items()}
            except (ValueError, TypeError, AttributeError):
                continue  # a row we cannot read starts that device afresh
            sample = Sample(float(ts), str(period), kinds, period_start)
            out[str(device)] = DeviceMark(sample, float(since))
        return out

    def write(
        self,
        rows: Mapping[tuple[str, int, str], int],
        marks: Mapping[str, DeviceMark],
        forget: Iterable[str] = (),
        prune_before: int | None = None,
    ) -> None:
        """Add ``rows`` to the hourly counts, store the devices' marks, drop forgotten devices
        and hours older than ``prune_before``, in one transaction."""
        forget = list(forget)
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT INTO hourly (device, hour, kind, bytes) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(device, hour, kind) DO UPDATE SET bytes = bytes + excluded.bytes",
                [(d, h, k, b) for (d, h, k), b in rows.items()],
            )
            self._db.executemany(
                "INSERT INTO last_sample (device, ts, period, counters, period_start, since) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device) DO UPDATE SET ts = excluded.ts, "
                "period = excluded.period, counters = excluded.counters, "
                "period_start = excluded.period_start, since = excluded.since",
                [_mark_row(d, m) for d, m in marks.items()],
            )
            gone = [(d,) for d in forget]
            self._db.executemany("DELETE FROM hourly WHERE device = ?", gone)
            self._db.executemany("DELETE FROM last_sample WHERE device = ?", gone)
            if prune_before is not None:
                self._db.execute("DELETE FROM hourly WHERE hour < ?", (prune_before,))
                self._db.execute("DELETE FROM last_sample WHERE ts < ?", (prune_before,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if prune_before is not None:
            # Hourly, with the pruning: give the write-ahead log's space back to the disk.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def hours(self, device: str, since_hour: int) -> HourRows:
        rows = self._db.execute(
            "SELECT hour, kind, bytes FROM hourly WHERE device = ? AND hour >= ?",
            (device, since_hour),
        )
        return {(int(h), str(k)): int(b) for h, k, b in rows}

    def close(self) -> None:
        self._db.close()


def check_state_dir(state_dir: str | Path) -> None:
    """Open (and create) the history once, before serving: UsageStoreError names the path."""
    UsageStore(state_dir).close()
