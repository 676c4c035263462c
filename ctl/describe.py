"""Messages as an operator reads them (pure): one ``watch`` line, one row of the ``devices`` table.

Never raises on a bad payload: an invalid message is shown as such.
"""

from __future__ import annotations

import json
from typing import Any

from flumph.control import (
    Ack,
    ContractError,
    Demand,
    Message,
    Reported,
    SetAccepted,
    SetRejected,
    Status,
    Telemetry,
    decode,
    decode_desired,
)
from flumph.media.imagetype import image_extension


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB" if n < 1e9 else f"{n / 1e9:.2f}GB"


def describe(kind: str, payload: bytes) -> str:
    """One human line for one message (the ``watch`` output); never raises on bad payloads."""
    try:
        return _describe(kind, payload)
    except ContractError as e:
        return f"INVALID: {e}"


def _describe(kind: str, payload: bytes) -> str:
    if kind == "snapshot":
        return f"{len(payload)} bytes ({image_extension(payload)})" if payload else "cleared"
    if not payload:
        return "cleared"
    if kind == "status":
        return decode(Status, payload).state
    if kind == "set/accepted":
        acc = decode(SetAccepted, payload)
        return f"v{acc.v} {json.dumps(acc.patch, sort_keys=True)}"
    if kind == "set/rejected":
        return f"REFUSED: {decode(SetRejected, payload).error}"
    if kind == "desired":
        d = decode_desired(payload)
        return f"v{d.v} {json.dumps(d.settings_patch(), sort_keys=True)}"
    if kind == "reported":
        r = decode(Reported, payload)
        state = r.state or ("streaming" if r.streaming else "idle")
        err = f" error={r.error}" if r.error else ""
        notice = f" notice={r.notice}" if r.notice else ""
        budget = f" budget={r.budget.state}" if r.budget is not None else ""
        return f"applied v{r.applied_v} {state} encoder={r.encoder}{err}{notice}{budget}"
    if kind == "ack":
        a = decode(Ack, payload)
        return f"{a.id} ok" if a.ok else f"{a.id} FAILED: {a.error}"
    if kind == "demand":
        return f"viewers={decode(Demand, payload).viewers}"
    t = decode(Telemetry, payload)
    parts = ["streaming" if t.streaming else "idle"]
    if t.fps is not None:
        parts.append(f"fps={t.fps:.1f}")
    if t.bitrate_kbps is not None:
        parts.append(f"kbps={t.bitrate_kbps:.0f}")
    if t.srt is not None and t.srt.rtt_ms is not None:
        parts.append(f"rtt={t.srt.rtt_ms:.0f}ms loss={t.srt.loss_pct or 0:.1f}%")
    if t.usage is not None:
        used = t.usage.bytes_sent + t.usage.bytes_received
        budget = f"/{_mb(t.usage.budget_bytes)}" if t.usage.budget_bytes else ""
        parts.append(f"used={_mb(used)}{budget}")
    if t.budget is not None and t.budget.state != "ok":
        parts.append(f"budget={t.budget.state}")
        if t.budget.cap_kbps is not None:
            parts.append(f"cap={t.budget.cap_kbps}kbps")
    if t.heartbeat_s is not None:
        parts.append(f"heartbeat={t.heartbeat_s:.0f}s")
    return " ".join(parts)


def device_field(kind: str, payload: bytes) -> Any:
    """A retained message of the devices table as JSON-ready data (``{"invalid": why}``)."""
    if not payload:
        return None
    try:
        if kind == "desired":
            return json.loads(decode_desired(payload).payload())
        models: dict[str, type[Message]] = {
            "status": Status, "reported": Reported, "demand": Demand,
        }  # fmt: skip
        return decode(models[kind], payload).model_dump()
    except ContractError as e:
        return {"invalid": str(e)}


def table_row(r: dict[str, Any]) -> tuple[str, ...]:
    """One device's row of the table from its :func:`device_field` values."""

    def get(kind: str, key: str) -> Any:
        doc = r.get(kind)
        if isinstance(doc, dict) and "invalid" in doc:
            return "invalid"
        return doc.get(key) if isinstance(doc, dict) else None

    def text(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return str(v)

    return (
        r["device"],
        text(get("status", "state")),
        text(get("reported", "streaming")),
        text(get("desired", "streaming")),
        text(get("desired", "v")),
        text(get("reported", "applied_v")),
        text(get("demand", "viewers")),
        text(get("reported", "encoder")),
        text(get("reported", "error")),
    )
