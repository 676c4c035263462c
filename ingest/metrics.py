"""The ingest's Prometheus metrics: streams, viewers, the latency it adds, and each SRT link.

Read from the hub and the SRT handler when scraped (see :mod:`flumph.service.metrics`). A stream is
a label value only once it has had a publisher (an SRT device or a WebSocket streamer admitted by
the hub); a stream that a waiting viewer created names an id an outsider chose, and counts only in
the totals. At most ``max_series`` streams are labelled (the oldest first); the rest count in
``flumph_ingest_streams_unlabelled``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from flumph import srt

from .hub import Hub
from .srt_ingest import SrtIngest
from .stream import Stream

MAX_SERIES = 1000  # labelled streams; MAX_STREAMS is 100 by default


def _stream_state(s: Stream) -> str:
    if s.publisher_connected:
        return "publishing"
    return "waiting" if s.source is None else "reconnecting"


class IngestMetrics:
    def __init__(
        self,
        hub: Hub,
        srt_handler: Callable[[], SrtIngest | None],
        *,
        max_series: int = MAX_SERIES,
    ) -> None:
        self.hub = hub
        self._srt_handler = srt_handler
        self.max_series = max_series
        self._links: dict[str, srt.SrtStats] = {}

    async def refresh(self) -> None:
        handler = self._srt_handler()
        # srt_bstats is a C call per connection: not on the event loop.
        self._links = await asyncio.to_thread(handler.stats) if handler is not None else {}

    def collect(self) -> Iterable[Metric]:
        streams = self.hub.streams()
        handler = self._srt_handler()
        states = {"publishing": 0, "reconnecting": 0, "waiting": 0}
        for s in streams:
            states[_stream_state(s)] += 1
        g = GaugeMetricFamily("flumph_ingest_streams", "Streams by state", labels=["state"])
        for state, n in states.items():
            g.add_metric([state], n)
        yield g
        yield GaugeMetricFamily(
            "flumph_ingest_viewers",
            "Viewers of every stream",
            value=sum(len(s.viewers) for s in streams),
        )
        refused = handler.refused_total if handler is not None else 0
        yield CounterMetricFamily(
            "flumph_ingest_publishers_refused",
            "SRT publishers refused (bad stream id, busy, limits, unreadable stream)",
            value=refused,
        )
        published = sorted((s for s in streams if s.source is not None), key=lambda s: s.created)
        labelled = published[: self.max_series]
        yield GaugeMetricFamily(
            "flumph_ingest_streams_unlabelled",
            f"Published streams beyond the {self.max_series} given their own series",
            value=len(published) - len(labelled),
        )
        yield from self._per_stream(labelled)
        yield from self._per_link({s.id for s in labelled})

    def _per_stream(self, streams: list[Stream]) -> Iterable[Metric]:
        L = ["stream"]
        info = GaugeMetricFamily(
            "flumph_ingest_stream_info", "1 per stream, with its codec and source",
            labels=["stream", "codec", "source"],
        )  # fmt: skip
        publishing = GaugeMetricFamily(
            "flumph_ingest_stream_publishing", "1 while a publisher is connected", labels=L
        )
        viewers = GaugeMetricFamily("flumph_ingest_stream_viewers", "Viewers", labels=L)
        frames = CounterMetricFamily(
            "flumph_ingest_stream_frames", "Frames received from the publisher", labels=L
        )
        media = CounterMetricFamily(
            "flumph_ingest_stream_bytes", "Media bytes received (fMP4 fragments)", labels=L
        )
        fps = GaugeMetricFamily(
            "flumph_ingest_stream_frames_per_second", "Frame rate over the last 5 s", labels=L
        )
        rate = GaugeMetricFamily(
            "flumph_ingest_stream_bytes_per_second",
            "Media bitrate over the last 5 s, in bytes per second",
            labels=L,
        )
        skipped = CounterMetricFamily(
            "flumph_ingest_stream_viewer_skipped_frames",
            "Frames slow viewers skipped to catch up at a keyframe",
            labels=L,
        )
        latency = HistogramMetricFamily(
            "flumph_ingest_added_latency_seconds",
            "Latency the ingest adds: a frame's last SRT byte in to its fragment written to a "
            "viewer's WebSocket",
            labels=L,
        )
        now = time.monotonic()
        for s in streams:
            sid = [s.id]
            init = s.init
            info.add_metric([s.id, init.codec if init else "", s.source or ""], 1)
            publishing.add_metric(sid, 1 if s.publisher_connected else 0)
            viewers.add_metric(sid, len(s.viewers))
            frames.add_metric(sid, s.frames)
            media.add_metric(sid, s.bytes)
            f, kbps = s.meter.rates(now)
            fps.add_metric(sid, f)
            rate.add_metric(sid, kbps * 1000.0 / 8.0)
            skipped.add_metric(sid, s.viewer_frames_dropped)
            latency.add_metric(sid, s.latency.cumulative(), sum_value=s.latency.sum)
        yield from (info, publishing, viewers, frames, media, fps, rate, skipped, latency)

    def _per_link(self, labelled: set[str]) -> Iterable[Metric]:
        L = ["stream"]
        rtt = GaugeMetricFamily("flumph_ingest_srt_rtt_seconds", "SRT round-trip time", labels=L)
        counters = {
            "bytes": ("flumph_ingest_srt_received_bytes", "SRT payload bytes received"),
            "packets": ("flumph_ingest_srt_received_packets", "SRT data packets received"),
            "lost": ("flumph_ingest_srt_lost_packets", "SRT packets detected lost"),
            "dropped": (
                "flumph_ingest_srt_dropped_packets",
                "SRT packets that arrived too late to play, or never",
            ),
            "retrans": (
                "flumph_ingest_srt_retransmitted_packets",
                "Retransmitted SRT packets received",
            ),
        }
        fams = {k: CounterMetricFamily(n, doc, labels=L) for k, (n, doc) in counters.items()}
        for sid, st in sorted(self._links.items()):
            if sid not in labelled:
                continue
            rtt.add_metric([sid], st.rtt_ms / 1000.0)
            fams["bytes"].add_metric([sid], st.bytes_received)
            fams["packets"].add_metric([sid], st.packets_received)
            fams["lost"].add_metric([sid], st.packets_lost_received)
            fams["dropped"].add_metric([sid], st.packets_dropped_received)
            fams["retrans"].add_metric([sid], st.packets_retransmitted_received)
        yield rtt
        yield from fams.values()
