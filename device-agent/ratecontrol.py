"""Closed-loop rate control around the encoder: bytes out and a clock in, decisions out.

Pure (STYLE.md #13): no encoder, no socket, no thread; the pipeline feeds it what it sent and asks
it what to do, the tests feed it numbers.

What the encoders here can and cannot do (PyAV 18 / FFmpeg 8.1, measured, bench/rate_matrix.py):
- None changes its rate on a live ``bit_rate`` change (SVT-AV1 4.1, x265, x264 alike: the FFmpeg
  wrappers read it at open, and PyAV cannot set ``rc_max_rate`` on an open context). A new rate
  means a new encoder, and a new encoder starts with a keyframe.
- Their own rate control holds the rate between keyframes (P frames within 0.85-1.08 of the
  target over the matrix, 60 s GOP); what broke the rate was the keyframes: SVT-AV1 at 100 kbit/s
  360p30 with a 4 s GOP delivered 1.45x, with a 60 s GOP 0.98x. A keyframe costs 1-1.5 s of the
  target's bytes.
- Skipping a frame (not giving it to the encoder) saves about its share at once: the encoders
  budget per frame (x264 0.63x with every other frame skipped, x265 and SVT-AV1 0.5x).

So three knobs, cheapest first:
1. **The gate** (a leaky bucket, always on): output may run ahead of ``target x time`` by
   ``BUCKET_DEPTH_S`` of target; past that, frames are skipped until the debt is paid: slowly
   (one in ``SOFT_SKIP_EVERY``) up to ``HARD_DEPTH_S``, then up to ``MAX_SKIP_RUN`` in a row.
   Forced keyframes always pass. Whatever the encoder does, output over any span stays within
   ``target x span + HARD_DEPTH_S`` of target and the repayment of one keyframe's excess spreads
   over about ten seconds.
2. **A trim at a keyframe that is due anyway**: the encoder's setpoint is ``target / gain``, gain
   measured on its P frames. A correction that only saves a few skipped frames waits for the next
   keyframe (the schedule, a viewer, a loss) and costs nothing extra there.
3. **A reopen now** (one keyframe): when the setpoint is off by more than ``REOPEN_NOW_RATIO``
   (the link or the budget moved the target), when the encoder undershoots for a whole window (the
   keyframe then only fills the deficit) or when the gate has been skipping more than
   ``SKIP_REOPEN_SHARE`` of the frames (what the viewer sees is then a lower frame rate).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# --- named thresholds ---------------------------------------------------------------------------
BUCKET_DEPTH_S = 0.6  # the gate lets output run this far ahead of the target (s of target)
SOFT_SKIP_EVERY = 12  # past the depth: skip one frame in this many (a debt repaid over ~10 s)
HARD_DEPTH_S = 1.6  # past this: skip up to MAX_SKIP_RUN frames in a row
MAX_SKIP_RUN = 2  # frames skipped in a row at most: no freeze from the gate
STRICT_DEPTH_S = 0.3  # strict gate (the link is the limit): output at most this far ahead
MAX_STRICT_SKIP_RUN = 8  # frames skipped in a row at most under the strict gate (~0.3 s)
MAX_DEBT_S = 3.0  # debt older than this much of the target is forgiven, not repaid for ever
AIM_MARGIN = 0.0  # P frames aim this much below the target
SETTLE_S = 3.0  # an encoder's first seconds run high (SVT-AV1: 1.2-1.6x): not its gain
MIN_GAIN_SPAN_S = 6.0  # settled output needed before the gain is trusted
GAIN_WINDOW_S = 12.0  # P-frame output measured over this (s)
TRIM_DEADBAND = 0.08  # setpoint errors below this are not worth a keyframe
REOPEN_NOW_RATIO = 1.25  # setpoint this far off the wanted one: reopen at once
TARGET_SETTLE_S = 2.0  # a smaller rise of the target reopens once it has held this long
UNDERSHOOT = 0.15  # P frames this far below the target for a whole window: reopen at once
SKIP_REOPEN_SHARE = 0.15  # the gate skipped this share of frames over the window: reopen at once
TRIM_WAIT_S = 30.0  # a small correction waits this long for a keyframe due anyway
MIN_TRIM, MAX_TRIM = 0.4, 1.35  # setpoint relative to target
SATURATED_ELASTICITY = 0.5  # a raise that gained less than this share of itself: stop raising
MIN_SETPOINT_KBPS = 10
CANNOT_HOLD_S = 10.0  # at MIN_TRIM and still over target this long: the encoder cannot hold it


@dataclass(frozen=True)
class Reopen:
    """Open a new encoder at ``setpoint_kbps`` now (``why`` says which rule)."""

    setpoint_kbps: int
    why: str


@dataclass
class _Out:
    at: float
    size: int
    keyframe: bool


class RateController:
    """One stream's loop: ``admit`` before encoding a frame, ``sent`` after each frame left,
    ``review`` about once a second, ``opened`` when a new encoder starts."""

    def __init__(self, target_kbps: int, now: float, *, gain: float = 1.0) -> None:
        self.target_kbps = max(1, target_kbps)
        self.gain = gain  # encoder output / setpoint on P frames, learned
        self.setpoint_kbps = self.wanted_setpoint()
        self._opened_at = now
        self._opening_frame = True  # the first frame of an encoder is its keyframe: not steady
        self._level = 0.0  # bytes ahead of the target
        self._level_at = now
        self._skip_run = 0
        self._soft_count = 0
        self._out: deque[_Out] = deque(maxlen=4096)
        self._admitted: deque[tuple[float, bool]] = deque(maxlen=4096)  # (at, passed)
        self._trim_pending_since: float | None = None
        self._over_at_floor_since: float | None = None
        self._target_at_open = self.target_kbps
        self._target_changed_at = now
        # Raising the setpoint of an easy picture may not raise the output: the encoder has spent
        # all the bits it can use. (setpoint, output) before the last raise, and the verdict.
        self._before_raise: tuple[int, float] | None = None
        self._last_measured: float | None = None
        self.saturated = False

    # --- the gate -------------------------------------------------------------------------------
    def _drain(self, now: float) -> None:
        dt = max(0.0, now - self._level_at)
        self._level = max(0.0, self._level - self.target_kbps * 125.0 * dt)
        self._level_at = max(self._level_at, now)

    def admit(self, now: float, *, forced: bool = False, strict: bool = False) -> bool:
        """Whether to encode the frame captured now. A forced keyframe always passes.

        ``strict``: the link is what limits the rate, and bytes over it only queue in front of
        it, so the gate holds the target exactly (``STRICT_DEPTH_S``) by skipping frames, until
        the link has calmed down and a new encoder at the lower rate can take over without its
        keyframe and first sharp seconds queueing too.

        Why two depths: a keyframe and the sharper P frames after it (SVT-AV1: 1.4-1.6x for 2 s)
        cost 1-1.5 s of the target. Repaid at once, the 10 s windows after it would fall 10 %
        short; repaid one frame in ``SOFT_SKIP_EVERY`` (8 %), the window holding the keyframe
        stays under +10 % and the next ones over -10 %. (Saving up before a scheduled keyframe
        was tried: no better.) Past ``HARD_DEPTH_S`` (the target fell under the encoder: the
        link, a cap) the gate skips two frames in three until a new encoder takes over."""
        self._drain(now)
        unit = self.target_kbps * 125.0
        if strict and not forced:
            skip = self._level > STRICT_DEPTH_S * unit and self._skip_run < MAX_STRICT_SKIP_RUN
        elif forced or self._level <= BUCKET_DEPTH_S * unit:
            skip = False
        elif self._level <= HARD_DEPTH_S * unit:
            self._soft_count += 1
            skip = self._soft_count % SOFT_SKIP_EVERY == 0 and self._skip_run < MAX_SKIP_RUN
        else:
            skip = self._skip_run < MAX_SKIP_RUN
        self._skip_run = self._skip_run + 1 if skip else 0
        self._admitted.append((now, not skip))
        return not skip

    def sent(self, now: float, size: int, keyframe: bool) -> None:
        """``size`` bytes of one frame (container included) left for the ingest."""
        self._drain(now)
        # A debt run up while the target fell (the link, a cap) is not repaid once it is back
        # up: only the last few seconds matter to any 10 s window.
        self._level = min(self._level + size, MAX_DEBT_S * self.target_kbps * 125.0)
        if self._opening_frame:
            self._opening_frame = False
            return
        self._out.append(_Out(now, size, keyframe))

    @property
    def ahead_bytes(self) -> float:
        return self._level

    # --- measurements ---------------------------------------------------------------------------
    def _window_start(self, now: float) -> float:
        return max(now - GAIN_WINDOW_S, self._opened_at + SETTLE_S)

    def _window(self, now: float) -> list[_Out]:
        start = self._window_start(now)
        return [o for o in self._out if o.at >= start]

    def p_frame_kbps(self, now: float) -> float | None:
        """What the current encoder's P frames come to at the offered frame rate (mean P frame
        size x frames offered per second), or None while the window is too short.

        Per frame, not per second: frames the gate skipped must not read as a low encoder gain
        (that would raise the setpoint and skip more)."""
        window = [o for o in self._window(now) if not o.keyframe]
        start = self._window_start(now)
        offered = [at for at, _ in self._admitted if at >= start]
        if len(window) < 2 or len(offered) < 2:
            return None
        span = offered[-1] - offered[0]
        if span < MIN_GAIN_SPAN_S:
            return None
        fps = (len(offered) - 1) / span
        return sum(o.size for o in window) / len(window) * fps * 8 / 1000

    def sent_kbps(self, now: float, span_s: float = 5.0) -> float:
        """Everything sent (keyframes too) over the last ``span_s`` seconds."""
        return sum(o.size for o in self._out if o.at > now - span_s) * 8 / 1000 / span_s

    def skip_share(self, now: float) -> float:
        start = max(now - GAIN_WINDOW_S, self._opened_at)
        window = [passed for at, passed in self._admitted if at >= start]
        return 0.0 if not window else 1 - sum(window) / len(window)

    # --- decisions ------------------------------------------------------------------------------
    def wanted_setpoint(self) -> int:
        wanted = self.target_kbps * (1 - AIM_MARGIN) / max(self.gain, 1e-3)
        wanted = min(max(wanted, MIN_TRIM * self.target_kbps), MAX_TRIM * self.target_kbps)
        return max(MIN_SETPOINT_KBPS, round(wanted))

    def set_target(self, kbps: int, now: float) -> None:
        self._drain(now)
        kbps = max(1, kbps)
        if kbps != self.target_kbps:
            self._target_changed_at = now
        if abs(kbps - self.target_kbps) > 0.1 * self.target_kbps:
            self.saturated = False
        self.target_kbps = kbps

    def opened(self, setpoint_kbps: int, now: float) -> None:
        """A new encoder runs at ``setpoint_kbps`` from now."""
        measured = self._last_measured
        raised = setpoint_kbps > self.setpoint_kbps and measured is not None
        self._before_raise = (
            (self.setpoint_kbps, measured) if measured is not None and raised else None
        )
        self._last_measured = None
        self._target_at_open = self.target_kbps
        self.setpoint_kbps = setpoint_kbps
        self._opened_at = now
        self._opening_frame = True
        self._trim_pending_since = None

    def cannot_hold(self, now: float) -> bool:
        """The setpoint is at its floor and the P frames still exceed the target: too few bits
        per pixel for this encoder (the ladder's cue)."""
        return (
            self._over_at_floor_since is not None
            and now - self._over_at_floor_since >= CANNOT_HOLD_S
        )

    def review(
        self, now: float, *, keyframe_due: bool = False, hold: bool = False
    ) -> Reopen | None:
        """About once a second. ``keyframe_due``: a keyframe is coming anyway (schedule, viewer,
        loss), so a reopen now costs nothing extra. ``hold``: no reopen now (the link is
        congested: a new encoder's keyframe and first seconds, 1-1.5 s of its rate, would queue
        in front of it; measured, reopening at every cut kept a 150 kbit/s link's queue at 3 s)."""
        measured = None if hold else self.p_frame_kbps(now)  # a skipping gate skews it
        if measured is not None:
            self.gain = measured / self.setpoint_kbps
            self._last_measured = measured
            self._judge_raise(measured)
        wanted = self.wanted_setpoint()
        self._watch_floor(now, wanted, measured)
        if hold:
            return None
        ratio = wanted / self.setpoint_kbps
        if ratio < 1 / REOPEN_NOW_RATIO:
            return self._reopen(wanted, f"output far above the target {self.target_kbps} kbit/s")
        rose = self.target_kbps / self._target_at_open
        if ratio > 1 + TRIM_DEADBAND and (
            rose > REOPEN_NOW_RATIO
            or (rose > 1 + TRIM_DEADBAND and now - self._target_changed_at >= TARGET_SETTLE_S)
        ):
            return self._reopen(wanted, f"target rose to {self.target_kbps} kbit/s")
        if measured is None or abs(ratio - 1) <= TRIM_DEADBAND:
            self._trim_pending_since = None
            return None
        if ratio > 1:
            # Under the target. Raising costs a keyframe that only fills the deficit; pointless
            # once a raise has shown the encoder has no use for more bits (an easy picture).
            if self.saturated:
                return None
            if keyframe_due:
                return self._reopen(wanted, "trim up at a keyframe due anyway")
            window_full = now - self._opened_at >= GAIN_WINDOW_S
            if window_full and measured < self.target_kbps * (1 - UNDERSHOOT):
                return self._reopen(wanted, f"encoder undershoots ({measured:.0f} kbit/s)")
            return None
        if keyframe_due:
            return self._reopen(wanted, "trim down at a keyframe due anyway")
        self._trim_pending_since = self._trim_pending_since or now
        skipping = self.skip_share(now)
        if now - self._opened_at >= GAIN_WINDOW_S and skipping > SKIP_REOPEN_SHARE:
            return self._reopen(wanted, f"gate skipping {skipping:.0%} of frames")
        if now - self._trim_pending_since >= TRIM_WAIT_S:
            return self._reopen(wanted, f"trim waited {TRIM_WAIT_S:.0f} s for a keyframe")
        return None

    def _judge_raise(self, measured: float) -> None:
        if self._before_raise is None:
            return
        old_setpoint, old_measured = self._before_raise
        self._before_raise = None
        asked = self.setpoint_kbps / old_setpoint - 1
        got = measured / max(old_measured, 1e-3) - 1
        if got < SATURATED_ELASTICITY * asked:
            self.saturated = True

    def _watch_floor(self, now: float, wanted: int, measured: float | None) -> None:
        at_floor = wanted <= MIN_TRIM * self.target_kbps + 1
        over = measured is not None and measured > self.target_kbps * (1 + TRIM_DEADBAND)
        if at_floor and over:
            self._over_at_floor_since = self._over_at_floor_since or now
        else:
            self._over_at_floor_since = None

    def _reopen(self, wanted: int, why: str) -> Reopen | None:
        if wanted == self.setpoint_kbps:
            return None
        return Reopen(wanted, why)
