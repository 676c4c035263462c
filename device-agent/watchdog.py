"""The pipeline's watchdog: a worker thread that ends while the device should stream is reported
and the pipeline restarted, with backoff.

Before it, a capture or encode thread that died (a camera unplugged, an RTSP camera rebooting, a
bug) left the device "streaming" at 0 fps with the reason only in its local log. Now thread
"agent-watchdog" checks the workers four times a second; on a death it tears the streaming parts
down (source, encoder, SRT connection: nothing is sent on the metered link while there is nothing
to send), says why through ``notify`` (the agent puts it on ``reported.error`` with state
``restarting``) and starts them again after a delay that doubles from ``base_s`` to ``cap_s``
(with jitter, so a fleet behind one failed camera server does not retry in step). A start that
fails is the next attempt's reason. Once frames flow again ``notify(None)`` clears the error; the
delay returns to ``base_s`` after ``stable_s`` without a death, so a source that fails every few
seconds does not restart at full speed forever.

``switch`` is the other reason to restart: not a fault but a decision (``codec = "auto"``
forwarding a source whose measured bitrate turns out above the setting): restarted at once,
announced with ``notify(None)``.

The watchdog takes the pipeline's lock for each step but never waits on it for long, so a
``stop()`` holding the lock while it ends the watchdog cannot deadlock with it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flumph.agent.destination import backoff_delay

log = logging.getLogger("flumph.agent.watchdog")

CHECK_INTERVAL_S = 0.25


@dataclass
class RestartPolicy:
    """Backoff for restarts: pure, fed a clock."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    _started_at: float | None = None

    def started(self, now: float) -> None:
        self._started_at = now

    def next_delay(self, now: float) -> float:
        """The wait before the next start, after a death or a failed start at ``now``."""
        if self._started_at is not None and now - self._started_at >= self.stable_s:
            self.attempt = 0
        self._started_at = None
        delay = backoff_delay(self.attempt, self.base_s, self.cap_s, self.rng)
        self.attempt += 1
        return delay


class Watchdog:
    def __init__(
        self,
        *,
        lock: threading.RLock,
        check: Callable[[], str | None],
        teardown: Callable[[], None],
        restart: Callable[[], None],
        progress: Callable[[], int],
        notify: Callable[[str | None], None],
        policy: RestartPolicy,
        switch: Callable[[], str | None] = lambda: None,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._lock = lock
        self._check, self._teardown, self._restart = check, teardown, restart
        self._switch = switch  # a reason to restart now that is not a fault (a mode switch)
        self._progress, self._notify = progress, notify
        self.policy = policy
        self._interval_s = interval_s
        self.fault: str | None = None  # what is wrong now, in words; None when streaming
        self.restarts = 0  # successful restarts
        self._due: float | None = None  # when down: the next start attempt (monotonic)
        self._cause = ""  # the death that started this outage
        self._recovering_from: int | None = None  # frames sent when the last restart succeeded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-watchdog", daemon=True)

    @property
    def restarting(self) -> bool:
        """The workers are down and a start is due (or under way)."""
        return self._due is not None

    def start(self) -> None:
        self.policy.started(time.monotonic())
        self._thread.start()

    def stop(self) -> None:
        """End the watchdog; callable with the lock held (the thread only polls for it)."""
        self._stop.set()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(5.0)

    def retry_now(self) -> None:
        if self._due is not None:
            self._due = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self._lock.acquire(timeout=self._interval_s):
                continue
            try:
                if not self._stop.is_set():
                    self._step(time.monotonic())
            except Exception:  # the watchdog is what keeps the device alive: it must not die
                log.exception("watchdog step failed")
            finally:
                self._lock.release()

    def _step(self, now: float) -> None:
        if self._due is None:
            if self._recovering_from is not None and self._progress() > self._recovering_from:
                self._recovering_from = None
                log.info("streaming again after restart %d", self.restarts)
                self.fault = None
                self._notify(None)
            why = self._check()
            if why is not None:
                self._teardown()
                self._cause = why
                self._schedule(now, why)
                return
            switch = self._switch()
            if switch is not None:
                log.info("restarting the pipeline: %s", switch)
                self._teardown()
                try:
                    self._restart()
                except Exception as e:
                    self._cause = switch
                    self._schedule(now, f"{switch}; restart failed: {e}")
                    return
                self._notify(None)  # nothing wrong; what runs (and why) has changed
            return
        if now < self._due:
            return
        try:
            self._restart()
        except Exception as e:  # whatever stops the start is the reason for the next one
            self._schedule(now, f"{self._cause}; restart failed: {e}")
            return
        self._due = None
        self.restarts += 1
        self.policy.started(now)
        self._recovering_from = self._progress()
        self.fault = f"{self._cause}; restarted, waiting for the first frame"
        log.info("pipeline restarted (restart %d); waiting for the first frame", self.restarts)
        self._notify(self.fault)

    def _schedule(self, now: float, why: str) -> None:
        delay = self.policy.next_delay(now)
        self._due = now + delay
        self.fault = f"{why}; restarting in {delay:.1f} s (attempt {self.policy.attempt})"
        log.error("pipeline down: %s", self.fault)
        self._notify(self.fault)
