"""What the dashboard says about a device's data use: pure functions of its messages and history.

The freshest word wins, by the device's own ``ts``: the retained birth (``status.usage``), the
retained ``reported.budget``, the last telemetry (``usage``, ``budget``) and the last report the
history stored (which outlives a restart of the dashboard). So a restarted dashboard shows a
device's usage at once, from retained messages and its own file, before the next heartbeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flumph.control import Budget, Usage

from .device_state import DeviceState
from .usage_history import (
    HOUR_S,
    HourRows,
    Sample,
    cumulative_series,
    effective_budget,
    hour_of,
    hourly_series,
    period_bounds,
    projected_bytes,
)

HOURLY_HOURS = 48


@dataclass(frozen=True)
class Reading:
    """The device's period-to-date count as of ``ts`` (its clock)."""

    used: int
    ts: float
    by_kind: dict[str, int]
    usage: Usage | None = None


def latest_usage(dev: DeviceState) -> tuple[Usage, float] | None:
    """The freshest ``Usage`` the device sent (birth or telemetry) and its time."""
    found: list[tuple[Usage, float]] = []
    if dev.status is not None and dev.status.usage is not None:
        found.append((dev.status.usage, dev.status.ts))
    if dev.telemetry is not None and dev.telemetry.usage is not None:
        found.append((dev.telemetry.usage, dev.telemetry.ts))
    return max(found, key=lambda f: f[1]) if found else None


def latest_budget(dev: DeviceState) -> tuple[Budget, float] | None:
    found: list[tuple[Budget, float]] = []
    if dev.reported is not None and dev.reported.budget is not None:
        found.append((dev.reported.budget, dev.reported.ts))
    if dev.telemetry is not None and dev.telemetry.budget is not None:
        found.append((dev.telemetry.budget, dev.telemetry.ts))
    return max(found, key=lambda f: f[1]) if found else None


def _total(usage: Usage) -> int:
    return sum(usage.by_kind.values()) if usage.by_kind else usage.bytes_sent + usage.bytes_received


def readings(dev: DeviceState, mark: Sample | None) -> list[Reading]:
    """Every period-to-date count at hand: the budget's, a usage report's, the stored mark's."""
    candidates: list[Reading] = []
    u = latest_usage(dev)
    if u is not None:
        usage, ts = u
        candidates.append(Reading(_total(usage), ts, dict(usage.by_kind), usage))
    b = latest_budget(dev)
    if b is not None:
        candidates.append(Reading(b[0].used_bytes, b[1], {}))
    if mark is not None:
        candidates.append(Reading(mark.total(), mark.ts, dict(mark.counters)))
    return candidates


def reading(dev: DeviceState, mark: Sample | None) -> Reading | None:
    """The freshest count (a tie goes to the report that carries the kinds)."""
    return max(readings(dev, mark), key=lambda r: (r.ts, bool(r.by_kind)), default=None)


def kinds_reading(dev: DeviceState, mark: Sample | None) -> Reading | None:
    """The freshest count by kind of traffic (the budget carries only a total)."""
    with_kinds = [r for r in readings(dev, mark) if r.by_kind]
    return max(with_kinds, key=lambda r: r.ts, default=None)


def _reset_day(dev: DeviceState, desired: dict[str, Any] | None) -> int:
    for source in (dev.reported.settings if dev.reported else {}, desired or {}):
        day = source.get("budget_reset_day")
        if isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 28:
            return day
    return 1


def period_of(
    dev: DeviceState, desired: dict[str, Any] | None, now: float
) -> tuple[float, float, str]:
    """(start, end, where it came from) of the device's current budget period."""
    b = latest_budget(dev)
    if b is not None and b[0].period_start <= now < b[0].resets_at:
        return b[0].period_start, b[0].resets_at, "device"
    start, end = period_bounds(now, _reset_day(dev, desired))
    return start, end, "settings"


def usage_summary(dev: DeviceState, mark: Sample | None) -> dict[str, Any] | None:
    """The card's ``usage``: the period's count, and the budget when the device has one."""
    r = reading(dev, mark)
    if r is None:
        return None
    kinds = kinds_reading(dev, mark)
    b = latest_budget(dev)
    budget = effective_budget(b[0]) if b is not None else None
    usage = r.usage
    if usage is None and (latest := latest_usage(dev)) is not None:
        usage = latest[0]  # the freshest count was the stored mark: the report still has the rest
    if budget is None and usage is not None:
        budget = usage.budget_bytes
    return {
        "month": usage.month if usage is not None else None,
        "bytes_sent": usage.bytes_sent if usage is not None else None,
        "bytes_received": usage.bytes_received if usage is not None else None,
        "bytes_total": r.used,
        "by_kind": kinds.by_kind if kinds is not None else {},
        "period_start": usage.period_start if usage is not None else None,
        "budget_bytes": budget,
        "used_pct": round(100.0 * r.used / budget, 1) if budget else None,
        "at": r.ts,
    }


def budget_summary(dev: DeviceState) -> dict[str, Any] | None:
    """The card's ``budget``: the device's own word on it (state, cap, reset), or None."""
    b = latest_budget(dev)
    if b is None:
        return None
    budget, ts = b
    limit = effective_budget(budget)
    view: dict[str, Any] = budget.model_dump()
    view["limit_bytes"] = limit
    view["used_pct"] = round(100.0 * budget.used_bytes / limit, 1) if limit else None
    view["at"] = ts
    return view


def usage_document(
    dev: DeviceState,
    *,
    desired: dict[str, Any] | None,
    mark: Sample | None,
    since: float | None,
    rows: HourRows,
    now: float | None = None,
) -> dict[str, Any]:
    """``GET /api/devices/{id}/usage``: the last 48 h by the hour, the period to date against
    the budget, and where the period ends at its pace so far."""
    now = time.time() if now is None else now
    start, end, source = period_of(dev, desired, now)
    r = reading(dev, mark)
    kinds = kinds_reading(dev, mark)
    if kinds is not None and kinds.ts < start:
        kinds = None
    b = latest_budget(dev)
    budget = b[0] if b is not None else None
    limit = effective_budget(budget)
    if limit is None and r is not None and r.usage is not None:
        limit = r.usage.budget_bytes
    # A count from before this period began says nothing about this one.
    used = r.used if r is not None and r.ts >= start else None
    projected = None
    if used is not None:
        projected = (
            used
            if budget is not None and budget.state == "exhausted"
            else (projected_bytes(used, start, end, now))
        )
    cumulative = (
        cumulative_series(rows, start=start, now=now, used=used, since=since)
        if used is not None
        else []
    )
    return {
        "device": dev.device_id,
        "now": now,
        "state": budget.state if budget is not None else None,
        "budget": budget.model_dump() if budget is not None else None,
        "period": {"start": start, "end": end, "from": source},
        "used_bytes": used,
        "used_at": r.ts if r is not None else None,
        "by_kind": kinds.by_kind if kinds is not None else {},
        "by_kind_at": kinds.ts if kinds is not None else None,
        "limit_bytes": limit,
        "used_pct": round(100.0 * used / limit, 1) if used is not None and limit else None,
        "projected_bytes": projected,
        "projected_pct": round(100.0 * projected / limit, 1)
        if projected is not None and limit
        else None,
        "history_since": since,
        "hourly": hourly_series(rows, hour_of(now), HOURLY_HOURS),
        "cumulative": cumulative,
    }


def history_since_hour(now: float, period_start: float) -> int:
    """The first hour a usage document needs: the period's start or 48 h ago, the earlier."""
    return min(hour_of(period_start), hour_of(now) - (HOURLY_HOURS - 1) * HOUR_S)
