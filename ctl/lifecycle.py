"""`flumph ctl add ID` and `flumph ctl forget ID`, and the check that every other command that
acts on a device (start, stop, set, cmd, snapshot) names a known one (see :mod:`flumph.lifecycle`).

    flumph ctl add ID       make a device known before it first connects
    flumph ctl forget ID    delete every retained topic of a device (status last)

Both work on the broker directly (retained messages), so they need no dashboard. A command for
a device that is not known fails with exit code 2 and says how to add it, instead of leaving a
retained ``desired`` for a typo behind.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from flumph.control import ContractError, Status, decode
from flumph.lifecycle import UnknownDevice, forget_messages, provisioned_status

if TYPE_CHECKING:
    from flumph.ctl.session import Session

# Retained messages follow the SUBACK at once; this is the wait for one that may not exist.
RETAINED_WAIT_S = 1.0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    c = sub.add_parser("add", parents=[common], help="make a device known before it connects")
    c.add_argument("device")
    c = sub.add_parser(
        "forget", parents=[common], help="remove a device: delete every retained topic of it"
    )
    c.add_argument("device")


def retained_status(s: Session, device_id: str) -> Status | bool | None:
    """The device's retained status: the Status, None when there is none, True when there is
    one this tool cannot read (still a known device)."""
    topic = s.topics.status(device_id)
    s.client.subscribe(topic, qos=1)
    try:
        deadline = time.monotonic() + RETAINED_WAIT_S
        while (msg := s.next(deadline)) is not None:
            if msg.topic != topic or not msg.retain:
                continue
            if not msg.payload:
                return None
            try:
                return decode(Status, msg.payload)
            except ContractError:
                return True
        return None
    finally:
        s.client.unsubscribe(topic)


def require_known(s: Session, device_id: str) -> None:
    if retained_status(s, device_id) is None:
        raise UnknownDevice(device_id)


def cmd_add(s: Session, device_id: str) -> int:
    if retained_status(s, device_id) is not None:
        print(f"{device_id} is already known")
        return 0
    s.publish(s.topics.status(device_id), provisioned_status(), retain=True)
    print(f"added {device_id} (retained {s.topics.status(device_id)})")
    return 0


def cmd_forget(s: Session, device_id: str) -> int:
    status = retained_status(s, device_id)
    for topic, payload in forget_messages(s.topics, device_id):
        s.publish(topic, payload, retain=True)
    print(f"forgot {device_id}: deleted its retained status, desired, reported, snapshot, demand")
    if isinstance(status, Status) and status.state == "online":
        print(
            f"note: {device_id} is online; it comes back when it next connects unless its "
            "account is removed too (flumph broker passwd -D FILE ID)",
            file=sys.stderr,
        )
    return 0
