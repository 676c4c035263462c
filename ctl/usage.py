"""`flumph ctl usage [ID]`: data use against the budget, as the dashboard's chart shows it.

The hourly history lives in the fleet service (the dashboard), so this asks its HTTP API
(``--dashboard URL``, with ``--dashboard-password`` when it has a login) rather than the broker:

    flumph ctl usage            every device: budget state, period to date, budget, projection
    flumph ctl usage cam1       that, then bytes per hour for the last 48 h, per kind

The formatting is pure (``fleet_table``, ``device_report``) and tested on documents.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flumph.jsonlimits import JsonLimitError, loads

KINDS = ("srt", "mqtt", "snapshot")
MAX_RESPONSE = 16 * 1024 * 1024


class UsageError(Exception):
    """The dashboard could not be asked (unreachable, refused, not a usage document)."""


def size(n: int | float | None) -> str:
    """Bytes in SI units, as the dashboard page writes them."""
    if n is None:
        return "-"
    units = ("B", "KB", "MB", "GB", "TB")
    v, i = float(n), 0
    while v >= 1000 and i < len(units) - 1:
        v, i = v / 1000, i + 1
    return f"{v:.0f} {units[i]}" if i == 0 or v >= 100 else f"{v:.1f} {units[i]}"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} %"


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: set[int]) -> list[str]:
    lines = [header, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                 enumerate(zip(line, widths, strict=True))]  # fmt: skip
        return "  ".join(cells).rstrip()

    return [fmt(line) for line in lines]


def fleet_table(docs: list[dict[str, Any]]) -> list[str]:
    header = ("DEVICE", "STATE", "USED", "BUDGET", "USED%", "PROJECTED", "RESETS (UTC)")
    rows = [
        (
            str(d["device"]),
            str(d.get("state") or "-"),
            size(d.get("used_bytes")),
            size(d.get("limit_bytes")) if d.get("limit_bytes") else "none",
            pct(d.get("used_pct")),
            size(d.get("projected_bytes")),
            when(d["period"]["end"]),
        )
        for d in docs
    ]
    return table(header, rows, right={2, 3, 4, 5})


def device_report(doc: dict[str, Any]) -> list[str]:
    budget = doc.get("budget") or {}
    limit = doc.get("limit_bytes")
    lines = [f"{doc['device']}: budget {doc.get('state') or 'not reported'}"]
    used = size(doc.get("used_bytes"))
    if limit:
        lines.append(f"  used       {used} of {size(limit)} ({pct(doc.get('used_pct'))})")
        if budget.get("allowance_bytes"):
            lines.append(f"  allowance  {size(budget['allowance_bytes'])} granted this period")
    else:
        lines.append(f"  used       {used} (no budget)")
    if budget.get("cap_kbps"):
        lines.append(f"  pacing     bitrate capped at {budget['cap_kbps']} kbit/s")
    period = doc["period"]
    lines.append(f"  period     {when(period['start'])} to {when(period['end'])} UTC")
    projected = doc.get("projected_bytes")
    if projected is not None:
        of = f" ({pct(doc.get('projected_pct'))} of the budget)" if limit else ""
        lines.append(f"  projected  {size(projected)} at the period's end at its pace so far{of}")
    if doc.get("by_kind"):
        parts = ", ".join(f"{k} {size(v)}" for k, v in doc["by_kind"].items())
        lines.append(f"  by kind    {parts}")
    hourly = doc["hourly"]
    kinds = [k for k in hourly["by_kind"] if k in KINDS or any(hourly["by_kind"][k])]
    header = ("HOUR (UTC)", *(k.upper() for k in kinds), "TOTAL")
    rows = [
        (when(hour), *(size(hourly["by_kind"][k][i]) for k in kinds), size(hourly["total"][i]))
        for i, hour in enumerate(hourly["hours"])
    ]
    total = ("48 h", *(size(sum(hourly["by_kind"][k])) for k in kinds), size(sum(hourly["total"])))
    lines.append("")
    lines += table(header, [*rows, total], right=set(range(1, len(header))))
    return lines


# --- the dashboard's HTTP API -------------------------------------------------------------------


class Dashboard:
    def __init__(self, url: str, password: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.password = password
        self.timeout_s = timeout_s
        self._token: str | None = None

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                raw = r.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            raise UsageError(f"{self.url}{path}: HTTP {e.code}: {_detail(e)}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise UsageError(f"cannot reach the dashboard at {self.url}: {reason}") from None
        if len(raw) > MAX_RESPONSE:
            raise UsageError(f"{self.url}{path}: answer larger than {MAX_RESPONSE} bytes")
        try:
            return loads(raw, f"{self.url}{path}", max_bytes=MAX_RESPONSE)
        except JsonLimitError as e:
            raise UsageError(f"the dashboard's answer: {e}") from None

    def get(self, path: str) -> Any:
        if self.password is not None and self._token is None:
            self._token = self._request("/api/login", {"password": self.password})["token"]
        return self._request(path)


def _detail(e: urllib.error.HTTPError) -> str:
    try:
        doc = loads(e.read(4096), "error answer", max_bytes=4096)
    except (ValueError, OSError):
        return str(e.reason)
    if e.code == 401:
        return "the dashboard wants a login: give --dashboard-password"
    return str(doc.get("detail", e.reason)) if isinstance(doc, dict) else str(e.reason)


def usage(dashboard: Dashboard, device: str | None, as_json: bool) -> list[str]:
    if device is None:
        docs = dashboard.get("/api/usage")
        if not isinstance(docs, list):
            raise UsageError("/api/usage did not answer a list")
        if as_json:
            return [json.dumps(docs, indent=2)]
        if not docs:
            return ["no devices with usage reports"]
        return fleet_table(docs)
    doc = dashboard.get(f"/api/devices/{urllib.parse.quote(device)}/usage")
    if as_json:
        return [json.dumps(doc, indent=2)]
    return device_report(doc)
