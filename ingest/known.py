"""The devices the ingest knows: ids with a retained ``<p>/<dev>/status`` (see
:mod:`flumph.lifecycle`), followed on the demand publisher's MQTT connection.

paho's thread writes, the event loop reads; a lock keeps the two apart. Bounded: only a device's
own account or an admin can write a status when the broker has accounts, but an open broker
lets anybody, and a set an outsider can grow must have a ceiling.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("flumph.ingest.known")

MAX_KNOWN = 100_000


class KnownDevices:
    def __init__(self, limit: int = MAX_KNOWN) -> None:
        self.limit = limit
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self.overflow = 0

    def on_status(self, device_id: str, payload: bytes) -> None:
        """A message on ``<p>/<dev>/status``: non-empty makes the device known, empty (the
        retained status deleted: forgotten) makes it unknown."""
        with self._lock:
            if not payload:
                self._ids.discard(device_id)
            elif device_id in self._ids:
                return
            elif len(self._ids) < self.limit:
                self._ids.add(device_id)
            else:
                self.overflow += 1
                if self.overflow == 1 or self.overflow % 1000 == 0:
                    log.error("more than %d known devices; %d ignored", self.limit, self.overflow)

    def __contains__(self, device_id: object) -> bool:
        with self._lock:
            return device_id in self._ids

    def is_known(self, device_id: str) -> bool:
        return device_id in self

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)
