"""What /metrics costs the ingest, against prometheus_client's own labelled metrics (the peer).

Two numbers, both in-process (no network):

* per frame, per viewer, on the event loop: our ``LatencyHistogram.observe`` against
  ``prometheus_client.Histogram(...).labels(stream).observe`` with the same buckets;
* per scrape: the ingest's collector (read from the hub when scraped) for N streams with V viewers
  each, on the event loop (collecting; the text is formatted in a thread) and in all, against
  rendering a registry of prometheus_client Gauges/Counters/Histogram holding the same series
  (kept up to date as frames arrive, the peer's model; its counters add ``_created`` samples).

    python -m bench.metrics_cost                  # N = 10, 100, 1000 streams, ~20 s
    python -m bench.metrics_cost --streams 100 --repeat 50
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from flumph.ingest.hub import Hub
from flumph.ingest.latency import BUCKETS_S, LatencyHistogram
from flumph.ingest.metrics import IngestMetrics
from flumph.ingest.stream import MediaInit
from flumph.service.metrics import registry_of

INIT = MediaInit('video/mp4; codecs="av01.0.04M.08"', b"init", "av1", 640, 360)


def observe_cost(n: int) -> tuple[float, float]:
    ours = LatencyHistogram()
    peer = Histogram("peer_latency_seconds", "x", ["stream"], buckets=BUCKETS_S,
                     registry=CollectorRegistry())  # fmt: skip
    t_ours = min(timeit.repeat(lambda: ours.observe(0.0012), number=n, repeat=5)) / n
    t_peer = min(timeit.repeat(lambda: peer.labels("cam1").observe(0.0012), number=n, repeat=5)) / n
    return t_ours, t_peer


def build_hub(streams: int, viewers: int) -> Hub:
    hub = Hub(max_streams=streams, max_viewers_per_stream=viewers, viewer_queue_frames=10_000)
    for i in range(streams):
        s, _ = hub.claim(f"cam{i}", "srt")
        s.publish_init(INIT)
        for _ in range(viewers):
            hub.add_viewer(s.id)
        for f in range(30):
            s.publish_fragment(b"x" * 2000, f == 0, time.monotonic())
            for _ in range(viewers):
                s.record_latency(0.001 + f * 1e-5)
    return hub


def peer_registry(hub: Hub) -> CollectorRegistry:
    """The same series in prometheus_client's own metric objects."""
    reg = CollectorRegistry()
    L = ["stream"]
    g = {n: Gauge(n, n, L, registry=reg) for n in (
        "peer_stream_publishing", "peer_stream_viewers", "peer_stream_frames_per_second",
        "peer_stream_bytes_per_second", "peer_srt_rtt_seconds")}  # fmt: skip
    c = {n: Counter(n, n, L, registry=reg) for n in (
        "peer_stream_frames", "peer_stream_bytes", "peer_stream_viewer_skipped_frames",
        "peer_srt_received_bytes", "peer_srt_received_packets", "peer_srt_lost_packets",
        "peer_srt_dropped_packets", "peer_srt_retransmitted_packets")}  # fmt: skip
    info = Gauge("peer_stream_info", "x", ["stream", "codec", "source"], registry=reg)
    h = Histogram("peer_added_latency_seconds", "x", L, buckets=BUCKETS_S, registry=reg)
    for s in hub.streams():
        info.labels(s.id, "av1", "srt").set(1)
        for gauge in g.values():
            gauge.labels(s.id).set(1)
        for counter in c.values():
            counter.labels(s.id).inc(1)
        child = h.labels(s.id)
        for _ in range(min(s.latency.count, 50)):
            child.observe(0.001)
    Gauge("peer_streams", "x", ["state"], registry=reg).labels("publishing").set(1)
    return reg


async def scrape_cost(streams: int, viewers: int, repeat: int) -> tuple[float, ...]:
    """(ours on the loop, ours in all, the peer's, our bytes, the peer's bytes)."""
    hub = build_hub(streams, viewers)
    metrics = IngestMetrics(hub, lambda: None, max_series=max(streams, 1))
    ours = registry_of([metrics])
    peer = peer_registry(hub)
    size_ours, size_peer = len(generate_latest(ours)), len(generate_latest(peer))
    t_loop = min(timeit.repeat(lambda: list(metrics.collect()), number=1, repeat=repeat))
    t_ours = min(timeit.repeat(lambda: generate_latest(ours), number=1, repeat=repeat))
    t_peer = min(timeit.repeat(lambda: generate_latest(peer), number=1, repeat=repeat))
    return t_loop, t_ours, t_peer, size_ours, size_peer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", default="10,100,1000", help="comma list")
    p.add_argument("--viewers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=20)
    ns = p.parse_args()
    t_ours, t_peer = observe_cost(200_000)
    print("per frame and viewer (event loop)")
    print(f"  {'':34} {'flumph':>10} {'prometheus_client':>18} {'ratio':>6}")
    print(f"  {'latency observe':34} {t_ours * 1e9:8.0f}ns {t_peer * 1e9:16.0f}ns "
          f"{t_ours / t_peer:6.2f}")  # fmt: skip
    print(f"per scrape ({ns.viewers} viewers per stream, best of {ns.repeat}); flumph collects on "
          "the loop and formats in a thread, the peer renders on the loop")  # fmt: skip
    print(f"  {'streams':>8} {'flumph loop':>12} {'flumph all':>11} {'prometheus_client':>18} "
          f"{'loop ratio':>10} {'bytes':>9} {'peer bytes':>10}")  # fmt: skip
    for n in (int(x) for x in ns.streams.split(",") if x):
        loop, ours, peer, sa, sb = asyncio.run(scrape_cost(n, ns.viewers, ns.repeat))
        print(f"  {n:8d} {loop * 1e3:10.2f}ms {ours * 1e3:9.2f}ms {peer * 1e3:16.2f}ms "
              f"{loop / peer:10.2f} {int(sa):9d} {int(sb):10d}")  # fmt: skip


if __name__ == "__main__":
    main()
