"""The data budget enforced on the device: the send path's gate, refusals, grants, the watch thread.

:class:`BudgetGuard` applies :mod:`.budget`'s rules to the live counters (:class:`.UsageStore`
plus bytes charged but not yet measured). The SRT publisher asks :meth:`BudgetGuard.admit` before
every send (one frame, or one burst of ``frames_per_burst``) with that send's IP-level cost, so a
stream stops before the frame that would pass the limit, not a polling interval later; a refusal
latches the state ``exhausted`` (in the usage file, so across restarts too) until the limit
changes (a grant, a new ``data_budget_mb``) or the period resets. Nothing here needs the
broker: the device enforces its budget on its own.

At exhaustion the video stops and snapshots are refused, but the MQTT connection stays up (its
keepalives cost ~1.9 KB/h idle, and they are counted), because that is how a grant reaches the
device; so the count can pass 100 % by the control plane's few bytes, never by video.

:class:`BudgetWatch` owns the "agent-budget" thread. Once a second, and at once when the send path
refuses or a grant arrives, it reads the MQTT meter, stops a stream that hit the limit, resumes
one the settings still want once there is room again (a grant, a reset), moves the encoder to the
pacing cap when it changed by 10 % or more (at most every 10 s: each change costs a keyframe),
saves the counters (every 10 s; every second past 80 %) and tells its listeners (the MQTT side,
which publishes ``reported``) when the state, the limit, the period or the streaming state
changed, or the encoder moved to a new cap (those two at most every 10 s: a cap hovering on a
boundary must not cost a ``reported`` a second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from flumph.agent import budget as rules
from flumph.agent.usage import UsageStore
from flumph.control import Budget, Usage
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.budget")

TICK_S = 1.0
SAVE_INTERVAL_S = 10.0
SAVE_INTERVAL_NEAR_LIMIT_S = 1.0
RETARGET_STEP = 0.10  # move the encoder when the capped rate differs by this share or more
RETARGET_MIN_INTERVAL_S = 10.0
# Changes between ok and pacing, and the encoder following the cap, are told at most this often;
# warn, exhausted, a new limit or period and streaming on/off at once.
REPORT_MIN_INTERVAL_S = 10.0


class BudgetExhausted(RuntimeError):
    """A start refused because the period's data budget is used up; the message says so."""


def _mb(n: int) -> str:
    return f"{n / rules.MB:.2f} MB"


def copied(settings: StreamSettings) -> bool:
    """Pass-through asked for (``codec="copy"``): no encoder, so no rate to lower."""
    return str(settings.codec) == "copy"


SettingsSource = StreamSettings | Callable[[], StreamSettings]


