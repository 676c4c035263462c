"""The metrics' own logic without a network: the latency histogram, skipped frames that outlive
their viewer, and the bound on labelled streams."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flumph.ingest.hub import Hub
from flumph.ingest.latency import BUCKETS_S, LatencyHistogram
from flumph.ingest.metrics import IngestMetrics
from flumph.ingest.stream import MediaInit
from flumph.service.metrics import registry_of


def test_latency_histogram_is_cumulative_with_inf_last() -> None:
    h = LatencyHistogram()
    for seconds in (0.0001, 0.00025, 0.0007, 0.003, 7.0):
        h.observe(seconds)
    buckets = dict(h.cumulative())
    assert len(buckets) == len(BUCKETS_S) + 1
    assert buckets["0.00025"] == 2  # an observation on a bound counts in it (le)
    assert buckets["0.001"] == 3 and buckets["0.005"] == 4 and buckets["2.5"] == 4
    assert buckets["+Inf"] == 5 == h.count
    assert abs(h.sum - 7.00405) < 1e-9


def _scrape(metrics: IngestMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = generate_latest(registry_of([metrics])).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def test_skips_outlive_their_viewer_and_labelled_streams_are_bounded() -> None:
    hub = Hub(max_streams=10, max_viewers_per_stream=5, viewer_queue_frames=8)
    a, _ = hub.claim("cam-a", "srt")
    a.publish_init(MediaInit('video/mp4; codecs="avc1.42E01E"', b"init", "h264", 64, 48))
    _, slow = hub.add_viewer("cam-a")
    a.publish_fragment(b"key", True)
    for _ in range(40):  # nobody drains the viewer's queue
        a.publish_fragment(b"delta", False)
    dropped = slow.dropped_total
    assert dropped > 0 and a.viewer_frames_dropped == dropped
    hub.remove_viewer(a, slow)
    assert a.viewer_frames_dropped == dropped  # the count stays with the stream
    hub.claim("cam-b", "srt")
    hub.claim("cam-c", "ws")
    hub.add_viewer("someone-waits", wait=True)  # an id chosen by a viewer: never a label
    metrics = IngestMetrics(hub, lambda: None, max_series=2)
    got = _scrape(metrics)
    skipped = got["flumph_ingest_stream_viewer_skipped_frames_total"]
    assert skipped == [({"stream": "cam-a"}, dropped), ({"stream": "cam-b"}, 0.0)]
    assert got["flumph_ingest_streams_unlabelled"] == [({}, 1.0)]
    states = {labels["state"]: v for labels, v in got["flumph_ingest_streams"]}
    assert states == {"publishing": 3, "reconnecting": 0, "waiting": 1}
    streams = {labels["stream"] for samples in got.values() for labels, _ in samples
               if "stream" in labels}  # fmt: skip
    assert streams == {"cam-a", "cam-b"}
