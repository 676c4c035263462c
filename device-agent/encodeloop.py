"""The encode thread of the pipeline, as a mixin of :class:`~.pipeline.Pipeline`.

"agent-encode": takes the newest captured frame, swaps in an encoder ``apply`` or the rate loop
opened, encodes, wraps each packet in live Matroska and sends it over SRT in the same thread, so
a frame leaves the moment it is encoded. A new Matroska document (header first) starts at each
SRT connection and each new encoder, on a keyframe. The state is the pipeline's; the
declarations below only name what is used.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from flumph.agent.capture import Capture, CapturedFrame, LatestSlot
from flumph.agent.encoders import EncoderChoice, EncoderSelector, VideoEncoder
from flumph.agent.pipelinestats import PipelineStats
from flumph.agent.rateloop import RateLoop
from flumph.agent.transport import SrtPublisher
from flumph.media.matroska_writer import LiveMatroskaWriter, TrackInfo
from flumph.settings import StreamSettings

log = logging.getLogger("flumph.agent.pipeline")


class EncodeLoop:
    error: str | None
    stats: PipelineStats
    publisher: SrtPublisher | None
    selector: EncoderSelector
    rate: RateLoop | None
    latest_capture: CapturedFrame | None
    _capture: Capture | None
    _epoch: float
    _slot: LatestSlot[CapturedFrame]
    _stop_encode: threading.Event
    _swap_lock: threading.Lock
    _pending_encoder: VideoEncoder | None
    _budget_hit: threading.Event
    _keyframe_requested: threading.Event

    if TYPE_CHECKING:

        def _remember_choice(self, choice: EncoderChoice) -> None: ...

    def _encode_loop(self, encoder: VideoEncoder) -> None:
        try:
            encoder = self._encode_frames(encoder)
        except Exception as e:  # keep the process alive and say why streaming stopped
            self.error = f"{type(e).__name__}: {e}"
            log.exception("encode thread crashed")
            return
        encoder.close()

    def _encode_frames(self, encoder: VideoEncoder) -> VideoEncoder:
        assert self.publisher is not None
        publisher = self.publisher
        writer: LiveMatroskaWriter | None = None
        writer_generation: int | None = None
        capture_ms: dict[int, int] = {}
        while not self._stop_encode.is_set():
            captured = self._slot.get(timeout=0.2)
            with self._swap_lock:
                replacement, self._pending_encoder = self._pending_encoder, None
            rate = self.rate
            if replacement is not None:
                encoder.close()
                encoder, writer, capture_ms = replacement, None, {}
                if rate is not None:
                    rate.opened(encoder.name, encoder.settings, time.monotonic())
            if captured is None:
                continue
            self.latest_capture = captured
            if self._budget_hit.is_set():
                continue  # no room left: encode nothing until the watch has stopped the stream
            generation = publisher.generation()
            if generation is None:
                self.stats.frames_dropped_offline += 1
                writer = None
                continue
            if generation != writer_generation:
                writer = None
            due = False
            if rate is not None:
                now = time.monotonic()
                due = rate.keyframe_due(now)
                wanted = rate.review(now, publisher.link_stats(), keyframe_due=due)
                if rate.take_link_reset():
                    publisher.reset_connection("the queue in front of the link is too long")
                reopened = None
                if wanted is not None:
                    reopened = self._reopen(wanted, rate, now, encoder.settings)
                if reopened is not None:
                    encoder.close()
                    encoder, writer, capture_ms = reopened, None, {}
            force = writer is None or due or self._keyframe_requested.is_set()
            if rate is not None and not rate.admit(time.monotonic(), forced=force):
                self.stats.frames_skipped_rate += 1
                continue
            self._keyframe_requested.clear()
            capture_ms[encoder.next_pts] = round((captured.monotonic - self._epoch) * 1000)
            packets = encoder.encode(captured.frame, force_keyframe=force)
            self.stats.frames_encoded += 1
            for packet in packets:
                timestamp = capture_ms.pop(packet.pts, None)
                if timestamp is None:
                    continue
                new_document = writer is None
                if writer is None:
                    if not packet.keyframe:
                        self._keyframe_requested.set()
                        continue
                    private = encoder.codec_private(packet.data)
                    s = encoder.settings
                    writer = LiveMatroskaWriter(
                        TrackInfo(encoder.family, s.width, s.height, private, float(s.fps))
                    )
                    writer_generation = generation
                    self.stats.documents += 1
                    self.stats.header_bytes += writer.header_size
                data = writer.write(timestamp, packet.keyframe, packet.data)
                sent = publisher.send_frame(data, generation, new_document=new_document)
                now = time.monotonic()
                if not sent:
                    if publisher.budget_refused:
                        self._budget_hit.set()
                    writer = None
                    continue
                if rate is not None:
                    rate.sent(now, len(data), packet.keyframe)
                self.stats.send_latency_ms.append((now - packet.encoded_at) * 1000)
                self.stats.frames_sent += 1
                self.stats.packet_bytes += len(packet.data)
                self.stats.written_bytes += len(data)
                self.stats.recent.append((now, len(packet.data)))
            if len(capture_ms) > 64:  # an encoder that drops frames must not grow this
                for pts in sorted(capture_ms)[:-64]:
                    del capture_ms[pts]
        return encoder

    def _reopen(
        self, wanted: StreamSettings, rate: RateLoop, now: float, old: StreamSettings
    ) -> VideoEncoder | None:
        """A new encoder at the rate loop's wish (new setpoint or ladder rung), on this thread
        (opening takes 2-13 ms here); None keeps the old one."""
        try:
            choice = self.selector.open(wanted)
        except Exception as e:  # keep streaming with the encoder we have
            log.warning(
                "rate loop: cannot reopen the encoder at %s: %s", describe_settings(wanted), e
            )
            rate.open_failed(now)
            return None
        self._remember_choice(choice)
        capture = self._capture
        if capture is not None and (wanted.width, wanted.height, wanted.fps) != (
            old.width,
            old.height,
            old.fps,
        ):
            capture.set_format(wanted.width, wanted.height, wanted.fps)
        rate.opened(choice.encoder.name, choice.encoder.settings, now)
        self.stats.encoder_reopens += 1
        log.info("rate loop: encoder reopened at %s", describe_settings(wanted))
        return choice.encoder


def describe_settings(s: StreamSettings) -> str:
    return f"{s.bitrate_kbps} kbit/s {s.width}x{s.height} {s.fps} fps"
