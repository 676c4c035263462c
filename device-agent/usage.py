"""Bytes used per budget period, by kind of traffic, kept on disk across restarts and reboots.

A period starts at 00:00 UTC on ``budget_reset_day`` (see :mod:`.budget`); each record counts
IP-level bytes both ways in total and ``by_kind`` (``srt``, ``mqtt``, ``snapshot``), the SRT
payload bytes, and the one-shot allowances granted in that period. Changing the reset day keeps
the current count: the running record is moved to the period the new day gives (a count cannot
be split by day after the fact, and counting it twice or not at all would be worse on a bill).

The file (``<state_dir>/usage.json``) is replaced atomically (temporary file, fsync, rename), so a
power cut leaves the old or the new count, never a torn one; the guard saves every 10 s (every
second past 80 % of the budget) and on stop. Closed periods are kept (the last 12). A version 1
file (local calendar months, SRT only) is read: its record for the current month goes on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flumph.agent.budget import period_label, period_start

log = logging.getLogger("flumph.agent.usage")

FILE_NAME = "usage.json"
KINDS = ("srt", "mqtt", "snapshot")
_KEPT_PERIODS = 12
_VERSION = 2


@dataclass
class MonthUsage:
    """One budget period's counters (named for the month its period starts in)."""

    month: str  # "YYYY-MM" of the period's first day, UTC
    period_start: float = 0.0
    wire_bytes_sent: int = 0  # IP level, every kind
    wire_bytes_received: int = 0
    payload_bytes_sent: int = 0  # SRT payload (our Matroska bytes, retransmissions included)
    payload_bytes_received: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # IP level, both directions
    allowance_bytes: int = 0  # one-shot grants in this period
    latched_limit: int | None = None  # the limit at which a send found no room (exhausted)

    @property
    def wire_bytes_total(self) -> int:
        return self.wire_bytes_sent + self.wire_bytes_received

    def copy(self) -> MonthUsage:
        return MonthUsage(**{**asdict(self), "by_kind": dict(self.by_kind)})


def _record(doc: Any) -> MonthUsage:
    """One stored record; raises TypeError/ValueError on anything else."""
    if not isinstance(doc, dict):
        raise TypeError("a period record must be an object")
    m = MonthUsage(**doc)
    if not isinstance(m.by_kind, dict) or not isinstance(m.period_start, int | float):
        raise ValueError(f"period {m.month!r}: by_kind must be an object, period_start a time")
    if m.latched_limit is not None and (
        not isinstance(m.latched_limit, int) or isinstance(m.latched_limit, bool)
    ):
        raise ValueError(f"period {m.month!r}: latched_limit must be a count")
    counters = (m.wire_bytes_sent, m.wire_bytes_received, m.payload_bytes_sent,
                m.payload_bytes_received, m.allowance_bytes, *m.by_kind.values())  # fmt: skip
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in counters):
        raise ValueError(f"period {m.month!r} has a counter that is not a count")
    return m


def _month_start(label: str) -> float:
    """00:00 UTC on the 1st of a version 1 record's "YYYY-MM" (it counted a local month)."""
    return datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC).timestamp()


class UsageStore:
    """Thread-safe counters: ``add`` from the transport and the MQTT meter; saved by the guard."""

    def __init__(
        self, state_dir: Path, clock: Callable[[], float] = time.time, reset_day: int = 1
    ) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._clock = clock
        self._reset_day = reset_day
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._history: dict[float, MonthUsage] = {}
        self._current = self._fresh(clock())
        self._dirty = False
        self._load()

    def _fresh(self, now: float) -> MonthUsage:
        start = period_start(now, self._reset_day)
        return MonthUsage(period_label(start), start)

    def _load(self) -> None:
        current = self._current
        try:
            doc = json.loads(self.path.read_text())
            records = doc.get("months", []) if isinstance(doc, dict) else None
            if not isinstance(records, list):
                raise ValueError("no list of periods")
            periods = [_record(m) for m in records]
            if doc.get("version", 1) == 1:  # local months: the current one goes on
                for m in periods:
                    is_current = m.month == current.month
                    m.period_start = current.period_start if is_current else _month_start(m.month)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as e:
            # A counter we cannot read must not stop the camera; start over and say so.
            log.error("usage file %s unreadable (%s); counting from zero", self.path, e)
            return
        for m in periods:
            self._history[m.period_start] = m
        if current.period_start in self._history:
            self._current = self._history.pop(current.period_start)

    def _roll(self) -> None:
        start = period_start(self._clock(), self._reset_day)
        if start != self._current.period_start:
            self._history[self._current.period_start] = self._current
            known = self._history.pop(start, None)
            self._current = known if known is not None else MonthUsage(period_label(start), start)
            self._dirty = True

    def set_reset_day(self, reset_day: int) -> None:
        """Periods start on ``reset_day`` from now on; the running count moves with it."""
        with self._lock:
            if reset_day == self._reset_day:
                return
            self._reset_day = reset_day
            start = period_start(self._clock(), reset_day)
            if start != self._current.period_start:
                self._history.pop(start, None)  # a stale record there is replaced, not merged
                self._current.period_start, self._current.month = start, period_label(start)
            self._dirty = True

    def add(
        self, kind: str = "srt", *, wire_sent: int = 0, wire_received: int = 0,
        payload_sent: int = 0, payload_received: int = 0,
    ) -> None:  # fmt: skip
        if kind not in KINDS:
            raise ValueError(f"unknown traffic kind {kind!r} (known: {', '.join(KINDS)})")
        if min(wire_sent, wire_received, payload_sent, payload_received) < 0:
            raise ValueError("usage increments must not be negative")
        with self._lock:
            self._roll()
            c = self._current
            c.wire_bytes_sent += wire_sent
            c.wire_bytes_received += wire_received
            c.payload_bytes_sent += payload_sent
            c.payload_bytes_received += payload_received
            c.by_kind[kind] = c.by_kind.get(kind, 0) + wire_sent + wire_received
            self._dirty = True

    def grant(self, nbytes: int) -> MonthUsage:
        """Add a one-shot allowance to the current period; saved at once."""
        if nbytes <= 0:
            raise ValueError("an allowance must be positive")
        with self._lock:
            self._roll()
            self._current.allowance_bytes += nbytes
            self._dirty = True
        self.save()
        return self.current()

    def latch(self, limit: int) -> None:
        """Remember that this period's limit ``limit`` was reached (the guard's latch)."""
        with self._lock:
            self._roll()
            if self._current.latched_limit != limit:
                self._current.latched_limit = limit
                self._dirty = True

    def used(self) -> int:
        """IP-level bytes this period, both directions (the number the budget is held to)."""
        with self._lock:
            self._roll()
            return self._current.wire_bytes_total

    def current(self) -> MonthUsage:
        with self._lock:
            self._roll()
            return self._current.copy()

    def months(self) -> list[MonthUsage]:
        with self._lock:
            self._roll()
            everything = [*self._history.values(), self._current]
            return [m.copy() for m in sorted(everything, key=lambda m: m.period_start)]

    def save(self, force: bool = False) -> None:
        with self._write_lock:
            with self._lock:
                self._roll()
                if not (self._dirty or force):
                    return
                kept = sorted(self._history)[-_KEPT_PERIODS:]
                periods = [asdict(self._history[s]) for s in kept] + [asdict(self._current)]
                self._dirty = False
            doc = {"version": _VERSION, "updated": round(self._clock(), 3), "months": periods}
            self._write(doc)

    def _write(self, doc: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".usage-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
