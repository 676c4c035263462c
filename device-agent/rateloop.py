"""The agent's rate loop: the encoder's target from the setting, the uplink and other caps, held by
the rate controller, with the picture ladder below the bits-per-pixel floor.

Glue around three pure modules (:mod:`.ratecontrol`, :mod:`.linkestimate`, :mod:`.ladder`), called
by the pipeline's encode thread (``admit``, ``sent``, ``review``) and read by the control thread
(``report``); one lock makes that safe.

The target is min(``bitrate_kbps``, the link's ceiling when ``adapt_to_link``, every cap in
:class:`RateLimits` such as the budget pacer's), and ``reason`` names the one that binds. The
encoder is opened with :meth:`RateLoop.encoder_settings`: the ladder's size and frame rate and
the controller's setpoint, which may differ from the settings the device reports.

A stream that is copied rather than encoded (``codec = "copy"``, or ``"auto"`` on a camera that
encodes itself) has no rate loop: there is no encoder to steer, so the pipeline creates none.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from flumph.agent.ladder import LadderChoice, choose, rungs
from flumph.agent.linkestimate import LinkEstimator, LinkSample
from flumph.agent.ratecontrol import RateController, Reopen
from flumph.settings import StreamSettings
from flumph.srt import SrtStats

FIRST_GUESS = {"auto": "libsvtav1", "av1": "libsvtav1", "hevc": "libx265", "h264": "libx264"}
REVIEW_INTERVAL_S = 0.25  # as often as the transport polls SRT's statistics
LOSS_KEYFRAME_MIN_INTERVAL_S = 1.0  # a keyframe after the sender's drops, at most this often
REOPEN_RETRY_S = 5.0  # after an encoder failed to open at the loop's wish
REOPEN_IN_EPISODE = 2.0  # setpoint / target above which a congested link still gets a new one


class RateLimits:
    """Caps on the encoder's rate from other parts of the agent, by name (the budget pacer sets
    ``"budget pacing"``); any thread. The loop reads them on every review."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._caps: dict[str, int] = {}

    def set(self, name: str, kbps: int | None) -> None:
        with self._lock:
            if kbps is None:
                self._caps.pop(name, None)
            else:
                self._caps[name] = max(1, int(kbps))

    def tightest(self) -> tuple[int, str] | None:
        with self._lock:
            if not self._caps:
                return None
            name = min(self._caps, key=lambda n: self._caps[n])
            return self._caps[name], name


@dataclass(frozen=True)
class RateReport:
    target_kbps: int
    current_kbps: int
    reason: str
    ladder: LadderChoice


