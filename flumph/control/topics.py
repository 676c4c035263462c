"""Every topic of the contract, built and parsed here and nowhere else (see the table in
:mod:`flumph.control`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from flumph.control.wire import ContractError
from flumph.media.streamid import DEVICE_ID_RE

DEFAULT_PREFIX = "flumph"
PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
COMMANDS = ("keyframe", "snapshot", "restart", "grant")
CommandName = Literal["keyframe", "snapshot", "restart", "grant"]
TopicKind = Literal[
    "status", "desired", "set", "reported", "cmd", "ack", "telemetry", "snapshot", "demand",
    "set/accepted", "set/rejected",
]  # fmt: skip
KINDS: tuple[TopicKind, ...] = (
    "status", "desired", "set", "reported", "cmd", "ack", "telemetry", "snapshot", "demand",
    "set/accepted", "set/rejected",
)  # fmt: skip


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ContractError(
            f"device id {device_id!r} must match [a-z0-9][a-z0-9-]{{0,63}} "
            "(lower-case letters, digits and '-')"
        )
    return device_id


@dataclass(frozen=True)
class ParsedTopic:
    device_id: str
    kind: TopicKind
    command: str | None = None


class Topics:
    """Builds and parses topic names under one prefix."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not PREFIX_RE.fullmatch(prefix):
            raise ContractError(f"topic prefix {prefix!r} must be letters, digits, '-', '_', '/'")
        self.prefix = prefix

    def _t(self, device_id: str, kind: str) -> str:
        return f"{self.prefix}/{check_device_id(device_id)}/{kind}"

    def status(self, device_id: str) -> str:
        return self._t(device_id, "status")

    def desired(self, device_id: str) -> str:
        return self._t(device_id, "desired")

    def set(self, device_id: str) -> str:
        return self._t(device_id, "set")

    def set_accepted(self, device_id: str) -> str:
        return self._t(device_id, "set/accepted")

    def set_rejected(self, device_id: str) -> str:
        return self._t(device_id, "set/rejected")

    def reported(self, device_id: str) -> str:
        return self._t(device_id, "reported")

    def cmd(self, device_id: str, name: str) -> str:
        if name not in COMMANDS:
            raise ContractError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
        return self._t(device_id, f"cmd/{name}")

    def cmd_all(self, device_id: str) -> str:
        """Subscription filter for every command of one device."""
        return self._t(device_id, "cmd/+")

    def ack(self, device_id: str) -> str:
        return self._t(device_id, "ack")

    def telemetry(self, device_id: str) -> str:
        return self._t(device_id, "telemetry")

    def snapshot(self, device_id: str) -> str:
        return self._t(device_id, "snapshot")

    def demand(self, device_id: str) -> str:
        return self._t(device_id, "demand")

    def every(self, kind: TopicKind) -> str:
        """Subscription filter for one kind across all devices (``cmd`` covers every command)."""
        if kind == "cmd":
            return f"{self.prefix}/+/cmd/+"
        return f"{self.prefix}/+/{kind}"

    def parse(self, topic: str) -> ParsedTopic:
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise ContractError(f"topic {topic!r} is not under prefix {self.prefix!r}")
        parts = topic[len(head) :].split("/")
        if len(parts) < 2:
            raise ContractError(f"topic {topic!r} names no device and kind")
        device_id = check_device_id(parts[0])
        kind = parts[1]
        if kind == "cmd" and len(parts) == 3:
            if parts[2] not in COMMANDS:
                raise ContractError(f"unknown command {parts[2]!r} in topic {topic!r}")
            return ParsedTopic(device_id, "cmd", parts[2])
        if kind == "set" and len(parts) == 3 and f"set/{parts[2]}" in KINDS:
            answer: TopicKind = "set/accepted" if parts[2] == "accepted" else "set/rejected"
            return ParsedTopic(device_id, answer)
        if len(parts) != 2 or kind not in KINDS or kind == "cmd":
            raise ContractError(f"topic {topic!r} is not one of the contract's topics")
        return ParsedTopic(device_id, kind)
