"""The data budget's pure rules (periods, state, pacing, send costs) and the counters on disk,
fed numbers and an injected clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flumph.agent import budget as rules
from flumph.agent.budgetguard import BudgetGuard
from flumph.agent.usage import FILE_NAME, UsageStore
from flumph.settings import StreamSettings

MB = rules.MB


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, start: str) -> None:
        self.now = ts(start)

    def __call__(self) -> float:
        return self.now


# --- periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "day", "start", "end"),
    [
        ("2027-01-15 12:00", 1, "2027-01-01 00:00", "2027-02-01 00:00"),
        ("2027-01-01 00:00", 1, "2027-01-01 00:00", "2027-02-01 00:00"),
        ("2026-12-31 23:59:59", 1, "2026-12-01 00:00", "2027-01-01 00:00"),
        ("2027-01-10 00:00", 15, "2026-12-15 00:00", "2027-01-15 00:00"),
        ("2027-03-28 00:00", 28, "2027-03-28 00:00", "2027-04-28 00:00"),
        ("2027-03-27 23:59:59", 28, "2027-02-28 00:00", "2027-03-28 00:00"),
        ("2028-02-29 10:00", 28, "2028-02-28 00:00", "2028-03-28 00:00"),
    ],
)
def test_periods_start_at_midnight_utc_of_the_reset_day(
    now: str, day: int, start: str, end: str
) -> None:
    s = rules.period_start(ts(now), day)
    assert s == ts(start)
    assert rules.period_end(s, day) == ts(end)
    assert rules.period_label(s) == start[:7]
    assert rules.when(rules.period_end(s, day)) == end + " UTC"


def test_reset_day_outside_1_28_is_refused() -> None:
    for day in (0, 29, 31):
        with pytest.raises(ValueError, match="budget_reset_day must be 1-28"):
            rules.period_start(ts("2027-01-01 00:00"), day)


@given(
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    day=st.integers(min_value=1, max_value=28),
)
def test_every_instant_is_in_exactly_one_period(now: float, day: int) -> None:
    start = rules.period_start(now, day)
    end = rules.period_end(start, day)
    assert start <= now < end
    assert 28 * 86400 <= end - start <= 31 * 86400
    assert rules.period_start(end, day) == end


# --- state --------------------------------------------------------------------------------------


def test_state_thresholds() -> None:
    assert rules.state_of(10**12, None, latched=False, paced=False) == "ok"
    assert rules.state_of(79, 100, latched=False, paced=False) == "ok"
    assert rules.state_of(79, 100, latched=False, paced=True) == "pacing"
    assert rules.state_of(80, 100, latched=False, paced=True) == "warn"
    assert rules.state_of(99, 100, latched=False, paced=False) == "warn"
    assert rules.state_of(100, 100, latched=False, paced=False) == "exhausted"
    assert rules.state_of(50, 100, latched=True, paced=False) == "exhausted"


def test_send_cost_counts_headers_and_the_ack_pair() -> None:
    assert rules.srt_send_cost(0) == 0
    assert rules.srt_send_cost(1000) == 1000 + 44 + 72 + 48
    assert rules.srt_send_cost(1316 * 3 + 1) == 1316 * 3 + 1 + 4 * 44 + 120
    assert rules.fits(900, 100, 1000) and not rules.fits(901, 100, 1000)
    assert rules.fits(10**15, 10**9, None)


def test_mqtt_publish_cost_grows_with_segments() -> None:
    small = rules.mqtt_publish_cost(20, 100)
    assert small == (1 + 1 + 2 + 20 + 2 + 100) + 52 + 52 + (4 + 52)
    big = rules.mqtt_publish_cost(20, 60_000)
    segments = -(-(60_000 + 2 + 20 + 2 + 1 + 3) // 1448)
    assert big == 60_000 + 28 + segments * 52 + -(-segments // 2) * 52 + 56
    assert rules.mqtt_publish_cost(20, 60_000, tls=True) > big


# --- pacing -------------------------------------------------------------------------------------

START, END = ts("2027-01-01 00:00"), ts("2027-02-01 00:00")
MIDDLE = (START + END) / 2


def cap(used: int, now: float, limit: int = 1000 * MB, kbps: int = 500) -> int | None:
    return rules.pacing_cap_kbps(
        used=used, limit=limit, start=START, end=END, now=now, setting_kbps=kbps
    )


def test_no_cap_while_the_setting_cannot_run_out() -> None:
    # 500 kbit/s nonstop for the rest of the month is ~190 GB on the wire.
    assert cap(0, START, limit=200_000 * MB) is None
    assert cap(100_000 * MB, MIDDLE, limit=200_000 * MB) is None


def test_on_the_line_the_cap_spends_the_rest_evenly() -> None:
    limit = 100_000 * MB
    on_line = round(rules.straight_line(limit, START, END, MIDDLE))
    even = (limit - on_line) / (END - MIDDLE) * 8 / 1000 / rules.WIRE_PER_VIDEO
    assert cap(on_line, MIDDLE, limit=limit) == int(even)


def test_behind_the_line_the_cap_rises_ahead_it_falls() -> None:
    limit = 100_000 * MB
    on_line = round(rules.straight_line(limit, START, END, MIDDLE))
    at_line = cap(on_line, MIDDLE, limit=limit)
    behind = cap(on_line - 100 * MB, MIDDLE, limit=limit)
    ahead = cap(on_line + 100 * MB, MIDDLE, limit=limit)
    assert at_line is not None and ahead is not None
    assert behind is None or behind > at_line > ahead
    # The distance to the line is made up over PACING_HORIZON_S.
    step = 100 * MB / rules.PACING_HORIZON_S * 8 / 1000 / rules.WIRE_PER_VIDEO
    assert at_line - ahead == pytest.approx(step, abs=2)


def test_the_cap_never_goes_under_the_floor_nor_over_the_setting() -> None:
    assert rules.pacing_floor_kbps(500) == 125
    assert rules.pacing_floor_kbps(100) == 40
    assert rules.pacing_floor_kbps(30) == 30
    assert cap(999 * MB, MIDDLE) == 125
    assert cap(1000 * MB, MIDDLE) == 125
    assert cap(1001 * MB, END) == 125


@given(
    used=st.integers(min_value=0, max_value=2000 * MB),
    fraction=st.floats(min_value=0, max_value=1),
    kbps=st.integers(min_value=20, max_value=20000),
)
def test_the_cap_is_bounded_and_lower_when_further_ahead(
    used: int, fraction: float, kbps: int
) -> None:
    now = START + fraction * (END - START)
    c = cap(used, now, kbps=kbps)
    if c is not None:
        assert rules.pacing_floor_kbps(kbps) <= c <= kbps
        further = cap(used + 10 * MB, now, kbps=kbps)
        assert further is not None and further <= c


def test_assess_brings_state_and_cap_together() -> None:
    a = rules.assess(used=600 * MB, budget=1000 * MB, allowance=0, reset_day=1, now=MIDDLE,
                     pacing=True, setting_kbps=500)  # fmt: skip
    assert (a.state, a.period_start, a.period_end) == ("pacing", START, END)
    assert a.cap_kbps is not None and a.cap_kbps < 500
    a = rules.assess(used=600 * MB, budget=1000 * MB, allowance=0, reset_day=1, now=MIDDLE,
                     pacing=False, setting_kbps=500)  # fmt: skip
    assert (a.state, a.cap_kbps) == ("ok", None)
    a = rules.assess(used=850 * MB, budget=1000 * MB, allowance=200 * MB, reset_day=1,
                     now=MIDDLE, pacing=False, setting_kbps=500)  # fmt: skip
    assert (a.state, a.limit) == ("ok", 1200 * MB)


# --- the counters on disk -----------------------------------------------------------------------


def test_usage_rolls_at_the_reset_and_keeps_kinds_and_history(tmp_path: Path) -> None:
    clock = Clock("2027-01-31 23:59:00")
    store = UsageStore(tmp_path, clock=clock)
    store.add("srt", wire_sent=1000, wire_received=100, payload_sent=900)
    store.add("mqtt", wire_sent=50, wire_received=30)
    store.add("snapshot", wire_sent=400)
    january = store.current()
    assert (january.month, january.wire_bytes_total) == ("2027-01", 1580)
    assert january.by_kind == {"srt": 1100, "mqtt": 80, "snapshot": 400}
    store.save()
    clock.now = ts("2027-02-01 00:00:01")
    assert store.used() == 0
    store.add("mqtt", wire_sent=7)
    assert [m.month for m in store.months()] == ["2027-01", "2027-02"]
    store.save()
    again = UsageStore(tmp_path, clock=clock)
    assert again.used() == 7
    assert again.months()[0].by_kind == january.by_kind
    with pytest.raises(ValueError, match="unknown traffic kind 'video'"):
        store.add("video", wire_sent=1)


def test_allowance_belongs_to_its_period_and_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock("2027-01-20 00:00")
    store = UsageStore(tmp_path, clock=clock)
    store.grant(5 * MB)
    assert UsageStore(tmp_path, clock=clock).current().allowance_bytes == 5 * MB
    clock.now = ts("2027-02-01 00:00")
    assert UsageStore(tmp_path, clock=clock).current().allowance_bytes == 0


def test_changing_the_reset_day_keeps_the_running_count(tmp_path: Path) -> None:
    clock = Clock("2027-01-20 00:00")
    store = UsageStore(tmp_path, clock=clock)
    store.add("srt", wire_sent=1234)
    store.set_reset_day(15)
    now = store.current()
    assert (now.period_start, now.wire_bytes_total) == (ts("2027-01-15 00:00"), 1234)
    clock.now = ts("2027-02-15 00:00")
    assert store.used() == 0


def test_a_version_1_file_goes_on_for_the_current_month(tmp_path: Path) -> None:
    clock = Clock("2027-01-20 00:00")
    old = {"version": 1, "months": [
        {"month": "2026-12", "wire_bytes_sent": 5, "wire_bytes_received": 1,
         "payload_bytes_sent": 4, "payload_bytes_received": 0},
        {"month": "2027-01", "wire_bytes_sent": 500, "wire_bytes_received": 100,
         "payload_bytes_sent": 400, "payload_bytes_received": 0},
    ]}  # fmt: skip
    (tmp_path / FILE_NAME).write_text(json.dumps(old))
    store = UsageStore(tmp_path, clock=clock)
    assert store.used() == 600
    assert [m.month for m in store.months()] == ["2026-12", "2027-01"]


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"months": 5}',
        '{"version": 2, "months": [{"month": "2027-01", "wire_bytes_sent": -5}]}',
        '{"version": 2, "months": [{"month": "2027-01", "by_kind": {"srt": true}}]}',
        '{"version": 2, "months": [{"month": "2027-01", "surprise": 1}]}',
        '{"version": 1, "months": [{"month": "January"}]}',
    ],
)
def test_an_unreadable_usage_file_starts_from_zero(tmp_path: Path, content: str) -> None:
    (tmp_path / FILE_NAME).write_text(content)
    assert UsageStore(tmp_path, clock=Clock("2027-01-20 00:00")).used() == 0


# --- the guard: gate, latch, grants ------------------------------------------------------------


def guard(tmp_path: Path, clock: Clock, **settings: object) -> BudgetGuard:
    s = StreamSettings.model_validate({"data_budget_mb": 1.0, **settings})
    return BudgetGuard(UsageStore(tmp_path, clock=clock), s, clock)


def test_the_gate_latches_until_a_grant_or_the_reset(tmp_path: Path) -> None:
    clock = Clock("2027-01-31 12:00")
    g = guard(tmp_path, clock)
    g.usage.add("srt", wire_sent=900_000)
    assert g.admit(100_000) and g.view().state == "warn"
    assert not g.admit(100_001)
    # Latched: even a small send is refused now, and a start is refused in words.
    assert not g.admit(10)
    view = g.view()
    assert (view.state, view.used_bytes, view.budget_bytes) == ("exhausted", 900_000, 1_000_000)
    why = g.refusal()
    assert why is not None
    assert "0.90 MB of 1.00 MB" in why and "resets 2027-02-01 00:00 UTC" in why
    g.grant(0.5)
    assert g.admit(100_001) and g.view().allowance_bytes == 500_000
    assert g.refusal() is None
    g.usage.add("srt", wire_sent=600_000)
    assert g.view().state == "exhausted" and "(budget + 0.50 MB granted)" in (g.refusal() or "")
    clock.now = ts("2027-02-01 00:00")
    view = g.view()
    assert (view.state, view.used_bytes, view.allowance_bytes) == ("ok", 0, 0)


def test_raising_the_budget_lifts_the_latch_and_none_means_no_budget(tmp_path: Path) -> None:
    clock = Clock("2027-01-10 00:00")
    g = guard(tmp_path, clock)
    g.usage.add("srt", wire_sent=999_000)
    assert not g.admit(5000)
    g.configure(StreamSettings(data_budget_mb=2.0))
    assert g.admit(5000)
    g.configure(StreamSettings(data_budget_mb=None))
    assert g.admit(10**12) and g.view().state == "ok" and g.view().budget_bytes is None


def test_pending_bytes_count_before_they_are_measured(tmp_path: Path) -> None:
    clock = Clock("2027-01-10 00:00")
    g = guard(tmp_path, clock)
    pending = [0]
    g.add_pending(lambda: pending[0])
    assert g.fits(1_000_000)
    pending[0] = 1
    assert not g.fits(1_000_000)


def test_pacing_caps_the_encoder_and_copy_says_it_cannot(tmp_path: Path) -> None:
    clock = Clock("2027-01-16 12:00")  # half of January
    g = guard(tmp_path, clock, budget_pacing=True, bitrate_kbps=500, data_budget_mb=1000)
    g.usage.add("srt", wire_sent=700 * MB)
    view = g.view()
    assert view.state == "pacing" and view.cap_kbps is not None
    assert g.encoder_kbps(g.settings) == view.cap_kbps < 500
    assert "capped at" in (view.message or "")
    g.configure(g.settings.model_copy(update={"codec": "copy"}))
    view = g.view()
    assert view.state == "ok" and view.cap_kbps is None
    assert "cannot lower its rate" in (view.message or "")
    g.configure(StreamSettings(budget_pacing=False, bitrate_kbps=500, data_budget_mb=1000))
    assert g.view().cap_kbps is None and g.encoder_kbps(g.settings) == 500


def test_the_latch_is_kept_across_a_restart_until_the_limit_changes(tmp_path: Path) -> None:
    clock = Clock("2027-01-10 00:00")
    g = guard(tmp_path, clock)
    g.usage.add("srt", wire_sent=999_000)
    assert not g.admit(5000)
    g.usage.save()
    again = guard(tmp_path, clock)  # a restarted device: exhausted before it opens a stream
    assert again.view().state == "exhausted" and again.refusal() is not None
    again.configure(StreamSettings(data_budget_mb=1.5))
    assert again.view().state == "ok"  # 0.999 of 1.5 MB


def test_a_forwarded_stream_is_not_paced_and_the_guard_follows_live_settings(
    tmp_path: Path,
) -> None:
    clock = Clock("2027-01-16 12:00")
    live = [StreamSettings(budget_pacing=True, bitrate_kbps=500, data_budget_mb=1000)]
    forwarding = [True]  # codec "auto" passing an encoded camera through
    g = BudgetGuard(UsageStore(tmp_path, clock=clock), lambda: live[0], clock,
                    forwarding=lambda: forwarding[0])  # fmt: skip
    g.usage.add("srt", wire_sent=700 * MB)
    view = g.view()
    assert view.cap_kbps is None and "cannot lower" in (view.message or "")
    forwarding[0] = False
    assert g.view().state == "pacing"
    live[0] = live[0].model_copy(update={"data_budget_mb": 600})
    assert g.view().state == "exhausted"  # no configure(): the settings in force are read
