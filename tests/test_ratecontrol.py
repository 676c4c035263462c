"""The agent's rate controller, ladder and link estimator: pure, fed numbers and a clock."""

from __future__ import annotations

import pytest

from flumph.agent import ratecontrol as rc
from flumph.agent.ladder import Rung, choose, floor_for, rungs
from flumph.agent.linkestimate import LinkEstimator, LinkSample
from flumph.agent.ratecontrol import RateController

FPS = 30


def run_encoder(
    ctl: RateController,
    start: float,
    seconds: float,
    frame_bytes: float,
    *,
    keyframes: dict[int, float] | None = None,
) -> tuple[list[float], int]:
    """An encoder producing ``frame_bytes`` per frame it is given (per-frame budgeting, as
    SVT-AV1 and x265 do), ``keyframes`` {frame index: bytes}. Returns the bytes sent in each
    whole second and the frames skipped."""
    per_second = [0.0] * int(seconds + 1)
    skipped = 0
    keyframes = keyframes or {}
    for i in range(int(seconds * FPS)):
        now = start + i / FPS
        forced = i in keyframes
        if not ctl.admit(now, forced=forced):
            skipped += 1
            continue
        size = keyframes.get(i, frame_bytes)
        ctl.sent(now, int(size), forced)
        per_second[int(i / FPS)] += size
    return per_second, skipped


def windows(per_second: list[float], kbps: float, first: int = 0) -> list[float]:
    return [
        sum(per_second[j : j + 10]) * 8 / 1000 / 10 / kbps
        for j in range(first, len(per_second) - 10)
    ]


def test_the_gate_bounds_every_window_of_an_encoder_that_overshoots() -> None:
    ctl = RateController(100, 0.0)
    # 30 % over the target, for a minute: the gate alone (no reopen asked for here).
    per_second, skipped = run_encoder(ctl, 0.0, 60, 100_000 / 8 / FPS * 1.3)
    assert max(windows(per_second, 100, first=10)) <= 1.0 + rc.HARD_DEPTH_S / 10 + 0.02
    assert skipped > 0
    # Never more than MAX_SKIP_RUN frames in a row: no freeze from the gate.
    ctl = RateController(100, 0.0)
    run = longest = 0
    for i in range(60 * FPS):
        if ctl.admit(i / FPS):
            ctl.sent(i / FPS, int(100_000 / 8 / FPS * 3), False)
            run = 0
        else:
            run += 1
            longest = max(longest, run)
    assert longest == rc.MAX_SKIP_RUN


def test_a_keyframe_is_repaid_slowly_so_no_window_falls_10_percent_short() -> None:
    ctl = RateController(100, 0.0)
    frame = 100_000 / 8 / FPS
    # A keyframe worth 1.2 s of the target every 30 s, P frames exactly at the target.
    keyframes = {i: frame + 1.2 * 100_000 / 8 for i in (0, 30 * FPS)}
    per_second, skipped = run_encoder(ctl, 0.0, 60, frame, keyframes=keyframes)
    w = windows(per_second, 100, first=1)
    assert min(w) >= 0.9 and max(w) <= 1.1, (min(w), max(w))
    assert skipped > 0  # the debt beyond the depth was paid back by skipping


def test_a_forced_keyframe_always_passes() -> None:
    ctl = RateController(50, 0.0)
    ctl.sent(0.0, 100_000, True)  # far ahead of the target
    assert not ctl.admit(0.04)
    assert ctl.admit(0.05, forced=True)


def test_no_trim_while_settling_and_a_measured_undershoot_reopens_once() -> None:
    ctl = RateController(200, 0.0)
    assert ctl.setpoint_kbps == 200
    # The encoder delivers 70 % of its setpoint.
    frame = 200_000 / 8 / FPS * 0.7
    decisions = []
    for second in range(20):
        run_encoder(ctl, float(second), 1, frame)
        decisions.append(ctl.review(second + 1.0))
    made = [(i, d) for i, d in enumerate(decisions) if d is not None]
    assert made, "an encoder 30 % under the target must be reopened higher"
    first_at, reopen = made[0]
    assert first_at + 1 >= rc.GAIN_WINDOW_S  # a whole window of evidence first
    assert reopen.setpoint_kbps == pytest.approx(200 / 0.7, rel=0.06)
    assert "undershoots" in reopen.why


