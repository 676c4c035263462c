"""The agent's media pipeline: capture -> encode -> live Matroska -> SRT, and live setting changes.

Threads: "agent-capture" (the source, paced), "agent-encode" (encoder, Matroska writer and the
SRT send, so a frame leaves the moment it is encoded), "srt-connector" (connection, backoff,
statistics), "agent-watchdog" (restarts the rest when a thread dies: see watchdog.py). A source
that is already encoded is forwarded instead (``codec = "copy"``, or ``"auto"`` when nothing asks
for another size or rate): thread "agent-copy" of passthrough.py replaces capture and encode.
``apply`` may be called from any thread (the MQTT client's, later): it opens a new encoder there, so
a setting no encoder accepts is refused before anything changes, and hands it to the encode thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from flumph.agent.budgetguard import BudgetGuard, BudgetWatch
from flumph.agent.capture import Capture, CapturedFrame, LatestSlot
from flumph.agent.codedsource import plan
from flumph.agent.copydecision import SourceInfo
from flumph.agent.copymode import CopyMode
from flumph.agent.destination import Destination, parse_ingest_url
from flumph.agent.encodeloop import EncodeLoop
from flumph.agent.encoders import EncoderAttempt, EncoderChoice, EncoderSelector, VideoEncoder
from flumph.agent.passthrough import CopyWorker
from flumph.agent.pipelinebudget import BudgetDriven
from flumph.agent.pipelinestats import PipelineStats, percentile
from flumph.agent.rateloop import RateLimits, RateLoop
from flumph.agent.sources import FrameSource, SourceError, open_source
from flumph.agent.transport import SrtPublisher
from flumph.agent.usage import UsageStore
from flumph.agent.watchdog import Watchdog
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.pipeline")

ENCODER_KEYS = ("codec", "bitrate_kbps", "width", "height", "fps", "keyint_s", "adapt_to_link")


SourceFactory = Callable[[StreamSettings], FrameSource]


class Pipeline(CopyMode, EncodeLoop, BudgetDriven):
    def __init__(
        self,
        *,
        device_id: str,
        ingest: str,
        settings: StreamSettings,
        source: str | SourceFactory = "synthetic",
        state_dir: Path,
        passphrase: str | None = None,
        selector: EncoderSelector | None = None,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        host, port = parse_ingest_url(ingest)
        self.device_id = device_id
        self._host, self._port = host, port
        self._passphrase = passphrase
        self._source_spec = source
        self.settings = settings
        # The budget's clock (UTC wall time; injectable for tests, see main.CLOCK_ENV).
        self.usage = UsageStore(state_dir, clock=clock, reset_day=settings.budget_reset_day)
        # The guard reads the settings in force (self.settings) at every use.
        self.budget = BudgetGuard(
            self.usage, lambda: self.settings, clock, forwarding=lambda: self.copy is not None
        )
        self.budget_blocked: str | None = None  # why the settings' streaming=true is not honoured
        self._watch: BudgetWatch | None = None
        self._budget_hit = threading.Event()  # the send path refused: drop frames until stopped
        self._encoder_kbps: int | None = None  # the open encoder's rate (the setting or the cap)
        self.selector = selector or EncoderSelector()
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._apply_lock = threading.RLock()
        self._running = False
        self.stats = PipelineStats()
        self.attempts: tuple[EncoderAttempt, ...] = ()
        self.encoder_name: str | None = None
        self.error: str | None = None
        self._epoch = time.monotonic()
        # Pass-through (passthrough.py) and the watchdog (watchdog.py):
        self.copy: CopyWorker | None = None  # while forwarding a coded source
        self.source_info: SourceInfo | None = None  # the coded source, once probed
        self.mode_reason: str | None = None  # why forward or transcode a coded source
        self.notice: str | None = None  # what the last apply could not do (in copy)
        self.on_fault: Callable[[str | None], None] | None = None  # watchdog news, any thread
        self._watchdog: Watchdog | None = None
        self._workers_up = False
        # Set while streaming:
        self._capture: Capture | None = None
        self.publisher: SrtPublisher | None = None
        self._encode_thread: threading.Thread | None = None
        self._slot: LatestSlot[CapturedFrame] = LatestSlot()
        self._stop_encode = threading.Event()
        self._pending_encoder: VideoEncoder | None = None
        self._keyframe_requested = threading.Event()
        self._swap_lock = threading.Lock()
        self.latest_capture: CapturedFrame | None = None  # for snapshots while streaming
        # Caps on the encoder's rate from elsewhere in the agent (the budget pacer); the rate loop
        # of each streaming session reads them.
        self.rate_limits = RateLimits()
        self.rate: RateLoop | None = None

    # --- control ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the budget watch, and streaming if the settings say so (and the budget lets)."""
        with self._apply_lock:
            if self._watch is None:
                self._watch = BudgetWatch(self.budget, self)
                self._watch.start()
            if self.settings.streaming:
                self._start_streaming()

    def stop(self) -> None:
        with self._apply_lock:
            self._stop_streaming()
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        self.usage.save(force=True)

    @property
    def watch(self) -> BudgetWatch | None:
        return self._watch

    def apply(self, settings: StreamSettings, *, ingest: str | None = None) -> None:
        """Change settings (and optionally the ingest URL) without restarting the process.

        Raises ValueError for a bad URL and EncoderError when no encoder opens for the new settings;
        then nothing has changed.
        """
        # model_copy(update=...) skips validation: check again, so the error names the key.
        settings = StreamSettings.model_validate(settings.model_dump())
        with self._apply_lock:
            old = self.settings
            host, port = (
                parse_ingest_url(ingest) if ingest is not None else (self._host, self._port)
            )
            if self._apply_copy_mode(old, settings, host, port):
                return
            if not self._running:
                previous = self.settings, self._host, self._port
                self.settings, self._host, self._port = settings, host, port
                self.budget_blocked = None
                if settings.streaming:
                    try:
                        self._start_streaming()
                    except BaseException:
                        # Nothing started: the previous settings stay in force.
                        self.settings, self._host, self._port = previous
                        raise
                return
            if not settings.streaming:
                self._stop_streaming()
                self.settings, self._host, self._port = settings, host, port
                self.budget_blocked = None
                return
            assert self._capture is not None and self.publisher is not None
            if any(getattr(old, k) != getattr(settings, k) for k in ENCODER_KEYS):
                self._set_pacing_limit(settings)
                planned = self.rate.plan(settings) if self.rate is not None else settings
                choice = self.selector.open(planned)  # raises before anything changed
                self._encoder_kbps = self.budget.encoder_kbps(settings)
                self._remember_choice(choice)
                if self.rate is not None:
                    self.rate.update_settings(settings, time.monotonic())
                with self._swap_lock:
                    stale, self._pending_encoder = self._pending_encoder, choice.encoder
                if stale is not None:
                    stale.close()
                self._capture.set_format(planned.width, planned.height, planned.fps)
            self.settings, self._host, self._port = settings, host, port
            self.publisher.set_frames_per_burst(settings.frames_per_burst)
            self.publisher.set_destination(self._destination())

    def request_keyframe(self) -> None:
        """Ask the encoder for a keyframe; ValueError when forwarding (the source decides)."""
        self._refuse_keyframe_if_forwarding()
        self._keyframe_requested.set()

    def snapshot_frame(self, warmup_frames: int = 3) -> av.VideoFrame:
        """The newest captured frame while streaming; when idle, one frame from the source.

        When idle the source is opened just for this and closed again. A free-running source (a
        camera) gives ``warmup_frames`` first and the last is kept, because a camera's first frames
        come before its exposure settles. Raises SourceError when the source gives nothing.
        """
        with self._apply_lock:
            coded = self._coded_snapshot()
            if coded is not None:
                return coded
            if self._running:
                # The camera is the capture thread's: wait for its first frame, never reopen it.
                deadline = time.monotonic() + 3.0
                while (latest := self.latest_capture) is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                if latest is None:
                    raise SourceError("streaming, but no frame has been captured yet")
                return latest.frame
            source = self._open_source()
            try:
                frame: av.VideoFrame | None = None
                for tick in range(1 if source.paced else max(1, warmup_frames)):
                    got = source.read(tick, time.time())
                    if got is not None:
                        frame = got
                if frame is None:
                    raise SourceError(f"{source.name} gave no frame for a snapshot")
                return frame
            finally:
                source.close()

    @property
    def streaming(self) -> bool:
        """Streaming is on (frames flow, or the watchdog is restarting what died)."""
        return self._running

    def _destination(self) -> Destination:
        return Destination(
            self._host, self._port, self.device_id, self.settings.srt_latency_ms, self._passphrase
        )

    def _remember_choice(self, choice: EncoderChoice) -> None:
        self.attempts = choice.attempts
        self.encoder_name = choice.encoder.name

    def _open_source(self) -> FrameSource:
        s = self.settings
        if callable(self._source_spec):
            return self._source_spec(s)
        return open_source(self._source_spec, s.width, s.height, s.fps)

    def _new_publisher(self) -> SrtPublisher:
        return SrtPublisher(
            self._destination(),
            usage=self.usage,
            budget=self.budget,
            frames_per_burst=self.settings.frames_per_burst,
            backoff_base_s=self._backoff[0],
            backoff_cap_s=self._backoff[1],
        )

    def _set_pacing_limit(self, settings: StreamSettings) -> None:
        """The budget's pacing cap as one of the rate loop's limits (None: not capped)."""
        kbps = self.budget.encoder_kbps(settings)
        self.rate_limits.set("budget pacing", kbps if kbps < settings.bitrate_kbps else None)

    def _start_streaming(self) -> None:
        if self._running:
            return
        why = self.budget.refusal()
        if why is not None:
            # The wish (settings.streaming) stays; the budget watch starts when there is room.
            if self.budget_blocked is None:
                log.warning("not streaming: %s", why)
            self.budget_blocked = why
            return
        self.budget_blocked = None
        self._budget_hit.clear()
        self._start_workers()
        self._watchdog = self._new_watchdog()
        self._watchdog.start()
        self._running = True

    def _start_workers(self) -> None:
        chosen = plan(self.settings, self._source_spec, self.source_info)
        self.mode_reason, self.source_info = chosen.reason, chosen.info or self.source_info
        if chosen.source is not None:
            self._encoder_kbps = None  # no encoder: nothing for pacing to move
            self.rate = None  # a copied stream: no encoder for the rate loop to steer
            self._start_forwarding(chosen.source)
            return
        # The rate loop: the setting, the uplink and the budget's pacing cap, held by the gate
        # and the encoder's setpoint (rateloop.py).
        self._set_pacing_limit(self.settings)
        rate = RateLoop(self.settings, self.rate_limits, time.monotonic())
        first = rate.encoder_settings()
        choice = self.selector.open(first)
        self._encoder_kbps = self.budget.encoder_kbps(self.settings)
        self._remember_choice(choice)
        self.rate = rate
        rate.opened(choice.encoder.name, choice.encoder.settings, time.monotonic())
        try:
            source = self._open_source()
        except BaseException:
            choice.encoder.close()
            raise
        self._slot = LatestSlot()
        self._capture = Capture(source, first.fps, self._slot)
        if (first.width, first.height) != (self.settings.width, self.settings.height):
            self._capture.set_format(first.width, first.height, first.fps)
        self.publisher = self._new_publisher()
        self._stop_encode.clear()
        self._encode_thread = threading.Thread(
            target=self._encode_loop, args=(choice.encoder,), name="agent-encode", daemon=True
        )
        self.publisher.start()
        self._encode_thread.start()
        self._capture.start()
        self._workers_up = True
        log.info("streaming %s as %s with %s", source.name, self.device_id, choice.encoder.name)

    def _stop_streaming(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self._stop_workers()
        log.info("streaming stopped")

    def _stop_workers(self) -> None:
        if not self._workers_up:
            return
        self._workers_up = False
        self.latest_capture = None
        drain_s = 1.0 + self.settings.srt_latency_ms / 1000
        if self.copy is not None:
            self.copy.stop()
            self.copy = None
            assert self.publisher is not None
            self.publisher.stop(drain_timeout_s=drain_s)
            return
        assert self._capture and self._encode_thread and self.publisher
        self._capture.stop()
        self._stop_encode.set()
        self._slot.close()
        self._encode_thread.join(10.0)
        self.publisher.stop(drain_timeout_s=drain_s)
        with self._swap_lock:
            stale, self._pending_encoder = self._pending_encoder, None
        if stale is not None:
            stale.close()

    # --- the encode thread --------------------------------------------------------------------

    # --- reporting ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A telemetry snapshot (JSON-ready)."""
        now = time.monotonic()
        latencies = sorted(self.stats.send_latency_ms)
        usage = self.usage.current()
        bitrate = self.stats.bitrate_kbps(now)
        doc: dict[str, Any] = {
            "streaming": self._running,
            "encoder": self.encoder_name,
            "encoder_attempts": [[a.encoder, a.result] for a in self.attempts],
            "settings": self.settings.model_dump(),
            "frames_encoded": self.stats.frames_encoded,
            "frames_sent": self.stats.frames_sent,
            "frames_dropped_offline": self.stats.frames_dropped_offline,
            "frames_skipped_rate": self.stats.frames_skipped_rate,
            "encoder_reopens": self.stats.encoder_reopens,
            "bitrate_kbps": round(bitrate, 1) if bitrate is not None else None,
            "container_overhead_bytes_per_frame": round(self.stats.overhead_per_frame(), 2),
            "send_latency_ms_p50": percentile(latencies, 0.5),
            "send_latency_ms_p99": percentile(latencies, 0.99),
            "usage_month": usage.month,
            "usage_wire_bytes_sent": usage.wire_bytes_sent,
            "usage_wire_bytes_received": usage.wire_bytes_received,
            "usage_by_kind": dict(usage.by_kind),
            "budget_blocked": self.budget_blocked,
            "encoder_kbps": self._encoder_kbps if self._running else None,
            "error": self.error,
        }
        if self.rate is not None and self._running:
            doc.update(self.rate.status(now))  # "rate" and "ladder"
        if self._capture is not None:
            c = self._capture.stats
            doc.update(
                frames_captured=c.delivered,
                frames_dropped_busy=c.dropped_busy,
                frames_skipped_late=c.skipped_late,
                capture_error=self._capture.error,
            )
        if self.publisher is not None:
            t = self.publisher.stats
            doc.update(
                srt_connects=t.connects,
                srt_disconnects=t.disconnects,
                srt_rtt_ms=t.rtt_ms,
                srt_retransmitted=t.packets_retransmitted,
                srt_packets_lost_sent=t.packets_lost_sent,
                srt_bytes_sent=t.bytes_sent,
                srt_bursts_sent=t.bursts_sent,
                srt_last_error=t.last_error,
            )
        doc["state"] = self.state
        if self.copy is not None:
            doc.update(self.copy.status(now))
        return doc
