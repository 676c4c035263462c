"""The usage history's arithmetic: increments from cumulative counters (resets, new periods,
stale reports), spreading over hours, periods, projections and the chart's series."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flumph.control import Usage
from flumph.dashboard.usage_history import (
    HOUR_S,
    Sample,
    attribute,
    cumulative_series,
    hourly_series,
    increments,
    period_bounds,
    projected_bytes,
    sample_of,
    spread,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


P = utc(2026, 3, 1)
PERIOD = f"p:{P:.0f}"


def kinds(ts: float, period: str = PERIOD, **counters: int) -> Sample:
    return Sample(ts, period, counters, P if period == PERIOD else None)


def test_increments_follow_counters_and_survive_resets() -> None:
    a = kinds(P + 100, srt=1000, mqtt=50, snapshot=0)
    b = kinds(P + 200, srt=1500, mqtt=80, snapshot=0)
    assert increments(None, a) == {}  # the first report is only a baseline
    assert increments(a, b) == {"srt": 500, "mqtt": 30}
    # The device lost its count (a reset): what it counts now was all used since the last report.
    c = kinds(P + 300, srt=200, mqtt=90, snapshot=10)
    assert increments(b, c) == {"srt": 200, "mqtt": 10, "snapshot": 10}
    # A new period starts every counter at zero: the new counts are all new use.
    nxt = f"p:{utc(2026, 4, 1):.0f}"
    d = Sample(utc(2026, 4, 1, 2), nxt, {"srt": 700, "mqtt": 5}, utc(2026, 4, 1))
    assert increments(c, d) == {"srt": 700, "mqtt": 5}
    # An upgraded agent (one total -> per kind) starts afresh rather than inventing use.
    old = Sample(P + 400, "m:2026-03", {"srt": 9_000_000})
    assert increments(old, kinds(P + 500, srt=10, mqtt=10)) == {}


def test_sample_of_usage_reports() -> None:
    s = sample_of(Usage(month="2026-03", bytes_sent=300, bytes_received=200), 5.0)
    assert s.counters == {"srt": 500} and s.period == "m:2026-03"
    s = sample_of(
        Usage(month="2026-03", period_start=P, by_kind={"srt": 7, "mqtt": 3, "snapshot": 1}), 6.0
    )
    assert s.counters == {"mqtt": 3, "snapshot": 1, "srt": 7} and s.period == PERIOD
    with pytest.raises(ValueError, match="not a byte count"):
        sample_of(Usage(month="2026-03", by_kind={"srt": -5}), 1.0)
    with pytest.raises(ValueError, match="names no kind"):
        sample_of(Usage(month="2026-03", by_kind={"<script>": 5}), 1.0)
    # Kinds outside the pattern are dropped, and only a few kinds are kept.
    many = {f"k{i}": i for i in range(50)} | {"x" * 100: 1}
    assert len(sample_of(Usage(month="2026-03", by_kind=many), 1.0).counters) == 8


def test_spread_over_hours_is_proportional_and_exact() -> None:
    h = utc(2026, 3, 2, 10)
    # 10:30 -> 13:30: half an hour, two hours, half an hour.
    parts = spread(h + 1800, h + 3 * HOUR_S + 1800, 6000)
    assert parts == {int(h): 1000, int(h) + HOUR_S: 2000, int(h) + 2 * HOUR_S: 2000,
                     int(h) + 3 * HOUR_S: 1000}  # fmt: skip
    assert spread(h, h, 77) == {int(h): 77}
    assert spread(h, h + 10, 0) == {}


@given(
    start=st.floats(min_value=1e9, max_value=2e9),
    span=st.floats(min_value=0, max_value=40 * 86400),
    amount=st.integers(min_value=0, max_value=10**12),
)
def test_spread_never_loses_or_invents_a_byte(start: float, span: float, amount: int) -> None:
    parts = spread(start, start + span, amount)
    assert sum(parts.values()) == amount
    assert all(v > 0 for v in parts.values())
    assert all(h % HOUR_S == 0 for h in parts)


def test_attribute_bounds_a_long_gap_and_starts_a_new_period_at_its_start() -> None:
    # The last report of the previous period, five hours before this one began.
    prev = Sample(P - 5 * HOUR_S, "p:1", {"srt": 10**6, "mqtt": 0}, 1.0)
    cur = Sample(P + 2 * HOUR_S, PERIOD, {"srt": 7200, "mqtt": 0}, P)
    rows = attribute(prev, cur, max_span_s=86400)
    # Counted from the new period's start (00:00), not from the previous report before it.
    assert rows == {(int(P), "srt"): 3600, (int(P) + HOUR_S, "srt"): 3600}
    far = Sample(P + 100 * 86400, PERIOD, {"srt": 17200, "mqtt": 0}, P)
    rows = attribute(cur, far, max_span_s=86400)
    assert sum(rows.values()) == 10000 and min(h for h, _ in rows) >= far.ts - 86400 - HOUR_S


def test_period_bounds_on_the_reset_day() -> None:
    assert period_bounds(utc(2026, 3, 15, 12), 1) == (utc(2026, 3, 1), utc(2026, 4, 1))
    assert period_bounds(utc(2026, 3, 15, 12), 20) == (utc(2026, 2, 20), utc(2026, 3, 20))
    assert period_bounds(utc(2026, 12, 28), 28) == (utc(2026, 12, 28), utc(2027, 1, 28))
    assert period_bounds(utc(2026, 1, 5), 10) == (utc(2025, 12, 10), utc(2026, 1, 10))
    with pytest.raises(ValueError, match="1-28"):
        period_bounds(0, 31)


def test_projection_is_the_pace_so_far() -> None:
    start, end = utc(2026, 3, 1), utc(2026, 3, 31)
    assert projected_bytes(10_000, start, end, utc(2026, 3, 11)) == 30_000
    assert projected_bytes(500, start, end, end + 5) == 500
    # The first minutes count as an hour, not as a pace of 720 hours at that rate.
    assert projected_bytes(100, start, end, start + 60) == round(100 + 100 * (30 * 24 - 1 / 60))


def test_series_for_the_chart() -> None:
    now = utc(2026, 3, 3, 5, 30)
    h5 = int(utc(2026, 3, 3, 5))
    rows = {(h5, "srt"): 300, (h5 - HOUR_S, "srt"): 200, (h5 - HOUR_S, "mqtt"): 10,
            (h5 - 47 * HOUR_S, "snapshot"): 4, (h5 - 48 * HOUR_S, "srt"): 999}  # fmt: skip
    hourly = hourly_series(rows, h5, 48)
    assert hourly["hours"][0] == h5 - 47 * HOUR_S and hourly["hours"][-1] == h5
    assert hourly["total"][-2:] == [210, 300] and hourly["total"][0] == 4
    assert list(hourly["by_kind"]) == ["srt", "mqtt", "snapshot"]
    # Walked back from the device's own count (1000 now): 700 at 05:00, 490 at 04:00, ...
    cum = cumulative_series(rows, start=P, now=now, used=1000, since=P)
    assert cum[0] == (P, 0) and cum[-1] == (now, 1000)
    assert dict(cum)[float(h5)] == 700 and dict(cum)[float(h5 - HOUR_S)] == 490
    # Before the history began the hours are unknown (None), not a flat line.
    cum = cumulative_series(rows, start=P, now=now, used=1000, since=h5 - HOUR_S)
    assert dict(cum)[float(h5 - 2 * HOUR_S)] is None and dict(cum)[float(h5 - HOUR_S)] == 490
    xs = [t for t, _ in cum]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
