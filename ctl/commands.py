"""The ctl commands that talk to devices over the broker: devices, set/start/stop, cmd, grant,
snapshot, watch (add and forget: :mod:`.lifecycle`; usage: :mod:`.usage`).

Each takes a connected :class:`~.session.Session` and returns the exit code, or raises
:class:`~.session.CtlError` with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from flumph.control import (
    CLIENT_TOKEN,
    Ack,
    Command,
    ContractError,
    Grant,
    TopicKind,
    check_device_id,
    decode,
)
from flumph.ctl.describe import describe, device_field, table_row
from flumph.ctl.session import EXIT_OK, CtlError, Session
from flumph.ctl.setwait import SetWait
from flumph.media.imagetype import image_extension

WATCHED: tuple[TopicKind, ...] = (
    "status", "telemetry", "reported", "desired", "ack", "demand", "snapshot",
    "set/accepted", "set/rejected",
)  # fmt: skip


def cmd_devices(s: Session, ns: argparse.Namespace) -> int:
    kinds: tuple[TopicKind, ...] = ("status", "reported", "desired", "demand")
    s.subscribe([s.topics.every(k) for k in kinds])
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + ns.wait
    while (msg := s.next(deadline)) is not None:
        try:
            parsed = s.topics.parse(msg.topic)
        except ContractError:
            continue
        row = rows.setdefault(parsed.device_id, {"device": parsed.device_id})
        row[parsed.kind] = device_field(parsed.kind, msg.payload)
    table = [rows[k] for k in sorted(rows)]
    if ns.json:
        print(json.dumps(table, indent=2))
        return EXIT_OK
    if not table:
        print("no devices (no retained status, reported or desired)", file=sys.stderr)
        return EXIT_OK
    header = ("DEVICE", "STATUS", "STREAMING", "WANTED", "DESIRED", "APPLIED", "VIEWERS",
              "ENCODER", "ERROR")  # fmt: skip
    lines = [header] + [table_row(r) for r in table]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return EXIT_OK


def send_patch(s: Session, device_id: str, patch: dict[str, Any], wait_applied: bool) -> int:
    token = f"ctl-{uuid.uuid4().hex[:16]}"
    t = s.topics
    filters = [t.set_accepted(device_id), t.set_rejected(device_id)]
    if wait_applied:
        filters += [t.reported(device_id), t.status(device_id)]
    s.subscribe(filters)
    s.publish(t.set(device_id), json.dumps({**patch, CLIENT_TOKEN: token}).encode())
    print(f"sent {json.dumps(patch)} to {t.set(device_id)}", flush=True)
    wait = SetWait(device_id, token, wait_applied=wait_applied)
    deadline = time.monotonic() + s.cfg.timeout_s
    while (msg := s.next(deadline)) is not None:
        try:
            kind = t.parse(msg.topic).kind
        except ContractError:
            continue
        outcome = wait.feed(kind, msg.payload, msg.retain)
        if outcome is not None:
            if not outcome.ok:
                raise CtlError(outcome.message)
            print(outcome.message)
            return EXIT_OK
    raise CtlError(wait.timed_out(s.cfg.timeout_s).message)


def _wait_ack(s: Session, device_id: str, cid: str, deadline: float) -> Ack | None:
    while (msg := s.next(deadline)) is not None:
        if msg.topic == s.topics.ack(device_id):
            try:
                ack = decode(Ack, msg.payload)
            except ContractError:
                continue
            if ack.id == cid:
                return ack
    return None


def cmd_command(s: Session, device_id: str, name: str, mb: float | None = None) -> int:
    s.subscribe([s.topics.ack(device_id)])
    cid = uuid.uuid4().hex[:16]
    command = Command(id=cid) if mb is None else Grant(id=cid, mb=mb)
    s.publish(s.topics.cmd(device_id, name), command.payload())
    ack = _wait_ack(s, device_id, cid, time.monotonic() + s.cfg.timeout_s)
    if ack is None:
        raise CtlError(f"{device_id} did not acknowledge {name} within {s.cfg.timeout_s} s")
    if not ack.ok:
        raise CtlError(f"{device_id} refused {name}: {ack.error}")
    print(f"{device_id}: {name} ok")
    return EXIT_OK


def cmd_snapshot(s: Session, device_id: str, output: str | None) -> int:
    s.subscribe([s.topics.snapshot(device_id), s.topics.ack(device_id)])
    cid = uuid.uuid4().hex[:16]
    s.publish(s.topics.cmd(device_id, "snapshot"), Command(id=cid).payload())
    deadline = time.monotonic() + s.cfg.timeout_s
    while (msg := s.next(deadline)) is not None:
        if msg.topic == s.topics.snapshot(device_id):
            if msg.retain or not msg.payload:
                continue  # the previous still, delivered because we subscribed
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(output or f"{device_id}-{stamp}.{image_extension(msg.payload)}")
            path.write_bytes(msg.payload)
            print(f"{path} ({len(msg.payload)} bytes)")
            return EXIT_OK
        if msg.topic == s.topics.ack(device_id):
            try:
                ack = decode(Ack, msg.payload)
            except ContractError:
                continue
            if ack.id == cid and not ack.ok:
                raise CtlError(f"{device_id} refused the snapshot: {ack.error}")
    raise CtlError(f"no new snapshot from {device_id} within {s.cfg.timeout_s} s")


def cmd_watch(s: Session, device_id: str | None, count: int | None) -> int:
    if device_id is None:
        filters = [s.topics.every(k) for k in WATCHED]
    else:
        filters = [f"{s.topics.prefix}/{check_device_id(device_id)}/{k}" for k in WATCHED]
    s.subscribe(filters)
    printed = 0
    while count is None or printed < count:
        msg = s.next(None)
        if msg is None:
            continue
        try:
            parsed = s.topics.parse(msg.topic)
        except ContractError:
            continue
        when = time.strftime("%H:%M:%S")
        mark = " (retained)" if msg.retain else ""
        line = f"{when} {parsed.device_id} {parsed.kind}{mark} {describe(parsed.kind, msg.payload)}"
        print(line, flush=True)
        printed += 1
    return EXIT_OK