def test_a_raise_that_gains_nothing_marks_the_encoder_saturated() -> None:
    ctl = RateController(300, 0.0)
    frame = 150_000 / 8 / FPS  # an easy picture: 150 kbit/s whatever it is allowed
    now = 0.0
    reopen = None
    while reopen is None and now < 30:
        run_encoder(ctl, now, 1, frame)
        now += 1
        reopen = ctl.review(now)
    assert reopen is not None
    ctl.opened(reopen.setpoint_kbps, now)
    for _ in range(15):
        run_encoder(ctl, now, 1, frame)
        now += 1
        assert ctl.review(now) is None
    assert ctl.saturated


def test_a_far_lower_target_reopens_at_once_unless_held() -> None:
    ctl = RateController(500, 0.0)
    run_encoder(ctl, 0.0, 2, 500_000 / 8 / FPS)
    ctl.set_target(150, 2.0)
    assert ctl.review(2.0, hold=True) is None
    decision = ctl.review(2.0)
    assert decision is not None and decision.setpoint_kbps == 150


def test_the_strict_gate_holds_a_link_limited_target_within_a_second() -> None:
    ctl = RateController(500, 0.0)
    ctl.set_target(150, 0.0)
    # The old encoder still makes frames for 500 kbit/s; the strict gate lets 150 through.
    sent = 0.0
    for i in range(5 * FPS):
        now = i / FPS
        if ctl.admit(now, strict=True):
            ctl.sent(now, int(500_000 / 8 / FPS), False)
            sent += 500_000 / 8 / FPS
    assert sent * 8 / 1000 / 5 <= 150 * (1 + rc.STRICT_DEPTH_S / 5) + 17


# --- the ladder ---------------------------------------------------------------------------


def test_rungs_lower_the_frame_rate_first_then_the_size() -> None:
    assert rungs(1280, 720, 30) == [
        Rung(1280, 720, 30), Rung(1280, 720, 15), Rung(1280, 720, 10), Rung(960, 540, 10),
        Rung(640, 360, 10), Rung(480, 270, 10), Rung(320, 180, 10),
    ]  # fmt: skip
    assert rungs(640, 360, 15)[:3] == [Rung(640, 360, 15), Rung(640, 360, 10), Rung(480, 270, 10)]


def test_ladder_choice_by_bits_per_pixel_with_hysteresis() -> None:
    ladder = rungs(1280, 720, 30)
    # 100 kbit/s at 720p30 is 0.0036 bit/pixel: under SVT-AV1's floor, over x264's.
    assert choose(ladder, "libx264", 100).index == 0
    svt = choose(ladder, "libsvtav1", 100)
    assert svt.rung == Rung(1280, 720, 15) and svt.reason and "0.004" in svt.reason
    # Back up only with UP_MARGIN of headroom.
    just_over = floor_for("libsvtav1") * 1280 * 720 * 30 / 1000 * 1.05
    assert choose(ladder, "libsvtav1", just_over, current=1).index == 1
    assert choose(ladder, "libsvtav1", just_over * 1.3, current=1).index == 0
    # Measured: the encoder cannot hold the rate where it is: one rung down.
    assert choose(ladder, "libx264", 300, current=0, step_down=True).index == 1
    # Nothing left below the last rung.
    assert choose(ladder, "libsvtav1", 1).index == len(ladder) - 1


# --- the link estimator -------------------------------------------------------------------


class Link:
    """A sender's view of a link through which ``sending`` kbit/s meet ``capacity`` kbit/s."""

    def __init__(self, capacity: float, base_rtt_ms: float = 40) -> None:
        self.capacity = capacity
        self.base = base_rtt_ms
        self.queue_s = 0.0  # of video, at the sending rate
        self.t = 0.0
        self.sent = 0
        self.dropped = 0

    def poll(self, sending: float, dt: float = 0.25) -> LinkSample:
        self.t += dt
        self.sent += int(sending * 125 * dt)
        if sending > 0:
            self.queue_s = max(0.0, self.queue_s + dt * (1 - self.capacity / sending))
        else:
            self.queue_s = max(0.0, self.queue_s - dt)
        packets = self.sent // 1316
        if self.queue_s > 0.9:  # the sender drops what waits too long
            self.dropped += 3
            self.queue_s = 0.9
        delay_ms = self.base + self.queue_s * 1000
        return LinkSample(
            at=self.t, rtt_ms=delay_ms, send_buffer_ms=delay_ms, send_buffer_bytes=0,
            bytes_sent=self.sent, packets_sent=packets, packets_lost=0,
            packets_dropped=self.dropped,
        )  # fmt: skip


