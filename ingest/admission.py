"""What an anonymous client may hold in the ingest: waiting viewers, stream ids.

Measured before these rules: ~99 sockets sending ``{"type":"subscribe","stream_id":"xN",
"wait":true}`` used up ``MAX_STREAMS`` (each created an empty stream), after which real cameras
were refused (SRT 1402), and each id left a retained ``demand`` and a device card behind. And in
open mode a ``/ws/stream`` streamer could ``register`` a device's id and feed its waiting viewers
whatever it liked. Now:

- a viewer may wait (``"wait": true`` for a stream that has no publisher) only for a *known*
  device (a retained ``<p>/<dev>/status``, learnt over MQTT; see :mod:`flumph.lifecycle`);
- waiting viewers have their own limits, per client address and in total, and the streams they
  wait on never count against ``max_streams``: waiting can never refuse a publisher;
- a WebSocket streamer cannot register a known device's id, nor an id that viewers wait for
  (:meth:`flumph.ingest.hub.Hub.claim`).

Pure bookkeeping on the event loop: the hub and the app ask, this answers.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from .hub import HubError

IsKnown = Callable[[str], bool]


class AdmissionError(HubError):
    """Refused by an admission rule; the message is sent to the client as is."""


@dataclass(frozen=True)
class WaitTicket:
    address: str
    stream_id: str


class Admission:
    def __init__(
        self,
        *,
        max_waiting: int = 256,
        max_waiting_per_address: int = 32,
        is_known: IsKnown | None = None,
    ) -> None:
        self.max_waiting = max_waiting
        self.max_waiting_per_address = max_waiting_per_address
        # None: no MQTT, so no device is known and nobody may wait.
        self.is_known = is_known
        self._by_address: collections.Counter[str] = collections.Counter()
        self.waiting = 0
        self.refused = 0

    def known(self, stream_id: str) -> bool:
        return self.is_known is not None and self.is_known(stream_id)

    def admit_wait(self, address: str, stream_id: str) -> WaitTicket:
        """A viewer from ``address`` that will wait for ``stream_id``'s publisher; AdmissionError
        naming the rule when it may not. Give the ticket back with :meth:`release`."""
        if self.is_known is None:
            raise self._refuse(
                f"cannot wait for {stream_id}: waiting needs the ingest connected to MQTT "
                "(mqtt_url), where devices are known"
            )
        if not self.is_known(stream_id):
            raise self._refuse(
                f"cannot wait for {stream_id}: it is not a known device (added with "
                f"'flumph ctl add {stream_id}' or seen online)"
            )
        if self._by_address[address] >= self.max_waiting_per_address:
            raise self._refuse(
                f"too many waiting viewers from {address}: the limit is "
                f"{self.max_waiting_per_address} (max_waiting_per_address)"
            )
        if self.waiting >= self.max_waiting:
            raise self._refuse(
                f"too many waiting viewers: the limit is {self.max_waiting} (max_waiting)"
            )
        self._by_address[address] += 1
        self.waiting += 1
        return WaitTicket(address, stream_id)

    def release(self, ticket: WaitTicket) -> None:
        self.waiting -= 1
        self._by_address[ticket.address] -= 1
        if self._by_address[ticket.address] <= 0:
            del self._by_address[ticket.address]

    def check_register(self, stream_id: str) -> None:
        """A WebSocket streamer may not take a known device's id (the device's viewers and its
        own SRT connection would be at its mercy)."""
        if self.known(stream_id):
            raise self._refuse(
                f"stream id {stream_id} belongs to a known device; only the device publishes it"
            )

    def _refuse(self, message: str) -> AdmissionError:
        self.refused += 1
        return AdmissionError(message)
