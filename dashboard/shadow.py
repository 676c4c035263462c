"""The shadow merge: the backend is the one writer of every device's retained ``desired``.

Patches (from ``<p>/<dev>/set``, the HTTP API and on-demand streaming) are merged here into the
current document with the version + 1; the caller publishes the result retained. This module
holds state and rules only, no network, so that it can be tested without a broker.

Merges are serialized by running them on one asyncio loop, synchronously: the document a merge
starts from is updated before the next merge can begin, even though the broker has not echoed it
back yet (the echo is recognised and ignored, so a late echo cannot roll a newer document back).

Rules on ``always_on`` (a device that streams whether or not anybody watches):
- a resulting document with ``always_on: true`` always has ``streaming: true`` (added to the
  patch if missing, in the same version);
- ``{"streaming": false}`` is an explicit stop and wins: it also clears ``always_on``;
- one patch with both ``always_on: true`` and ``streaming: false`` contradicts itself: refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flumph.control import (
    MAX_DEPTH,
    MAX_PAYLOAD,
    Desired,
    PatchError,
    merge_desired,
    validate_patch,
)
from flumph.jsonlimits import JsonLimitError, loads

MAX_PENDING = 64  # published documents not yet echoed by the broker, per device


def plan_patch(current: Desired | None, patch: dict[str, Any]) -> dict[str, Any]:
    """The patch actually merged: validated, and completed by the ``always_on`` rules."""
    validate_patch(patch)
    if not patch:
        raise PatchError("patch: empty; give at least one setting to change")
    if patch.get("always_on") is True and patch.get("streaming") is False:
        raise PatchError(
            "patch: streaming: false contradicts always_on: true in the same patch",
            ("always_on", "streaming"),
        )
    base = current.settings_patch() if current is not None else {}
    out = dict(patch)
    if out.get("streaming") is False and base.get("always_on") is True:
        out["always_on"] = False  # an explicit stop overrides always-on
    if (base | out).get("always_on") is True and (base | out).get("streaming") is not True:
        out["streaming"] = True
    return out


def version_in(raw: bytes) -> int | None:
    """The ``v`` of a document that failed validation, if it has a usable one."""
    try:
        doc = loads(raw, "desired", max_bytes=MAX_PAYLOAD, max_depth=MAX_DEPTH)
    except JsonLimitError:
        return None
    v = doc.get("v") if isinstance(doc, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


@dataclass
class _Doc:
    current: Desired | None = None
    # Versions we published and the broker has not echoed yet, oldest first.
    pending: list[Desired] = field(default_factory=list)
    # Highest version seen on the topic, valid or not: the next merge goes past it.
    max_v: int = 0


class Shadow:
    def __init__(self) -> None:
        self._docs: dict[str, _Doc] = {}

    def current(self, device_id: str) -> Desired | None:
        doc = self._docs.get(device_id)
        return doc.current if doc is not None else None

    def merge(self, device_id: str, patch: dict[str, Any]) -> tuple[Desired, dict[str, Any]]:
        """The new document (version + 1) and the patch merged; raises ContractError."""
        doc = self._docs.setdefault(device_id, _Doc())
        planned = plan_patch(doc.current, patch)
        base = doc.current
        if doc.max_v > (base.v if base is not None else 0):
            settings = base.settings_patch() if base is not None else {}
            base = Desired.model_validate({**settings, "v": doc.max_v})
        new = merge_desired(base, planned)
        doc.current = new
        doc.max_v = new.v
        doc.pending.append(new)
        del doc.pending[:-MAX_PENDING]
        return new, planned

    def observe(self, device_id: str, desired: Desired | None) -> bool:
        """A document received on the topic (None: the retained one was deleted).

        Returns whether the current document changed. Echoes of our own publications are
        recognised; anything else is another writer's, and the broker's order decides.
        """
        doc = self._docs.setdefault(device_id, _Doc())
        if desired is not None:
            doc.max_v = max(doc.max_v, desired.v)
            for i, sent in enumerate(doc.pending):
                if sent == desired:
                    del doc.pending[: i + 1]
                    return False  # our own document (current already is it or a newer one)
        doc.pending.clear()
        changed = doc.current != desired
        doc.current = desired
        return changed

    def observe_invalid(self, device_id: str, raw: bytes) -> None:
        """A document that failed validation: keep the current one, but go past its version."""
        v = version_in(raw)
        if v is not None:
            self.floor(device_id, v)

    def floor(self, device_id: str, v: int) -> None:
        """The next merge gets a version above ``v``.

        Fed with the device's ``reported.applied_v`` too: a device ignores any document not newer
        than the one it applied, so after the retained ``desired`` was lost (a broker without
        persistence, a deleted topic) versions must still go up from what the device has.
        """
        doc = self._docs.setdefault(device_id, _Doc())
        doc.max_v = max(doc.max_v, v)
