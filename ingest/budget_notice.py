"""Viewers waiting for a camera whose data budget is used up are told so, in words.

The ingest follows every device's retained ``<p>/<dev>/reported`` (on the MQTT connection it
already has for demand) and keeps the devices whose ``budget.state`` is ``exhausted``, with the
time their budget resets. A viewer that subscribes with ``"wait": true`` to such a device gets,
after ``subscribed`` and ``waiting``::

    {"type": "unavailable", "stream_id": "cam1", "reason": "budget",
     "message": "cam1's data budget for this month is used up; it resets 2027-01-01 00:00 UTC"}

Viewers already waiting get it when the device reports the budget used up, and ``waiting`` again
when it is not any more (an operator granted more, or the period began anew); the socket stays
open, so the picture comes by itself once the camera may stream again. Only exhausted devices are
held, and at most ``max_devices`` of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import UTC, datetime

from flumph.control import ContractError, Reported, decode

from . import relay_protocol as rp
from .hub import Hub

log = logging.getLogger("flumph.ingest.budget")


def budget_message(device_id: str, resets_at: float) -> str:
    when = datetime.fromtimestamp(resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{device_id}'s data budget for this month is used up; it resets {when}"


def unavailable(device_id: str, resets_at: float) -> str:
    return rp.unavailable(device_id, "budget", budget_message(device_id, resets_at))


def exhausted_until(payload: bytes) -> float | None:
    """When the budget of a device with this retained ``reported`` resets, if it is used up;
    None if it is not (or the document was deleted). ContractError for a bad document."""
    if not payload:
        return None
    budget = decode(Reported, payload).budget
    if budget is None or budget.state != "exhausted":
        return None
    return budget.resets_at


class BudgetNotices:
    def __init__(self, hub: Hub, *, max_devices: int = 100_000) -> None:
        self.hub = hub
        self.max_devices = max_devices
        self._exhausted: dict[str, float] = {}  # device -> resets_at
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the hub; changes are handed to it from paho's thread."""
        self._loop = loop

    def notice(self, device_id: str) -> str | None:
        """The ``unavailable`` message for a viewer of ``device_id`` now, or None."""
        with self._lock:
            resets_at = self._exhausted.get(device_id)
        return unavailable(device_id, resets_at) if resets_at is not None else None

    def on_reported(self, device_id: str, payload: bytes) -> None:
        """A ``reported`` document (paho's thread)."""
        try:
            resets_at = exhausted_until(payload)
        except ContractError as e:
            log.debug("%s: reported not understood: %s", device_id, e)
            return
        with self._lock:
            before = self._exhausted.get(device_id)
            if resets_at is None:
                self._exhausted.pop(device_id, None)
            elif device_id in self._exhausted or len(self._exhausted) < self.max_devices:
                self._exhausted[device_id] = resets_at
            else:
                log.warning("more than %d devices out of budget; %s not followed",
                            self.max_devices, device_id)  # fmt: skip
                return
        if before != resets_at and self._loop is not None:
            if resets_at is not None:
                log.info("%s: data budget used up until %s", device_id,
                         budget_message(device_id, resets_at))  # fmt: skip
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                self._loop.call_soon_threadsafe(self._tell_waiting, device_id)

    def _tell_waiting(self, device_id: str) -> None:
        """Tell the viewers waiting for ``device_id`` (on the loop)."""
        stream = self.hub.get(device_id)
        if stream is None or stream.ended or stream.publisher_connected:
            return
        text = self.notice(device_id) or rp.waiting(device_id)
        for viewer in list(stream.viewers):
            viewer.offer_control(text)
