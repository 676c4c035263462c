"""How much the uplink carries, from SRT's own statistics: samples in, a ceiling out.

Pure (STYLE.md #13), after belacoder's balancers: fed one sample per statistics poll (0.25 s),
it answers with a ceiling for the encoder's rate, or None when the link is not the limit.

Live-mode SRT sends at the encoder's pace, so a link that cannot carry the stream shows up first
as queueing in front of it, seen by the sender as a growing send buffer, then as losses. The
agent's sender never drops a packet as too late (``SrtOptions.sender_drops``, see below), so its
send buffer is the whole queue.

- **Queueing delay** = ``send-buffer span - base RTT`` (the span: the time range of the data not
  yet acknowledged, libsrt's moving average of it; base: the lowest RTT of the last
  ``BASE_RTT_WINDOW_S``). Not the RTT itself: the ACKACK that measures it queues behind the data,
  so while a queue drains the RTT reports the queue as it was (measured: 0.57 -> 1.7 s over a 2 s
  pause in which the send buffer went 0.64 -> 0.44 s and nothing was sent), and it stands still
  while no ACK advances (below). Every quarter second counts: 500 kbit/s into a 150 kbit/s link
  queues 0.58 s of video per 0.25 s. Congestion is: over ``DELAY_SEVERE_MS``; or over
  ``DELAY_HIGH_MS`` and grown by at least ``GROWTH_MS`` on each of ``GROWING_POLLS`` polls; or
  over ``DELAY_HIGH_MS`` for ``CONGESTED_AFTER`` polls without shrinking. A keyframe's burst
  queues for a moment on any link near its capacity and then shrinks, which none of these mistake
  for a full link. The average lags: a send buffer that holds under ``DRAINED_BYTES`` now (not
  averaged) is drained whatever the average still says.
- **Too-late drops** (a sender configured to drop) and **loss** over ``LOSS_SEVERE_PCT``:
  congestion at once. Loss below that without queueing is SRT's to repair, not a reason to lower
  the picture.

An episode of congestion starts with one cut of the rate being sent: to ``SEVERE_DECREASE`` x
when the queue is long, grows fast or the sender dropped packets, else to ``DECREASE_FACTOR`` x.
With a long queue the loop also sends nothing for a moment (``pause``, at most ``MAX_PAUSE_S``):
every frame sent would wait behind the queue, so sending nothing drains it fastest, and the next
frame out is a keyframe at the new rate. Once the rate sent is down at the ceiling,
``DRAIN_GRACE_S`` later, a span that still grows by ``QUEUE_RISE_MS`` a second while ACKs
advance cuts again by ``DECREASE_FACTOR`` (``SEVERE_DECREASE`` if fast), to no less than
``EPISODE_FLOOR`` of the rate that started the episode; a queue that shrinks is the old rate's
tail, not new evidence. (Cutting on every poll spiralled down: 500 -> 24
kbit/s on a 150 kbit/s link.) Over ``MAX_QUEUE_MS`` the verdict asks for a new connection
(``reset``), which discards the queue: what a viewer waits for stays bounded whatever the link
does.

**A receiver without TSBPD** (the ingest's ``srt_tsbpd = false``; any listener may be one), as
measured through bench/linkproxy.py at 120 kbit/s (tests/test_link_adaptation.py), before this
module knew of it:

- It may fail to skip the hole that a packet the sender dropped as too late leaves (libsrt
  Haivision/srt#1082, #2460): with libsrt's default sender drops (~1 s), it stopped delivering and
  acknowledging for good in 1 of 3 runs (the ingest got nothing for 15 s and dropped the
  publisher; the sender's RTT stood at 803.3 ms for 15 s). Hence no sender drops.
- A packet lost on the way holds every acknowledgement until its retransmission arrives (TSBPD
  gives it up after the latency), and the sender updates its RTT only from an ACK that advances:
  the RTT stood still for 4.5 s (601.6 ms) while the span grew 0.3 -> 2.9 s. The second cut used
  to wait for the RTT to rise, and the rate stayed at 145-161 kbit/s through the narrow phase;
  cutting on the RTT also over-cut with TSBPD (147 -> 24 kbit/s while the queue drained).
  Meanwhile the span grows with the clock whatever the rate: no second cut while the RTT stands
  still (cutting then went 216 -> 24 kbit/s, the floor, with 67-106 kbit/s sent).

The capacity itself is not read from the sender's statistics, deliberately: measured through
bench/linkproxy.py at 150 kbit/s, "acknowledged" bytes (sent - send buffer - dropped) came out at
-220..+400 kbit/s, a capacity from the send buffer's ageing at 214-326, from its draining during a
pause at 30, and libsrt's packet-pair bandwidth at 7-12 Mbit/s. Fractions of the rate sent, checked
against the queue, converge in two or three cuts instead.

The episode ends after ``HOLD_S`` of low delay; the ceiling then climbs by ``INCREASE_STEP`` every
``INCREASE_INTERVAL_S``, by ``NEAR_STEP`` around the rate that congested, and is lifted at the
setting.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

# --- named thresholds ---------------------------------------------------------------------------
BASE_RTT_WINDOW_S = 30.0
DELAY_HIGH_MS = 100.0
DELAY_SEVERE_MS = 400.0  # queueing that acts at once
DELAY_CLEAR_MS = 60.0  # queueing under which the link has room again
# ...or under this many bytes in the send buffer now: two full packets, what a link with room
# holds unacknowledged for an RTT at these rates (a frame of 300 kbit/s at 15 fps is 2.5 KB).
DRAINED_BYTES = 2 * 1316
GROWTH_MS = 50.0  # per poll
FAST_GROWTH_MS = 60.0  # per poll: the link carries well under the rate (severe)
GROWING_POLLS = 2
CONGESTED_AFTER = 4  # polls (1 s)
PAUSE_ABOVE_MS = 300.0  # congested with this much queued: send nothing until it drains...
MAX_PAUSE_S = 2.0  # ...for at most this long
SENDING_SLACK = 1.15  # the rate sent counts as down at the ceiling within this
QUEUE_TREND_POLLS = 4  # (1 s)
# A second cut waits for the send buffer's span to grow this much over the last second: the rate
# sent ~10 % over what the link carries. Not for the RTT to rise (as until December 2026): it
# stands still while no ACK advances (behind a lost packet, without TSBPD at the receiver) and
# rises while the old queue drains (the ACKACK waits behind it), which cut 147 -> 24 kbit/s on
# the 120 kbit/s link; with the sender no longer dropping, the span is the queue itself.
QUEUE_RISE_MS = 100.0
# The RTT the same on this many polls in a row: no ACK advanced (libsrt updates it with every
# full ACK, ~10 ms apart while data flows; it stood still for 4.5-15 s behind lost packets).
STALL_POLLS = 2
# A queue this long is discarded with the connection (``reset``): the sender drops nothing itself
# (``SrtOptions.sender_drops``), and a viewer would otherwise wait behind all of it. Three times
# libsrt's own sender drop limit (1 s); on the 120 kbit/s link the cuts and the pause kept the
# span at 1.2-2.3 s at the worst (the occasional run stalled behind a lost packet reached 3.1 s).
MAX_QUEUE_MS = 3000.0
# At most one reset this often: a new connection starts empty and cannot queue MAX_QUEUE_MS
# sooner, but polls of the old one may still come in while it is replaced.
RESET_MIN_INTERVAL_S = MAX_QUEUE_MS / 1000
LOSS_SEVERE_PCT = 25.0
# Loss counts over this window and only with this many packets sent in it: at 40 kbit/s a poll
# carries about 4 packets, and one burst loss read as 25-67 % cut the rate to its floor on a link
# that had room again (measured through bench/linkproxy.py, a keyframe over its 32 KB queue).
LOSS_WINDOW_S = 1.0  # at least...
LOSS_MAX_WINDOW_S = 4.0  # ...and at most, looking back for LOSS_MIN_PACKETS
LOSS_MIN_PACKETS = 20
SEVERE_DECREASE = 0.5  # ceiling vs the rate sent: long or fast-growing queue, drops
DECREASE_FACTOR = 0.75  # ceiling vs the rate sent: a mild episode, and each further cut
# One episode cuts to no less than this fraction of the rate that started it. Later cuts are made
# on a span that also holds a lost packet's wait and retransmissions, which kept growing while
# 88-98 kbit/s went into the 120 kbit/s link: they went on to 27-41 kbit/s, and the climb back
# then took 16-19 s (test_link_adaptation allows 18). A link that carries less still shows it:
# the queue passes MAX_QUEUE_MS, the connection is reset, and on the new one the episode may cut
# as far again.
EPISODE_FLOOR = 0.25
DRAIN_GRACE_S = 1.0  # after a cut (or a pause), the queue gets this long before a second cut
HOLD_S = 2.0  # low delay this long ends the episode
INCREASE_INTERVAL_S = 1.0
# x(1 + step) per interval. 0.15 took the ceiling back from 46-91 kbit/s to a 300 kbit/s setting in
# 12.4-19.7 s after tests/test_link_adaptation.py's link came back (the estimator before
# December 2026 too: 18.6 s in 2 of 2 logged runs, over the test's 18 s); a step up is still
# checked against the queue within a second.
INCREASE_STEP = 0.2
NEAR_STEP = 0.04  # within NEAR of the capacity that congested last
NEAR = (0.85, 1.05)
MIN_CEILING_KBPS = 24
RECOVER_AT = 0.98  # a ceiling this close to the setting is lifted


@dataclass(frozen=True)
class LinkSample:
    """One statistics poll of the current SRT connection (cumulative counters)."""

    at: float  # time.monotonic() of the poll
    rtt_ms: float
    send_buffer_ms: float
    send_buffer_bytes: int
    bytes_sent: int  # payload sent once (retransmissions not counted)
    packets_sent: int
    packets_lost: int  # reported lost by the receiver (NAKs)
    packets_dropped: int  # dropped by the sender as too late
    send_buffer_now_bytes: int | None = None  # not averaged (send_buffer_* are libsrt's average)


@dataclass(frozen=True)
class LinkVerdict:
    ceiling_kbps: int | None  # None: the link is not what limits the rate
    reason: str  # why the ceiling is where it is (for telemetry)
    congested: bool
    pause: bool = False  # send nothing now: the queue in front of the link must drain first
    reset: bool = False  # discard the queue with the connection: it passed MAX_QUEUE_MS


class LinkEstimator:
    def __init__(self, setting_kbps: int) -> None:
        self.setting_kbps = setting_kbps
        self.ceiling_kbps: int | None = None
        self.reason = "link has room"
        self.congestions = 0  # episodes
        self._samples: deque[tuple[LinkSample, float]] = deque(maxlen=64)  # (sample, delay ms)
        self._rtts: deque[tuple[float, float]] = deque(maxlen=512)
        self._high_polls = 0
        self._episode = False
        self._cut: tuple[float, float] | None = None  # (when, delay then)
        self._clear_since: float | None = None
        self._last_increase = 0.0
        self._capacity_kbps: float | None = None  # what congested last
        self._episode_floor = 0.0  # no cut in this episode goes under it
        self._pause_since: float | None = None
        self._pause_left = 0.0  # of MAX_PAUSE_S, in this episode
        self.pauses = 0
        self.resets = 0
        self._last_reset = -1e9

    def reset(self) -> None:
        """A new connection: its counters restart and its path may differ."""
        self._samples.clear()
        self._rtts.clear()
        self._high_polls = 0
        # Its queue starts empty: an episode under way may cut as far again (EPISODE_FLOOR).
        self._episode_floor = (self.ceiling_kbps or 0) * EPISODE_FLOOR

    def set_setting(self, kbps: int) -> None:
        self.setting_kbps = kbps
        if self.ceiling_kbps is not None and self.ceiling_kbps >= kbps:
            self._lift()

    @property
    def in_episode(self) -> bool:
        """Congested, or its queue not yet drained: no time for a new encoder's keyframe."""
        return self._episode

    @property
    def queueing_ms(self) -> float:
        """The queueing delay at the last poll (send-buffer span - base RTT)."""
        return self._samples[-1][1] if self._samples else 0.0

    def base_rtt(self) -> float | None:
        return min((r for _, r in self._rtts), default=None)

    def update(self, sample: LinkSample, sending_kbps: float) -> LinkVerdict:
        """One poll. ``sending_kbps``: what the encoder sent over the last seconds."""
        previous = self._samples[-1][0] if self._samples else None
        if previous is not None and (
            sample.bytes_sent < previous.bytes_sent or sample.at <= previous.at
        ):
            self.reset()  # counters restarted: a new connection
            previous = None
        if sample.rtt_ms > 0:
            self._rtts.append((sample.at, sample.rtt_ms))
        while self._rtts and sample.at - self._rtts[0][0] > BASE_RTT_WINDOW_S:
            self._rtts.popleft()
        base = self.base_rtt() or sample.rtt_ms
        delay = max(0.0, sample.send_buffer_ms - base)
        self._samples.append((sample, delay))
        if previous is None:
            return self._verdict(False)
        loss_pct = self._loss_pct(sample)
        dropped = sample.packets_dropped - previous.packets_dropped
        self._high_polls = self._high_polls + 1 if delay > DELAY_HIGH_MS else 0
        why = None
        drained = self._drained(sample)  # the average's queue is gone already
        if dropped > 0:
            why = f"{dropped} packets dropped as too late"
        elif drained:
            pass
        elif delay > DELAY_SEVERE_MS:
            why = f"queueing {delay:.0f} ms"
        elif delay > DELAY_HIGH_MS and self._growing(GROWTH_MS):
            fast = "fast" if self._growing(FAST_GROWTH_MS) else ""
            why = f"queueing {delay:.0f} ms and growing {fast}".rstrip()
        elif self._high_polls >= CONGESTED_AFTER and not self._draining():
            why = f"queueing {delay:.0f} ms for {self._high_polls} polls"
        elif loss_pct > LOSS_SEVERE_PCT:
            why = f"loss {loss_pct:.0f} %"
        if why is not None:
            self._clear_since = None
            if not self._episode:
                self._start_episode(sample.at, delay, sending_kbps, why)
            elif self._pause_since is None and self._cut_again_now(sample.at, sending_kbps):
                self._cut_again(sample.at, delay, why)
        # The pause waits for the sender's own queue only: the RTT, which would show the
        # network's, is not measured while nothing is sent (it stayed at 2 s for 5 s of pause).
        pause = self._pause(sample.at, delay)
        if delay > MAX_QUEUE_MS and sample.at - self._last_reset >= RESET_MIN_INTERVAL_S:
            self._last_reset = sample.at
            self.resets += 1
            self.reason = f"link: queueing {delay:.0f} ms, connection reset"
            return LinkVerdict(self.ceiling_kbps, self.reason, True, False, reset=True)
        if why is not None:
            return self._verdict(True, pause)
        if delay < DELAY_CLEAR_MS or drained:
            self._clear_since = self._clear_since if self._clear_since is not None else sample.at
            if self._episode and sample.at - self._clear_since >= HOLD_S:
                self._episode = False
                self._last_increase = sample.at
            if not self._episode:
                self._maybe_increase(sample.at)
        else:
            self._clear_since = None
        return self._verdict(False, pause)

    def _drained(self, sample: LinkSample) -> bool:
        """The send buffer holds under ``DRAINED_BYTES`` now. libsrt's average of it lags: once
        the link came back to 600 kbit/s it took 3.5-5 s to read under ``DELAY_CLEAR_MS`` (1.9 s
        of queue), which the climb back then started late by."""
        now = sample.send_buffer_now_bytes
        return now is not None and now < DRAINED_BYTES

    def _loss_pct(self, sample: LinkSample) -> float:
        """Packets reported lost per packet sent, over the last ``LOSS_WINDOW_S`` or as much
        more (up to ``LOSS_MAX_WINDOW_S``) as it takes to hold ``LOSS_MIN_PACKETS``; else 0."""
        for older, _ in reversed(self._samples):
            age = sample.at - older.at
            if age > LOSS_MAX_WINDOW_S:
                break
            sent = sample.packets_sent - older.packets_sent
            if age >= LOSS_WINDOW_S and sent >= LOSS_MIN_PACKETS:
                return 100 * (sample.packets_lost - older.packets_lost) / sent
        return 0.0

    def _pause(self, now: float, delay: float) -> bool:
        """Whether to hold frames back: in an episode with a long queue in front of the link,
        every frame sent waits behind it, so sending nothing drains it fastest; the next frame
        out is a keyframe at the new rate. At most ``MAX_PAUSE_S`` per episode."""
        if self._episode and self._pause_left > 0 and delay > PAUSE_ABOVE_MS:
            if self._pause_since is None:
                self._pause_since = now
                self.pauses += 1
            if now - self._pause_since < self._pause_left:
                return True
        if self._pause_since is not None:
            self._pause_left -= now - self._pause_since
            self._pause_since = None
            self._cut = (now, delay)  # the grace for a second cut starts now
        return False

    def pause_for_loss(self) -> None:
        """The receiver will play out without a packet (its retransmission comes too late): on a
        receiver with TSBPD every frame until the next keyframe is lost, and each one sent now
        queues in front of that keyframe, where a burst into a full queue is lost again (on the
        120 kbit/s link such losses followed each other for 5-6 s of frozen picture with 1.3-1.9 s
        queued). A pause may follow again (``MAX_PAUSE_S``, while the queue is long), unless one
        is under way. A receiver without TSBPD waits for the retransmission meanwhile anyway."""
        if self._pause_since is None:
            self._pause_left = MAX_PAUSE_S

    def _growing(self, per_poll_ms: float) -> bool:
        recent = [d for _, d in list(self._samples)[-(GROWING_POLLS + 1) :]]
        return len(recent) == GROWING_POLLS + 1 and all(
            b - a >= per_poll_ms for a, b in itertools.pairwise(recent)
        )

    def _draining(self) -> bool:
        """The delay fell over the last polls: a burst (a keyframe) leaving, not a full link."""
        recent = [d for _, d in list(self._samples)[-CONGESTED_AFTER:]]
        return len(recent) == CONGESTED_AFTER and recent[-1] < recent[0]

    def _start_episode(self, now: float, delay: float, sending_kbps: float, why: str) -> None:
        self._episode = True
        self.congestions += 1
        before = float(min(self.ceiling_kbps or self.setting_kbps, max(sending_kbps, 1.0)))
        self._capacity_kbps = before
        self._episode_floor = before * EPISODE_FLOOR
        self._cut_to(before, why, delay)
        self._cut = (now, delay)
        self._pause_left = MAX_PAUSE_S

    def _cut_to(self, before: float, why: str, delay: float) -> None:
        mild = delay <= DELAY_SEVERE_MS and why.startswith("queueing") and "fast" not in why
        factor = DECREASE_FACTOR if mild else SEVERE_DECREASE
        self._set_ceiling(before * factor, f"link: {why}, cut from {before:.0f} kbit/s")

    def _cut_again_now(self, now: float, sending_kbps: float) -> bool:
        """Still congested ``DRAIN_GRACE_S`` after a cut or a pause, and the queue still grows:
        the send buffer's span by ``QUEUE_RISE_MS`` over the last second. Not its length alone, nor
        drops: a queue that shrinks is the old rate's tail (cutting on drops went 500 -> 33
        kbit/s on a 150 kbit/s link), nor a span that grows while no ACK advances.
        While the encoder is still above the ceiling (a new encoder runs high for its first
        seconds), wait twice as long."""
        if self._cut is None:
            return True
        at, _ = self._cut
        came_down = sending_kbps <= (self.ceiling_kbps or self.setting_kbps) * SENDING_SLACK
        if now - at < (DRAIN_GRACE_S if came_down else 2 * DRAIN_GRACE_S):
            return False
        recent = list(self._samples)[-(QUEUE_TREND_POLLS + 1) :]
        growth = recent[-1][1] - recent[0][1]
        # No ACK advanced lately (libsrt updates the RTT with each one that does): the span grows
        # behind a lost packet waiting for its retransmission, whatever the rate.
        stalled = len({s.rtt_ms for s, _ in recent[-(STALL_POLLS + 1) :]}) == 1
        if growth < 0 or stalled:
            return False  # draining (the rate fits), or stalled
        return growth > QUEUE_RISE_MS

    def _cut_again(self, now: float, delay: float, why: str) -> None:
        current = float(self.ceiling_kbps or self.setting_kbps)
        if current <= self._episode_floor:
            return  # as low as one episode goes (EPISODE_FLOOR)
        self._capacity_kbps = current
        factor = SEVERE_DECREASE if self._growing(FAST_GROWTH_MS) else DECREASE_FACTOR
        cut = max(current * factor, self._episode_floor)
        self._set_ceiling(cut, f"link: {why}, still after a cut")
        self._cut = (now, delay)

    def _set_ceiling(self, kbps: float, reason: str) -> None:
        self.ceiling_kbps = min(self.setting_kbps, max(MIN_CEILING_KBPS, round(kbps)))
        self.reason = reason

    def _lift(self) -> None:
        self.ceiling_kbps = None
        self.reason = "link has room"

    def _maybe_increase(self, now: float) -> None:
        if self.ceiling_kbps is None or now - self._last_increase < INCREASE_INTERVAL_S:
            return
        self._last_increase = now
        step = INCREASE_STEP
        cap = self._capacity_kbps
        if cap is not None and NEAR[0] * cap <= self.ceiling_kbps <= NEAR[1] * cap:
            step = NEAR_STEP
        ceiling = self.ceiling_kbps * (1 + step)
        if ceiling >= self.setting_kbps * RECOVER_AT:
            self._lift()
            return
        self._set_ceiling(ceiling, f"link: climbing back after congestion ({ceiling:.0f} kbit/s)")

    def _verdict(self, congested: bool, pause: bool = False) -> LinkVerdict:
        return LinkVerdict(self.ceiling_kbps, self.reason, congested, pause)