def test_a_link_that_cannot_carry_the_stream_is_cut_within_a_second() -> None:
    est = LinkEstimator(500)
    link = Link(capacity=800)
    for _ in range(20):
        assert est.update(link.poll(500), 500).ceiling_kbps is None
    link.capacity = 150
    cut_after = None
    for i in range(1, 9):
        verdict = est.update(link.poll(500), 500)
        if verdict.ceiling_kbps is not None:
            cut_after = i * 0.25
            break
    assert cut_after is not None and cut_after <= 1.0
    assert verdict.ceiling_kbps is not None and verdict.ceiling_kbps <= 0.5 * 500
    assert verdict.reason.startswith("link: ")


def test_keyframe_bursts_and_a_drain_are_not_congestion() -> None:
    est = LinkEstimator(500)
    link = Link(capacity=800)
    for _ in range(20):
        est.update(link.poll(500), 500)
    # A burst: 250 ms of queueing that drains, twice.
    for spike in (250, 250):
        sample = link.poll(500)
        spiked = LinkSample(**{**sample.__dict__, "send_buffer_ms": 40 + spike, "rtt_ms": 40})
        assert est.update(spiked, 500).ceiling_kbps is None
        for _ in range(4):
            assert est.update(link.poll(500), 500).ceiling_kbps is None


def test_converges_under_the_capacity_without_spiralling_then_climbs_back() -> None:
    est = LinkEstimator(500)
    link = Link(capacity=800)
    rate = 500.0
    for _ in range(8):
        est.update(link.poll(rate), rate)
    link.capacity = 150
    lowest = 500.0
    paused = 0
    for _ in range(int(20 / 0.25)):
        verdict = est.update(link.poll(rate), rate)
        paused += verdict.pause
        rate = 0.0 if verdict.pause else float(verdict.ceiling_kbps or 500)
        lowest = min(lowest, verdict.ceiling_kbps or 500)
    assert paused, "a long queue is drained by sending nothing for a moment"
    assert paused * 0.25 <= 2.0
    assert 0.5 * 150 <= lowest <= 150, lowest  # under the capacity, not spiralled to nothing
    assert link.queue_s < 0.1
    link.capacity = 800
    t_up = None
    for i in range(int(40 / 0.25)):
        verdict = est.update(link.poll(rate), rate)
        rate = float(verdict.ceiling_kbps or 500)
        if verdict.ceiling_kbps is None:
            t_up = i * 0.25
            break
    assert t_up is not None and 5 < t_up < 30, "climbs back to the setting, gradually"


def test_a_setting_below_the_ceiling_lifts_it() -> None:
    est = LinkEstimator(500)
    est.ceiling_kbps = 300
    est.set_setting(250)
    assert est.ceiling_kbps is None


def lossy(sample: LinkSample, lost: int) -> LinkSample:
    return LinkSample(**{**sample.__dict__, "packets_lost": lost})


def test_a_loss_burst_at_a_low_rate_is_not_congestion_but_sustained_loss_is() -> None:
    # 40 kbit/s: about 4 packets a poll. Two packets lost in one burst (a keyframe over a shallow
    # queue) once read as 50 % loss and cut the rate to its floor on a link with room.
    est = LinkEstimator(300)
    link = Link(capacity=800)
    for _ in range(12):
        est.update(link.poll(40), 40)
    assert est.update(lossy(link.poll(40), 2), 40).ceiling_kbps is None
    for _ in range(8):
        assert est.update(lossy(link.poll(40), 2), 40).ceiling_kbps is None
    # 300 kbit/s with 30 % of the packets lost for a second: the link is failing.
    est = LinkEstimator(300)
    link = Link(capacity=800)
    lost = 0
    verdict = None
    for i in range(12):
        sample = link.poll(300)
        lost = int(sample.packets_sent * 0.3) if i >= 6 else 0
        verdict = est.update(lossy(sample, lost), 300)
    assert verdict is not None and verdict.ceiling_kbps is not None
    assert "loss" in verdict.reason
