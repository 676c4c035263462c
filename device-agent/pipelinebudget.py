"""The pipeline as the data budget drives it, a mixin of :class:`~.pipeline.Pipeline`: the
:class:`~.budgetguard.BudgetWatch` stops the stream when the period's budget is used up, starts it
again when there is room (or a grant), and holds the encoder below a pacing cap. The state is the
pipeline's; the declarations below only name what is used.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from flumph.agent.rateloop import RateLimits
from flumph.agent.usage import UsageStore
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.pipeline")


class BudgetDriven:
    settings: StreamSettings
    usage: UsageStore
    rate_limits: RateLimits
    budget_blocked: str | None
    error: str | None
    _apply_lock: threading.RLock
    _running: bool
    _encoder_kbps: int | None

    if TYPE_CHECKING:

        def _start_streaming(self) -> None: ...
        def _stop_streaming(self) -> None: ...

    def budget_stop(self, why: str) -> None:
        """The period's budget is used up: stop, keeping ``settings.streaming`` as the wish."""
        with self._apply_lock:
            if self._running:
                log.warning("stopping the stream: %s", why)
                self._stop_streaming()
                self.usage.save(force=True)
            self.budget_blocked = why

    def budget_resume(self) -> bool:
        """Start again if the settings want a stream the budget had refused; True if started."""
        with self._apply_lock:
            if self._running or self.budget_blocked is None or not self.settings.streaming:
                return False
            try:
                self._start_streaming()
            except Exception as e:
                self.error = f"streaming did not start again after the budget allowed it: {e}"
                log.error("%s", self.error)
                self.budget_blocked = None
            return self._running

    def budget_retarget(self, kbps: int) -> None:
        """Hold the encoder to ``kbps`` (the pacing cap, or back to the setting): a limit of the
        rate loop, which reopens the encoder or gates frames as it does for the uplink."""
        with self._apply_lock:
            if not self._running:
                return
            self.rate_limits.set(
                "budget pacing", kbps if kbps < self.settings.bitrate_kbps else None
            )
            self._encoder_kbps = kbps

    def encoder_kbps_now(self) -> int | None:
        return self._encoder_kbps if self._running else None
