"""Patches to a device's settings, from the ``set`` topic and the HTTP API, into the shadow merge.

Every patch goes through :meth:`SetPath.merge`: merged by the shadow (:mod:`.shadow`), published as
the retained ``desired`` with the version + 1, answered on ``set/accepted``; a patch that cannot be
merged is answered on ``set/rejected`` naming the field and recorded as the device's
``last_set_error``. Patches that arrive before the retained state is known are held (at most
``HELD_SETS``) and decided once it is. On the loop, so two merges never start from the same version.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from flumph.control import (
    ContractError,
    Desired,
    ParsedTopic,
    PatchError,
    check_device_id,
    decode_set,
)
from flumph.lifecycle import UnknownDevice

from .device_state import DeviceState
from .fleet_link import Unavailable

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger("flumph.dashboard.fleet")

HELD_SETS = 1000  # patches received before the retained state is known
PUBLISH_WAIT_S = 5.0


class SetPath:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self._held: collections.deque[tuple[str, bytes]] = collections.deque()

    def on_set(self, dev: DeviceState, _t: ParsedTopic, payload: bytes, retain: bool) -> bool:
        """A message on ``set`` of a known device; whether the device's view changed."""
        fleet = self.fleet
        if not payload:
            return False  # a retained patch being deleted, not a patch
        if retain:
            # A retained patch would be merged again at every start of the backend: delete it.
            if fleet.link.client is not None:
                fleet.link.client.publish(fleet.topics.set(dev.device_id), b"", qos=1, retain=True)
            self._set_error(dev, "a retained patch on set was ignored and deleted "
                            "(publish patches without retain)", payload)  # fmt: skip
            return True
        if not fleet.ready.is_set():
            if len(self._held) >= HELD_SETS:
                self._set_error(dev, "backend not ready and too many patches waiting", payload)
                return True
            self._held.append((dev.device_id, payload))
            return False
        self._apply(dev.device_id, payload)
        return False

    def reject(
        self,
        device_id: str,
        error: str,
        payload: bytes | None = None,
        fields: tuple[str, ...] = (),
    ) -> None:
        """Answer a ``set`` of ``device_id`` on ``set/rejected`` with ``error`` (which names the
        field); ``payload`` is the refused message (its ``client_token`` is echoed). Creates no
        device state, so it may answer a set for a device the backend refuses to know (an
        unknown device: see :mod:`.registry`)."""
        self.fleet.answers.rejected(device_id, error, fields=fields, payload=payload)

    def _set_error(
        self, dev: DeviceState, error: ContractError | str, payload: bytes | None
    ) -> None:
        text = payload[:200].decode("utf-8", "replace") if payload is not None else None
        dev.last_set_error = {"error": str(error), "patch": text, "at": time.time()}
        fields = error.fields if isinstance(error, PatchError) else ()
        self.reject(dev.device_id, str(error), payload, fields)

    def hold(self, device_id: str, payload: bytes) -> None:
        """A patch for a device not known yet, before the retained statuses are all in: decided
        once they are (its status may still be on its way)."""
        if len(self._held) >= HELD_SETS:
            self.reject(device_id, "backend not ready and too many patches waiting", payload)
            return
        self._held.append((device_id, payload))

    def release_held(self) -> None:
        """The retained state is known: decide the patches held until now."""
        held, self._held = list(self._held), collections.deque()
        for device_id, payload in held:
            self._apply(device_id, payload)

    def _apply(self, device_id: str, payload: bytes) -> None:
        dev = self.fleet.device(device_id)
        if dev is None:
            self.reject(device_id, str(UnknownDevice(device_id)), payload)
            return
        try:
            req = decode_set(payload)
            self.merge(device_id, req.patch, operator=True, client_token=req.client_token)
        except ContractError as e:
            self._set_error(dev, e, payload)
            self.fleet.changed(dev)

    def merge(
        self,
        device_id: str,
        patch: dict[str, Any],
        *,
        operator: bool,
        client_token: str | None = None,
    ) -> tuple[Desired, Any]:
        """Merge a patch, publish the new retained ``desired``; returns it and paho's info.

        Synchronous on the loop, so two merges can never start from the same version. An
        operator's patch is answered on ``set/accepted`` (echoing ``client_token``).
        Raises ContractError (naming the field) for a patch that cannot be merged.
        """
        fleet = self.fleet
        if fleet.link.client is None or fleet.link.stopping:
            raise Unavailable("the fleet service is not running")
        dev = fleet.known(device_id)
        doc, planned = fleet.shadow.merge(device_id, patch)
        info = fleet.link.client.publish(
            fleet.topics.desired(device_id), doc.payload(), qos=1, retain=True
        )
        log.info("%s: desired v%d after %s patch %s", device_id, doc.v,
                 "operator" if operator else "on-demand", planned)  # fmt: skip
        if operator:
            dev.last_set_error = None
            fleet.ondemand.operator_patch(device_id, planned)
            fleet.answers.accepted(device_id, doc.v, planned, client_token)
        fleet.changed(dev)
        return doc, info

    def ondemand_merge(self, device_id: str, patch: dict[str, Any]) -> None:
        if self.fleet.link.stopping:
            return
        try:
            self.merge(device_id, patch, operator=False)
        except (ContractError, Unavailable) as e:
            log.error("%s: on-demand patch %s failed: %s", device_id, patch, e)

    async def from_api(self, device_id: str, payload: bytes) -> tuple[Desired, bool]:
        """The HTTP API's patch, through the same merge as the ``set`` topic.

        Returns the new document and whether the broker acknowledged it in time; raises
        ContractError (recorded as the device's ``last_set_error`` and answered on
        ``set/rejected``, as a patch on the topic would be) or Unavailable.
        """
        check_device_id(device_id)
        try:
            req = decode_set(payload)
            await self.fleet.wait_ready(PUBLISH_WAIT_S)
            doc, info = self.merge(
                device_id, req.patch, operator=True, client_token=req.client_token
            )
        except ContractError as e:
            dev = self.fleet.device(device_id)
            if dev is not None:
                self._set_error(dev, e, payload)
                self.fleet.changed(dev)
            else:
                self.reject(device_id, str(e), payload)
            raise
        return doc, await self._published(info, PUBLISH_WAIT_S)

    @staticmethod
    async def _published(info: Any, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not info.is_published():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True