class BudgetGuard:
    """Thread-safe: ``admit`` from the encode thread, the rest from control and watch threads."""

    def __init__(
        self,
        usage: UsageStore,
        settings: SettingsSource,
        clock: Callable[[], float] = time.time,
        forwarding: Callable[[], bool] = lambda: False,
    ) -> None:
        """``settings``: fixed, or read live (the pipeline's, so every change applies at once);
        ``forwarding``: whether the stream is passed through now (``codec = "auto"`` may)."""
        self.usage = usage
        self.clock = clock
        self.forwarding = forwarding
        self._lock = threading.Lock()
        self._source = settings
        self._pending: list[Callable[[], int]] = []
        # Run by the watch each step (the MQTT meter's poll), and told when anything changed.
        self.pollers: list[Callable[[], None]] = []
        self.listeners: list[Callable[[], None]] = []
        self.refused_sends = 0
        self.wake = threading.Event()  # the watch acts at once (a refusal, a grant)
        usage.set_reset_day(self.settings.budget_reset_day)

    def configure(self, settings: StreamSettings) -> None:
        """New fixed settings (a guard built with live settings follows them by itself)."""
        self._source = settings
        self.usage.set_reset_day(settings.budget_reset_day)
        self.wake.set()

    @property
    def settings(self) -> StreamSettings:
        source = self._source
        s = source if isinstance(source, StreamSettings) else source()
        self.usage.set_reset_day(s.budget_reset_day)  # a no-op unless it changed
        return s

    def unpaceable(self) -> bool:
        """The stream is passed through (asked for, or chosen by ``auto``): no rate to lower."""
        return copied(self.settings) or self.forwarding()

    def add_pending(self, source: Callable[[], int]) -> None:
        """Bytes charged but not yet in the counters (the MQTT meter's snapshot estimate)."""
        self._pending.append(source)

    # --- the numbers --------------------------------------------------------------------------

    def _limit(self) -> int | None:
        budget = rules.budget_bytes(self.settings.data_budget_mb)
        return rules.limit_bytes(budget, self.usage.current().allowance_bytes)

    def used(self) -> int:
        """Counted bytes plus those charged but not yet measured."""
        return self.usage.used() + sum(source() for source in self._pending)

    def _is_latched(self, start: float, limit: int | None) -> bool:
        """Did the send path find no room under this limit this period? (Kept on disk, so a
        restarted device does not open a stream for a frame that cannot go.)"""
        current = self.usage.current()
        return current.period_start == start and current.latched_limit == limit is not None

    def admit(self, cost: int) -> bool:
        """May a send costing ``cost`` IP-level bytes go out? No latches ``exhausted``."""
        with self._lock:
            limit = self._limit()
            if limit is None:
                return True
            start = self.usage.current().period_start
            if not self._is_latched(start, limit) and rules.fits(self.used(), cost, limit):
                return True
            if not self._is_latched(start, limit):
                log.warning("data budget reached (%s of %s): stopping the stream",
                            _mb(self.used()), _mb(limit))  # fmt: skip
            self.usage.latch(limit)
            self.refused_sends += 1
        self.wake.set()
        return False

    def fits(self, cost: int) -> bool:
        """Would ``cost`` more bytes fit? (A snapshot asks before it is encoded and sent.)"""
        with self._lock:
            limit = self._limit()
            start = self.usage.current().period_start
            return not self._is_latched(start, limit) and rules.fits(self.used(), cost, limit)

    def assess(self) -> rules.Assessment:
        with self._lock:
            s = self.settings
            allowance = self.usage.current().allowance_bytes
            start = self.usage.current().period_start
            budget = rules.budget_bytes(s.data_budget_mb)
            latched = self._is_latched(start, rules.limit_bytes(budget, allowance))
            return rules.assess(
                used=self.used(),
                budget=budget,
                allowance=allowance,
                reset_day=s.budget_reset_day,
                now=self.clock(),
                pacing=s.budget_pacing and not self.unpaceable(),
                setting_kbps=s.bitrate_kbps,
                latched=latched,
            )

    @property
    def exhausted(self) -> bool:
        return self.assess().state == "exhausted"

    def cap_kbps(self) -> int | None:
        """The pacing cap the encoder should hold (None: the setting). For the rate controller."""
        return self.assess().cap_kbps

    def encoder_kbps(self, settings: StreamSettings) -> int:
        """The bitrate to open the encoder at: the setting, or the pacing cap below it."""
        cap = self.cap_kbps()
        return settings.bitrate_kbps if cap is None else min(settings.bitrate_kbps, cap)

    # --- words and messages -------------------------------------------------------------------

    def refusal(self, a: rules.Assessment | None = None) -> str | None:
        """Why streaming is refused now (used, budget, when it resets), or None."""
        a = a or self.assess()
        if a.state != "exhausted" or a.limit is None:
            return None
        allowance = self.usage.current().allowance_bytes
        granted = f" (budget + {_mb(allowance)} granted)" if allowance else ""
        return (
            f"data budget used up: {_mb(a.used)} of {_mb(a.limit)}{granted} used this period; "
            f"it resets {rules.when(a.period_end)} (grant more with cmd/grant or raise "
            "data_budget_mb)"
        )

    def message(self, a: rules.Assessment) -> str | None:
        s = self.settings
        if a.state == "exhausted":
            return self.refusal(a)
        if s.budget_pacing and self.unpaceable():
            return (
                "the camera's stream is passed through (codec=copy or auto): pacing cannot lower "
                "its rate; it stops at 100 %"
            )
        if a.cap_kbps is not None:
            return (
                f"pacing: bitrate capped at {a.cap_kbps} kbit/s (setting {s.bitrate_kbps}) so "
                f"the budget lasts until {rules.when(a.period_end)}"
            )
        if a.state == "warn" and a.limit:
            return (
                f"{100 * a.used / a.limit:.0f} % of the data budget used ({_mb(a.used)} of "
                f"{_mb(a.limit)}); it resets {rules.when(a.period_end)}"
            )
        return None

    def view(self) -> Budget:
        """``reported.budget`` / ``telemetry.budget``."""
        a = self.assess()
        return Budget(
            state=a.state,
            used_bytes=a.used,
            budget_bytes=rules.budget_bytes(self.settings.data_budget_mb),
            allowance_bytes=self.usage.current().allowance_bytes,
            period_start=a.period_start,
            resets_at=a.period_end,
            cap_kbps=a.cap_kbps,
            message=self.message(a),
        )

    def usage_view(self) -> Usage:
        """The period's usage as the birth and telemetry carry it."""
        u = self.usage.current()
        return Usage(
            month=u.month,
            bytes_sent=u.wire_bytes_sent,
            bytes_received=u.wire_bytes_received,
            budget_bytes=self._limit(),
            period_start=u.period_start,
            by_kind={kind: u.by_kind.get(kind, 0) for kind in ("srt", "mqtt", "snapshot")},
        )

    # --- grants -------------------------------------------------------------------------------

    def grant(self, mb: float) -> rules.Assessment:
        """A one-shot allowance for this period; takes effect at once."""
        if not 0 < mb <= 1_000_000:
            raise ValueError(f"grant must be more than 0 and at most 1000000 MB, got {mb}")
        self.usage.grant(round(mb * rules.MB))
        self.wake.set()
        a = self.assess()
        log.info("granted %s: limit now %s this period", _mb(round(mb * rules.MB)),
                 _mb(a.limit or 0))  # fmt: skip
        return a


