"""Which devices exist, and how one is added and removed: the rule every component follows.

A device is *known* while a retained ``<p>/<dev>/status`` exists. It gets one by coming online
(its birth, then the broker's will) or by being provisioned (``flumph ctl add``, the dashboard's
``POST /api/devices``), which writes ``{"state": "offline", "provisioned": true}``. Nothing an
outsider does creates one: a viewer waiting for an id, a ``set`` to a misspelled device, an SRT
stream id. Before, each of those became a fleet device forever, with retained ``desired`` and
``demand`` left on the broker that nothing could delete.

Why the retained status: it is the one document only a device's own account (its birth, its
will) or an admin can write, it survives restarts of every component (the broker stores it), and
every component already reads it. The dashboard, ``flumph ctl`` and the ingest all learn the same
set by subscribing to ``<p>/+/status``, with no registry service to share.

Removing a device (``flumph ctl forget``, the dashboard's ``DELETE /api/devices/{id}``) deletes
every retained topic it has, status last. A device that is online when it is forgotten comes back
at its next connection (it has come online): remove its account first to keep it out.
"""

from __future__ import annotations

from flumph.control import ContractError, Status, TopicKind, Topics, check_device_id

# Retained topics of a device, deleted (empty retained message) when it is forgotten. `status`
# last: a reader that follows the rule stops knowing the device only once the rest is gone. `set`
# is never retained on purpose, but a tool may have done it by mistake.
RETAINED_KINDS: tuple[TopicKind, ...] = (
    "desired",
    "reported",
    "snapshot",
    "demand",
    "set",
    "status",
)


class UnknownDevice(ContractError):
    """A request for a device that is not known; the message says how to add it."""

    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"unknown device {device_id!r}: it was never added and has never come online "
            f"(add it with 'flumph ctl add {device_id}' or POST /api/devices)"
        )
        self.device_id = device_id


def provisioned_status() -> bytes:
    """The retained status that makes a device known before it ever connects."""
    return Status(state="offline", provisioned=True).payload()


def makes_known(payload: bytes) -> bool:
    """Whether a message on ``<p>/<dev>/status`` leaves the device known (any non-empty status;
    an empty retained message deletes the topic)."""
    return bool(payload)


def forget_messages(topics: Topics, device_id: str) -> list[tuple[str, bytes]]:
    """The retained publishes (empty payloads) that remove ``device_id``, status last."""
    check_device_id(device_id)
    return [(getattr(topics, kind)(device_id), b"") for kind in RETAINED_KINDS]
