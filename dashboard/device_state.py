"""One device as the fleet service knows it: its last messages, presence and recent commands.

Pure values, no I/O: :class:`~.fleet.Fleet` updates them on the loop as messages arrive.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from flumph.control import Ack, Reported, Status, Telemetry

COMMANDS_KEPT = 32  # per device, newest last

Presence = Literal["online", "offline", "offline (silent)", "unknown"]
CommandState = Literal["pending", "acked", "failed", "timeout"]


@dataclass
class CommandRecord:
    id: str
    device_id: str
    name: str
    sent_at: float  # wall clock
    sent_mono: float
    state: CommandState = "pending"
    error: str | None = None
    done_at: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "device": self.device_id,
            "name": self.name,
            "state": self.state,
            "error": self.error,
            "sent_at": self.sent_at,
            "done_at": self.done_at,
        }


@dataclass
class DeviceState:
    device_id: str
    status: Status | None = None
    last_seen: float | None = None  # wall clock, for display
    last_seen_mono: float | None = None
    reported: Reported | None = None
    reported_at: float | None = None
    telemetry: Telemetry | None = None
    telemetry_at: float | None = None
    heartbeat_s: float | None = None
    snapshot: bytes | None = None
    snapshot_type: str | None = None
    snapshot_at: float | None = None
    commands: collections.OrderedDict[str, CommandRecord] = field(
        default_factory=collections.OrderedDict
    )
    last_ack: Ack | None = None
    last_set_error: dict[str, Any] | None = None
    errors: int = 0
    last_error: str | None = None
    presence: Presence = "unknown"  # as last announced to listeners

    def seen(self) -> None:
        self.last_seen = time.time()
        self.last_seen_mono = time.monotonic()

    def streaming_now(self) -> bool | None:
        """Whether it streams now: whichever of reported and telemetry came last says."""
        rep, tel = self.reported, self.telemetry
        if rep is not None and (tel is None or (self.reported_at or 0) >= (self.telemetry_at or 0)):
            return rep.streaming
        return tel.streaming if tel is not None else None

    def presence_at(self, now_mono: float, grace_s: float) -> Presence:
        if self.status is not None and self.status.state == "offline":
            return "offline"
        if self.last_seen_mono is None:
            return "unknown"
        if now_mono - self.last_seen_mono > grace_s:
            return "offline (silent)"
        return "online"

    def add_command(self, rec: CommandRecord) -> None:
        self.commands[rec.id] = rec
        while len(self.commands) > COMMANDS_KEPT:
            self.commands.popitem(last=False)
