"""On-demand streaming: a camera on a metered link streams only while somebody watches.

Input: the ingest's retained ``<p>/<dev>/demand`` ``{"viewers": N}`` (viewers waiting on or
watching the device's stream). Output: ``{"streaming": true|false}`` patches merged through the
shadow like any operator's, so the device just follows ``desired``.

The decisions:
- viewers 0 → more: merge ``streaming: true`` unless ``desired`` already says so;
- viewers → 0: after ``linger_s`` (default 30 s) merge ``streaming: false``, unless viewers came
  back, the device is ``always_on``, or the stream is *pinned*. ``always_on`` is what ``desired``
  says, or, where ``desired`` does not say, what the device runs (its ``reported`` settings: an
  agent configured ``always_on`` locally, like ``flumph up --demo``'s, keeps streaming);
- an operator's explicit ``streaming: true`` (``set`` topic, HTTP API, ``flumph ctl start``) pins
  the stream until an explicit stop: on-demand stops only what it did not see an operator start;
- an operator's explicit stop wins even while viewers watch; on-demand starts the stream again
  only when the viewers drop to 0 and a new one arrives;
- the pin lives in the backend's memory. After a backend restart a device found streaming with
  no viewers is treated as started on demand and stops after the linger: a metered link must not
  stream for nobody because the backend restarted; ``always_on`` is the durable way to keep a
  camera on. A device for which no demand was ever seen (no ingest reporting) is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flumph.control import Desired

log = logging.getLogger("flumph.dashboard.ondemand")

Merge = Callable[[str, dict[str, Any]], None]
Current = Callable[[str], Desired | None]
OwnAlwaysOn = Callable[[str], bool]  # the device's own (reported) always_on


def _never(_device_id: str) -> bool:
    return False


@dataclass
class DeviceDemand:
    viewers: int | None = None  # None: no demand seen for this device
    pinned: bool = False
    linger: asyncio.TimerHandle | None = None
    linger_until: float | None = None  # loop time

    def cancel_linger(self) -> None:
        if self.linger is not None:
            self.linger.cancel()
        self.linger = None
        self.linger_until = None


def wants(desired: Desired | None, own_always_on: bool = False) -> tuple[bool, bool]:
    """(streaming, always_on) as the document says; streaming absent means false, always_on
    absent means what the device runs (``own_always_on``)."""
    s = desired.settings_patch() if desired is not None else {}
    always_on = s["always_on"] is True if "always_on" in s else own_always_on
    return s.get("streaming") is True, always_on


def should_linger(
    viewers: int | None, desired: Desired | None, pinned: bool, own_always_on: bool = False
) -> bool:
    """Whether the stream is on a countdown to stop: nobody watches and nothing keeps it on."""
    streaming, always_on = wants(desired, own_always_on)
    return viewers == 0 and streaming and not always_on and not pinned


class OnDemand:
    def __init__(
        self,
        *,
        linger_s: float,
        merge: Merge,
        current: Current,
        own_always_on: OwnAlwaysOn = _never,
    ) -> None:
        self.linger_s = linger_s
        self._merge = merge
        self._current = current
        self._own_always_on = own_always_on
        self._devices: dict[str, DeviceDemand] = {}
        # Off until the fleet knows every retained desired document (else it would start
        # streams that already stream, or miss that they do).
        self.active = False

    def state(self, device_id: str) -> DeviceDemand | None:
        return self._devices.get(device_id)

    def viewers(self, device_id: str, n: int | None) -> None:
        d = self._devices.setdefault(device_id, DeviceDemand())
        before, d.viewers = d.viewers, n
        if self.active and n and not before:
            self._start(device_id)
        self._evaluate(device_id)

    def operator_patch(self, device_id: str, patch: dict[str, Any]) -> None:
        """After an operator's patch was merged: explicit start pins, explicit stop unpins."""
        d = self._devices.setdefault(device_id, DeviceDemand())
        if patch.get("streaming") is True:
            d.pinned = True
        elif patch.get("streaming") is False or patch.get("always_on") is False:
            d.pinned = False
        self._evaluate(device_id)

    def desired_changed(self, device_id: str) -> None:
        """Another writer's document (or the retained one at start): re-decide."""
        d = self._devices.setdefault(device_id, DeviceDemand())
        if not wants(self._current(device_id))[0]:
            d.pinned = False
        self._evaluate(device_id)

    def device_changed(self, device_id: str) -> None:
        """The device reported other settings (its own always_on may have changed): re-decide."""
        if device_id in self._devices:
            self._evaluate(device_id)

    def forget(self, device_id: str) -> None:
        """The device was removed: no countdown, no state."""
        d = self._devices.pop(device_id, None)
        if d is not None:
            d.cancel_linger()

    def activate(self) -> None:
        self.active = True
        for device_id, d in list(self._devices.items()):
            if d.viewers:
                self._start(device_id)
            self._evaluate(device_id)

    def deactivate(self) -> None:
        self.active = False
        for d in self._devices.values():
            d.cancel_linger()

    def _start(self, device_id: str) -> None:
        if not wants(self._current(device_id))[0]:
            log.info("%s: a viewer is waiting; starting the stream", device_id)
            self._merge(device_id, {"streaming": True})

    def _lingers(self, device_id: str, d: DeviceDemand) -> bool:
        own = self._own_always_on(device_id)
        return self.active and should_linger(d.viewers, self._current(device_id), d.pinned, own)

    def _evaluate(self, device_id: str) -> None:
        d = self._devices[device_id]
        if not self._lingers(device_id, d):
            d.cancel_linger()
        elif d.linger is None:
            loop = asyncio.get_running_loop()
            d.linger = loop.call_later(self.linger_s, self._linger_over, device_id)
            d.linger_until = loop.time() + self.linger_s

    def _linger_over(self, device_id: str) -> None:
        d = self._devices[device_id]
        d.linger, d.linger_until = None, None
        if self._lingers(device_id, d):
            log.info("%s: no viewer for %.0f s; stopping the stream", device_id, self.linger_s)
            self._merge(device_id, {"streaming": False})