class BudgetTarget(Protocol):
    """What the watch drives (the pipeline)."""

    @property
    def streaming(self) -> bool: ...

    def budget_stop(self, why: str) -> None: ...

    def budget_resume(self) -> bool: ...

    def budget_retarget(self, kbps: int) -> None: ...

    def encoder_kbps_now(self) -> int | None: ...


class BudgetWatch:
    """The "agent-budget" thread: see the module docstring. ``start`` and ``stop`` once each."""

    def __init__(
        self,
        guard: BudgetGuard,
        target: BudgetTarget,
        tick_s: float = TICK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard = guard
        self.target = target
        self.tick_s = tick_s
        self._monotonic = monotonic  # for the save and retarget intervals (a simulation's own)
        self._stop = threading.Event()
        self._urgent: tuple[object, ...] | None = None
        self._soft: tuple[object, ...] | None = None
        self._last_report = -REPORT_MIN_INTERVAL_S
        self._last_save = monotonic()
        self._last_retarget = -RETARGET_MIN_INTERVAL_S
        self._thread = threading.Thread(target=self._run, name="agent-budget", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.guard.wake.set()
        if self._thread.is_alive():
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.guard.wake.wait(self.tick_s)
            self.guard.wake.clear()
            if self._stop.is_set():
                return
            try:
                self.step()
            except Exception:  # the watch must outlive one bad step
                log.exception("budget step failed")

    def step(self) -> None:
        for poll in self.guard.pollers:
            poll()
        g, t = self.guard, self.target
        a = g.assess()
        if a.state == "exhausted" and t.streaming:
            t.budget_stop(g.refusal(a) or "data budget used up")
        elif a.state != "exhausted" and not t.streaming and t.budget_resume():
            log.info("data budget has room again: streaming resumed")
        if t.streaming:
            self._follow_cap(a)
        a = g.assess()
        now = self._monotonic()
        near = a.limit is not None and a.used >= rules.WARN_FRACTION * a.limit
        interval = SAVE_INTERVAL_NEAR_LIMIT_S if near else SAVE_INTERVAL_S
        if now - self._last_save >= interval:
            g.usage.save()
            self._last_save = now
        urgent = (a.state == "exhausted", a.state == "warn", a.limit, a.period_start, t.streaming)
        soft = (a.state, t.encoder_kbps_now())
        due = soft != self._soft and now - self._last_report >= REPORT_MIN_INTERVAL_S
        if urgent != self._urgent or due:
            self._urgent, self._soft, self._last_report = urgent, soft, now
            for listener in self.guard.listeners:
                listener()

    def _follow_cap(self, a: rules.Assessment) -> None:
        running = self.target.encoder_kbps_now()
        if running is None or self.guard.unpaceable():
            return
        wanted = self.guard.encoder_kbps(self.guard.settings)
        if wanted == running:
            return
        now = self._monotonic()
        lifted = a.cap_kbps is None
        big = abs(wanted - running) >= RETARGET_STEP * running
        if (lifted or big) and now - self._last_retarget >= RETARGET_MIN_INTERVAL_S:
            self._last_retarget = now
            log.info("pacing: encoder %d -> %d kbit/s", running, wanted)
            self.target.budget_retarget(wanted)
