"""The fleet's usage history: follows the fleet's messages, keeps bytes per hour per device.

A fleet listener (called on the loop after every message) turns each new usage report of a known
device (one with a retained ``status``) into hourly rows (see :mod:`.usage_history`), held in
memory and written to ``<state_dir>/usage.sqlite3`` every ``flush_s`` and at stop, in one worker
thread (SQLite blocks). The stored marks are loaded before the fleet connects, so the first
report after a restart continues the count instead of starting it.

Bounded: ``keep_days`` of hours per device (older hours are pruned hourly), at most
``max_devices`` devices, a device whose retained status is cleared (``ctl forget``) is dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flumph.control import Usage

from .device_state import DeviceState
from .fleet import Fleet
from .usage_history import (
    HOUR_S,
    HourRows,
    Sample,
    add_rows,
    attribute,
    hour_of,
    sample_of,
)
from .usage_store import DeviceMark, UsageStore
from .usage_view import history_since_hour, period_of, usage_document

log = logging.getLogger("flumph.dashboard.usage")
T = TypeVar("T")
CLOCK_SKEW_S = 300.0  # a report dated further ahead than this is dated now
PENDING_ROWS = 200_000  # rows waiting for a flush; beyond this a flush is forced


class UsageTracker:
    def __init__(
        self,
        fleet: Fleet,
        state_dir: Path,
        *,
        keep_days: int = 62,
        flush_s: float = 10.0,
        max_devices: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.keep_days = keep_days
        self.flush_s = flush_s
        self.max_devices = max_devices
        self.clock = clock
        self.marks: dict[str, DeviceMark] = {}
        self.rejected = 0  # reports that could not be counters
        self._known: set[str] = set()
        self._pending: dict[tuple[str, int, str], int] = {}
        self._dirty_marks: set[str] = set()
        self._forget: set[str] = set()
        self._store: UsageStore | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="usage-db")
        self._flusher: asyncio.Task[None] | None = None
        self._pruned_hour = 0
        fleet.listeners.insert(0, self.on_change)  # before the live feed renders the device

    # --- lifecycle ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self) -> None:
        self._store = await self._run(UsageStore, self.state_dir)
        self.marks = await self._run(self._store.marks)
        log.info("usage history %s: %d devices", self._store.path, len(self.marks))
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), name="usage")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._store is not None:
            await self.flush()
            await self._run(self._store.close)
            self._store = None
        self._pool.shutdown(wait=True)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:
                log.exception("writing the usage history failed; retrying")

    async def flush(self) -> None:
        if self._store is None:
            return
        now_hour = hour_of(self.clock())
        prune = None
        if now_hour != self._pruned_hour:
            prune, self._pruned_hour = now_hour - self.keep_days * 24 * HOUR_S, now_hour
        if not (self._pending or self._dirty_marks or self._forget or prune is not None):
            return
        rows, self._pending = self._pending, {}
        marks = {d: self.marks[d] for d in self._dirty_marks if d in self.marks}
        forget, self._dirty_marks, self._forget = set(self._forget), set(), set()
        try:
            await self._run(self._store.write, rows, marks, forget, prune)
        except Exception:
            # Keep what was not written for the next flush (bounded by PENDING_ROWS).
            for key, value in rows.items():
                self._pending[key] = self._pending.get(key, 0) + value
            self._dirty_marks |= set(marks)
            self._forget |= forget
            raise

    # --- following the fleet (on the loop) ----------------------------------------------------

    def on_change(self, device_id: str) -> None:
        dev = self.fleet.devices.get(device_id)
        if dev is None or dev.status is None:  # forgotten: the fleet dropped it (lifecycle)
            if device_id in self._known:
                self.forget(device_id)
            return
        self._known.add(device_id)
        if dev.status.usage is not None:
            self.observe(device_id, dev.status.usage, dev.status.ts)
        if dev.telemetry is not None and dev.telemetry.usage is not None:
            self.observe(device_id, dev.telemetry.usage, dev.telemetry.ts)

    def observe(self, device_id: str, usage: Usage, ts: float) -> None:
        """One usage report of a known device at ``ts`` (its clock)."""
        now = self.clock()
        if ts > now + CLOCK_SKEW_S:
            ts = now  # a device clock far ahead must not hold back every later report
        if ts < now - self.keep_days * 86400:
            return
        mark = self.marks.get(device_id)
        if mark is not None and ts <= mark.sample.ts:
            return  # stale (a retained birth seen again) or this very report again
        if mark is None and len(self.marks) >= self.max_devices:
            return
        try:
            sample = sample_of(usage, ts)
        except ValueError as e:
            self.rejected += 1
            if self.rejected <= 10 or self.rejected % 1000 == 0:
                log.warning("%s: usage report ignored (#%d): %s", device_id, self.rejected, e)
            return
        prev = mark.sample if mark is not None else None
        rows = attribute(prev, sample, max_span_s=self.keep_days * 86400.0)
        for (hour, kind), value in rows.items():
            key = (device_id, hour, kind)
            self._pending[key] = self._pending.get(key, 0) + value
        self.marks[device_id] = DeviceMark(sample, mark.since if mark is not None else ts)
        self._dirty_marks.add(device_id)
        if len(self._pending) > PENDING_ROWS and self._store is not None:
            asyncio.get_running_loop().create_task(self.flush(), name="usage-flush")

    def forget(self, device_id: str) -> None:
        self._known.discard(device_id)
        self.marks.pop(device_id, None)
        self._dirty_marks.discard(device_id)
        self._pending = {k: v for k, v in self._pending.items() if k[0] != device_id}
        self._forget.add(device_id)
        log.info("%s: status cleared, usage history dropped", device_id)

    # --- reading ------------------------------------------------------------------------------

    async def rows(self, device_id: str, since_hour: int) -> HourRows:
        """Stored and not yet stored hours of one device from ``since_hour`` on."""
        # Taken before the read is queued: a flush queued earlier runs first in the one worker,
        # and what is still pending now is not in the database yet, so nothing counts twice.
        pending: HourRows = {
            (h, k): v
            for (d, h, k), v in self._pending.items()
            if d == device_id and h >= since_hour
        }
        stored: HourRows = {}
        if self._store is not None:
            stored = await self._run(self._store.hours, device_id, since_hour)
        add_rows(stored, pending)
        return stored

    def mark(self, device_id: str) -> Sample | None:
        m = self.marks.get(device_id)
        return m.sample if m is not None else None

    async def document(self, dev: DeviceState) -> dict[str, Any]:
        now = self.clock()
        desired_doc = self.fleet.shadow.current(dev.device_id)
        desired = desired_doc.settings_patch() if desired_doc is not None else None
        start, _, _ = period_of(dev, desired, now)
        rows = await self.rows(dev.device_id, history_since_hour(now, start))
        m = self.marks.get(dev.device_id)
        return usage_document(
            dev,
            desired=desired,
            mark=m.sample if m is not None else None,
            since=m.since if m is not None else None,
            rows=rows,
            now=now,
        )
