"""Commands in flight: the ones awaiting an ack, who waits for it, and which have timed out.

Bounded: at most ``max_pending`` records are followed (the oldest gives up as ``timeout``); a
command never acked within ``timeout_s`` is marked ``timeout``. On the loop, no locks.
"""

from __future__ import annotations

import asyncio
import time

from flumph.control import Ack

from .device_state import CommandRecord, DeviceState


class CommandTracker:
    def __init__(self, max_pending: int, timeout_s: float) -> None:
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._pending: dict[str, CommandRecord] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}

    def track(self, rec: CommandRecord) -> None:
        self._pending[rec.id] = rec
        if len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            self._pending.pop(oldest).state = "timeout"

    def acked(self, dev: DeviceState, ack: Ack) -> None:
        """``ack`` came from ``dev``: its record (if it is still kept) and its waiter learn."""
        rec = dev.commands.get(ack.id)
        if rec is not None:
            rec.state = "acked" if ack.ok else "failed"
            rec.error, rec.done_at = ack.error, time.time()
            self._pending.pop(ack.id, None)
        waiter = self._waiters.pop(ack.id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def waiter(self, rec_id: str) -> asyncio.Future[None]:
        """A future done when ``rec_id`` is acked; register it before publishing the command."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[rec_id] = fut
        return fut

    async def wait(self, rec_id: str, fut: asyncio.Future[None], within_s: float) -> None:
        try:
            await asyncio.wait_for(fut, within_s)
        except TimeoutError:
            pass
        finally:
            self._waiters.pop(rec_id, None)

    def expire(self, now_mono: float) -> list[CommandRecord]:
        """Stop following those sent more than ``timeout_s`` ago; the ones that changed state."""
        timed_out = []
        for rec in [r for r in self._pending.values() if now_mono - r.sent_mono > self.timeout_s]:
            del self._pending[rec.id]
            if rec.state == "pending":
                rec.state, rec.done_at = "timeout", time.time()
                timed_out.append(rec)
        return timed_out

    def cancel_waiters(self) -> None:
        for fut in self._waiters.values():
            fut.cancel()