class RateLoop:
    def __init__(
        self, settings: StreamSettings, limits: RateLimits, now: float, encoder: str | None = None
    ) -> None:
        self._lock = threading.Lock()
        self.limits = limits
        self.settings = settings
        self.encoder = encoder or FIRST_GUESS.get(settings.codec, "libsvtav1")
        self.link = LinkEstimator(settings.bitrate_kbps)
        self._ladder = rungs(settings.width, settings.height, settings.fps)
        self.target_kbps, self.reason = self._target()
        self.choice = choose(self._ladder, self.encoder, self.target_kbps)
        self.controller = RateController(self.target_kbps, now)
        self._next_review = now
        self._frames_since_keyframe = 0
        self._keyint_frames = settings.keyint_frames()
        # (generation, packets the sender dropped, packets the receiver reported lost)
        self._last_losses: tuple[int, int, int] | None = None
        self._loss_keyframe = False
        self._last_loss_keyframe = -1e9
        self._link_seen: tuple[int, float] | None = None
        self._retry_at = 0.0
        self.reopens = 0
        self.skipped = 0
        self.paused = 0  # frames held back while the queue in front of the link drained
        self._pausing = False
        self._reset_link = False  # the estimator asked to discard the queue with the connection

    # --- settings -------------------------------------------------------------------------------
    def _target(self) -> tuple[int, str]:
        options = [(self.settings.bitrate_kbps, "setting")]
        if self.settings.adapt_to_link and self.link.ceiling_kbps is not None:
            options.append((self.link.ceiling_kbps, self.link.reason))
        cap = self.limits.tightest()
        if cap is not None:
            options.append((cap[0], f"{cap[1]}: cap {cap[0]} kbit/s"))
        return min(options, key=lambda o: o[0])

    def plan(self, settings: StreamSettings) -> StreamSettings:
        """What the encoder would open with under new ``settings`` (nothing changes yet)."""
        with self._lock:
            ladder = rungs(settings.width, settings.height, settings.fps)
            target = min(settings.bitrate_kbps, self.target_kbps)
            if self.reason == "setting":
                target = settings.bitrate_kbps
            choice = choose(ladder, self.encoder, target)
            setpoint = self._setpoint_for(target)
            return self._encoder_settings(settings, choice, setpoint)

    def update_settings(self, settings: StreamSettings, now: float) -> None:
        """New settings are in force (the encoder opened by ``plan`` follows)."""
        with self._lock:
            self.settings = settings
            self.link.set_setting(settings.bitrate_kbps)
            self._ladder = rungs(settings.width, settings.height, settings.fps)
            self.target_kbps, self.reason = self._target()
            self.choice = choose(self._ladder, self.encoder, self.target_kbps)
            self.controller.set_target(self.target_kbps, now)

    def _setpoint_for(self, target: int) -> int:
        saved = self.controller.target_kbps
        self.controller.target_kbps = target
        try:
            return self.controller.wanted_setpoint()
        finally:
            self.controller.target_kbps = saved

    def _encoder_settings(
        self, settings: StreamSettings, choice: LadderChoice, setpoint: int
    ) -> StreamSettings:
        rung = choice.rung
        return settings.model_copy(
            update={
                "bitrate_kbps": setpoint,
                "width": rung.width,
                "height": rung.height,
                "fps": rung.fps,
            }
        )

    def encoder_settings(self) -> StreamSettings:
        with self._lock:
            return self._encoder_settings(
                self.settings, self.choice, self.controller.wanted_setpoint()
            )

    # --- the encode thread ----------------------------------------------------------------------
    def opened(self, encoder_name: str, settings: StreamSettings, now: float) -> None:
        """An encoder opened with ``settings`` (from ``encoder_settings`` or ``plan``) runs now."""
        with self._lock:
            self.encoder = encoder_name
            self.controller.opened(settings.bitrate_kbps, now)
            self._keyint_frames = max(1, round(self.settings.keyint_s * settings.fps))
            self._frames_since_keyframe = 0

    def open_failed(self, now: float) -> None:
        with self._lock:
            self._retry_at = now + REOPEN_RETRY_S

    def admit(self, now: float, *, forced: bool) -> bool:
        with self._lock:
            if self._pausing:
                self.paused += 1
                return False
            strict = self.settings.adapt_to_link and self.link.ceiling_kbps is not None
            passed = self.controller.admit(now, forced=forced, strict=strict)
            if not passed:
                self.skipped += 1
            return passed

    def keyframe_due(self, now: float) -> bool:
        """The schedule's keyframe is next, or the sender lost packets for good."""
        with self._lock:
            # Not while pausing: the frame would be held back, and the keyframe with it.
            if (
                self._loss_keyframe
                and not self._pausing
                and now - self._last_loss_keyframe >= LOSS_KEYFRAME_MIN_INTERVAL_S
            ):
                self._loss_keyframe = False
                self._last_loss_keyframe = now
                return True
            return self._frames_since_keyframe >= self._keyint_frames

    def sent(self, now: float, size: int, keyframe: bool) -> None:
        with self._lock:
            self.controller.sent(now, size, keyframe)
            self._frames_since_keyframe = 1 if keyframe else self._frames_since_keyframe + 1

    def review(
        self, now: float, link: tuple[float, int, SrtStats] | None, *, keyframe_due: bool
    ) -> StreamSettings | None:
        """Every ``REVIEW_INTERVAL_S``: the new target; the settings to reopen the encoder with,
        or None to keep it."""
        with self._lock:
            if now < self._next_review:
                return None
            self._next_review = now + REVIEW_INTERVAL_S
            self._observe_link(now, link)
            target, reason = self._target()
            self.target_kbps, self.reason = target, reason
            self.controller.set_target(target, now)
            choice = choose(
                self._ladder,
                self.encoder,
                target,
                self.choice.index,
                step_down=self.controller.cannot_hold(now),
            )
            # While the link is congested no new encoder (its keyframe would queue), unless the
            # one running makes frames for twice the target: the gate would have to skip more
            # than it can without freezing the picture.
            far = self.controller.setpoint_kbps > REOPEN_IN_EPISODE * target
            hold = self.settings.adapt_to_link and self.link.in_episode
            hold = hold and (self._pausing or not far)
            decision: Reopen | None = self.controller.review(
                now, keyframe_due=keyframe_due, hold=hold
            )
            if now < self._retry_at or hold:
                return None
            if choice.rung != self.choice.rung:
                self.choice = choice
                return self._reopen_settings(self.controller.wanted_setpoint())
            self.choice = choice
            if decision is None:
                return None
            return self._reopen_settings(decision.setpoint_kbps)

    def _reopen_settings(self, setpoint: int) -> StreamSettings:
        self.reopens += 1
        return self._encoder_settings(self.settings, self.choice, setpoint)

    def _observe_link(self, now: float, link: tuple[float, int, SrtStats] | None) -> None:
        if link is None:
            return
        polled_at, generation, stats = link
        if self._link_seen == (generation, polled_at):
            return
        if self._link_seen is not None and self._link_seen[0] != generation:
            self.link.reset()
        self._link_seen = (generation, polled_at)
        last = self._last_losses
        same = last is not None and last[0] == generation
        dropped = same and last is not None and stats.packets_dropped_sent > last[1]
        lost = same and last is not None and stats.packets_lost_sent > last[2]
        self._last_losses = (generation, stats.packets_dropped_sent, stats.packets_lost_sent)
        sample = LinkSample(
            at=polled_at,
            rtt_ms=stats.rtt_ms,
            send_buffer_ms=stats.send_buffer_ms,
            send_buffer_bytes=stats.send_buffer_bytes,
            send_buffer_now_bytes=stats.send_buffer_now_bytes,
            bytes_sent=stats.bytes_sent_unique,
            packets_sent=stats.packets_sent,
            packets_lost=stats.packets_lost_sent,
            packets_dropped=stats.packets_dropped_sent,
        )
        # A keyframe once the receiver has played out without a packet: one this sender dropped,
        # or one lost when its retransmission, a round trip and the queue in front of the link
        # later, comes after the SRT latency: a receiver with TSBPD then plays out without it and
        # the ingest skips to the next keyframe (8-14 s without a picture measured on the
        # 120 kbit/s link; 5 s after 2 packets lost behind 95 ms of queue at 600 kbit/s), and the
        # sender, which drops nothing, had no drop to tell it. Wasted on a receiver without TSBPD
        # (it waits for the retransmission), which the sender cannot tell from one with it.
        retransmitted_after = self.link.queueing_ms + (self.link.base_rtt() or stats.rtt_ms)
        late = lost and retransmitted_after > self.settings.srt_latency_ms
        if dropped or late:
            self._loss_keyframe = True
            if self.settings.adapt_to_link:
                self.link.pause_for_loss()
        verdict = self.link.update(sample, self.controller.sent_kbps(now, 1.0))
        self._pausing = verdict.pause and self.settings.adapt_to_link
        # Whether or not the rate follows the link: the sender drops nothing, so this is what
        # bounds the queue a viewer waits behind.
        self._reset_link = self._reset_link or verdict.reset

    def take_link_reset(self) -> bool:
        """Whether the queue in front of the link has grown past what a viewer should wait for
        (linkestimate.MAX_QUEUE_MS): the caller starts a new connection, which discards it. Once."""
        with self._lock:
            reset, self._reset_link = self._reset_link, False
            return reset

    # --- reporting ------------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, object]:
        """``rate`` (telemetry's: target, current, reason) and ``ladder`` (None at the settings'
        own picture), JSON-ready."""
        r = self.report(now)
        rung = r.ladder.rung
        ladder: dict[str, object] | None = None
        if r.ladder.reason is not None:
            ladder = {"width": rung.width, "height": rung.height, "fps": rung.fps}
            ladder["reason"] = r.ladder.reason
        rate = {"target_kbps": r.target_kbps, "current_kbps": r.current_kbps, "reason": r.reason}
        return {"rate": rate, "ladder": ladder}

    def report(self, now: float) -> RateReport:
        with self._lock:
            return RateReport(
                target_kbps=self.target_kbps,
                current_kbps=round(self.controller.sent_kbps(now)),
                reason=self.reason,
                ladder=self.choice,
            )
