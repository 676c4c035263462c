"""Hourly usage history from a device's cumulative byte counters: pure functions, no I/O.

A device reports, in its birth (``status.usage``) and its telemetry (``usage``), the bytes it has
used since its budget period began, per kind of traffic (``by_kind``: ``srt``, ``mqtt``,
``snapshot``; an agent without ``by_kind`` reports one total, kept here as ``srt``, the only
traffic such an agent counts). The fleet service turns consecutive reports into bytes per hour:

- the increment between two reports is the difference of the counters, spread over the hours
  between the two reports in proportion to the time in each (a dashboard that was down for three
  hours learns three hours' use at once; the chart shows it as three hours, not as one spike);
- a counter that went down within the same period was reset (a device that lost its state):
  what it counts now was all used since the previous report (Prometheus' ``increase()`` rule);
- a new period (``period_start``, or ``month`` from an older agent) restarts every counter at
  zero: what the new report counts was used since that period began;
- reports are ordered by the device's own ``ts``; one not newer than the last is stale (a
  retained birth seen again after a restart of the dashboard) and changes nothing;
- a report whose basis changed (period key type, total vs per kind: an upgraded agent) starts
  afresh without an increment rather than inventing one.

Periods are UTC, starting at 00:00 of ``budget_reset_day`` (1-28) each month.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict

from flumph.control import Budget, Usage

HOUR_S = 3600
KINDS = ("srt", "mqtt", "snapshot")
TOTAL_KIND = "srt"  # what an agent without by_kind counts: its SRT link
MAX_COUNTER = 2**62  # a byte counter beyond this is not a byte counter
MAX_KINDS = 8  # kinds kept per report; more is not the contract
KIND_RE = re.compile(r"[a-z0-9_-]{1,16}")

# (hour start in epoch seconds, kind) -> bytes used in that hour
HourRows = dict[tuple[int, str], int]


@dataclass(frozen=True)
class Sample:
    """One report of a device's cumulative counters."""

    ts: float  # the device's clock, epoch seconds
    period: str  # "p:<period_start>" or "m:<YYYY-MM>"
    counters: Mapping[str, int] = field(default_factory=dict)
    period_start: float | None = None

    def total(self) -> int:
        return sum(self.counters.values())


def sample_of(usage: Usage, ts: float) -> Sample:
    """The sample a ``Usage`` report makes; ValueError for counters that cannot be bytes."""
    if usage.by_kind:
        named = [(k, v) for k, v in sorted(usage.by_kind.items()) if KIND_RE.fullmatch(k)]
        if not named:
            raise ValueError("usage by_kind names no kind of traffic ([a-z0-9_-]{1,16})")
        kinds = dict(named[:MAX_KINDS])
    else:
        kinds = {TOTAL_KIND: usage.bytes_sent + usage.bytes_received}
    for kind, value in kinds.items():
        if not 0 <= value <= MAX_COUNTER:
            raise ValueError(f"usage counter {kind}={value} is not a byte count")
    start = usage.period_start
    period = f"p:{start:.0f}" if start is not None else f"m:{usage.month}"
    return Sample(ts=ts, period=period, counters=kinds, period_start=usage.period_start)


def _one_total(s: Sample) -> bool:
    return set(s.counters) == {TOTAL_KIND}


def same_basis(a: Sample, b: Sample) -> bool:
    """Whether the counters of two reports mean the same (same period scheme, same kinds)."""
    return a.period[:2] == b.period[:2] and _one_total(a) == _one_total(b)


def increments(prev: Sample | None, cur: Sample) -> dict[str, int]:
    """Bytes used per kind between two reports (see the module's rules)."""
    if prev is None or not same_basis(prev, cur):
        return {}
    if cur.period != prev.period:
        return {k: v for k, v in cur.counters.items() if v > 0}
    out: dict[str, int] = {}
    for kind, value in cur.counters.items():
        before = prev.counters.get(kind, 0)
        grown = value - before if value >= before else value
        if grown > 0:
            out[kind] = grown
    return out


