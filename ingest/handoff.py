"""One bounded, batched hand-off from receive threads to the event loop.

The SRT receive thread (and PyAV's demux threads, for MPEG-TS) produce many small results per
receive round. Scheduling each with ``call_soon_threadsafe`` costs a loop wake-up (a write to the
loop's self-pipe and a lock) per frame; here results collect in one list and the loop is woken at
most once per batch: :meth:`flush` at the end of a receive round schedules a drain unless one is
already pending, and the drain takes the whole list at once. The loop itself may take what is
waiting at any moment (:meth:`drain_now`), e.g. before a viewer joins a stream whose frames were
left to collect.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_ITEMS = 50_000  # ~ 200 streams x 15 fps for 16 s: a loop that far behind is stuck


class LoopHandoff(Generic[T]):
    """Items from any thread, delivered in order on ``loop`` by ``deliver(batch)``.

    Bounded: :meth:`put` refuses an item past ``max_items`` undelivered ones (the caller decides
    what to drop and counts it); :meth:`put_always` is for the few items that must never be lost
    (a publisher's start and end)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deliver: Callable[[list[T]], None],
        max_items: int = DEFAULT_MAX_ITEMS,
    ) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self._loop = loop
        self._deliver = deliver
        self.max_items = max_items
        self._lock = threading.Lock()
        self._items: list[T] = []
        self._scheduled = False
        self.refused = 0  # items put() turned away, since the start
        self.wakeups = 0  # drains scheduled, since the start

    def put(self, item: T) -> bool:
        with self._lock:
            if len(self._items) >= self.max_items:
                self.refused += 1
                return False
            self._items.append(item)
            return True

    def put_always(self, item: T) -> None:
        with self._lock:
            self._items.append(item)

    def flush(self) -> None:
        """Wake the loop for what was put, unless a drain is already on its way."""
        with self._lock:
            if self._scheduled or not self._items:
                return
            self._scheduled = True
            self.wakeups += 1
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: nobody is left to deliver to
            with self._lock:
                self._items.clear()

    def drain_now(self) -> None:
        """On the loop: deliver what is waiting at once (a drain already scheduled then delivers
        what came after, in order)."""
        with self._lock:
            batch, self._items = self._items, []
        if batch:
            self._deliver(batch)

    def _drain(self) -> None:
        with self._lock:
            batch, self._items = self._items, []
            self._scheduled = False
        self._deliver(batch)
