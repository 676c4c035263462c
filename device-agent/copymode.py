"""The pipeline's copy mode and watchdog, as a mixin of :class:`~.pipeline.Pipeline`.

Kept apart so that pipeline.py stays about the encode path: here is what changes when the source
is forwarded (passthrough.py) instead of encoded (``apply``, keyframe requests, snapshots, the
reported encoder and its reason), and how the watchdog (watchdog.py) is wired to the pipeline's
workers. The state is the pipeline's; the declarations below only name what is used.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

import av

from flumph.agent.capture import Capture
from flumph.agent.codedsource import EncodedSource, open_encoded, snapshot_from_source
from flumph.agent.copydecision import ENCODER_SETTINGS, SourceInfo, copy_notice
from flumph.agent.copyframes import SourceClock
from flumph.agent.destination import Destination
from flumph.agent.encoders import EncoderAttempt
from flumph.agent.passthrough import (
    CopyWorker,
    copy_keyframe_refusal,
    snapshot_from_worker,
    switches_mode,
)
from flumph.agent.sources import FrameSource
from flumph.agent.transport import SrtPublisher
from flumph.agent.watchdog import RestartPolicy, Watchdog
from flumph.settings import StreamSettings

if TYPE_CHECKING:
    from flumph.agent.pipelinestats import PipelineStats

log = logging.getLogger("flumph.agent.pipeline")


class CopyMode:
    device_id: str
    settings: StreamSettings
    stats: PipelineStats
    publisher: SrtPublisher | None
    encoder_name: str | None
    attempts: tuple[EncoderAttempt, ...]
    error: str | None
    copy: CopyWorker | None
    source_info: SourceInfo | None
    mode_reason: str | None
    notice: str | None
    on_fault: Callable[[str | None], None] | None
    _host: str
    _port: int
    _running: bool
    _workers_up: bool
    _watchdog: Watchdog | None
    _epoch: float
    _apply_lock: threading.RLock
    _backoff: tuple[float, float]
    _source_spec: str | Callable[[StreamSettings], FrameSource]
    _capture: Capture | None
    _encode_thread: threading.Thread | None

    if TYPE_CHECKING:

        def _destination(self) -> Destination: ...
        def _new_publisher(self) -> SrtPublisher: ...
        def _start_streaming(self) -> None: ...
        def _stop_streaming(self) -> None: ...
        def _start_workers(self) -> None: ...
        def _stop_workers(self) -> None: ...

    def _apply_copy_mode(
        self, old: StreamSettings, settings: StreamSettings, host: str, port: int
    ) -> bool:
        """``apply``'s share for pass-through, restarts and mode switches; False: the encode
        path's live change applies."""
        changed = [k for k in ENCODER_SETTINGS if getattr(old, k) != getattr(settings, k)]
        self.notice = None
        if not (self._running and settings.streaming):
            if settings.codec == "copy":
                self.notice = copy_notice(changed, None)
            return False
        if not self._workers_up:  # between restarts: the watchdog's next start takes these
            self.settings, self._host, self._port = settings, host, port
            assert self._watchdog is not None
            self._watchdog.retry_now()
            return True
        if switches_mode(self.copy, self.source_info, old, settings, self._source_spec):
            previous = self.settings, self._host, self._port
            self._stop_streaming()
            self.settings, self._host, self._port = settings, host, port
            try:
                self._start_streaming()
            except BaseException:
                self.settings, self._host, self._port = previous
                try:
                    self._start_streaming()
                except Exception as e:
                    log.error("the previous settings do not start again either: %s", e)
                raise
            return True
        if self.copy is None:
            return False
        self.settings, self._host, self._port = settings, host, port
        assert self.publisher is not None
        self.publisher.set_frames_per_burst(settings.frames_per_burst)
        self.publisher.set_destination(self._destination())
        self.notice = copy_notice(changed, self.copy.describe())
        return True

    @property
    def fault(self) -> str | None:
        """Why streaming is down or restarting (the watchdog's words); None when all is well."""
        return self._watchdog.fault if self._watchdog is not None else None

    @property
    def state(self) -> Literal["idle", "streaming", "restarting"]:
        if not self._running:
            return "idle"
        return "restarting" if self._watchdog and self._watchdog.restarting else "streaming"

    @property
    def encoder_reason(self) -> str | None:
        """Why this encoder (or copy): ``reported.encoder_reason``."""
        if self.encoder_name is None:
            return None
        if self.encoder_name == "copy":
            return self.mode_reason
        tried = "; ".join(f"{a.encoder}: {a.result}" for a in self.attempts)
        chose = f"chose {self.encoder_name} for codec={self.settings.codec} ({tried})"
        return f"{self.mode_reason}; {chose}" if self.mode_reason else chose

    def _refuse_keyframe_if_forwarding(self) -> None:
        if self.copy is not None:
            raise ValueError(copy_keyframe_refusal(self.copy))

    def _coded_snapshot(self) -> av.VideoFrame | None:
        """A snapshot decoded from a coded source's keyframe; None: not a coded source."""
        if self.copy is not None:
            return snapshot_from_worker(self.copy)
        spec = self._source_spec
        if (
            self._running
            or self.settings.codec not in ("copy", "auto")
            or not isinstance(spec, str)
        ):
            return None
        coded = open_encoded(spec)
        return snapshot_from_source(coded) if coded is not None else None

    def _new_watchdog(self) -> Watchdog:
        return Watchdog(
            lock=self._apply_lock,
            check=self._worker_fault,
            teardown=self._stop_workers,
            restart=self._start_workers,
            progress=lambda: self.stats.frames_sent,
            notify=self._fault_changed,
            policy=RestartPolicy(base_s=self._backoff[0], cap_s=self._backoff[1]),
            switch=self._rate_switch,
        )

    def _rate_switch(self) -> str | None:
        """The watchdog's question while forwarding: does ``auto`` now want to transcode?"""
        decision = self.copy.rate_switch(self.settings) if self.copy is not None else None
        if decision is None or decision.copy:
            return None
        assert self.copy is not None
        kbps = self.copy.stats.measured(time.monotonic())[0]
        self.source_info = replace(self.copy.info_now(), bitrate_kbps=kbps, bitrate_measured=True)
        return decision.reason

    def _fault_changed(self, fault: str | None) -> None:
        if self.on_fault is not None:
            self.on_fault(fault)

    def _worker_fault(self) -> str | None:
        """Why the running workers cannot go on (a thread ended); None while they are fine."""
        if self.copy is not None:
            return None if self.copy.alive else f"forwarding stopped: {self.copy.error}"
        if self._encode_thread is not None and not self._encode_thread.is_alive():
            return f"the encode thread died: {self.error}"
        if self._capture is not None and not self._capture.alive:
            source = self._capture.source.name
            return f"capture stopped: {self._capture.error or f'the source {source} ended'}"
        return None

    def _start_forwarding(self, source: EncodedSource) -> None:
        self.encoder_name, self.attempts = "copy", ()
        self.publisher = self._new_publisher()
        origin_ms = round((time.monotonic() - self._epoch) * 1000)
        clock = SourceClock(origin_ms, frame_ms=1000 / (source.info.fps or 30))
        self.copy = CopyWorker(
            source, self.publisher, clock=clock, on_sent=self._count_sent, on_offline=self._offline
        )
        self.publisher.start()
        self.copy.start()
        self._workers_up = True
        log.info("forwarding %s as %s: %s", source.name, self.device_id, self.mode_reason)

    def _count_sent(self, read_at: float, frame_bytes: int, written: int, header: int) -> None:
        now = time.monotonic()
        self.stats.send_latency_ms.append((now - read_at) * 1000)
        self.stats.frames_sent += 1
        self.stats.documents += header > 0
        self.stats.header_bytes += header
        self.stats.packet_bytes += frame_bytes
        self.stats.written_bytes += written
        self.stats.recent.append((now, frame_bytes))

    def _offline(self) -> None:
        self.stats.frames_dropped_offline += 1