def hour_of(ts: float) -> int:
    return int(ts // HOUR_S) * HOUR_S


def spread(start: float, end: float, amount: int) -> dict[int, int]:
    """``amount`` over the hours of ``[start, end)`` in proportion to the time in each; the parts
    are whole bytes and add up to ``amount`` exactly. An empty span puts it all in ``end``'s
    hour."""
    if amount <= 0:
        return {}
    if end <= start:
        return {hour_of(end): amount}
    out: dict[int, int] = {}
    span = end - start
    given = 0
    hour = hour_of(start)
    while hour < end:
        upto = min(end, hour + HOUR_S)
        # Cumulative rounding: each hour gets the rounded share up to its end minus what went
        # before, so the parts add up exactly.
        share = round(amount * (upto - start) / span) - given
        if share > 0:
            out[hour] = share
            given += share
        hour += HOUR_S
    return out


def attribute(prev: Sample | None, cur: Sample, *, max_span_s: float) -> dict[tuple[int, str], int]:
    """The hourly rows one new report adds: its increments spread over the time they cover."""
    grown = increments(prev, cur)
    if not grown or prev is None:
        return {}
    start = prev.ts
    if cur.period != prev.period and cur.period_start is not None:
        start = max(start, cur.period_start)  # the new period's count began at its start
    start = max(start, cur.ts - max_span_s)
    rows: dict[tuple[int, str], int] = {}
    for kind, amount in grown.items():
        for hour, part in spread(start, cur.ts, amount).items():
            rows[(hour, kind)] = rows.get((hour, kind), 0) + part
    return rows


def add_rows(into: HourRows, rows: Mapping[tuple[int, str], int]) -> None:
    for key, value in rows.items():
        into[key] = into.get(key, 0) + value


# --- periods and projections -------------------------------------------------------------------


def _month_start(year: int, month: int, day: int) -> datetime:
    while month < 1:
        year, month = year - 1, month + 12
    while month > 12:
        year, month = year + 1, month - 12
    return datetime(year, month, day, tzinfo=UTC)


def period_bounds(now: float, reset_day: int = 1) -> tuple[float, float]:
    """The budget period around ``now``: from 00:00 UTC of ``reset_day`` to the next one."""
    if not 1 <= reset_day <= 28:
        raise ValueError(f"budget_reset_day {reset_day} must be 1-28")
    t = datetime.fromtimestamp(now, UTC)
    start = _month_start(t.year, t.month, reset_day)
    if start.timestamp() > now:
        start = _month_start(t.year, t.month - 1, reset_day)
    end = _month_start(start.year, start.month + 1, reset_day)
    return start.timestamp(), end.timestamp()


def projected_bytes(used: int, start: float, end: float, now: float) -> int:
    """Use at the period's end if it goes on at the period's pace so far (a straight line from
    the start through now; the first hour counts as an hour, not as a spike)."""
    if now >= end:
        return used
    elapsed = max(now - start, float(HOUR_S))
    return round(used + used / elapsed * (end - now))


def effective_budget(budget: Budget | None) -> int | None:
    """What the device may use this period: its budget plus one-shot allowances."""
    if budget is None or budget.budget_bytes is None:
        return None
    return budget.budget_bytes + budget.allowance_bytes


# --- series for the API and the chart ----------------------------------------------------------


class HourlySeries(TypedDict):
    hours: list[int]  # each hour's start, epoch seconds
    by_kind: dict[str, list[int]]
    total: list[int]


def hourly_series(rows: HourRows, end_hour: int, hours: int) -> HourlySeries:
    """The last ``hours`` hours ending with ``end_hour``: bytes per hour, per kind and total."""
    starts = [end_hour - (hours - 1 - i) * HOUR_S for i in range(hours)]
    kinds = sorted({k for (_, k) in rows} | set(KINDS), key=_kind_order)
    by_kind = {k: [rows.get((h, k), 0) for h in starts] for k in kinds}
    total = [sum(by_kind[k][i] for k in kinds) for i in range(hours)]
    return {"hours": starts, "by_kind": by_kind, "total": total}


def _kind_order(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


def cumulative_series(
    rows: HourRows, *, start: float, now: float, used: int, since: float | None
) -> list[tuple[float, int | None]]:
    """Period-to-date use at each hour boundary, anchored on the device's own count ``used``
    now and walked back through the hourly rows. Before ``since`` (when the history began) the
    hours are unknown: the series has the period's start at 0 and nothing until ``since``."""
    per_hour: dict[int, int] = {}
    for (hour, _), value in rows.items():
        if start <= hour + HOUR_S and hour <= now:
            per_hour[hour] = per_hour.get(hour, 0) + value
    known_from = max(start, since) if since is not None else now
    points: list[tuple[float, int | None]] = [(start, 0)]
    later = sum(v for h, v in per_hour.items() if h >= hour_of(now))
    boundary = hour_of(now)
    walked: list[tuple[float, int | None]] = [(now, used)] if now > boundary else []
    while boundary > start:
        known = max(0, used - later) if boundary >= known_from else None
        walked.append((float(boundary), known))
        later += per_hour.get(boundary - HOUR_S, 0)
        boundary -= HOUR_S
    points += reversed(walked)
    return points


def totals(rows: Iterable[tuple[tuple[int, str], int]], since_hour: int) -> dict[str, int]:
    """Bytes per kind in the rows from ``since_hour`` on."""
    out: dict[str, int] = {}
    for (hour, kind), value in rows:
        if hour >= since_hour:
            out[kind] = out.get(kind, 0) + value
    return out
