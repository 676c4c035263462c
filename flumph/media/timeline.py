"""The output timeline of a repackaged stream: input timestamps to fMP4 dts, pts and duration.

Pure. The output dts never goes backwards: a restarted or broken source clock (a jump over
``MAX_TIMESTAMP_GAP``, or back by more than ``MAX_REORDER_STEP``) carries on as if one frame had
passed. A sample's duration is the previous dts delta, so no frame is held back waiting for the
next one. Per frame it is integer arithmetic only (no Fraction).
"""

from __future__ import annotations

from fractions import Fraction

DEFAULT_TIMESCALE = 90000
DEFAULT_FPS = 30
# A dts jump larger than these (seconds) is a discontinuity (a restarted or broken source
# clock): the output timeline carries on as if one frame had passed. A smaller step back is
# B-frame reordering whose first dts the demuxer could not know (Matroska has no dts).
MAX_TIMESTAMP_GAP = Fraction(10)
MAX_REORDER_STEP = Fraction(1)


def output_timescale(time_base: Fraction) -> int:
    """1/N time bases map exactly to timescale N; anything else is rounded onto 90 kHz."""
    if time_base <= 0:
        raise ValueError(f"time base {time_base} is not positive")
    if time_base.numerator == 1 and time_base.denominator <= 0xFFFFFFFF:
        return time_base.denominator
    return DEFAULT_TIMESCALE


class Timeline:
    """Maps one stream's input ticks onto the output timescale; :meth:`rebase` gives the input
    time base, before the first :meth:`stamps`."""

    def __init__(self) -> None:
        self.last_dts: int | None = None
        self.last_duration = 0
        self._in_origin: int | None = None
        self._out_origin = 0
        self.timescale = 0

    def rebase(self, time_base: Fraction, fps_hint: float | None) -> None:
        """The input time base (again for a new session of the source): the output carries on,
        on the new timescale if it differs."""
        old_timescale = self.timescale
        self._time_base = Fraction(time_base)
        self.timescale = output_timescale(self._time_base)
        # ticks * num / den on the output timescale, in integers (no Fraction per frame).
        self._scale_num = self._time_base.numerator * self.timescale
        self._scale_den = self._time_base.denominator
        self._max_gap = int(MAX_TIMESTAMP_GAP * self.timescale)
        self._max_back = int(MAX_REORDER_STEP * self.timescale)
        self._fps_hint = fps_hint
        if self.last_dts is not None and self.timescale != old_timescale:
            scale = Fraction(self.timescale, old_timescale)
            self.last_dts = round(self.last_dts * scale)
            self.last_duration = max(1, round(self.last_duration * scale))

    def restart(self) -> None:
        """The input timestamps may restart: the next one is mapped to the next output dts."""
        self._in_origin = None

    def advance(self, dts: int, duration: int) -> None:
        """A sample went out at ``dts`` for ``duration``."""
        self.last_dts = dts
        self.last_duration = duration

    def _rescale(self, ticks: int) -> int:
        # round(ticks * time_base * timescale), half to even as round() does, in integers.
        quotient, remainder = divmod(ticks * self._scale_num, self._scale_den)
        twice = 2 * remainder
        if twice > self._scale_den or (twice == self._scale_den and quotient & 1):
            quotient += 1
        return quotient

    def _default_duration(self) -> int:
        fps = Fraction(self._fps_hint) if self._fps_hint else Fraction(DEFAULT_FPS)
        return max(1, round(self.timescale / fps))

    def _next_dts(self) -> int:
        if self.last_dts is None:
            return 0
        return self.last_dts + self.last_duration

    def _map(self, ticks: int) -> int:
        assert self._in_origin is not None
        return self._out_origin + self._rescale(ticks - self._in_origin)

    def stamps(self, pts_in: int | None, dts_in: int | None) -> tuple[int, int, int]:
        """(dts, pts, duration) on the output timeline for a packet's input pts and dts."""
        next_dts = self._next_dts()
        last = self.last_dts
        anchor = dts_in if dts_in is not None else pts_in
        if anchor is None:
            return next_dts, next_dts, self._duration(None)
        mapped: int | None = None  # dts_in on the output timeline, once the origin is settled
        if self._in_origin is None:
            self._in_origin, self._out_origin = anchor, next_dts
        elif dts_in is not None and last is not None:
            mapped = self._map(dts_in)
            step = mapped - last
            if step > self._max_gap or -step > self._max_back:
                self._in_origin, self._out_origin = dts_in, next_dts
                mapped = None
            elif self.last_duration and step > 2 * self.last_duration:
                # A browser's MSE takes a dts step over twice the last frame's duration for a
                # discontinuity and then drops every frame until the next keyframe, up to 30 s
                # away: a capture late on a busy device, or frames the rate gate skipped, froze
                # the picture. The gap is closed to twice the last duration; the live player
                # follows the buffered end, so the timeline running a little behind costs nothing.
                closed_by = step - 2 * self.last_duration
                self._out_origin -= closed_by
                mapped -= closed_by
        if dts_in is None:
            pts = self._map(pts_in if pts_in is not None else anchor)
            # Unknown dts (the first frames of a B-frame stream from Matroska): decode now.
            dts = next_dts if last is None else max(last + 1, min(pts, next_dts))
            return dts, pts, self._duration(None)
        dts = self._map(dts_in) if mapped is None else mapped
        # Without reordering (the usual live stream) pts is dts: one mapping per frame, not three.
        pts = dts if pts_in == dts_in else self._map(pts_in if pts_in is not None else anchor)
        if last is not None and dts <= last:
            return last + 1, pts, self._duration(None)
        return dts, pts, self._duration(None if last is None else dts - last)

    def _duration(self, observed: int | None) -> int:
        if observed is not None:
            return observed
        if self.last_dts is not None and self.last_duration:
            return self.last_duration
        return self._default_duration()
