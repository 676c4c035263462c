"""Bytes used on the media link, per calendar month, kept on disk across restarts and reboots.

The file (``<state_dir>/usage.json``) is replaced atomically (temporary file, fsync, rename), so a
power cut leaves the old or the new count, never a torn one. Months are local calendar months,
as a phone plan counts them. Closed months are kept (the last 12) for the dashboard.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger("flumph.agent.usage")

FILE_NAME = "usage.json"
_KEPT_MONTHS = 12


def month_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m")


@dataclass
class MonthUsage:
    month: str  # "YYYY-MM", local time
    wire_bytes_sent: int = 0  # IP-level estimate from SRT statistics
    wire_bytes_received: int = 0
    payload_bytes_sent: int = 0  # SRT payload (our Matroska bytes, retransmissions included)
    payload_bytes_received: int = 0

    @property
    def wire_bytes_total(self) -> int:
        return self.wire_bytes_sent + self.wire_bytes_received


class UsageStore:
    """Thread-safe counters; ``add`` from the transport, ``save`` every ~10 s and on stop."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._clock = clock
        self._lock = threading.Lock()
        self._history: dict[str, MonthUsage] = {}
        self._current = MonthUsage(month_of(clock()))
        self._dirty = False
        self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            # A counter we cannot read must not stop the camera; start over and say so.
            log.error("usage file %s unreadable (%s); counting from zero", self.path, e)
            return
        try:
            months = [MonthUsage(**m) for m in doc.get("months", [])]
        except TypeError as e:
            log.error("usage file %s has unexpected fields (%s); counting from zero", self.path, e)
            return
        for m in months:
            self._history[m.month] = m
        current = self._current.month
        if current in self._history:
            self._current = self._history.pop(current)

    def _roll(self) -> None:
        month = month_of(self._clock())
        if month != self._current.month:
            self._history[self._current.month] = self._current
            self._current = MonthUsage(month)
            self._dirty = True

    def add(
        self, *, wire_sent: int = 0, wire_received: int = 0, payload_sent: int = 0,
        payload_received: int = 0,
    ) -> None:  # fmt: skip
        if min(wire_sent, wire_received, payload_sent, payload_received) < 0:
            raise ValueError("usage increments must not be negative")
        with self._lock:
            self._roll()
            c = self._current
            c.wire_bytes_sent += wire_sent
            c.wire_bytes_received += wire_received
            c.payload_bytes_sent += payload_sent
            c.payload_bytes_received += payload_received
            self._dirty = True

    def current(self) -> MonthUsage:
        with self._lock:
            self._roll()
            return MonthUsage(**asdict(self._current))

    def months(self) -> list[MonthUsage]:
        with self._lock:
            self._roll()
            all_months = [*self._history.values(), self._current]
            return [MonthUsage(**asdict(m)) for m in sorted(all_months, key=lambda m: m.month)]

    def save(self, force: bool = False) -> None:
        with self._lock:
            self._roll()
            if not (self._dirty or force):
                return
            kept = sorted(self._history)[-_KEPT_MONTHS:]
            months = [asdict(self._history[m]) for m in kept] + [asdict(self._current)]
            self._dirty = False
        doc = {"version": 1, "updated": round(self._clock(), 3), "months": months}
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
