"""Device lifecycle in the fleet service: known devices only (see :mod:`flumph.lifecycle`).

The fleet keeps state only for devices that have a retained ``status``; a message about any other
id is not a reason to create one. What happens to such messages is decided here:

- ``set``: refused with the reason (:meth:`.fleet_sets.SetPath.reject`), nothing merged or
  retained;
- ``desired``: followed by the shadow all the same (its version must never go backwards if the
  device is added later), but no device appears;
- an empty retained ``status`` of a known device: the device was forgotten; its state goes and
  the page is told (SSE ``removed``);
- anything else (``reported``, ``telemetry``, ``demand``...): counted and dropped.

:meth:`Registry.provision` and :meth:`Registry.forget` are what the API (and ``flumph ctl``, on
the broker directly) do to add and remove a device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from flumph.control import ContractError, ParsedTopic, check_device_id, decode_desired
from flumph.lifecycle import UnknownDevice, forget_messages, provisioned_status

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger("flumph.dashboard.registry")

WAIT_S = 5.0


class Registry:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.unknown_messages = 0  # messages about devices that are not known, dropped

    def not_known(self, parsed: ParsedTopic, payload: bytes, retain: bool) -> None:
        """A message about a device the fleet holds no state for (or just forgotten)."""
        fleet, device_id = self.fleet, parsed.device_id
        if parsed.kind == "status":
            if device_id in fleet.devices:
                self._drop(device_id)
            return
        if parsed.kind == "desired":
            try:
                desired = decode_desired(payload) if payload else None
            except ContractError:
                return
            fleet.shadow.observe(device_id, desired)
            return
        if parsed.kind == "set" and payload and not retain:
            if fleet.ready.is_set():
                fleet.sets.reject(device_id, str(UnknownDevice(device_id)), payload)
            else:
                fleet.sets.hold(device_id, payload)
            return
        self.unknown_messages += 1
        if self.unknown_messages <= 10 or self.unknown_messages % 1000 == 0:
            log.info("ignoring %s of unknown device %s (#%d)", parsed.kind, device_id,
                     self.unknown_messages)  # fmt: skip

    def _drop(self, device_id: str) -> None:
        fleet = self.fleet
        dev = fleet.devices.pop(device_id)
        if dev.snapshot is not None:
            fleet.snapshot_bytes -= len(dev.snapshot)
        fleet.ondemand.forget(device_id)
        log.info("%s: forgotten (its retained status was deleted)", device_id)
        fleet.notify(device_id)

    async def provision(self, device_id: str) -> bool:
        """Make ``device_id`` known (retained provisioned status); False if it already was.
        Returns once the broker has echoed it (the fleet then holds the device)."""
        check_device_id(device_id)
        fleet = self.fleet
        await fleet.wait_ready(WAIT_S)
        if device_id in fleet.devices:
            return False
        info = fleet.publish(fleet.topics.status(device_id), provisioned_status(), retain=True)
        await _until(lambda: info.is_published() and device_id in fleet.devices)
        log.info("%s: provisioned", device_id)
        return True

    async def forget(self, device_id: str) -> bool:
        """Delete every retained topic of ``device_id`` (status last); whether it was known.
        Works for a device the fleet does not know too: that is how leftovers are cleaned."""
        check_device_id(device_id)
        fleet = self.fleet
        await fleet.wait_ready(WAIT_S)
        was_known = device_id in fleet.devices
        infos = [
            fleet.publish(topic, payload, retain=True)
            for topic, payload in forget_messages(fleet.topics, device_id)
        ]
        await _until(lambda: all(i.is_published() for i in infos))
        await _until(lambda: device_id not in fleet.devices)
        log.info("%s: forget requested (was %s)", device_id, "known" if was_known else "unknown")
        return was_known


async def _until(done: Callable[[], bool], within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not done():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.02)
