"""A ``desired`` document over the settings in force: the settings it asks for, or why not (pure).

Each document is validated and merged over the settings in force (a key it leaves out
keeps its value, so ``mosquitto_pub -r -t .../desired -m '{"v":9,"streaming":true}'`` changes only
streaming); the backend's shadow merge only ever adds keys, so a restarted agent (the configured
settings under the same document) ends up where it was. A document whose ``v`` is not above the
applied one is a retained replay (after a reconnect) and is ignored; a fresh process has applied
nothing and takes whatever it finds. An invalid document, or settings the device cannot apply
(no encoder opens, the camera fails), leave ``applied_v`` and the running settings as they were
and put the reason on ``reported.error``. An empty retained ``desired`` (cleared with
``mosquitto_pub -r -n``) means "no wish": the settings stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from flumph.control import decode_desired
from flumph.settings import StreamSettings


class StaleDesired(Exception):
    """A document not newer than the one applied: a retained replay, ignored."""


@dataclass(frozen=True)
class DesiredChange:
    v: int
    settings: StreamSettings
    changed: list[str]  # the settings that differ from those in force

    def what(self) -> str:
        """The changed settings in words, for an error that says they could not be applied."""
        return ", ".join(f"{k}={getattr(self.settings, k)!r}" for k in self.changed) or "settings"


def plan_desired(
    payload: bytes, applied_v: int | None, current: StreamSettings
) -> DesiredChange | None:
    """The settings ``payload`` asks for over ``current``; None for an empty document (no wish).

    Raises ContractError (an invalid document or settings, naming the field) or StaleDesired.
    """
    if not payload:
        return None
    desired = decode_desired(payload)
    if applied_v is not None and desired.v <= applied_v:
        raise StaleDesired(f"ignoring desired v{desired.v}: v{applied_v} is applied")
    settings = desired.apply_to(current)
    changed = [
        k for k in StreamSettings.model_fields if getattr(current, k) != getattr(settings, k)
    ]
    return DesiredChange(desired.v, settings, changed)
