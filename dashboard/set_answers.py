"""Answers to ``<p>/<dev>/set``: ``set/accepted`` or ``set/rejected``, never retained, QoS 1.

The AWS IoT device shadow answers every update on ``…/update/accepted`` or ``…/update/rejected``;
Flumph does the same for its patches, so ``mosquitto_pub`` users, ``flumph ctl`` and any ops tool
learn whether a patch was merged (and as which version) or why it was refused, without reading the
backend's log. Not retained: an answer concerns one request, and a retained one would be replayed
to the next subscriber as if it answered its own.

A rejection creates no device state: :meth:`SetAnswers.rejected` only publishes, so the caller may
answer a ``set`` for a device it refuses to know (unknown devices are answered, not remembered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flumph.control import SetAccepted, SetRejected, Topics, check_device_id, client_token_of

log = logging.getLogger("flumph.dashboard.set")

# (topic, payload) -> None; publishes QoS 1, not retained. paho's publish is thread-safe and
# queues while disconnected, so a caller never blocks on the network.
Publish = Callable[[str, bytes], None]
MAX_ERROR_CHARS = 1000  # an error quotes the refused value; keep the answer small


class SetAnswers:
    def __init__(self, topics: Topics, publish: Publish) -> None:
        self.topics = topics
        self._publish = publish
        self.accepted_total = 0
        self.rejected_total = 0

    def accepted(
        self, device_id: str, v: int, patch: dict[str, Any], client_token: str | None
    ) -> None:
        answer = SetAccepted(v=v, patch=patch, client_token=client_token)
        self.accepted_total += 1
        self._publish(self.topics.set_accepted(device_id), answer.payload())

    def rejected(
        self,
        device_id: str,
        error: str,
        *,
        fields: Iterable[str] = (),
        payload: bytes | str | None = None,
    ) -> None:
        """Answer a refused ``set``; ``payload`` (the refused message) supplies its
        ``client_token`` when it has a valid one."""
        check_device_id(device_id)  # a topic must be built; an invalid id was never a device
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        answer = SetRejected(
            error=error, fields=list(fields), client_token=client_token_of(payload)
        )
        self.rejected_total += 1
        log.warning("%s: patch refused: %s", device_id, error)
        self._publish(self.topics.set_rejected(device_id), answer.payload())
